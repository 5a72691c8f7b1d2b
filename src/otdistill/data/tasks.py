"""Task types: how a raw row of a data set becomes an `Example`, and which metric scores it.

Built in: DialogSum (summarisation, ROUGE-Lsum), FairytaleQA (generative QA, ROUGE-L), QED (extractive
QA, F1).
A user adds a task without touching the trainer, in one of two ways:

* a config entry (dict or YAML) read by `FieldTask.from_dict`, naming the fields: ``{"name": "myqa",
  "metric": "rougeL", "instruction": "{question}", "context_field": "passage",
  "response_fields": ["answer"]}``;
* a small `Task` subclass with a `to_example(row, index)` method, for rows with nested structure (see
  `QEDTask`).

Either is passed to `register_task`; `get_task(name)` returns it. `to_example` validates as it reads: a
missing, empty or wrongly typed field raises `RowValidationError` naming the row index and the field.

`to_input` is the prompt half of `to_example`: the example built from a task's `input_fields` alone (no
response, no references), which is what a served student is given. `task_to_dict` / `task_from_dict`
record a task with a logged model and rebuild it where the model is served (a `FieldTask` by its spec, a
`Task` subclass by its import path).
"""

from __future__ import annotations

import importlib
import string
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import yaml

from otdistill.data.errors import RowValidationError
from otdistill.data.examples import Example

#: Metric names the evaluation part implements.
METRICS: tuple[str, ...] = ("rougeLsum", "rougeL", "f1")


def _describe(value: Any) -> str:
    return type(value).__name__


def text_field(row: Mapping[str, Any], index: int, name: str, *, allow_empty: bool = False) -> str:
    """`row[name]` as a string, or a `RowValidationError` saying why not (missing, wrong type, empty)."""
    if name not in row or row[name] is None:
        raise RowValidationError.make(index, name, "missing", "field is missing")
    value = row[name]
    if not isinstance(value, str):
        raise RowValidationError.make(index, name, "wrong_type", f"expected a string, got {_describe(value)}")
    if not allow_empty and not value.strip():
        raise RowValidationError.make(index, name, "empty", "field is empty")
    return value


def _non_empty_distinct(values: Sequence[str]) -> list[str]:
    out: list[str] = []
    for v in values:
        if v.strip() and v not in out:
            out.append(v)
    return out


class Task(ABC):
    """A task type: name, metric, and the mapping from a raw row to an `Example`.

    `id_field`, when set, names the row field whose value becomes `Example.id` (or lists candidates, the
    first present one wins); otherwise the row index is used. `source_fields` maps `Example` attributes to
    the row fields they come from, so later checks (for instance an over-long context found at tokenisation)
    can name the user's field rather than ours.
    """

    name: str
    metric: str
    id_field: str | Sequence[str] | None = None
    source_fields: Mapping[str, str] = {}
    #: The row fields a prompt is built from, in order: what a served model of this task takes as input.
    input_fields: Sequence[str] = ()

    @abstractmethod
    def to_example(self, row: Mapping[str, Any], index: int) -> Example:
        """Build one example from `row` (the `index`-th row of its source); `RowValidationError` if bad."""

    def to_input(self, row: Mapping[str, Any], index: int = 0) -> Example:
        """The example `to_example` would build, from the `input_fields` of `row` alone: empty response, no
        references. Its prompt (`otdistill.data.build_prompt`) is the one training and evaluation use.

        A `Task` subclass whose students are served overrides this and sets `input_fields`.
        """
        raise NotImplementedError(
            f"task {self.name!r} ({type(self).__name__}) cannot build a prompt from raw inputs: "
            "set input_fields and implement to_input"
        )

    def input_id(self, row: Mapping[str, Any], index: int) -> str:
        """`example_id` when the row has its id field, else the index (a served input need not carry one)."""
        if self.id_field is None or self.id_field_of(row) not in row:
            return str(index)
        return self.example_id(row, index)

    def id_field_of(self, row: Mapping[str, Any]) -> str:
        """The field that gives this row its id ("<index>" without an id field; all candidates if none)."""
        if self.id_field is None:
            return "<index>"
        candidates = [self.id_field] if isinstance(self.id_field, str) else list(self.id_field)
        return next((c for c in candidates if row.get(c) is not None), "|".join(candidates))

    def example_id(self, row: Mapping[str, Any], index: int) -> str:
        """`row[id_field]` as a string (the first present of several candidate fields), else the index."""
        if self.id_field is None:
            return str(index)
        name = self.id_field_of(row)
        value = row.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise RowValidationError.make(index, name, "missing", "id field is missing or empty")
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise RowValidationError.make(
                index, name, "wrong_type", f"expected a string or integer id, got {_describe(value)}"
            )
        return str(value)

    def source_field(self, attribute: str) -> str:
        """The row field an `Example` attribute came from (for error messages)."""
        return self.source_fields.get(attribute, attribute)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, metric={self.metric!r})"


@dataclass(repr=False)
class FieldTask(Task):
    """A task described by field names alone: the form a dict or YAML entry takes.

    `instruction` is a `str.format` template over row fields ("Summarize the following dialogue." or
    "{question}"; write literal braces as "{{" and "}}"), or empty when the context says it all.
    `response_fields` are tried in order, the first present one is the response (DialogSum's training rows
    say `summary`, its validation rows `summary1`). `reference_fields` present and non-empty are the
    references (distinct, in order); when there are none the response is the only reference.
    """

    name: str
    metric: str
    response_fields: list[str]
    instruction: str = ""
    context_field: str | None = None
    reference_fields: list[str] = field(default_factory=list)
    id_field: str | list[str] | None = None

    ALLOWED_KEYS: ClassVar[tuple[str, ...]] = (
        "name",
        "metric",
        "response_fields",
        "instruction",
        "context_field",
        "reference_fields",
        "id_field",
    )

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ValueError("task spec: 'name' must be a non-empty string")
        if self.metric not in METRICS:
            raise ValueError(f"task {self.name!r}: metric {self.metric!r} is not one of {list(METRICS)}")
        if isinstance(self.response_fields, str):
            self.response_fields = [self.response_fields]
        if not self.response_fields:
            raise ValueError(f"task {self.name!r}: 'response_fields' must name at least one field")
        if not self.instruction.strip() and self.context_field is None:
            raise ValueError(f"task {self.name!r}: give an 'instruction' template or a 'context_field'")
        self._instruction_fields = [f for _, f, _, _ in string.Formatter().parse(self.instruction) if f]
        context = [self.context_field] if self.context_field else []
        self.input_fields = list(dict.fromkeys([*self._instruction_fields, *context]))
        self.source_fields = {
            "context": self.context_field or "context",
            "response": "|".join(self.response_fields),  # which one depends on the row
        }
        if len(self._instruction_fields) == 1:
            self.source_fields["instruction"] = self._instruction_fields[0]

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> FieldTask:
        """Build from a dict/YAML entry; unknown keys are refused by name (a typo must not pass silently)."""
        unknown = sorted(set(spec) - set(cls.ALLOWED_KEYS))
        if unknown:
            raise ValueError(
                f"task spec {spec.get('name', '?')!r}: unknown keys {unknown}; allowed: {cls.ALLOWED_KEYS}"
            )
        missing = [k for k in ("name", "metric", "response_fields") if k not in spec]
        if missing:
            raise ValueError(f"task spec {spec.get('name', '?')!r}: missing keys {missing}")
        kwargs = {f.name: spec[f.name] for f in fields(cls) if f.name in spec}
        if "reference_fields" in kwargs and isinstance(kwargs["reference_fields"], str):
            kwargs["reference_fields"] = [kwargs["reference_fields"]]
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """The spec `from_dict` reads back into an equal task."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def _prompt_parts(self, row: Mapping[str, Any], index: int) -> tuple[str, str]:
        values = {name: text_field(row, index, name) for name in self._instruction_fields}
        instruction = self.instruction.format(**values)
        context = text_field(row, index, self.context_field) if self.context_field else ""
        return instruction, context

    def to_input(self, row: Mapping[str, Any], index: int = 0) -> Example:
        ex_id = self.input_id(row, index)
        instruction, context = self._prompt_parts(row, index)
        return Example(ex_id, instruction, context, "", [])

    def to_example(self, row: Mapping[str, Any], index: int) -> Example:
        ex_id = self.example_id(row, index)
        instruction, context = self._prompt_parts(row, index)
        present = [f for f in self.response_fields if f in row and row[f] is not None]
        if not present:
            raise RowValidationError.make(
                index, "|".join(self.response_fields), "missing", "no response field"
            )
        response = text_field(row, index, present[0])
        refs = [
            text_field(row, index, f, allow_empty=True)
            for f in self.reference_fields
            if row.get(f) is not None
        ]
        references = _non_empty_distinct(refs) or [response]
        return Example(ex_id, instruction, context, response, references)


class QEDTask(Task):
    """QED extractive QA: answer = first non-empty NQ answer string; references = all distinct answer strings.

    `original_nq_answers` is a list of annotators, each a list of spans `{start, end, string}`; its
    structure is checked, and a row with no non-empty answer is a validation failure (reason `empty`), not
    a crash.
    """

    name = "qed"
    metric = "f1"
    id_field = "example_id"
    source_fields = {
        "instruction": "question_text",
        "context": "paragraph_text",
        "response": "original_nq_answers",
    }
    input_fields = ("question_text", "paragraph_text")

    def to_input(self, row: Mapping[str, Any], index: int = 0) -> Example:
        ex_id = self.input_id(row, index)
        question = text_field(row, index, "question_text")
        paragraph = text_field(row, index, "paragraph_text")
        return Example(ex_id, question, paragraph, "", [])

    def to_example(self, row: Mapping[str, Any], index: int) -> Example:
        ex_id = self.example_id(row, index)
        prompt = self.to_input(row, index)
        answers = row.get("original_nq_answers")
        if answers is None:
            raise RowValidationError.make(index, "original_nq_answers", "missing", "field is missing")
        if not isinstance(answers, list):
            raise RowValidationError.make(
                index, "original_nq_answers", "wrong_type", f"expected a list, got {_describe(answers)}"
            )
        strings: list[str] = []
        for a, annotator in enumerate(answers):
            where = f"original_nq_answers[{a}]"
            if not isinstance(annotator, list):
                raise RowValidationError.make(
                    index, where, "wrong_type", f"expected a list of spans, got {_describe(annotator)}"
                )
            for s, span in enumerate(annotator):
                if not isinstance(span, Mapping) or not isinstance(span.get("string"), str):
                    raise RowValidationError.make(
                        index, f"{where}[{s}].string", "wrong_type", "expected a span with a string 'string'"
                    )
                strings.append(span["string"])
        references = _non_empty_distinct(strings)
        if not references:
            raise RowValidationError.make(index, "original_nq_answers", "empty", "no non-empty answer string")
        return Example(ex_id, prompt.instruction, prompt.context, references[0], references)


DIALOGSUM = FieldTask(
    name="dialogsum",
    metric="rougeLsum",
    instruction="Summarize the following dialogue.",
    context_field="dialogue",
    response_fields=["summary", "summary1"],
    reference_fields=["summary", "summary1", "summary2", "summary3"],
    id_field=["fname", "id"],  # the original release says fname, the hub copy (knkarthick/dialogsum) id
)
FAIRYTALEQA = FieldTask(
    name="fairytaleqa",
    metric="rougeL",
    instruction="{question}",
    context_field="story_section",
    response_fields=["answer1"],
    reference_fields=["answer1", "answer2"],
)

_REGISTRY: dict[str, Task] = {}


def register_task(task: Task | type[Task] | Mapping[str, Any], *, replace: bool = False) -> Task:
    """Register a task (an instance, a no-argument `Task` subclass, or a dict spec) and return it.

    A name already taken is refused unless `replace=True`, so a plug-in cannot shadow a built-in by accident.
    """
    if isinstance(task, Mapping):
        obj: Task = FieldTask.from_dict(task)
    elif isinstance(task, type) and issubclass(task, Task):
        obj = task()
    elif isinstance(task, Task):
        obj = task
    else:
        raise TypeError(
            f"register_task expects a Task, a Task subclass or a dict spec, got {_describe(task)}"
        )
    if getattr(obj, "metric", None) not in METRICS:
        raise ValueError(
            f"task {obj.name!r}: metric {getattr(obj, 'metric', None)!r} is not one of {list(METRICS)}"
        )
    if obj.name in _REGISTRY and not replace and _REGISTRY[obj.name] is not obj:
        raise ValueError(f"task {obj.name!r} is already registered (pass replace=True to override it)")
    _REGISTRY[obj.name] = obj
    return obj


def register_tasks_from_yaml(path: str | Path) -> list[Task]:
    """Register every entry of a YAML file holding a list of task specs (or `{tasks: [...]}`)."""
    with open(path, encoding="utf-8") as fh:
        doc = yaml.safe_load(fh)
    entries = doc.get("tasks") if isinstance(doc, dict) else doc
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a list of task specs or a mapping with a 'tasks' list")
    return [register_task(entry) for entry in entries]


def get_task(name: str) -> Task:
    """The registered task called `name`; the error lists what is registered."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; registered tasks: {sorted(_REGISTRY)}") from None


def list_tasks() -> list[str]:
    return sorted(_REGISTRY)


def task_to_dict(task: Task) -> dict[str, Any]:
    """A JSON-able record of `task` that `task_from_dict` rebuilds in another process: a `FieldTask` as its
    spec (``{"name", "spec"}``), any other task as the import path of its class (``{"name", "class"}``,
    which must build it without arguments)."""
    if isinstance(task, FieldTask):
        return {"name": task.name, "spec": task.to_dict()}
    cls = type(task)
    return {"name": task.name, "class": f"{cls.__module__}:{cls.__qualname__}"}


def task_from_dict(record: Mapping[str, Any]) -> Task:
    """The task `task_to_dict` recorded (not registered: a served model must not change the registry)."""
    if "spec" in record:
        return FieldTask.from_dict(record["spec"])
    if "class" not in record:
        raise ValueError(f"task record {dict(record)!r} has neither a 'spec' nor a 'class'")
    module, _, qualname = str(record["class"]).partition(":")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    task = obj()
    if not isinstance(task, Task) or task.name != record.get("name", task.name):
        raise ValueError(f"{record['class']} does not build the task {record.get('name')!r}")
    return task


for _builtin in (DIALOGSUM, FAIRYTALEQA, QEDTask()):
    register_task(_builtin)
