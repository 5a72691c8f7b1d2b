"""What a training run reports while it runs: a tqdm bar on the console and metrics in MLflow.

The trainer puts every loss part (CE, HAD, SL, SD / ULD / KL), the learning rate, the gradient norm,
tokens per second and memory into each training log; this callback shows them on one progress bar and,
when an MLflow run is active in this process (the tracking part opens one per pipeline step), logs them as
metrics at the optimizer step (`train/<key>`). Validation logs (the Trainer's `eval_*` keys, when
`eval_every_steps` is set) become `val/<key>`: `val/loss` is the response cross-entropy on the validation
rows. Only the main process reports.

The metrics go through the run's `RunLogBuffer` (`otdistill.tracking.metric_buffer`): a step only queues
them, a background thread sends them, so a slow, hung or restarting tracking server never holds up
training. The runner flushes the buffer when training ends, and the step run flushes it before it ends.
"""

from __future__ import annotations

import math
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from otdistill.progress import progress_bar as tqdm
from otdistill.tracking.metric_buffer import run_buffer
from otdistill.tracking.metric_names import train_metric, validation_metric

# Keys of a training log that are worth a metric (the Trainer's end-of-run summary has others).
BAR_KEYS: tuple[str, ...] = (
    "loss",
    "loss_ce",
    "loss_had",
    "loss_sl",
    "loss_sd",
    "loss_uld",
    "loss_kl",
    "learning_rate",
    "tokens_per_second",
    "memory_gb",
)


def validation_metrics(logs: dict[str, Any]) -> dict[str, float]:
    """A validation log's `eval_<key>` numbers as `val/<key>` (`val/loss`, `val/runtime`, ...)."""
    return {
        validation_metric(key.removeprefix("eval_")): value
        for key, value in numeric(logs).items()
        if key.startswith("eval_")
    }


def numeric(logs: dict[str, Any]) -> dict[str, float]:
    """The finite numeric entries of a log dict (MLflow rejects NaN; booleans and strings are dropped)."""
    out = {}
    for key, value in logs.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isfinite(float(value)):
            out[key] = float(value)
    return out


class ProgressAndMetricsCallback(TrainerCallback):
    """One tqdm bar over optimizer steps with the latest loss parts; MLflow metrics when a run is active."""

    def __init__(self, description: str = "train", progress_bar: bool = True):
        self.description = description
        self.progress_bar = progress_bar
        self.bar: Any = None
        self.shown: dict[str, str] = {}  # the bar's postfix: the latest training parts and validation loss

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if state.is_local_process_zero and self.progress_bar:
            self.bar = tqdm(
                total=state.max_steps,
                initial=state.global_step,
                desc=self.description,
                unit="step",
                dynamic_ncols=True,
            )

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not logs or not state.is_world_process_zero:
            return
        if "eval_loss" in logs:
            self._log_validation(validation_metrics(logs), state.global_step)
            return
        values = numeric(logs)
        if "loss" not in values:  # the end-of-run summary, not a training step log
            return
        if self.bar is not None:
            shown = {k.removeprefix("loss_"): f"{values[k]:.4g}" for k in BAR_KEYS if k in values}
            self.shown = {**shown, **({"val": self.shown["val"]} if "val" in self.shown else {})}
            self.bar.set_postfix(self.shown, refresh=False)
        import mlflow

        active = mlflow.active_run()
        if active is not None:
            run_buffer(active.info.run_id).log_metrics(
                {train_metric(k): v for k, v in values.items()}, step=state.global_step
            )

    def _log_validation(self, values: dict[str, float], step: int) -> None:
        if self.bar is not None:
            self.shown["val"] = f"{values.get(validation_metric('loss'), float('nan')):.4g}"
            self.bar.set_postfix(self.shown, refresh=False)
        import mlflow

        active = mlflow.active_run()
        if active is not None:
            run_buffer(active.info.run_id).log_metrics(values, step=step)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
