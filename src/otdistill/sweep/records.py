"""A sweep's row records as files, so a table can be rebuilt, and built from rows of several runs.

Every aggregation writes the records it read (`records/<row>.json`, the teacher's as `teacher.json`) next
to its table and on the parent MLflow run. `read_record_dirs` reads such folders back, from one run or
from several: a long sweep can then be finished on machines that do not share a step cache, a few rows
per run, and tabled once (`otdistill sweep --records DIR ... --out DIR`).

Rows of two runs belong in one table only if they were trained under one trunk: the same data, the same
teacher after its SFT, the same teacher cache. The teacher's record is the witness. Every sweep scores its
own teacher on the validation rows, and two teachers that score every row identically were trained
identically (training is deterministic on one platform and thread count). So folders are read together
only when their teachers' records agree row for row. A row found in two folders must agree too: a row run
twice is a determinism check, and a disagreement is an error naming the row.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from otdistill.sweep.aggregate import SweepRecordError
from otdistill.sweep.config import TEACHER

RECORDS_DIR = "records"


def write_records(
    records: Sequence[Mapping[str, Any]], teacher: Mapping[str, Any] | None, out_dir: Path
) -> Path:
    """`out_dir/records/<row>.json` for every row, `teacher.json` for the teacher's; returns the folder.
    Records leave the machine (committed with results, tabled elsewhere), so paths under the working
    directory (the models' provenance: `runs/...`) are written relative to it."""
    folder = out_dir / RECORDS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    here = f"{Path.cwd()}/"
    for record in [*records, *([teacher] if teacher else [])]:
        name = TEACHER if record is teacher else str(record["row"])  # one teacher per folder
        text = json.dumps(_relative(record, here), indent=2, sort_keys=True)
        (folder / f"{name}.json").write_text(text, encoding="utf-8")
    return folder


def _relative(value: Any, prefix: str) -> Any:
    """`value` with every string that starts with `prefix` (a directory, with its slash) cut after it."""
    if isinstance(value, str):
        return value.removeprefix(prefix)
    if isinstance(value, Mapping):
        return {k: _relative(v, prefix) for k, v in value.items()}
    if isinstance(value, list):
        return [_relative(v, prefix) for v in value]
    return value


def _scores(record: Mapping[str, Any]) -> dict[str, Any]:
    """What two copies of one row must share: each split's means and per-row scores (not the registered
    version, which each run's registry numbers on its own)."""
    return {
        split: {"models": s.get("models"), "row_scores": s.get("row_scores")}
        for split, s in record["splits"].items()
    }


def _difference(a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
    """Where two records' scores differ, for the error (a split, a count of rows, the first row id), and
    what their training recorded differently (`trained_with`: torch, threads, CPU kernels), if anything."""
    where = _scores_difference(a, b)
    ta, tb = a.get("trained_with") or {}, b.get("trained_with") or {}
    other = [f"{k} {ta.get(k)} against {tb.get(k)}" for k in sorted({*ta, *tb}) if ta.get(k) != tb.get(k)]
    return f"{where}; trained with {', '.join(other)}" if other else where


def _scores_difference(a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
    sa, sb = _scores(a), _scores(b)
    if sorted(sa) != sorted(sb):
        return f"scored on {sorted(sa)} against {sorted(sb)}"
    for split in sa:
        ta: dict[str, Any] = next(iter((sa[split]["row_scores"] or {}).values()), {})
        tb: dict[str, Any] = next(iter((sb[split]["row_scores"] or {}).values()), {})
        if sorted(ta) != sorted(tb):
            return f"{split}: other example ids ({len(ta)} against {len(tb)} rows)"
        differ = [i for i in ta if ta[i] != tb[i]]
        if differ:
            return f"{split}: {len(differ)} of {len(ta)} rows differ (first: {differ[0]})"
        if sa[split]["models"] != sb[split]["models"]:
            return f"{split}: the means differ"
    return "nothing"


def _read(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SweepRecordError(f"{path}: not a row record (invalid JSON: {exc})") from None
    if not isinstance(record, dict):
        raise SweepRecordError(f"{path}: not a row record (a JSON {type(record).__name__}, not an object)")
    if missing := [k for k in ("row", "variant", "seed", "sft", "splits") if k not in record]:
        raise SweepRecordError(f"{path}: not a row record (missing {', '.join(missing)})")
    return dict(record)


def read_record_dirs(dirs: Sequence[Path]) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The rows and the teacher's record of `dirs` (each a `records/` folder, or a folder holding one).

    Raises `SweepRecordError` when the folders' teachers differ, when one row has different scores in two
    folders, or when a folder holds no record."""
    seen: dict[str, tuple[Path, dict[str, Any]]] = {}  # row name (the teacher's: TEACHER) -> first copy
    for given in dirs:
        folder = given / RECORDS_DIR if (given / RECORDS_DIR).is_dir() else given
        paths = sorted(folder.glob("*.json"))
        if not paths:
            raise SweepRecordError(f"{given}: no row records here (expected <row>.json or {RECORDS_DIR}/)")
        for path in paths:
            record = _read(path)
            name = TEACHER if str(record["variant"]) == TEACHER else str(record["row"])
            if name in seen and _scores(seen[name][1]) != _scores(record):
                first, how = seen[name][0], _difference(seen[name][1], record)
                raise SweepRecordError(
                    f"{first} and {path}: the runs trained different teachers ({how}); their rows do not "
                    "make one table"
                    if name == TEACHER
                    else f"row {name} is in {first} and {path} with different scores ({how}): the two runs "
                    "did not train it alike"
                )
            seen.setdefault(name, (path, record))
    teacher = seen.pop(TEACHER, None)
    if teacher is None and len(dirs) > 1:
        raise SweepRecordError(
            f"{', '.join(map(str, dirs))}: no teacher record ({TEACHER}.json) to show the runs share a trunk"
        )
    return [record for _, record in seen.values()], teacher[1] if teacher else None
