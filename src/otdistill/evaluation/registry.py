"""Resolve an MLflow model-registry URI (``models:/name@alias``, ``models:/name/3``) to a local HF directory.

A scheduled run re-scores "the current champion": the alias is resolved to a model version once, at the
start, and that exact version is downloaded and recorded, so the run is reproducible even if the alias
moves while it runs. Students are logged by `otdistill.tracking.log_student_model` as MLflow pyfunc models
(`otdistill.tracking.serving.StudentModel`) whose Hugging Face directory (config, safetensors, tokenizer) is
the pyfunc artifact `HF_ARTIFACT`; `hf_dir_of` finds it through the MLmodel, and it is what
`otdistill.models.load_model` / `load_tokenizer` expect. Versions logged before that, with
``mlflow.transformers.log_model``, keep the weights in ``model/`` (the ``model_binary`` of the
``transformers`` flavour) and the tokenizer in ``components/tokenizer/``; `assemble_hf_dir` merges the two.
Such a version logged with ``save_pretrained=False`` holds only a reference to a hub model; it is resolved
through `otdistill.models.resolve_model` with the pinned hub revision recorded in the MLmodel.

Downloads are cached per (registry URI, model name, version): a registered version never changes.

The directories an MLmodel names (``model_binary``, the pyfunc artifact's ``path``) are written by whoever
can log to the registry: each is confined to the download (`otdistill.safe_paths.confined`), so an absolute
path or ``../`` raises `UnsafePathError` before anything is moved into the cache.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from otdistill.models import (
    ModelSourceError,
    ModelSpec,
    ResolvedModel,
    default_cache_dir,
    publish_once,
    resolve_model,
)
from otdistill.safe_paths import confined

logger = logging.getLogger(__name__)

_URI_RE = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


@dataclass(frozen=True)
class RegistryRef:
    """A parsed ``models:/`` URI: registered model name and either an alias or a version number."""

    name: str
    alias: str | None = None
    version: str | None = None


def redact_uri(uri: str) -> str:
    """`uri` with any ``user:password@`` part replaced, for logs and records (a DB URI may carry them)."""
    return re.sub(r"//[^/@]*@", "//***@", uri)


def is_registry_uri(ref: str) -> bool:
    return ref.strip().startswith("models:/")


def parse_registry_uri(uri: str) -> RegistryRef:
    """Split ``models:/name@alias`` or ``models:/name/<version>``; anything else is an error saying so."""
    match = _URI_RE.match(uri.strip())
    if match is None:
        raise ModelSourceError(
            f"{uri!r} is not a registered-model URI; use models:/<name>@<alias> or models:/<name>/<version>"
        )
    return RegistryRef(match["name"], match["alias"], match["version"])


#: The pyfunc artifact of a logged student that holds its Hugging Face directory.
HF_ARTIFACT = "hf"


def _flavors(root: Path) -> dict[str, Any]:
    mlmodel = root / "MLmodel"
    if not mlmodel.is_file():
        return {}
    return dict((yaml.safe_load(mlmodel.read_text()) or {}).get("flavors") or {})


def hf_dir_of(root: Path, source: str) -> Path:
    """The directory of a downloaded MLflow model (`root`) that holds config.json and the safetensors: the
    student's `HF_ARTIFACT`, else a transformers flavour's ``model_binary``, else a search."""
    flavors = _flavors(root)
    artifacts = (flavors.get("python_function") or {}).get("artifacts") or {}
    for named in (
        (artifacts.get(HF_ARTIFACT) or {}).get("path"),
        (flavors.get("transformers") or {}).get("model_binary"),
    ):
        if named and (confined(root, str(named)) / "config.json").is_file():
            return confined(root, str(named))
    candidates = sorted(p.parent for p in root.rglob("config.json") if any(p.parent.glob("*.safetensors")))
    if not candidates:
        raise ModelSourceError(f"{source}: no directory with config.json and *.safetensors in its artifacts")
    return candidates[0]


def _hub_reference(root: Path) -> tuple[str, str | None] | None:
    flavor: dict[str, Any] = _flavors(root).get("transformers") or {}
    if flavor.get("model_binary") and confined(root, str(flavor["model_binary"])).exists():
        return None
    name = flavor.get("source_model_name")
    return (str(name), flavor.get("source_model_revision")) if name else None


def assemble_hf_dir(download: Path, target: Path, source: str) -> None:
    """Move the Hugging Face directory of a downloaded logged student (`hf_dir_of`) to `target`, with the
    tokenizer files of a transformers-flavour version merged in, and a copy of the MLmodel."""
    hf = hf_dir_of(download, source)
    shutil.move(str(hf), str(target))
    tokenizer_dir = download / "components" / "tokenizer"
    if tokenizer_dir.is_dir():
        for item in tokenizer_dir.iterdir():
            if not (target / item.name).exists():
                shutil.move(str(item), str(target / item.name))
    if (download / "MLmodel").is_file():
        shutil.copy2(download / "MLmodel", target / "MLmodel")


def resolve_registered_model(
    uri: str, cache_dir: str | Path | None = None
) -> tuple[ResolvedModel, dict[str, str]]:
    """Download the model version `uri` points at; return it as a `ResolvedModel` and its registry facts.

    Uses the current MLflow registry (``mlflow.get_registry_uri()``: env ``MLFLOW_REGISTRY_URI`` or the
    tracking URI). The facts (name, version, alias, run id, registry) belong in the run's record.
    """
    import mlflow

    from otdistill.tracking.connection import tracking_client

    ref = parse_registry_uri(uri)
    client = tracking_client()
    try:
        if ref.alias is not None:
            mv = client.get_model_version_by_alias(ref.name, ref.alias)
        else:
            mv = client.get_model_version(ref.name, str(ref.version))
    except mlflow.exceptions.MlflowException as exc:
        raise ModelSourceError(
            f"{uri}: cannot resolve it in the registry {redact_uri(mlflow.get_registry_uri())!r}: {exc}"
        ) from exc
    version = str(mv.version)
    registry = mlflow.get_registry_uri()
    facts = {
        "registered_model": ref.name,
        "registered_version": version,
        "registered_alias": ref.alias or "",
        "registered_run_id": str(mv.run_id or ""),
        "registry_uri": redact_uri(registry),  # never record credentials in a URI
    }
    key = hashlib.sha256(f"{registry}\n{ref.name}\n{version}".encode()).hexdigest()[:16]
    cache_root = default_cache_dir(cache_dir)
    target = cache_root / "mlflow-registry" / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', ref.name)}-v{version}-{key}"
    pinned = f"models:/{ref.name}/{version}"

    def build(tmp: Path) -> None:
        download = tmp / "download"
        mlflow.artifacts.download_artifacts(artifact_uri=pinned, dst_path=str(download))
        hub = _hub_reference(download)
        if hub is not None:  # weights not saved with the version: keep only its MLmodel as the reference
            shutil.copy2(download / "MLmodel", tmp / "MLmodel")
        else:
            assemble_hf_dir(download, tmp / "hf", uri)
        shutil.rmtree(download)

    logger.info("resolving %s -> %s (version %s)", uri, pinned, version)
    publish_once(target, build, {"source": pinned, **facts})
    if not (target / "hf").is_dir():
        hub = _hub_reference(target)
        if hub is None:
            raise ModelSourceError(f"{uri}: version {version} has neither saved weights nor a hub reference")
        resolved = resolve_model(ModelSpec(source=hub[0], revision=hub[1]), cache_dir=cache_dir)
        return replace(resolved, source=uri), {**facts, "hub_model": hub[0], "hub_revision": str(hub[1])}
    resolved = resolve_model(ModelSpec(source=str(target / "hf")), cache_dir=cache_dir)
    return replace(resolved, source=uri), facts
