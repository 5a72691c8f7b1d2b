"""Data: tasks, sources, validation, and one example tokenised for two models (teacher and student).

Typical use::

    from otdistill.data import DataConfig, PairedCollator, load_paired, response_logits
    split = load_paired(DataConfig(task="dialogsum", source="data/dialogsum", split="train"), t_tok, s_tok)
    collator = PairedCollator.from_tokenizers(t_tok, s_tok)
    batch = collator(split.features[:8])          # PairedBatch(example_ids, teacher, student)
    s_logits = response_logits(student(**...).logits, batch.student)   # (B, R, V), left-aligned
"""

from typing import TYPE_CHECKING

from otdistill.lazy import lazy_exports

if TYPE_CHECKING:
    from otdistill.data.batch import (
        IGNORE_INDEX,
        PairedBatch,
        PairedCollator,
        SideBatch,
        collate_side,
        pad_id_of,
        response_logits,
    )
    from otdistill.data.config import DataConfig
    from otdistill.data.errors import DataSourceError, DataValidationError, RowIssue, RowValidationError
    from otdistill.data.examples import Example
    from otdistill.data.hashing import content_hash
    from otdistill.data.loading import (
        LoadedSplit,
        PairedSplit,
        config_rows,
        load_examples,
        load_paired,
        resolve_task,
        tokenize_pair_split,
    )
    from otdistill.data.prompts import build_prompt
    from otdistill.data.report import DataReport
    from otdistill.data.tasks import (
        METRICS,
        FieldTask,
        QEDTask,
        Task,
        get_task,
        list_tasks,
        register_task,
        register_tasks_from_yaml,
        task_from_dict,
        task_to_dict,
    )
    from otdistill.data.tokenization import (
        PairedFeature,
        PairEncoder,
        SideEncoder,
        SideFeature,
        encode_pair,
        end_of_response_id,
        special_prefix_ids,
    )

__all__ = [
    "IGNORE_INDEX",
    "METRICS",
    "DataConfig",
    "DataReport",
    "DataSourceError",
    "DataValidationError",
    "Example",
    "FieldTask",
    "LoadedSplit",
    "PairEncoder",
    "PairedBatch",
    "PairedCollator",
    "PairedFeature",
    "PairedSplit",
    "QEDTask",
    "RowIssue",
    "RowValidationError",
    "SideBatch",
    "SideEncoder",
    "SideFeature",
    "Task",
    "build_prompt",
    "collate_side",
    "content_hash",
    "encode_pair",
    "end_of_response_id",
    "get_task",
    "list_tasks",
    "config_rows",
    "load_examples",
    "load_paired",
    "pad_id_of",
    "register_task",
    "register_tasks_from_yaml",
    "resolve_task",
    "response_logits",
    "special_prefix_ids",
    "task_from_dict",
    "task_to_dict",
    "tokenize_pair_split",
]

if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_exports(__name__, __file__, __all__)
