"""The fingerprint of a step's resumable state: what its checkpoints were computed from.

A checkpoint (a Trainer checkpoint, a half-built teacher cache) may only be resumed by a step that would
compute the same thing: the same config section, the same data, the same base model(s). One string says
that, in three readable parts, so that a refusal can say which part differs:

    config=<16 hex>,data=<16 hex>,models=<16 hex>

- config: sha256 of the step's config section (`RunConfig.section_json(step)`), without the settings that
  do not change what is computed (where checkpoints and logs go, progress bars, tracking);
- data: the training split's content hash (`DataReport.content_sha256` of the `prepare_data` snapshot),
  combined with the validation split's for a training step that validates (`combined_data_hash`);
- models: sha256 of each model's `source@revision` by role (the base model trained, and for distillation
  the teacher's revision, a content hash).

Light on purpose (no ML imports): the training library, the steps and the teacher cache all use it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PARTS = ("config", "data", "models")
# TrainConfig fields (and whole sections) that change where things go or what is shown, not what is computed.
IGNORED_KEYS = frozenset(
    {
        "output_dir",
        "checkpoint_uri",
        "s3_endpoint_url",
        "checkpoint_fingerprint",
        "resume",
        "save_total_limit",
        "logging_steps",
        "progress_bar",
    }
)
IGNORED_SECTIONS = frozenset({"tracking"})
DATA_REPORT = "data_report.json"


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _output_relevant(section: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in section.items():
        if name in IGNORED_SECTIONS:
            continue
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in IGNORED_KEYS}
        out[name] = value
    return out


def fingerprint(section_json: str, data_sha256: str, models: Mapping[str, str]) -> str:
    """The fingerprint of a step run on `section_json` (its config sections), data and models.

    models: role -> identity ("source@revision", see `model_identity`).
    """
    section = _output_relevant(json.loads(section_json))
    parts = {
        "config": _sha256_text(json.dumps(section, sort_keys=True)),
        "data": data_sha256 or _sha256_text(""),
        "models": _sha256_text(json.dumps(dict(models), sort_keys=True)),
    }
    return ",".join(f"{name}={parts[name][:16]}" for name in PARTS)


def model_identity(source: str, revision: str) -> str:
    """How a model enters a fingerprint: where it came from and its revision (commit or content hash)."""
    return f"{source}@{revision}"


def parse(value: str | None) -> dict[str, str]:
    """`config=..,data=..,models=..` -> its parts (empty for None or a string of another shape)."""
    parts: dict[str, str] = {}
    for item in (value or "").split(","):
        name, sep, digest = item.partition("=")
        if sep:
            parts[name.strip()] = digest.strip()
    return parts


def differences(ours: str | None, theirs: str | None) -> list[str]:
    """The parts (config, data, models) in which two fingerprints differ; all of them for a missing one."""
    a, b = parse(ours), parse(theirs)
    return [name for name in PARTS if not a.get(name) or a.get(name) != b.get(name)]


def short(value: str | None) -> str:
    """A 12-hex name for a fingerprint (directory names); "none" for a checkpoint that records none."""
    return _sha256_text(value)[:12] if value else "none"


def combined_data_hash(*hashes: str) -> str:
    """One data hash for several splits, in order (training, then validation)."""
    return _sha256_text("\n".join(hashes))


def snapshot_data_hash(snapshot_dir: str | Path) -> str:
    """The data hash of a `prepare_data` snapshot: its report's content hash, else its files' sha256."""
    root = Path(snapshot_dir)
    report = root / DATA_REPORT
    if report.is_file():
        content = json.loads(report.read_text(encoding="utf-8")).get("content_sha256")
        if content:
            return str(content)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode("utf-8") + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()
