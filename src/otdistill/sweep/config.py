"""A sweep config: an ordinary run config plus a `sweep:` section, loaded as strictly as the run config.

    sweep:
      seeds: [0, 1, 2]
      variants:
        - {name: sft, sft: true}                       # the SFT-only row every other row is compared with
        - {name: uld, overrides: {distill.loss: uld}}
        - {name: multilevel_ot, overrides: {distill.loss: multilevel_ot}}
      test_data: {source: "", split: test, limit: null}  # optional held-out rows ("" : none)

Every row trains the student with the run config's `distill` section, changed only by its variant's
`overrides` (dotted keys of `distill`) and the seed (`distill.seed`); the SFT row is that same section
with loss "none", trained as the SFT baseline. So the rows differ by their objective alone. The teacher
SFT and the teacher cache are shared by all rows, so a variant may not change what the cache stores.

The `sweep` section is kept out of `RunConfig` (the run config stays what `otdistill run` takes): it is
read here, with the same strict conversion (`otdistill.config.from_dict`): an unknown key names its path.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from otdistill.config import ConfigError, RunConfig, from_dict, set_dotted, to_dict

SECTION = "sweep"
# What `cache_teacher` stores (otdistill.config.STEP_SECTIONS["cache_teacher"]): one cache serves every row,
# so no variant may change these (the loss itself is not stored: one cache serves ULD and MultiLevelOT).
SHARED_DISTILL_FIELDS = (
    "top_k",
    "temperature",
    "sinkhorn_temperature",
    "per_device_batch_size",
    "s3_endpoint_url",
)
_NAME = re.compile(r"^[a-z0-9][a-z0-9_]*$")
TEACHER = "teacher"  # the teacher's own row of every sweep (the pilot): no variant may take the name


@dataclass
class Variant:
    """One row of the table: a name, and how its `distill` section differs from the run config's.

    sft: the SFT-only row (student cross-entropy only, `distill` with loss "none"); exactly one variant is.
    """

    name: str
    overrides: dict[str, Any] = field(default_factory=dict)
    sft: bool = False

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"variant name {self.name!r} must be lower-case letters, digits and _")
        for key in self.overrides:
            section, _, rest = key.partition(".")
            if section != "distill" or not rest:
                raise ValueError(
                    f"variant {self.name}: override {key!r} must be a key of distill (distill.<key>)"
                )
            if rest in SHARED_DISTILL_FIELDS:
                raise ValueError(
                    f"variant {self.name}: {key} is stored in the teacher cache every row shares; "
                    "set it for the whole sweep in the distill section"
                )
        if self.sft and "distill.loss" in self.overrides:
            raise ValueError(f"variant {self.name}: the SFT row's loss is 'none'; it takes no distill.loss")


@dataclass
class TestData:
    """Held-out rows every student is also scored on: a data source of the same task ("" : none). The
    pipeline takes them as run parameters too (`test_data`, `test_split`, `test_rows`)."""

    source: str = ""
    split: str = "test"
    limit: int | None = None

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"test_data.limit must be >= 1 or null (all rows), got {self.limit}")


@dataclass
class SweepConfig:
    variants: list[Variant]
    seeds: list[int] = field(default_factory=lambda: [0])
    test_data: TestData = field(default_factory=TestData)

    def __post_init__(self) -> None:
        if not self.seeds:
            raise ValueError("seeds must list at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds has duplicates: {self.seeds}")
        names = [v.name for v in self.variants]
        if TEACHER in names:
            raise ValueError(
                f"variants: {TEACHER!r} names the teacher's own row (the pilot); rename the variant"
            )
        if len(set(names)) != len(names):
            raise ValueError(f"variants: duplicate names in {names}")
        sft = [v.name for v in self.variants if v.sft]
        if len(sft) != 1:
            raise ValueError(f"variants: exactly one must be the SFT row (sft: true), got {sft or 'none'}")
        if len(self.variants) < 2:
            raise ValueError("variants: the SFT row and at least one distilled row")

    @property
    def sft_variant(self) -> Variant:
        return next(v for v in self.variants if v.sft)

    def to_dict(self) -> dict[str, Any]:
        return dict(to_dict(self))


def split_overrides(overrides: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """`--set` overrides -> (run config overrides, sweep overrides without the `sweep.` prefix)."""
    run: dict[str, Any] = {}
    sweep: dict[str, Any] = {}
    for key, value in overrides.items():
        if key.startswith(SECTION + "."):
            sweep[key.removeprefix(SECTION + ".")] = value
        else:
            run[key] = value
    return run, sweep


def parse_sweep(data: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> SweepConfig:
    """The `sweep` section (plain data) with dotted overrides applied; strict, errors name the field."""
    section = json.loads(json.dumps(dict(data)))  # a deep copy of plain data
    for key, value in (overrides or {}).items():
        set_dotted(section, key, value)
    return from_dict(SweepConfig, section, SECTION)


def check_rows(cfg: RunConfig, sweep: SweepConfig) -> None:
    """Every row's training config must load: a bad override value fails now, not in the sixth row."""
    from otdistill.sweep.rows import row_config

    for variant in sweep.variants:
        try:
            row_config(cfg, variant, sweep.seeds[0])
        except ConfigError as exc:
            raise ConfigError(f"sweep.variants.{variant.name}: {exc}") from None


def load_sweep(path: str | Path, overrides: Mapping[str, Any] | None = None) -> tuple[RunConfig, SweepConfig]:
    """Read a sweep config file: (the run config, the sweep). `overrides` are `--set` pairs: `sweep.*` ones
    change the sweep section, the others the run config. Every problem is a ConfigError naming the file."""
    path = Path(path)
    run_overrides, sweep_overrides = split_overrides(overrides or {})
    try:
        data = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError) as exc:
        raise ConfigError(f"{path}: cannot read the sweep config: {exc}") from None
    if not isinstance(data, Mapping) or SECTION not in data:
        raise ConfigError(
            f"{path}: a sweep config needs a top-level `{SECTION}:` section (see configs/sweeps/)"
        )
    section = data[SECTION]
    if not isinstance(section, Mapping):
        raise ConfigError(f"{path}: {SECTION}: expected a mapping, got {type(section).__name__}")
    run_data = {k: v for k, v in data.items() if k != SECTION}
    try:
        # the cross-section checks too, as a run config file gets them (`RunConfig.from_yaml`)
        cfg = RunConfig.from_dict(run_data).check_whole()
        if run_overrides:
            cfg = cfg.with_overrides(run_overrides)
        sweep = parse_sweep(section, sweep_overrides)
        check_rows(cfg, sweep)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return cfg, sweep


def is_sweep_config(path: str | Path) -> bool:
    """Whether the YAML file at `path` has a `sweep:` section (what `otdistill sweep` takes)."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(data, Mapping) and SECTION in data
