"""Make ``flax.nnx`` and its submodules resolve to ``ramie``.

``install()`` puts an import hook first on ``sys.meta_path``:

* ``import flax.nnx`` / ``from flax import nnx`` give ``ramie`` itself;
* ``flax.nnx.a.b`` gives ``ramie.a.b`` when ramie has that module, else the
  module-valued attribute ``b`` of ``ramie.a`` (or of ``ramie``);
* otherwise, for module paths that exist in the real ``flax.nnx``, a stand-in
  module whose attributes are ramie's top-level names. A name ramie lacks
  becomes an object that raises ``NotImplementedError`` when used, so one
  missing internal import fails only the tests that use it.

``flax`` itself, ``flax.linen``, ``flax.training`` and the rest stay real.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import types

TARGET = "flax.nnx"
stand_ins: list[str] = []
_flax_modules: set[str] = set()


def _real_module_paths() -> set[str]:
    """Dotted paths (relative to flax.nnx) of the real package's modules."""
    spec = importlib.util.find_spec("flax")
    found: set[str] = set()
    for base in spec.submodule_search_locations or []:
        root = os.path.join(base, "nnx")
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if not d.startswith("__")]
            rel = os.path.relpath(dirpath, root)
            prefix = "" if rel == "." else rel.replace(os.sep, ".") + "."
            if prefix:
                found.add(prefix[:-1])
            found.update(
                prefix + name[:-3]
                for name in filenames
                if name.endswith(".py") and name != "__init__.py"
            )
    return found


class Unavailable:
    """A name ramie does not provide: any use raises NotImplementedError."""

    def __init__(self, name: str):
        object.__setattr__(self, "_name", name)

    def _raise(self, *args, **kwargs):
        name = object.__getattribute__(self, "_name")
        raise NotImplementedError(f"{name} is not provided by ramie")

    def __getattr__(self, item):
        if item.startswith("__"):
            raise AttributeError(item)
        self._raise()

    def __repr__(self):
        return f"<unavailable {object.__getattribute__(self, '_name')}>"

    __call__ = __iter__ = __getitem__ = __enter__ = __bool__ = _raise
    __mro_entries__ = __or__ = __ror__ = _raise


class StandIn(types.ModuleType):
    """A flax.nnx submodule ramie has no counterpart for."""

    def __getattr__(self, item):
        if item.startswith("__"):
            raise AttributeError(item)
        ramie = sys.modules["ramie"]
        if hasattr(ramie, item):
            return getattr(ramie, item)
        return Unavailable(f"{self.__name__}.{item}")


class _Loader(importlib.abc.Loader):
    def __init__(self, module: types.ModuleType):
        self.module = module
        self.spec = getattr(module, "__spec__", None)

    def create_module(self, spec):
        return self.module

    def exec_module(self, module):
        if self.spec is not None:  # keep ramie's own spec for relative imports
            try:
                module.__spec__ = self.spec
            except AttributeError:
                pass


def _lookup(rel: str) -> types.ModuleType | None:
    try:
        return importlib.import_module(f"ramie.{rel}")
    except ModuleNotFoundError as error:
        if error.name and not f"ramie.{rel}".startswith(error.name):
            raise  # a dependency inside ramie is missing: show it
    parent_rel, _, leaf = rel.rpartition(".")
    for owner in (f"ramie.{parent_rel}" if parent_rel else "ramie", "ramie"):
        candidate = getattr(sys.modules.get(owner), leaf, None)
        if isinstance(candidate, types.ModuleType):
            return candidate
    if rel not in _flax_modules:
        return None
    module = StandIn(f"{TARGET}.{rel}")
    module.__path__ = []
    stand_ins.append(module.__name__)
    return module


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if not fullname.startswith(TARGET + "."):
            return None
        module = _lookup(fullname[len(TARGET) + 1 :])
        if module is None:
            return None
        return importlib.machinery.ModuleSpec(
            fullname, _Loader(module), is_package=hasattr(module, "__path__")
        )


_installed = False


def install() -> None:
    """Alias ``flax.nnx`` to ``ramie`` for the rest of the process."""
    global _installed
    if _installed:
        return
    import flax  # the real top-level package; it does not import flax.nnx

    _flax_modules.update(_real_module_paths())
    for name in [m for m in sys.modules if m == TARGET or m.startswith(TARGET + ".")]:
        del sys.modules[name]
    import ramie

    sys.modules[TARGET] = ramie
    flax.nnx = ramie
    sys.meta_path.insert(0, _Finder())
    _installed = True
