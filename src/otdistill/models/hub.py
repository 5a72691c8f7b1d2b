"""Hugging Face hub sources: pinned revisions only, and only the files a safe load needs.

A hub id without a revision is refused: a branch moves, and a run must be reproducible. The download is
restricted to config, tokenizer and safetensors files (never pickled ``*.bin`` weights, never Python code
unless trust_remote_code is on), and the commit sha the revision resolved to is recorded.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from otdistill.models.spec import ModelSourceError

logger = logging.getLogger(__name__)

COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
SAFE_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]
HUB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def looks_like_hub_id(source: str) -> bool:
    """True for ``org/name`` ids (and not for paths that exist locally, checked by the caller)."""
    return bool(HUB_ID_RE.match(source))


def download_hub(
    repo_id: str, revision: str | None, cache_root: Path, gguf_file: str | None, trust_remote_code: bool
) -> tuple[Path, str]:
    """Download (or find in the cache) a pinned hub snapshot; return (snapshot dir, commit sha)."""
    if not revision:
        raise ModelSourceError(
            f"hub model {repo_id!r} has no revision: pin one (a commit sha, e.g. revision: <40 hex digits>) "
            "so that the run is reproducible"
        )
    if not COMMIT_RE.match(revision):
        logger.warning(
            "hub model %s is pinned to %r, which is not a commit sha and may move; the commit it resolves "
            "to is recorded",
            repo_id,
            revision,
        )
    from huggingface_hub import snapshot_download

    patterns = [gguf_file] if gguf_file else list(SAFE_PATTERNS)
    if trust_remote_code:
        patterns.append("*.py")
    path = Path(
        snapshot_download(
            repo_id=repo_id, revision=revision, allow_patterns=patterns, cache_dir=str(cache_root / "hub")
        )
    )
    # The hub cache layout is <repo>/snapshots/<commit sha>/...
    commit = path.name
    if not COMMIT_RE.match(commit):
        raise ModelSourceError(f"could not determine the commit of {repo_id}@{revision} (got {path})")
    return path, commit
