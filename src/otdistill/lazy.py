"""Lazy package exports (PEP 562): a package's names are imported from their modules on first use.

Why: the packages re-export their public names (`from otdistill.training import TrainConfig`), and an
eager re-export imports every module of the package, and with them torch, transformers, mlflow, datasets
and peft. Then merely reading a run config, compiling or submitting a pipeline (the light client,
`pip install otdistill[client]`) would need the whole training stack installed and ~10 s to import it.

One list per package, read by both mypy and the runtime: the package's ``if TYPE_CHECKING:`` block of
``from <module> import <name>`` lines, which type checkers see as real imports, and which
`lazy_exports` reads from the package's source to know where each name lives. ``__all__`` must name
exactly those names (checked when the package is imported)::

    from typing import TYPE_CHECKING

    if TYPE_CHECKING:
        from otdistill.losses.kl import ForwardKLLoss

    __all__ = ["ForwardKLLoss"]

    if not TYPE_CHECKING:
        __getattr__, __dir__ = lazy_exports(__name__, __file__, __all__)
"""

from __future__ import annotations

import ast
import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


class LazyExportError(ImportError):
    """A package's lazy export list is inconsistent (names its `__init__.py` and line)."""


def export_table(init_file: str | Path) -> dict[str, str]:
    """``name -> module`` from the ``if TYPE_CHECKING:`` block(s) of a package's ``__init__.py``."""
    path = Path(init_file)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    table: dict[str, str] = {}
    for node in tree.body:
        if not (isinstance(node, ast.If) and _is_type_checking(node.test)):
            continue
        for stmt in node.body:
            if not isinstance(stmt, ast.ImportFrom) or stmt.level or not stmt.module:
                raise LazyExportError(
                    f"{path}:{stmt.lineno}: only absolute `from <module> import <name>` lines belong in "
                    "the TYPE_CHECKING block of a lazy package"
                )
            for alias in stmt.names:
                name = alias.asname or alias.name
                if name in table:
                    raise LazyExportError(f"{path}:{stmt.lineno}: {name} is imported twice")
                table[name] = f"{stmt.module}:{alias.name}"
    return table


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def lazy_exports(
    package: str, init_file: str, names: Sequence[str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The `__getattr__` and `__dir__` of `package`: each exported name is imported on first access and
    then kept in the package's namespace (so later lookups, and monkeypatching, see a plain attribute)."""
    table = export_table(init_file)
    if set(names) != set(table):
        missing, extra = sorted(set(table) - set(names)), sorted(set(names) - set(table))
        raise LazyExportError(
            f"{init_file}: __all__ and the TYPE_CHECKING imports differ: "
            f"not in __all__: {', '.join(missing) or '-'}; in __all__ only: {', '.join(extra) or '-'}"
        )

    def get_export(name: str) -> Any:
        target = table.get(name)
        if target is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module_name, _, attr = target.partition(":")
        value = getattr(importlib.import_module(module_name), attr)
        setattr(sys.modules[package], name, value)
        return value

    def list_names() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(table))

    return get_export, list_names
