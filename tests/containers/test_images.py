"""The images `make images` built, checked by running them: non-root, the CLI, every component module,
a consistent dependency set, a compile with no checkout, and their sizes (printed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.containers.conftest import docker

ROOT = Path(__file__).resolve().parents[2]
# What the installed product must hold: every component's module, the DAG, the local and cluster runners.
IMPORT_ALL = """
import importlib, pkgutil
import otdistill.components as components
names = [m.name for m in pkgutil.iter_modules(components.__path__) if m.ispkg]
for name in names:
    importlib.import_module(f"otdistill.components.{name}.component")
for module in ("otdistill_pipeline", "cluster", "local", "submit", "containers"):
    importlib.import_module(f"otdistill.pipelines.{module}")
print(len(names), "components")
"""


def run(image: str, *argv: str, timeout: float = 300) -> str:
    return docker("run", "--rm", "--network=host", image, *argv, timeout=timeout).stdout


@pytest.mark.parametrize("role", ["cpu", "mlflow"])
def test_runs_as_non_root_and_prints_its_size(built_images: dict[str, str], role: str) -> None:
    image = built_images[role]
    assert run(image, "id", "-u").strip() == "10001"
    size = int(docker("image", "inspect", "-f", "{{.Size}}", image).stdout)
    print(f"{image}: {size / 1e6:.0f} MB")


@pytest.mark.parametrize("role", ["cpu", "mlflow"])
def test_dependency_set_is_consistent(built_images: dict[str, str], role: str) -> None:
    assert "No broken requirements found" in run(built_images[role], "pip", "check")


def test_cli_and_every_component_module(built_images: dict[str, str]) -> None:
    image = built_images["cpu"]
    assert "usage: otdistill" in run(image, "otdistill", "--help")
    out = run(image, "python", "-c", IMPORT_ALL)
    expected = sum(1 for p in (ROOT / "components").iterdir() if (p / "component.py").is_file())
    assert out.strip() == f"{expected} components"


def test_compiles_a_shipped_config_without_a_checkout(built_images: dict[str, str], tmp_path: Path) -> None:
    """The wheel alone compiles: the config comes in through a read-only mount, nothing else of the repo."""
    tmp_path.chmod(0o777)  # the image's user (10001) writes the YAML here
    config = ROOT / "configs" / "paper" / "opt-350m-dialogsum.yaml"
    docker(
        "run", "--rm", "-v", f"{config}:/in/config.yaml:ro", "-v", f"{tmp_path}:/out",
        built_images["cpu"], "otdistill", "compile", "--config", "/in/config.yaml", "--output", "/out/p.yaml",
    )  # fmt: skip
    text = (tmp_path / "p.yaml").read_text()
    assert "otdistill.steps" in text and "ghcr.io/otdistill/otdistill-cuda:0.1.0" in text


def test_mlflow_image_has_the_server_drivers(built_images: dict[str, str]) -> None:
    code = "import mlflow, psycopg, boto3; print(mlflow.__version__)"
    out = run(built_images["mlflow"], "python", "-c", code)
    assert out.strip() == "3.17.2"
