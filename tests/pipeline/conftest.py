"""One local run of the whole tiny pipeline, shared by the tests that need a finished run (a tiny run costs
minutes on 2 cores): `test_e2e.py` runs the same config twice more on it (the step cache, the gate), and
`test_reproduce.py` rebuilds its v1 from the MLflow store (`otdistill reproduce`). Neither deletes what the
other needs: the reproduce test moves the KFP outputs away only for its rebuild and puts them back."""

from __future__ import annotations

import io
import shutil
import stat
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from otdistill.config import RunConfig, load_config
from otdistill.pipelines.local import LocalRunResult
from otdistill.steps.common import RUN_ID_ENV

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class TinyRun:
    """The first local run of configs/tiny.yaml with the tiny random pair: v1 registered and champion."""

    cfg: RunConfig
    result: LocalRunResult
    terminal: str  # what the run showed on its terminal
    run_dir: Path
    data_dir: Path  # a writable copy of the DialogSum files the run read
    model_cache: Path  # its OTDISTILL_CACHE: later runs of the same run dir set the same
    seconds: float


@pytest.fixture(scope="session")
def tiny_run(tiny_pair: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    from otdistill.pipelines.local import run_local
    from tests.tracking.mlflow_state import restore_mlflow_state

    tmp = tmp_path_factory.mktemp("tiny-run")
    data = tmp / "dialogsum"
    shutil.copytree(ROOT.parent / "shared" / "data" / "dialogsum", data)
    for path in [data, *data.iterdir()]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)
    teacher, student = tiny_pair
    cfg = load_config(
        ROOT / "configs" / "tiny.yaml",
        {
            "teacher.source": str(teacher),
            "student.source": str(student),
            "data.source": str(data),
            "steps.skip_sft_baseline": True,
            "distill.progress_bar": True,
            "eval.progress": True,
        },
    )
    terminal = io.StringIO()
    started = time.monotonic()
    with pytest.MonkeyPatch.context() as mp, restore_mlflow_state():
        mp.setenv("OTDISTILL_CACHE", str(tmp / "model-cache"))
        mp.setenv(RUN_ID_ENV, "")  # run_local sets it; restored afterwards
        result = run_local(cfg, tmp / "run", terminal=terminal)
    return TinyRun(
        cfg=cfg,
        result=result,
        terminal=terminal.getvalue(),
        run_dir=tmp / "run",
        data_dir=data,
        model_cache=tmp / "model-cache",
        seconds=time.monotonic() - started,
    )
