"""Before a rebuild starts: can everything the original run recorded still be had, unchanged?

A rebuild that silently trains on other data or another model revision would "reproduce" something else.
So every input is checked against the record first, and the first that fails stops the command with a
`ReproduceError` naming it:

* a local path (data source, model directory, GGUF file) that no longer exists;
* a model whose revision is gone or changed: each source is resolved as the pipeline resolves it
  (`otdistill.models.resolve_model`, a hub model at its pinned commit) and its revision (hub commit, or
  sha256 of the content) compared with the lineage tag;
* a data source whose content hash differs: both splits are read and tokenised exactly as `prepare_data`
  does (`load_paired`), and the content hash (`otdistill.data.hashing`) compared with the recorded one
  (with the teacher's answers as targets, the gold training split's: the rebuild answers it again).

A part the user changed on purpose with `--set` (any `teacher.*`, `student.*`, `data.*` or `validation.*`
key) is not held to the record: that is a deviation, recorded as such on the new run.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from otdistill.config import RunConfig
from otdistill.reproduce_record import VALIDATION_HASH_TAG, Original, ReproduceError

log = logging.getLogger("otdistill.reproduce")


def _is_local_path(source: str) -> bool:
    source = source.strip()
    return not source.startswith(("pypi:", "s3://")) and (
        source.startswith(("/", ".", "~")) or Path(source).suffix == ".gguf"
    )


def _check_model(cfg: RunConfig, role: str, recorded: str) -> Any:
    """Resolve the `role` model; refuse a missing path, a gone revision or other content."""
    from otdistill.models import ModelSourceError, resolve_model

    spec = getattr(cfg, role)
    if _is_local_path(spec.source) and not Path(spec.source).expanduser().exists():
        raise ReproduceError(f"{role}: the local path {spec.source} recorded as its source does not exist")
    try:
        resolved = resolve_model(spec)
    except ModelSourceError as exc:
        at = f" at revision {spec.revision}" if spec.revision else ""
        raise ReproduceError(f"{role}: {spec.source}{at} can no longer be had: {exc}") from None
    if recorded and recorded != "unknown" and resolved.revision != recorded:
        raise ReproduceError(
            f"{role}: the revision recorded for {spec.source} is gone: the run used {recorded}, "
            f"the source now resolves to {resolved.revision}"
        )
    if not recorded or recorded == "unknown":
        log.warning("%s: no revision was recorded for %s; cannot check it", role, spec.source)
    return resolved


def _check_split(cfg: RunConfig, split: str, recorded: str, t_tok: Any, s_tok: Any) -> None:
    from otdistill.data import load_paired
    from otdistill.data.errors import DataSourceError
    from otdistill.data.sources import source_kind
    from otdistill.steps.prepare_data import split_config

    data = split_config(cfg, split)
    if source_kind(data.source) == "local" and not Path(data.source).expanduser().exists():
        raise ReproduceError(f"data: the local path {data.source} recorded as the data source does not exist")
    try:
        paired = load_paired(data, t_tok, s_tok, progress=False)
    except (OSError, ValueError, DataSourceError) as exc:
        raise ReproduceError(f"data: {data.source} ({split} split) can no longer be read: {exc}") from None
    actual = paired.report.content_sha256
    if actual != recorded:
        raise ReproduceError(
            f"data hash mismatch: the {split} split of {data.source} now has content sha256 {actual}, "
            f"the run recorded {recorded}; the data changed since (restore it, or pass --set data.* "
            "to rebuild on other data as a recorded deviation)"
        )


def _overridden(deviations: Iterable[str], *sections: str) -> bool:
    return any(key.split(".")[0] in sections for key in deviations)


def check_available(original: Original, cfg: RunConfig, deviations: Iterable[str] = ()) -> list[str]:
    """Raise `ReproduceError` for the first recorded input that can no longer be had; returns what was
    checked (one line each) for the command to print."""
    from otdistill.models import load_tokenizer

    keys = list(deviations)
    lineage = original.lineage
    checked: list[str] = []
    resolved = {}
    for role in ("teacher", "student"):
        recorded = "" if _overridden(keys, role) else lineage.get(f"{role}_revision", "")
        resolved[role] = _check_model(cfg, role, recorded)
        checked.append(f"{role}: {resolved[role].source} at {resolved[role].revision}")
    if _overridden(keys, "data", "validation"):
        checked.append("data: overridden with --set, not held to the recorded hash")
        return checked
    from otdistill.steps.prepare_data import GOLD_HASH_TAG

    t_tok, s_tok = load_tokenizer(resolved["teacher"]), load_tokenizer(resolved["student"])
    hashes = {
        # the lineage holds the hash of what the students trained on: the teacher's answers, if so
        "train": original.parent_tags.get(GOLD_HASH_TAG, "")
        if cfg.targets.from_teacher
        else lineage.get("data_hash", ""),
        "validation": original.parent_tags.get(VALIDATION_HASH_TAG, ""),
    }
    for split, recorded in hashes.items():
        if not recorded:
            checked.append(f"data ({split}): no hash recorded; not checked")
            continue
        _check_split(cfg, split, recorded, t_tok, s_tok)
        checked.append(f"data ({split}): content sha256 {recorded} as recorded")
    return checked
