"""How every pipeline step that reads the run config starts: one prologue, as a context manager.

    with step_prologue(config_json, "evaluate") as step:   # logs, config, parent run, the step's run
        ... step.cfg ... step.run.log_metrics(...) ...

In that order: INFO logging to stdout (`setup_logging`), the step's config sections (`load_step_config`),
this pipeline run's parent MLflow run (`pipeline_run`: by id for an uncached step that gets it, else by
the KFP run id in the environment) and the step's nested run under it with the tags every step run carries
(`step_tags`), ended FINISHED, FAILED or KILLED with the block (`step_run`). A step that opens its run only
on some paths (no champion to score; a retried registration that finds its version) starts with
`start_step` and opens the run with `step.tracked()` where it needs it. Seeds are not set here: the
training stages seed themselves from their section (`TrainConfig.seed`), and no other step draws random
numbers. The light exit handler `close_run` and `open_run`, which build the config rather than read a
step's sections, have their own starts.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from otdistill.config import RunConfig
from otdistill.steps.common import load_step_config, pipeline_run, setup_logging, step_tags
from otdistill.tracking.runs import PipelineRun, StepRun, step_run


@dataclass
class Step:
    """A started step: its name and config; its parent MLflow run (looked up on first use) and its own."""

    name: str
    cfg: RunConfig
    parent_run_id: str | None = None
    _parent: PipelineRun | None = field(default=None, repr=False)
    _run: StepRun | None = field(default=None, repr=False)

    @property
    def parent(self) -> PipelineRun:
        """This pipeline run's parent MLflow run."""
        if self._parent is None:
            self._parent = pipeline_run(self.cfg.tracking, self.cfg.name, self.parent_run_id)
        return self._parent

    @property
    def run(self) -> StepRun:
        """The step's nested MLflow run (inside `tracked()` / `step_prologue`)."""
        if self._run is None:
            raise RuntimeError(f"step {self.name}: its MLflow run is not open (use step.tracked())")
        return self._run

    @contextmanager
    def tracked(
        self, *, params: Mapping[str, Any] | None = None, tags: Mapping[str, Any] | None = None
    ) -> Iterator[StepRun]:
        """The step's nested run under the parent, with every step run's tags plus `tags`."""
        all_tags = {**step_tags(self.cfg), **(tags or {})}
        with step_run(self.parent, self.name, params=params, tags=all_tags) as run:
            self._run = run
            try:
                yield run
            finally:
                self._run = None


def start_step(config_json: str, name: str, *, parent_run_id: str | None = None) -> Step:
    """The prologue without the step's run: logging and the step's config (see the module doc)."""
    setup_logging()
    return Step(name, load_step_config(config_json), parent_run_id)


@contextmanager
def step_prologue(
    config_json: str,
    name: str,
    *,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
    parent_run_id: str | None = None,
) -> Iterator[Step]:
    """Start step `name` and hold its MLflow run open for the block (see the module doc)."""
    step = start_step(config_json, name, parent_run_id=parent_run_id)
    with step.tracked(params=params, tags=tags):
        yield step
