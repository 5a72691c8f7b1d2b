"""Serving a logged student: an MLflow pyfunc model that answers its task's raw inputs.

`log_student_model` logs the distilled student as a `StudentModel`: the Hugging Face directory (config,
safetensors, tokenizer with its chat template) is the pyfunc artifact ``hf`` and the `PromptFormat` it was
trained and evaluated with is the pyfunc ``model_config`` (readable in the MLmodel). Loaded anywhere
otdistill is installed (``mlflow.pyfunc.load_model("models:/<name>@champion")``, ``mlflow models serve``), it
takes rows of the task's raw input fields (DialogSum: ``dialogue``; FairytaleQA: ``question`` and
``story_section``; QED: ``question_text`` and ``paragraph_text``) and returns one answer string per row.

Nothing here re-implements the prompt or the decoding: a row becomes an `Example` through the task's own
`Task.to_input`, and `otdistill.evaluation.generate_answers` builds its prompt (`otdistill.data.build_prompt`,
the one training uses: chat template or plain template, BOS once, context cut to ``max_prompt_tokens``) and
greedy-decodes the new tokens only, exactly as the evaluation step scored the model. On load the recorded
example input is rendered again and must give the recorded prompt, so a model whose prompt format the
installed otdistill would not reproduce fails to load instead of answering something else.

Generation settings are the evaluation's (``max_new_tokens``, ``max_prompt_tokens``, ``batch_size``),
recorded as defaults and overridable per request as MLflow params (``max_prompt_tokens`` 0: no cut).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc.model import PythonModel

from otdistill.data.errors import RowValidationError
from otdistill.data.prompts import PLAIN_TEMPLATE, build_prompt, has_chat_template
from otdistill.data.tasks import Task, task_from_dict, task_to_dict
from otdistill.evaluation.registry import HF_ARTIFACT

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from otdistill.data import DataConfig
    from otdistill.evaluation import EvalConfig

FORMAT_VERSION = 1
#: Per-request generation params (MLflow signature params) and the `PromptFormat` field each defaults to.
PARAMS: tuple[str, ...] = ("max_new_tokens", "max_prompt_tokens", "batch_size")


class PromptFormatError(ValueError):
    """A logged student's prompt format cannot be used: unknown version, or not what this otdistill builds."""


@dataclass(frozen=True)
class PromptFormat:
    """How a student was prompted in training and evaluation, recorded with the logged model.

    task: `otdistill.data.task_to_dict` of the task (a `FieldTask` spec with its instruction template, or
      a `Task` class path); the prompt's instruction and context come from its `Task.to_input`.
    input_fields: the raw row fields a request gives, in order.
    chat_template: the tokenizer's chat template the prompt is rendered with, or None when the tokenizer
      has none and the plain template (`plain_template`) is used.
    max_new_tokens, max_prompt_tokens, batch_size, dtype: the evaluation's `EvalConfig` settings.
    example_input / example_prompt: one raw input and the exact prompt text it became at logging time.
    """

    task: dict[str, Any]
    input_fields: list[str]
    chat_template: str | None
    plain_template: str | None
    max_new_tokens: int
    max_prompt_tokens: int | None
    batch_size: int
    dtype: str
    example_input: dict[str, str]
    example_prompt: str
    format_version: int = FORMAT_VERSION

    @classmethod
    def build(
        cls,
        task: Task,
        tokenizer: PreTrainedTokenizerBase,
        config: EvalConfig,
        example_input: Mapping[str, Any],
    ) -> PromptFormat:
        """The format of `task` for `tokenizer` with the evaluation settings `config`; `example_input` is a
        raw row of the task (fields other than `Task.input_fields` are dropped)."""
        fields = list(task.input_fields)
        if not fields:
            raise PromptFormatError(
                f"task {task.name!r} declares no input_fields: its student cannot be served"
            )
        example = task.to_input(example_input, 0)
        chat = has_chat_template(tokenizer)
        return cls(
            task=task_to_dict(task),
            input_fields=fields,
            chat_template=str(tokenizer.chat_template) if chat else None,
            plain_template=None if chat else PLAIN_TEMPLATE,
            max_new_tokens=config.max_new_tokens,
            max_prompt_tokens=config.max_prompt_tokens,
            batch_size=config.batch_size,
            dtype=config.dtype,
            example_input={name: str(example_input[name]) for name in fields if name in example_input},
            example_prompt=build_prompt(example, tokenizer),
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PromptFormat:
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise PromptFormatError(
                f"prompt format version {version!r}; this otdistill reads version {FORMAT_VERSION}"
            )
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def build_task(self) -> Task:
        return task_from_dict(self.task)

    def check(self, task: Task, tokenizer: PreTrainedTokenizerBase) -> None:
        """Raise `PromptFormatError` unless `tokenizer` and this otdistill render the recorded prompt."""
        chat = str(tokenizer.chat_template) if has_chat_template(tokenizer) else None
        if chat != self.chat_template:
            raise PromptFormatError(
                "the tokenizer's chat template is not the one the student was logged with"
            )
        prompt = build_prompt(task.to_input(self.example_input, 0), tokenizer)
        if prompt != self.example_prompt:
            raise PromptFormatError(
                f"this otdistill renders the recorded example as {prompt!r}, but the student was trained and "
                f"evaluated on {self.example_prompt!r}: install the otdistill version it was logged with"
            )

    def eval_config(self, params: Mapping[str, Any] | None = None) -> EvalConfig:
        """The evaluation settings, with any per-request `PARAMS` applied (device: CUDA when available)."""
        from otdistill.evaluation import EvalConfig

        p = dict(params or {})
        unknown = sorted(set(p) - set(PARAMS))
        if unknown:
            raise MlflowException(
                f"unknown params {unknown}; allowed: {list(PARAMS)}", INVALID_PARAMETER_VALUE
            )
        cut = p.get("max_prompt_tokens", self.max_prompt_tokens)
        try:
            return EvalConfig(
                max_new_tokens=int(p.get("max_new_tokens", self.max_new_tokens)),
                max_prompt_tokens=int(cut) if cut else None,
                batch_size=int(p.get("batch_size", self.batch_size)),
                dtype=self.dtype,
                device="auto",
                progress=False,
            )
        except ValueError as exc:
            raise MlflowException(str(exc), INVALID_PARAMETER_VALUE) from exc

    def input_frame(self) -> pd.DataFrame:
        """The recorded example input as the one-row frame a request carries (the model's input example)."""
        return pd.DataFrame([{name: self.example_input[name] for name in self.input_fields}])

    def signature(self) -> mlflow.models.ModelSignature:
        """Inputs: one string column per input field; output: one string per row; params: `PARAMS`."""
        from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

        defaults = {
            "max_new_tokens": self.max_new_tokens,
            "max_prompt_tokens": self.max_prompt_tokens or 0,
            "batch_size": self.batch_size,
        }
        return mlflow.models.ModelSignature(
            inputs=Schema([ColSpec("string", name) for name in self.input_fields]),
            outputs=Schema([ColSpec("string")]),
            params=ParamSchema([ParamSpec(name, "long", defaults[name]) for name in PARAMS]),
        )


def first_input(task: Task, rows: Iterable[Any]) -> dict[str, str]:
    """The input fields of the first of `rows` (raw rows; anything else, such as a reader's row issues, is
    passed over) that `task.to_input` accepts: an input example taken from the data itself."""
    for index, row in enumerate(rows):
        if not isinstance(row, Mapping):
            continue
        try:
            task.to_input(row, index)
        except RowValidationError:
            continue
        return {name: str(row[name]) for name in task.input_fields}
    raise ValueError(f"no row has the input fields of task {task.name!r} ({list(task.input_fields)})")


def data_input_example(data: DataConfig) -> tuple[Task, dict[str, str]]:
    """The task `data` names and an input example from its rows (`first_input`): what `log_student_model`
    takes, for a student trained and evaluated on that data."""
    from otdistill.data import config_rows, resolve_task

    task = resolve_task(data)
    rows = config_rows(data)
    return task, first_input(task, (row for _, row in rows))


def _rows(model_input: Any) -> list[Mapping[str, Any]]:
    """Records from what pyfunc hands `predict` (a DataFrame after schema enforcement, or plain records)."""
    if isinstance(model_input, pd.DataFrame):
        frame = model_input.astype(object).where(model_input.notna(), None)
        return list(frame.to_dict(orient="records"))
    if isinstance(model_input, Mapping):
        return [model_input]
    if isinstance(model_input, Sequence) and all(isinstance(r, Mapping) for r in model_input):
        return list(model_input)
    raise MlflowException(
        f"expected rows of the task's input fields, got {type(model_input).__name__}", INVALID_PARAMETER_VALUE
    )


def answer(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    task: Task,
    rows: Sequence[Mapping[str, Any]],
    config: EvalConfig,
) -> list[str]:
    """One answer per raw input row: `Task.to_input`, then the evaluation's `generate_answers` (training's
    prompt, greedy decoding, new tokens only). A bad row or one too long to fit raises `MlflowException`
    (INVALID_PARAMETER_VALUE: HTTP 400 from a scoring server) naming it."""
    from otdistill.evaluation import generate_answers

    examples = []
    for index, row in enumerate(rows):
        try:
            examples.append(task.to_input(row, index))
        except RowValidationError as exc:
            raise MlflowException(f"input row {exc.issue}", INVALID_PARAMETER_VALUE) from exc
    if not examples:
        return []
    prepared, gen = generate_answers(model, tokenizer, examples, config, desc="answer")
    if prepared.skipped:
        raise MlflowException(
            f"input rows that cannot be answered: {prepared.skipped_rows}", INVALID_PARAMETER_VALUE
        )
    return list(gen.texts)


class StudentModel(PythonModel):
    """The pyfunc a student is logged as (see the module doc); it holds no state until `load_context`."""

    def load_context(self, context: Any) -> None:
        from otdistill.models import ResolvedModel, load_model, load_tokenizer

        self.format = PromptFormat.from_dict(context.model_config or {})
        hf_dir = Path(context.artifacts[HF_ARTIFACT])
        resolved = ResolvedModel(hf_dir, "mlflow pyfunc artifact", "local", "")
        config = self.format.eval_config()
        self.tokenizer = load_tokenizer(resolved)
        self.model = load_model(resolved, dtype=config.dtype, device=config.torch_device())
        self.task = self.format.build_task()
        self.format.check(self.task, self.tokenizer)

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> list[str]:
        return answer(
            self.model, self.tokenizer, self.task, _rows(model_input), self.format.eval_config(params)
        )
