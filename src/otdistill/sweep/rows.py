"""A sweep's rows (variant x seed) and each row's training config.

The pipeline loops over `loop_items` (plain dicts, KFP ParallelFor items handed whole to the loop's steps);
inside the loop the `sweep_row` step applies the row's overrides to the config `open_run` resolved for this
run (`row_configs`), so run parameters apply to every row.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from otdistill.config import RunConfig
from otdistill.sweep.config import TEACHER, SweepConfig, Variant


@dataclass(frozen=True)
class Row:
    variant: Variant
    seed: int

    @property
    def name(self) -> str:
        """`uld-s0`: the row's name in step names, MLflow and the table."""
        return f"{self.variant.name}-s{self.seed}"

    def item(self) -> dict[str, Any]:
        """The ParallelFor item, handed whole to the loop's steps (`sweep_row`, `evaluate_student`): loop
        item fields are untyped (strings) in KFP, a whole item is a dict."""
        return {
            "row": self.name.replace("_", "-"),  # not "name": KFP loop items use that attribute
            "variant": self.variant.name,
            "seed": self.seed,
            "overrides": json.dumps(self.variant.overrides, sort_keys=True),
            "sft": self.variant.sft,
        }


def teacher_item(cfg: RunConfig) -> dict[str, Any]:
    """The teacher's row, in the shape of `Row.item`: the sweep scores the teacher after its SFT on the same
    rows as the students (`evaluate_student`), the pilot the aggregation reports."""
    return {"row": TEACHER, "variant": TEACHER, "seed": cfg.teacher_sft.seed, "overrides": "{}", "sft": False}


def rows(sweep: SweepConfig, *, sft: bool) -> list[Row]:
    """The SFT rows (`sft=True`) or the distilled rows, seed-major within each variant."""
    return [Row(v, s) for v in sweep.variants if v.sft == sft for s in sweep.seeds]


def loop_items(sweep: SweepConfig, *, sft: bool) -> list[dict[str, Any]]:
    return [r.item() for r in rows(sweep, sft=sft)]


def row_config(cfg: RunConfig, variant: Variant, seed: int) -> RunConfig:
    """`cfg` with the row's `distill` section: the variant's overrides and `seed`; for the SFT row the
    `sft_baseline` section becomes that `distill` section with loss "none" (same steps, rate, batch)."""
    out = cfg.with_overrides({**variant.overrides, "distill.seed": seed})
    if variant.sft:
        data = out.to_dict()
        data["sft_baseline"] = {**data["distill"], "loss": "none"}
        out = RunConfig.from_dict(data)
    return out


def distilled_losses(cfg: RunConfig, sweep: SweepConfig) -> list[str]:
    """The distillation loss of every distilled row (its variant's overrides on `cfg`): the pipeline
    gives the loop's distill step the teacher model only when one of them needs the live teacher."""
    return [row_config(cfg, r.variant, r.seed).distill.loss for r in rows(sweep, sft=False)]


def row_configs(run_config_path: str | Path, item: Mapping[str, Any]) -> dict[str, str]:
    """The step configs of one row (`item`: `Row.item`) from the run's resolved config (the YAML file
    `open_run` writes): "train" (the `train_sft_baseline` section for the SFT row, else `distill_student`'s),
    "evaluate" and "register" (`register_and_promote`'s section)."""
    sft = bool(item["sft"])
    variant = Variant(name=str(item["variant"]), overrides=json.loads(str(item["overrides"])), sft=sft)
    base = RunConfig.from_dict(yaml.safe_load(Path(run_config_path).read_text(encoding="utf-8")))
    cfg = row_config(base, variant, int(item["seed"]))
    return {
        "train": cfg.section_json("train_sft_baseline" if sft else "distill_student"),
        "evaluate": cfg.section_json("evaluate"),
        "register": cfg.section_json("register_and_promote"),
    }
