"""The sweep's table: per variant and split, the seeds' scores, and the paired difference against the SFT
row with its bootstrap interval (`otdistill.stats.compare_rows`, seeds averaged per row), and every
distilled row against every other (does MultiLevelOT beat ULD, not only SFT?), as Markdown,
CSV, a per-row CSV of the paired differences, JSON and a plot; `log_summary` writes them to the parent
MLflow run. Reads the row records of `otdistill.sweep.steps` (nothing here loads a model).

The teacher after its SFT is scored on the same rows (its record has `"teacher": true`) and compared with
the SFT student like any row: that difference is the pilot of issue 17. Distillation can only help a student
whose teacher is clearly stronger, so the table says whether the teacher beats the SFT student by at least
`PILOT_GAP` (5 points), before anyone reads the distilled rows.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from otdistill.stats import Comparison, better_by, compare_rows, metric_column, strictly_above
from otdistill.sweep.config import TEACHER
from otdistill.tracking.metric_names import sweep_metric
from otdistill.training.determinism import PLATFORM_KEYS

ARTIFACT_DIR = "sweep"
SPLITS = ("validation", "test")
PILOT_GAP = 0.05  # the teacher must beat the SFT student by this much (metric units: 5 points x100)


class SweepRecordError(ValueError):
    """The rows handed to the aggregation do not make one table (a missing split, a duplicate seed)."""


@dataclass
class VariantSplit:
    """One variant on one split: per-seed means, the seed-averaged per-row scores, the comparison."""

    variant: str
    sft: bool
    split: str
    seeds: list[int] = field(default_factory=list)
    seed_means: list[float] = field(default_factory=list)
    seed_rows: list[dict[str, float]] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    comparison: Comparison | None = None
    # a distilled row against SFT with seeds resampled too (seeds both have, >= 2): training randomness
    seed_comparison: Comparison | None = None
    teacher: bool = False  # the teacher, scored on the same rows (not a student)
    shots: int = 0  # the teacher's few-shot examples when it was scored prompted (the authors' recipe)

    @property
    def name(self) -> str:
        """The row's name in the table: the variant, or how the teacher was scored."""
        if not self.teacher:
            return self.variant
        return f"{self.variant} ({self.prompting}; not a student)"

    @property
    def prompting(self) -> str:
        """How the teacher answered: tuned on the task, or prompted with the shots it gave targets with."""
        return f"prompted {self.shots}-shot" if self.shots else "after SFT"

    @property
    def distilled(self) -> bool:
        """A distilled student's row: neither the SFT reference nor the teacher."""
        return not self.sft and not self.teacher

    @property
    def mean(self) -> float:
        return statistics.fmean(self.seed_means)

    def by_seed(self) -> dict[int, float]:
        """Seed -> the row's mean score at that seed."""
        return dict(zip(self.seeds, self.seed_means, strict=True))

    def seed_rows_at(self, seeds: Sequence[int]) -> list[dict[str, float]]:
        """The per-row scores of `seeds`, in that order (paired with another row's same seeds)."""
        return [self.seed_rows[self.seeds.index(s)] for s in seeds]

    @property
    def std(self) -> float:
        return statistics.stdev(self.seed_means) if len(self.seed_means) > 1 else 0.0

    def per_row(self) -> dict[str, float]:
        """Example id -> the row's score averaged over seeds."""
        return {i: math.fsum(s[i] for s in self.seed_rows) / len(self.seed_rows) for i in self.seed_rows[0]}


@dataclass(frozen=True)
class Pair:
    """One distilled row against an earlier one on a split (`row - other`): seeds averaged per row, and,
    when the two share at least 2 seeds, with seeds resampled too (training randomness in the interval)."""

    row: str
    other: str
    comparison: Comparison
    seed_comparison: Comparison | None = None
    per_seed: dict[int, float] = field(default_factory=dict)  # seed -> row mean - other mean (shared seeds)


@dataclass
class SweepSummary:
    metric: str
    confidence: float
    cells: dict[str, list[VariantSplit]]  # split -> variants in config order, the SFT row first
    rows: dict[str, int]  # split -> evaluation rows
    # variant -> term -> its share of the training objective, averaged over the variant's seeds (the
    # records' `objective`, `otdistill.training.shares`); variants trained without recorded weights: none
    shares: dict[str, dict[str, float]] = field(default_factory=dict)
    # split -> every distilled row against every earlier one in config order
    pairs: dict[str, list[Pair]] = field(default_factory=dict)
    greater_is_better: bool = True  # the metric's direction: every difference is "better by", as compared
    # platform field (`PLATFORM_KEYS`) -> value -> the rows trained with it, for the fields on which the
    # rows differ (records tabled from runs on two machines); a row that did not record a field is left out
    platforms: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    def comparisons(self) -> dict[str, dict[str, dict[str, object]]]:
        """split -> variant -> the comparison against SFT (as_dict), for JSON and metrics."""
        return {
            split: {c.variant: c.comparison.as_dict() for c in cells if c.comparison is not None}
            for split, cells in self.cells.items()
        }

    def pairwise(self) -> dict[str, dict[str, dict[str, object]]]:
        """split -> "<row> vs <other>" -> the comparison between two distilled rows (as_dict), with
        `seeds_resampled` (as_dict) when they share at least 2 seeds."""
        return {
            split: {
                f"{p.row} vs {p.other}": {
                    **p.comparison.as_dict(),
                    **({"seeds_resampled": p.seed_comparison.as_dict()} if p.seed_comparison else {}),
                }
                for p in pairs
            }
            for split, pairs in self.pairs.items()
        }

    def sft_cell(self, split: str) -> VariantSplit:
        """The SFT row on `split`: the reference of every comparison."""
        return next(c for c in self.cells[split] if c.sft)

    def pilot(self, split: str) -> tuple[VariantSplit, VariantSplit] | None:
        """(teacher, SFT row) on `split`, when the teacher was scored."""
        teacher = next((c for c in self.cells[split] if c.teacher), None)
        return (teacher, self.sft_cell(split)) if teacher is not None else None


def summarize(
    records: Sequence[Mapping[str, Any]],
    metric: str,
    *,
    greater_is_better: bool = True,
    confidence: float = 0.95,
    resamples: int = 10_000,
    seed: int = 0,
    teacher: Mapping[str, Any] | None = None,
) -> SweepSummary:
    """Group the row records by split and variant; compare every variant with the SFT row (paired
    bootstrap over the split's rows, each side's seeds averaged per row). `teacher`: the teacher's record
    (`evaluate_student` of the trained teacher), listed first and compared with the SFT row the same way."""
    if not records:
        raise SweepRecordError("no sweep rows to aggregate")
    if any(str(r["variant"]) == TEACHER for r in records):
        raise SweepRecordError(f"a sweep row may not be named {TEACHER!r}: the teacher's row is")
    records = [*records, {**teacher, "variant": TEACHER, "teacher": True}] if teacher else list(records)
    splits = [s for s in SPLITS if s in records[0]["splits"]]
    for r in records:
        if [s for s in SPLITS if s in r["splits"]] != splits:
            raise SweepRecordError(f"row {r['row']} was scored on {sorted(r['splits'])}, another on {splits}")
    sft_names = {str(r["variant"]) for r in records if r["sft"]}
    if len(sft_names) != 1:
        raise SweepRecordError(f"expected the rows of one SFT variant, got {sorted(sft_names) or 'none'}")
    order = sorted(
        {str(r["variant"]) for r in records},
        key=lambda v: (v != TEACHER, v not in sft_names, _first(records, v)),
    )
    cells: dict[str, list[VariantSplit]] = {}
    rows: dict[str, int] = {}
    pairs: dict[str, list[Pair]] = {}
    for split in splits:
        by_variant = {v: VariantSplit(v, v in sft_names, split, teacher=v == TEACHER) for v in order}
        for r in sorted(records, key=lambda r: int(r["seed"])):
            cell = by_variant[str(r["variant"])]
            if int(r["seed"]) in cell.seeds:
                raise SweepRecordError(f"variant {cell.variant}: seed {r['seed']} occurs twice")
            scores = r["splits"][split]
            label = str(r["row"])
            table = scores["row_scores"][label]
            cell.seeds.append(int(r["seed"]))
            cell.shots = int(scores.get("shots", {}).get(label, 0))
            cell.seed_means.append(float(scores["models"][label][metric]))
            cell.seed_rows.append(metric_column(table, metric, where=f"row {label} ({split})"))
            if "registered" in r:
                cell.models.append(str(r["registered"]["uri"]))
        sft = by_variant[next(iter(sft_names))]

        def compare(
            a: VariantSplit, b: VariantSplit, split: str = split, seeds: list[int] | None = None
        ) -> Comparison:
            """`a` against `b`, seeds averaged per row; or on `seeds` only, paired, resampled too."""
            return compare_rows(
                a.seed_rows if seeds is None else a.seed_rows_at(seeds),
                b.seed_rows if seeds is None else b.seed_rows_at(seeds),
                greater_is_better=greater_is_better,
                confidence=confidence,
                resamples=resamples,
                seed=seed,
                names=(f"{a.variant} ({split})", f"{b.variant} ({split})"),
                resample_seeds=seeds is not None,
            )

        def over_seeds(a: VariantSplit, b: VariantSplit) -> Comparison | None:
            """`a` against `b` with seeds resampled too, on the seeds both have (at least 2)."""
            shared = [s for s in a.seeds if s in b.seeds]
            return compare(a, b, seeds=shared) if len(shared) >= 2 else None

        for cell in by_variant.values():
            if not cell.sft:
                cell.comparison = compare(cell, sft)
            if cell.distilled:
                cell.seed_comparison = over_seeds(cell, sft)
        cells[split] = list(by_variant.values())
        rows[split] = len(sft.seed_rows[0])
        distilled = [c for c in cells[split] if c.distilled]
        pairs[split] = [
            Pair(a.variant, b.variant, compare(a, b), over_seeds(a, b), _seed_gaps(a, b, greater_is_better))
            for i, a in enumerate(distilled)
            for b in distilled[:i]
        ]
    return SweepSummary(
        metric=metric,
        confidence=confidence,
        cells=cells,
        rows=rows,
        shares=_shares(records, order),
        pairs=pairs,
        greater_is_better=greater_is_better,
        platforms=_platforms(records),
    )


def _platforms(records: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, list[str]]]:
    """`SweepSummary.platforms`: the platform fields of the records' `trained_with` that take more than one
    value, each value with its rows."""
    out: dict[str, dict[str, list[str]]] = {}
    for key in PLATFORM_KEYS:
        rows: dict[str, list[str]] = {}
        for r in records:
            value = (r.get("trained_with") or {}).get(key)
            if value is not None:
                rows.setdefault(str(value), []).append(str(r["row"]))
        if len(rows) > 1:
            out[key] = rows
    return out


def _seed_gaps(a: VariantSplit, b: VariantSplit, greater_is_better: bool) -> dict[int, float]:
    """Seed -> how much better `a`'s mean is than `b`'s at that seed, for the seeds both have (both rows of
    a seed saw the training rows in the same order)."""
    theirs = b.by_seed()
    return {
        s: better_by(m, theirs[s], greater_is_better=greater_is_better)
        for s, m in a.by_seed().items()
        if s in theirs
    }


def _shares(records: Sequence[Mapping[str, Any]], order: Sequence[str]) -> dict[str, dict[str, float]]:
    """Variant -> term -> mean share over the seeds whose record has one (students only)."""
    out: dict[str, dict[str, float]] = {}
    for variant in order:
        mine = [r["objective"] for r in records if r["variant"] == variant and r.get("objective")]
        if variant == TEACHER or not mine:
            continue
        terms = list(mine[0])
        out[variant] = {t: statistics.fmean(float(m.get(t, 0.0)) for m in mine) for t in terms}
    return out


def shares_markdown(summary: SweepSummary) -> str:
    """What each weighted term is of the training objective, per variant ("" when none was recorded):
    a term with a share of ~1% barely moves the gradient, whatever the paper says it does."""
    if not any(len(s) > 1 for s in summary.shares.values()):
        return ""
    from otdistill.losses.registry import part_labels

    labels = part_labels()
    lines = [
        "### the training objective: each weighted term's share (mean over logged steps and seeds)",
        "",
        "| row | shares |",
        "|---|---|",
    ]
    rank = {t: i for i, t in enumerate(labels)}  # CE first, then each loss's parts in their order
    for variant, shares in summary.shares.items():
        ordered = sorted(shares.items(), key=lambda tv: rank.get(tv[0], len(rank)))
        parts = ", ".join(f"{labels.get(t, t)} {100 * v:.1f}%" for t, v in ordered)
        lines.append(f"| {variant} | {parts} |")
    return "\n".join(lines) + "\n"


def _first(records: Sequence[Mapping[str, Any]], variant: str) -> int:
    return next(i for i, r in enumerate(records) if r["variant"] == variant)


def verdict(low: float, high: float, other: str = "SFT") -> str:
    """A difference from `other` (the SFT row) in words: only an interval wholly on one side of 0 is a
    difference (the sweep's table and the paper-table report say it the same way)."""
    if strictly_above(low, 0.0):
        return f"better than {other}"
    if strictly_above(0.0, high):
        return f"worse than {other}"
    return f"not distinguishable from {other}"


def _points(fraction: float) -> str:
    """A signed difference of scores in [0, 1] as points x100, two decimals. Rounded first, then 0.0 added
    (which turns -0.0 into 0.0): the float residue of a tie prints "+0.00", never "-0.00"."""
    return f"{round(100 * fraction, 2) + 0.0:+.2f}"


def _interval(k: Comparison) -> str:
    """A comparison's mean difference and interval, as every table and sentence here prints them."""
    return f"{_points(k.mean_diff)} [{_points(k.low)}, {_points(k.high)}]"


def pilot_line(summary: SweepSummary, split: str) -> str:
    """The pilot in one sentence: the teacher's lead over the SFT student, its interval, and whether it
    reaches `PILOT_GAP`; short of it, whether the teacher is stronger at all, which says whether the
    distilled rows can still be read as learning from a stronger teacher ("" when it was not scored)."""
    pair = summary.pilot(split)
    if pair is None or pair[0].comparison is None:
        return ""
    k = pair[0].comparison
    if k.mean_diff >= PILOT_GAP:
        met = "met"
    elif strictly_above(k.low, 0.0):
        met = "NOT met: the teacher is stronger beyond noise, but by less than that"
    else:
        met = "NOT met: distillation has no stronger teacher to learn from"
    return (
        f"Pilot: the teacher {pair[0].prompting} scores {100 * pair[0].mean:.2f}, "
        f"the SFT student {100 * pair[1].mean:.2f}: "
        f"a lead of {_interval(k)} points; "
        f"at least {100 * PILOT_GAP:.0f} is asked: {met}."
    )


def markdown(summary: SweepSummary) -> str:
    """The table per split: scores x100, mean ± sample sd over seeds, each seed, the difference with SFT;
    the teacher's row first, with the pilot sentence under the table."""
    level = f"{summary.confidence:.0%}"
    lines: list[str] = []
    for split, cells in summary.cells.items():
        lines += [
            f"### {split}: {summary.metric} x100 on {summary.rows[split]} rows",
            "",
            f"| row | seeds | mean ± sd | per seed | vs SFT: mean difference [{level} interval] | verdict |",
            "|---|---|---|---|---|---|",
        ]
        for c in cells:
            per_seed = ", ".join(f"{100 * v:.2f}" for v in c.seed_means)
            if c.comparison is None:
                diff, said = "(the reference)", ""
            else:
                k = c.comparison
                diff = _interval(k)
                said = verdict(k.low, k.high)
            lines.append(
                f"| {c.name} | {len(c.seeds)} | {100 * c.mean:.2f} ± {100 * c.std:.2f} | {per_seed} "
                f"| {diff} | {said} |"
            )
        lines.append("")
        if pilot := pilot_line(summary, split):
            lines += [pilot, ""]
        lines += seeds_markdown(summary, split)
        lines += pairs_markdown(summary, split)
    if shares := shares_markdown(summary):
        lines += [shares]
    lines += platforms_markdown(summary)
    lines.append(
        f"Differences: paired bootstrap over the evaluation rows (`otdistill.stats.compare_rows`), each "
        f"row's score averaged over the seeds first; {level} percentile interval. A verdict other than "
        "'not distinguishable' needs the whole interval on one side of 0."
    )
    return "\n".join(lines) + "\n"


def platforms_markdown(summary: SweepSummary) -> list[str]:
    """Where the rows were trained, when that differs between them (none when it does not)."""
    if not summary.platforms:
        return []
    lines = [
        "Not all rows were trained on one platform (records of several runs: `otdistill sweep --records`). "
        "They table together because their teachers score every row alike; a student's last bits depend on "
        "the platform (docs/reproducibility.md), and through training its scores do, as with another seed:",
        "",
    ]
    for key, rows in summary.platforms.items():
        each = (f"{value} ({', '.join(names)})" for value, names in rows.items())
        lines.append(f"- {key}: " + "; ".join(each))
    return [*lines, ""]


def seed_differences(summary: SweepSummary, split: str) -> dict[str, dict[int, float]]:
    """Distilled row -> seed -> how much better its mean is than the SFT row's at the same seed (both saw
    the training rows in the same order), for the seeds both have. The bootstrap interval resamples
    evaluation rows, with seeds averaged first, so it leaves out what training randomness adds: this is
    that spread."""
    sft = summary.sft_cell(split)
    return {
        c.variant: _seed_gaps(c, sft, summary.greater_is_better) for c in summary.cells[split] if c.distilled
    }


def _seed_cells(gaps: Mapping[int, float], k: Comparison | None, other: str = "SFT") -> str:
    """The per-seed part of a table line, against SFT or between two rows: each seed's difference, how many
    seeds it is ahead at (a tie is not ahead), and the interval with seeds resampled with its verdict."""
    each = ", ".join(f"{_points(d)} (seed {s})" for s, d in gaps.items())
    ahead = sum(strictly_above(d, 0.0) for d in gaps.values())
    interval, said = (_interval(k), verdict(k.low, k.high, other)) if k is not None else ("", "")
    return f"{each} | {ahead} of {len(gaps)} seeds | {interval} | {said}"


def seeds_markdown(summary: SweepSummary, split: str) -> list[str]:
    """`seed_differences` as table lines, with how many seeds each row is ahead at and the interval over
    seeds and rows (`compare_rows(..., resample_seeds=True)`); none for one seed."""
    by_row = seed_differences(summary, split)
    seeds = max((len(d) for d in by_row.values()), default=0)
    if seeds < 2:
        return []
    level = f"{summary.confidence:.0%}"
    seeded = {c.variant: c.seed_comparison for c in summary.cells[split]}
    lines = [
        f"{split}, each row against the SFT row of the same seed. The interval above resamples evaluation "
        "rows, not training runs; here seeds are resampled too (paired: both rows of a seed saw the same "
        f"data order), so the interval includes the spread that training randomness adds. With {seeds} "
        "seeds it is coarse:",
        "",
        f"| row | per seed: difference from SFT | ahead at | seeds and rows resampled [{level}] | verdict |",
        "|---|---|---|---|---|",
    ]
    for variant, diffs in by_row.items():
        lines.append(f"| {variant} | {_seed_cells(diffs, seeded.get(variant))} |")
    return [*lines, ""]


def pairs_markdown(summary: SweepSummary, split: str) -> list[str]:
    """The distilled rows against each other on `split` (say, MultiLevelOT against ULD), as table lines;
    with several shared seeds, also per seed and with seeds resampled, as against SFT."""
    pairs = summary.pairs.get(split, [])
    if not pairs:
        return []
    level = f"{summary.confidence:.0%}"
    seeded = any(p.seed_comparison is not None for p in pairs)
    lines = [
        f"{split}, distilled rows against each other (of {len(pairs)} intervals at {level}, about "
        f"{(1 - summary.confidence) * len(pairs):.1f} would exclude 0 by chance alone if no row differed):",
        "",
    ]
    if not seeded:
        lines += [f"| row | against | mean difference [{level} interval] | verdict |", "|---|---|---|---|"]
        for p in pairs:
            k = p.comparison
            lines.append(f"| {p.row} | {p.other} | {_interval(k)} | {verdict(k.low, k.high, p.other)} |")
        return [*lines, ""]
    lines += [
        f"| row | against | mean difference [{level} interval] | verdict | per seed | ahead at "
        f"| seeds and rows resampled [{level}] | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in pairs:
        k = p.comparison
        lines.append(
            f"| {p.row} | {p.other} | {_interval(k)} | {verdict(k.low, k.high, p.other)} "
            f"| {_seed_cells(p.per_seed, p.seed_comparison, p.other)} |"
        )
    return [*lines, ""]


def table_csv(summary: SweepSummary) -> str:
    """One line per split and variant: means, sd, per-seed values, the comparison and the models."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        ["split", "variant", "sft", "metric", "rows", "seeds", "mean", "sd", "per_seed",
         "diff_vs_sft", "low", "high", "confidence", "models"]
    )  # fmt: skip
    for split, cells in summary.cells.items():
        for c in cells:
            k = c.comparison
            writer.writerow(
                [split, c.variant, c.sft, summary.metric, summary.rows[split], " ".join(map(str, c.seeds)),
                 c.mean, c.std, " ".join(repr(v) for v in c.seed_means),
                 k.mean_diff if k else "", k.low if k else "", k.high if k else "",
                 k.confidence if k else "", " ".join(c.models)]
            )  # fmt: skip
    return out.getvalue()


def differences_csv(summary: SweepSummary) -> str:
    """The per-row paired differences behind each interval: split, variant, example id, the variant's and
    the SFT row's seed-averaged scores and their difference in the table's direction (variant - SFT, or
    SFT - variant for a metric where lower is better: positive is better, as in the intervals)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["split", "variant", "example_id", "score", "sft_score", "difference"])
    for split, cells in summary.cells.items():
        sft = summary.sft_cell(split).per_row()
        for c in cells:
            if c.sft:
                continue
            mine = c.per_row()
            for example in sorted(mine):
                diff = better_by(mine[example], sft[example], greater_is_better=summary.greater_is_better)
                writer.writerow([split, c.variant, example, mine[example], sft[example], diff])
    return out.getvalue()


def plot(summary: SweepSummary, path: Path, title: str) -> Path:
    """Per split: the variants' means with each seed as a dot (left), the difference with SFT and its
    interval (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = list(summary.cells)
    fig, axes = plt.subplots(len(splits), 2, figsize=(10, 3.6 * len(splits)), squeeze=False)
    for (left, right), split in zip(axes, splits, strict=True):
        cells = summary.cells[split]
        names = [c.variant for c in cells]
        left.bar(
            range(len(cells)), [100 * c.mean for c in cells], yerr=[100 * c.std for c in cells], capsize=4
        )
        for i, c in enumerate(cells):
            left.scatter(
                [i] * len(c.seed_means), [100 * v for v in c.seed_means], color="black", s=10, zorder=3
            )
        left.set_xticks(range(len(cells)), names, rotation=30, ha="right", fontsize=8)
        left.set_title(f"{split}: {summary.metric} x100 (mean ± sd over seeds)")
        compared = [c for c in cells if c.comparison is not None]
        diffs = [100 * c.comparison.mean_diff for c in compared if c.comparison]
        low = [d - 100 * c.comparison.low for d, c in zip(diffs, compared, strict=True) if c.comparison]
        high = [100 * c.comparison.high - d for d, c in zip(diffs, compared, strict=True) if c.comparison]
        right.errorbar(range(len(compared)), diffs, yerr=[low, high], fmt="o", capsize=5)
        right.axhline(0.0, color="grey", linewidth=1)
        right.set_xticks(
            range(len(compared)), [c.variant for c in compared], rotation=30, ha="right", fontsize=8
        )
        right.set_title(f"{split}: difference with SFT, {summary.confidence:.0%} interval")
        for ax in (left, right):
            ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_files(summary: SweepSummary, out_dir: Path, title: str) -> dict[str, Path]:
    """table.md, table.csv, row_differences.csv, comparisons.json (each row against SFT), pairwise.json
    (the distilled rows against each other) and plot.png in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "table": out_dir / "table.md",
        "csv": out_dir / "table.csv",
        "differences": out_dir / "row_differences.csv",
        "comparisons": out_dir / "comparisons.json",
        "pairwise": out_dir / "pairwise.json",
    }
    files["table"].write_text(f"## {title}\n\n" + markdown(summary), encoding="utf-8")
    files["csv"].write_text(table_csv(summary), encoding="utf-8")
    files["differences"].write_text(differences_csv(summary), encoding="utf-8")
    files["comparisons"].write_text(
        json.dumps(summary.comparisons(), indent=2, sort_keys=True), encoding="utf-8"
    )
    files["pairwise"].write_text(json.dumps(summary.pairwise(), indent=2, sort_keys=True), encoding="utf-8")
    files["plot"] = plot(summary, out_dir / "plot.png", title)
    return files


def metrics(summary: SweepSummary) -> dict[str, float]:
    """Flat numbers for the parent run: `sweep/<split>/<variant>/mean` / `sd`, and `diff` / `low` / `high`
    against SFT (`otdistill.tracking.metric_names.sweep_metric`), `low_seeds` / `high_seeds` with seeds
    resampled too; `diff_vs_<other>` / `low_vs_<other>` / `high_vs_<other>` against each earlier distilled
    row, `low_seeds_vs_<other>` / `high_seeds_vs_<other>` with seeds resampled too;
    `sweep/train/<variant>/share_<term>`."""
    out: dict[str, float] = {}
    for split, cells in summary.cells.items():
        for c in cells:
            out[sweep_metric(split, c.variant, "mean")] = c.mean
            out[sweep_metric(split, c.variant, "sd")] = c.std
            if c.comparison is not None:
                out[sweep_metric(split, c.variant, "diff")] = c.comparison.mean_diff
                out[sweep_metric(split, c.variant, "low")] = c.comparison.low
                out[sweep_metric(split, c.variant, "high")] = c.comparison.high
            if c.seed_comparison is not None:
                out[sweep_metric(split, c.variant, "low_seeds")] = c.seed_comparison.low
                out[sweep_metric(split, c.variant, "high_seeds")] = c.seed_comparison.high
    for split, pairs in summary.pairs.items():
        for p in pairs:
            out[sweep_metric(split, p.row, f"diff_vs_{p.other}")] = p.comparison.mean_diff
            out[sweep_metric(split, p.row, f"low_vs_{p.other}")] = p.comparison.low
            out[sweep_metric(split, p.row, f"high_vs_{p.other}")] = p.comparison.high
            if p.seed_comparison is not None:
                out[sweep_metric(split, p.row, f"low_seeds_vs_{p.other}")] = p.seed_comparison.low
                out[sweep_metric(split, p.row, f"high_seeds_vs_{p.other}")] = p.seed_comparison.high
    for variant, shares in summary.shares.items():
        out.update({sweep_metric("train", variant, f"share_{term}"): v for term, v in shares.items()})
    return out
