"""Entry point of ``python -m ramie.demo``; see :mod:`ramie.demo.cli` for the flags."""

from ramie.demo.cli import main

if __name__ == "__main__":
    main()
