"""The light client: `pip install otdistill[client]` validates, compiles and submits with no training stack.

Two checks. A fast one in this environment: importing the CLI, the config and the compile / submit path
loads none of the heavy modules (the packages' exports are lazy, `otdistill.lazy`). And the real one: a
fresh virtual environment (no system site-packages) with only the `client` extra installed from the package
index this machine uses (pip's own cache makes reruns fast), where a shipped config validates, compiles to
the same pipeline YAML as here, a submit dry-run works, `run` says which extra it needs, and torch,
transformers, mlflow, datasets and peft are not importable.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from otdistill.config import load_config
from otdistill.pipelines.submit import compile_pipeline
from tests.infra.manifest_tools import REPO

# What the client never installs; the first five are the issue's, the rest their heavy companions.
HEAVY = (
    *("torch", "transformers", "mlflow", "datasets", "peft"),
    *("accelerate", "safetensors", "tokenizers", "huggingface_hub", "numpy", "pandas", "pyarrow"),
    *("boto3", "rouge_score", "nltk", "matplotlib"),
)
NOT_IMPORTABLE = HEAVY[:5]
# What the client's console script and compile / submit path import.
CLIENT_MODULES = (
    "otdistill.cli",
    "otdistill.config",
    "otdistill.pipelines.submit",
    "otdistill.pipelines.otdistill_pipeline",
    "otdistill.pipelines.cluster",
)
# The installable product (as docker/Dockerfile.cpu copies it): pyproject's build reads all of these.
PRODUCT = ("pyproject.toml", "README.md", "constraints.txt", "requirements.txt", "requirements-client.txt",
           "requirements-dev.txt", "src", "components", "pipelines")  # fmt: skip
PAPER_CONFIG = REPO / "configs" / "paper" / "opt-350m-dialogsum.yaml"


def _loaded_heavy(python: str | Path, modules: tuple[str, ...]) -> list[str]:
    code = (
        "import importlib, json, sys\n"
        f"for name in {list(modules)!r}: importlib.import_module(name)\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r})))\n"
    )
    proc = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return list(json.loads(proc.stdout.strip().splitlines()[-1]))


def test_the_client_import_path_loads_no_heavy_module() -> None:
    assert _loaded_heavy(sys.executable, CLIENT_MODULES) == []


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with `<product>[client]` installed (non-editable, from a copy: nothing is built in the
    checkout). pip runs from this environment with `--python` (the venv itself gets no pip)."""
    root = tmp_path_factory.mktemp("light-client")
    product = root / "otdistill"
    product.mkdir()
    for name in PRODUCT:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, product / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(src, product / name)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-compile",
         "-c", str(product / "constraints.txt"), f"{product}[client]"],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return venv


def _otdistill(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(
        [str(venv / "bin" / "otdistill"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env=env,
    )


def test_the_client_extra_validates_compiles_and_submits_without_the_stack(
    client_venv: Path, tmp_path: Path
) -> None:
    python = client_venv / "bin" / "python"
    probe = (
        "import importlib.util, json\n"
        f"print(json.dumps([m for m in {list(NOT_IMPORTABLE)!r} if importlib.util.find_spec(m) is not None]))"
    )
    found = subprocess.run(
        [str(python), "-c", probe], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout) == [], "the client venv has the training stack"

    validated = _otdistill(client_venv, "validate", "--config", str(PAPER_CONFIG), cwd=tmp_path)
    assert validated.returncode == 0, validated.stderr[-3000:]
    assert "ok (strict load, compile, cluster images)" in validated.stdout

    compiled = _otdistill(
        client_venv, "compile", "--config", str(PAPER_CONFIG), "-o", "client.yaml", cwd=tmp_path
    )
    assert compiled.returncode == 0, compiled.stderr[-3000:]
    here = compile_pipeline(load_config(PAPER_CONFIG), tmp_path / "full.yaml")
    assert (tmp_path / "client.yaml").read_text() == here.read_text(), "the client compiles another pipeline"

    dry = _otdistill(client_venv, "submit", "--config", str(PAPER_CONFIG), "--host", "http://kfp.invalid",
                     "--dry-run", cwd=tmp_path)  # fmt: skip
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert "nothing was contacted" in dry.stdout

    # A command that needs the stack fails with the extra to install, not a traceback.
    run = _otdistill(client_venv, "run", "--config", str(REPO / "configs" / "tiny.yaml"), cwd=tmp_path)
    assert run.returncode == 1
    assert "pip install 'otdistill[all]'" in run.stderr and "Traceback" not in run.stderr
