"""`EvalConfig`: how models are evaluated, a section of the run config.

In a module of its own, without torch or transformers, so that reading a run config (the light client,
`otdistill.config`) does not import the evaluation code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from otdistill.data.config import check_row_limit

if TYPE_CHECKING:
    import torch


@dataclass
class EvalConfig:
    """How models are evaluated; YAML-friendly fields with defaults.

    max_new_tokens: generation budget per example (DialogSum summaries are ~20-60 tokens; QA answers fewer).
    batch_size: rows decoded together (continuous batching where the model allows it, else fixed
      left-padded batches; prompts taken longest first).
    max_prompt_tokens: longer prompts have their context cut at a word boundary to fit; None: no cut.
    limit: evaluate at most this many rows (in input order), None for all.
    dtype: model weights dtype ("float32", "bfloat16", "float16", "auto").
    device: "auto" (CUDA when available, else CPU), "cpu", "cuda", "cuda:1", ...
    num_worst: how many worst examples per model the HTML report shows.
    progress: show tqdm progress bars.
    """

    max_new_tokens: int = 128
    batch_size: int = 16
    max_prompt_tokens: int | None = 1024
    limit: int | None = None
    dtype: str = "float32"
    device: str = "auto"
    num_worst: int = 10
    progress: bool = True

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"EvalConfig.max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.batch_size < 1:
            raise ValueError(f"EvalConfig.batch_size must be >= 1, got {self.batch_size}")
        if self.max_prompt_tokens is not None and self.max_prompt_tokens < 1:
            raise ValueError(
                f"EvalConfig.max_prompt_tokens must be >= 1 or None, got {self.max_prompt_tokens}"
            )
        check_row_limit("EvalConfig.limit", self.limit)
        if self.num_worst < 0:
            raise ValueError(f"EvalConfig.num_worst must be >= 0, got {self.num_worst}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def scoring_settings(self) -> dict[str, Any]:
        """The settings that change a model's scores (a score taken with others is not comparable).

        Batching is in: left padding can change greedy decoding at the margin. Device, the report's
        worst-example count and progress bars are out.
        """
        return {k: v for k, v in self.to_dict().items() if k not in ("device", "num_worst", "progress")}

    def torch_device(self) -> torch.device:
        import torch  # only where a model is loaded: the config itself is read by the light client

        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)
