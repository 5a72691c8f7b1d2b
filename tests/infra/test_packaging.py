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


def _requirement_lines(*files: str) -> set[str]:
    lines = set()
    for name in files:
        for line in (REPO / name).read_text().splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                lines.add(line.strip())
    return lines


def test_the_extras_client_within_all_and_a_light_core() -> None:
    """`otdistill[client]` (validate, compile, submit, schedule; tests/infra/test_light_client.py) is a part
    of `otdistill[all]` with the same specifiers, and the core needs only what reading a config needs."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    extras = pyproject["tool"]["setuptools"]["dynamic"]["optional-dependencies"]
    assert set(extras) == {"client", "all", "dev"}
    assert pyproject["project"]["dependencies"] == ["pyyaml"]
    client, full = _requirement_lines(*extras["client"]["file"]), _requirement_lines(*extras["all"]["file"])
    assert {"kfp>=2.17,<2.18", "kfp-kubernetes>=2.17,<2.18"} <= client
    assert client | {"pyyaml"} <= full, f"in the client extra but not in all: {sorted(client - full)}"
    names = {line.split("=")[0].split(">")[0].split("<")[0].split("[")[0] for line in client}
    assert not names & {"torch", "transformers", "mlflow", "datasets", "peft"}
