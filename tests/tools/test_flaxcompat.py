"""The Flax-guide cell extractor and the flax.nnx -> ramie import alias."""

import pathlib
import subprocess
import sys
import textwrap

import pytest

TOOLS = pathlib.Path(__file__).resolve().parents[2] / "tools" / "flaxcompat"
sys.path.insert(0, str(TOOLS))

import guides  # noqa: E402


def test_myst_cells_read_code_and_tags():
    text = textwrap.dedent(
        """\
        # Title
        ```{code-cell} ipython3
        x = 1
        ```
        text
        ```{code-cell} ipython3
        :tags: [raises-exception]
        raise ValueError
        ```
        ```{code-cell}
        ---
        tags: [skip-execution, hide-output]
        ---
        y = 2
        ```
        ```python
        not_a_cell = 3
        ```
        """
    )
    cells = guides.myst_cells(text)
    assert [c["code"] for c in cells] == ["x = 1\n", "raise ValueError\n", "y = 2\n"]
    assert cells[1]["tags"] == ["raises-exception"]
    assert cells[2]["tags"] == ["skip-execution", "hide-output"]


def test_plain_markdown_pages_give_their_python_blocks():
    text = "Intro\n```python\na = 1\n```\n```bash\nls\n```\n```python\nb = a\n```\n"
    assert [c["code"] for c in guides.myst_cells(text)] == ["a = 1\n", "b = a\n"]


def test_rst_cells_take_the_last_codediff_column():
    text = textwrap.dedent(
        """\
        Intro.

        .. codediff::
          :title: Haiku, Flax NNX
          :sync:

          import haiku as hk
          left = 1
          ---
          from flax import nnx
          right = 2

        .. testcode::

          def f():
            return 3

        .. testcode::
          :skip_test:

          skipped = True
        """
    )
    cells = guides.rst_cells(text)
    assert [c["code"] for c in cells] == [
        "from flax import nnx\nright = 2\n",
        "def f():\n  return 3\n",
    ]


def test_child_runs_cells_in_one_namespace_and_reports_failures(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "```{code-cell}\nfrom flax import nnx\nlayer = nnx.Linear(2, 3, "
        "rngs=nnx.Rngs(0))\n```\n"
        "```{code-cell}\nassert type(layer).__module__.startswith('ramie')\n```\n"
        "```{code-cell}\nundefined_name\n```\n"
    )
    results = guides.run_child(page, "ramie", timeout=120)
    assert [r["outcome"] for r in results] == ["passed", "passed", "failed"]
    assert "NameError" in results[2]["error"]


@pytest.mark.parametrize("path", ["flax.nnx.nn.linear", "flax.nnx.graph"])
def test_alias_resolves_flax_nnx_submodules_to_ramie(path):
    code = (
        f"import sys; sys.path.insert(0, {str(TOOLS)!r}); import alias; "
        f"alias.install(); import importlib; m = importlib.import_module({path!r}); "
        "import flax.nnx, ramie; assert flax.nnx is ramie; print(m.__name__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip().startswith(("ramie", "flax.nnx"))
