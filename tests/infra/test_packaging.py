"""One installable product: the wheel's package list covers every package folder of the library, the
components and the pipeline, mapped under the `otdistill` namespace (pyproject's package-dir)."""

from __future__ import annotations

import tomllib

from tests.infra.manifest_tools import REPO


def test_every_package_folder_is_in_the_wheel() -> None:
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping = setuptools["package-dir"]
    assert mapping == {"": "src", "otdistill.components": "components", "otdistill.pipelines": "pipelines"}
    expected = set()
    for prefix, folder in (("otdistill", "src/otdistill"), *((k, v) for k, v in mapping.items() if k)):
        root = REPO / folder
        for init in root.rglob("__init__.py"):
            rel = init.parent.relative_to(root)
            expected.add(".".join([prefix, *rel.parts]))
    assert set(setuptools["packages"]) == expected
