"""Lineage tags, code/image provenance, param flattening and the pinned pip requirements of a student."""

from __future__ import annotations

import importlib.metadata

import pytest

from otdistill import __version__
from otdistill.tracking import (
    Lineage,
    code_version,
    container_image,
    flatten_params,
    student_pip_requirements,
)
from otdistill.tracking.runs import MAX_PARAM_CHARS

FIELDS = {
    "data_hash": "sha256:00",
    "teacher_id": "google/gemma-3-270m",
    "teacher_revision": "abc",
    "student_id": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "student_revision": "def",
    "loss": "multilevelot",
}


def test_lineage_tags_carry_every_field_and_git_commit() -> None:
    sha = "a" * 40
    tags = Lineage(**FIELDS, code_version=sha, container_image="reg/otdistill-cuda:1").as_tags()
    assert tags["otdistill.lineage.teacher_revision"] == "abc"
    assert tags["otdistill.lineage.container_image"] == "reg/otdistill-cuda:1"
    assert tags["mlflow.source.git.commit"] == sha
    assert len([k for k in tags if k.startswith("otdistill.lineage.")]) == 8
    # A package version is recorded, but not passed off as a git commit.
    assert "mlflow.source.git.commit" not in Lineage(**FIELDS, code_version="otdistill==0.1.0").as_tags()


def test_lineage_rejects_empty_fields() -> None:
    with pytest.raises(ValueError, match="teacher_revision"):
        Lineage(**{**FIELDS, "teacher_revision": " "})


def test_code_version_and_image_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTDISTILL_GIT_SHA", "b" * 40)
    monkeypatch.setenv("OTDISTILL_CONTAINER_IMAGE", "ghcr.io/acme/otdistill-cpu:0.1.0")
    assert code_version() == "b" * 40
    assert container_image() == "ghcr.io/acme/otdistill-cpu:0.1.0"
    monkeypatch.delenv("OTDISTILL_GIT_SHA")
    monkeypatch.delenv("OTDISTILL_CONTAINER_IMAGE")
    found = code_version()
    assert len(found) == 40 or found == f"otdistill=={__version__}"
    assert container_image() == "local"


def test_flatten_params_nests_stringifies_and_caps() -> None:
    nested = {"train": {"lr": 1e-4, "opt": {"name": "adamw"}}, "tags": ["a", "b"], "x": "y" * 9000}
    flat = flatten_params(nested)
    assert flat["train.lr"] == "0.0001"
    assert flat["train.opt.name"] == "adamw"
    assert flat["tags"] == '["a", "b"]'
    assert len(flat["x"]) == MAX_PARAM_CHARS and flat["x"].endswith("...")


def test_student_pip_requirements_pin_installed_versions_without_local_suffix() -> None:
    reqs = student_pip_requirements()
    torch_version = importlib.metadata.version("torch").split("+")[0]
    assert f"torch=={torch_version}" in reqs
    assert f"transformers=={importlib.metadata.version('transformers')}" in reqs
    assert all("==" in r and "+" not in r for r in reqs)
    with pytest.raises(Exception, match="not installed"):
        student_pip_requirements(["definitely-not-an-installed-package-xyz"])
