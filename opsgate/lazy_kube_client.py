"""kubernetes-asyncio's generated client, with its classes imported when first used.

``kubernetes_asyncio.client`` (and its ``api`` and ``models`` packages) re-export every
generated class from their ``__init__``: importing any part of the client loads ~60 API
modules and ~700 model classes, about 45 MB of a process that uses two APIs and a dozen
models; the top package's ``__init__`` adds ``utils`` (with jsonschema), ``dynamic``, ``stream``
and ``watch``, another ~8 MB opsgate never uses. :func:`install` changes only *when* those
modules load: these four package modules are
built from the names their ``__init__`` re-exports, and a name is imported from its own module
the first time it is looked up (PEP 562 ``__getattr__``), which is also how ``ApiClient`` finds
a model class when it deserializes an answer. The classes themselves are the library's,
unchanged.

An ``__init__`` that does anything but re-export (a future version) is executed as it is.
"""

from __future__ import annotations

import ast
import importlib
import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

LAZY_PACKAGES = frozenset(
    {
        "kubernetes_asyncio",
        "kubernetes_asyncio.client",
        "kubernetes_asyncio.client.api",
        "kubernetes_asyncio.client.models",
    }
)


def install() -> None:
    """Put the finder in front of the path finder, once per interpreter."""
    if not any(isinstance(finder, _LazyPackageFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _LazyPackageFinder())


def reexports(source: str) -> tuple[dict[str, tuple[str, str | None]], dict[str, Any]] | None:
    """``{name: (module, attribute)}`` and the constants of an ``__init__`` that only re-exports.

    The attribute is None for a subpackage re-exported whole (``import a.b as b``). None if the
    ``__init__`` does anything else: then it must run as written.
    """
    names: dict[str, tuple[str, str | None]] = {}
    constants: dict[str, Any] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # the docstring
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            continue
        if (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and node.module is not None
            and node.module.startswith("kubernetes_asyncio.")
            and all(alias.asname is None and alias.name != "*" for alias in node.names)
        ):
            names.update((alias.name, (node.module, alias.name)) for alias in node.names)
            continue
        if isinstance(node, ast.Import) and all(
            alias.name.startswith("kubernetes_asyncio.")
            and alias.asname == alias.name.rpartition(".")[2]
            for alias in node.names
        ):
            names.update((str(alias.asname), (alias.name, None)) for alias in node.names)
            continue
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and node.targets[0].id.startswith("__")
            and node.targets[0].id.endswith("__")
        ):
            try:
                constants[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                return None
            continue
        return None
    return names, constants


class _LazyPackageFinder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in LAZY_PACKAGES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or not isinstance(spec.loader, importlib.machinery.SourceFileLoader):
            return spec
        spec.loader = _LazyPackageLoader(spec.loader)
        return spec


class _LazyPackageLoader(importlib.abc.Loader):
    def __init__(self, real: importlib.machinery.SourceFileLoader) -> None:
        self._real = real

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        found = reexports(self._real.get_source(module.__name__) or "")
        if found is None:
            self._real.exec_module(module)
            return
        names, constants = found
        module.__dict__.update(constants)

        def __getattr__(name: str) -> Any:
            if name not in names:
                raise AttributeError(f"module {module.__name__!r} has no attribute {name!r}")
            where, attribute = names[name]
            found = importlib.import_module(where)
            value = found if attribute is None else getattr(found, attribute)
            setattr(module, name, value)
            return value

        def __dir__() -> list[str]:
            return sorted({*module.__dict__, *names})

        module.__getattr__ = __getattr__  # type: ignore[method-assign]
        module.__dir__ = __dir__  # type: ignore[method-assign]
