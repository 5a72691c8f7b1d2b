"""The packages' lazy exports (`otdistill.lazy`): every exported name resolves to the object its module
defines, none is shadowed by a submodule of the same name, and an inconsistent export list fails at import
naming the file."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

import pytest

from otdistill.lazy import LazyExportError, export_table
from tests.infra.manifest_tools import REPO

LAZY_PACKAGES = sorted(
    ".".join(init.parent.relative_to(REPO / "src").parts)
    for init in (REPO / "src" / "otdistill").rglob("__init__.py")
    if "lazy_exports(" in init.read_text(encoding="utf-8")
)


def test_the_heavy_packages_are_lazy() -> None:
    assert {"otdistill.data", "otdistill.evaluation", "otdistill.losses", "otdistill.models"} <= set(
        LAZY_PACKAGES
    )
    assert {"otdistill.teacher_cache", "otdistill.tracking", "otdistill.training"} <= set(LAZY_PACKAGES)


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_every_export_is_its_modules_object(package: str) -> None:
    pkg = importlib.import_module(package)
    table = export_table(pkg.__file__ or "")
    assert sorted(table) == sorted(pkg.__all__)
    submodules = {m.name for m in pkgutil.iter_modules(pkg.__path__)}
    assert not set(table) & submodules, "an export named like a submodule is replaced by it once imported"
    for name, target in table.items():
        module, _, attr = target.partition(":")
        assert getattr(pkg, name) is getattr(importlib.import_module(module), attr), f"{package}.{name}"
    assert set(table) <= set(dir(pkg))
    with pytest.raises(AttributeError, match=f"module '{package}' has no attribute 'no_such_name'"):
        _ = pkg.no_such_name


def _package(root: Path, name: str, init: str) -> None:
    (root / name).mkdir()
    (root / name / "__init__.py").write_text(init, encoding="utf-8")
    (root / name / "mod.py").write_text("A = 1\nB = 2\n", encoding="utf-8")


@pytest.mark.parametrize(
    ("block", "names", "message"),
    [
        ("    from {pkg}.mod import A, B\n", '["A"]', r"not in __all__: B; in __all__ only: -"),
        ("    from {pkg}.mod import A\n", '["A", "C"]', r"not in __all__: -; in __all__ only: C"),
        ("    from .mod import A\n", '["A"]', r"__init__.py:4: only absolute `from <module> import <name>`"),
    ],
)
def test_an_inconsistent_export_list_fails_at_import_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: str, names: str, message: str
) -> None:
    pkg = f"lazy_probe_{abs(hash((block, names))) % 10**8}"
    _package(
        tmp_path,
        pkg,
        "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n"
        + block.format(pkg=pkg)
        + f"\n__all__ = {names}\n\nif not TYPE_CHECKING:\n"
        + "    from otdistill.lazy import lazy_exports\n\n"
        + "    __getattr__, __dir__ = lazy_exports(__name__, __file__, __all__)\n",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(LazyExportError, match=message) as err:
        importlib.import_module(pkg)
    assert str(tmp_path / pkg / "__init__.py") in str(err.value)
    sys.modules.pop(pkg, None)
