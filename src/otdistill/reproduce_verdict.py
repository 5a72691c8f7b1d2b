"""After a rebuild: is the new student the original, bit for bit? And if not, how far is it?

Both versions carry the content hash of their weights (`otdistill.weights_sha256`, set at registration;
computed from the version's files for a version registered before that tag existed). Equal hashes:
"bit-for-bit". Otherwise both versions' weights are downloaded and compared tensor by tensor (the largest
absolute difference, `otdistill.models.weights_hash.max_abs_difference`), and their evaluation scores (the
`otdistill.eval.distilled.*` tags of each version) are put side by side: on another GPU model or kernel
version bit-for-bit is not to be had (docs/reproducibility.md), and these two numbers say how close it came.
With a tolerance the verdict is "within tolerance" when the largest difference is at most it.

The verdict and both run ids are tags on the rebuild's parent run (`otdistill.reproduce.*`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from otdistill.models.weights_hash import WEIGHTS_SHA256_TAG, WeightsDiff, max_abs_difference, weights_sha256

TAG_PREFIX = "otdistill.reproduce."
SCORE_PREFIX = "otdistill.eval.distilled."
BIT_FOR_BIT, WITHIN_TOLERANCE, DIFFERENT = "bit-for-bit", "within tolerance", "different"


@dataclass(frozen=True)
class Verdict:
    """The comparison of the rebuild with the original."""

    verdict: str
    original_uri: str
    rebuild_uri: str
    original_run_id: str
    rebuild_run_id: str
    original_sha256: str
    rebuild_sha256: str
    diff: WeightsDiff | None = None
    tolerance: float = 0.0
    scores: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)

    def tags(self) -> dict[str, str]:
        out = {
            f"{TAG_PREFIX}verdict": self.verdict,
            f"{TAG_PREFIX}original_run_id": self.original_run_id,
            f"{TAG_PREFIX}rebuild_run_id": self.rebuild_run_id,
            f"{TAG_PREFIX}original_model": self.original_uri,
            f"{TAG_PREFIX}rebuild_model": self.rebuild_uri,
            f"{TAG_PREFIX}original_weights_sha256": self.original_sha256,
            f"{TAG_PREFIX}rebuild_weights_sha256": self.rebuild_sha256,
        }
        if self.diff is not None:
            out[f"{TAG_PREFIX}max_abs_difference"] = repr(self.diff.max_abs_difference)
            out[f"{TAG_PREFIX}max_abs_difference_tensor"] = self.diff.worst_tensor
            out[f"{TAG_PREFIX}tolerance"] = repr(self.tolerance)
        for metric, (before, after) in self.scores.items():
            out[f"{TAG_PREFIX}score.{metric}"] = f"{before} -> {after}"
        return out

    def describe(self) -> str:
        lines = [
            f"verdict: {self.verdict}",
            f"  original  {self.original_uri}  (run {self.original_run_id})  weights {self.original_sha256}",
            f"  rebuild   {self.rebuild_uri}  (run {self.rebuild_run_id})  weights {self.rebuild_sha256}",
        ]
        if self.diff is not None:
            lines.append(f"  {self.diff.describe()}; tolerance {self.tolerance:g}")
        if self.scores and self.verdict != BIT_FOR_BIT:
            lines.append(f"  {'score':<16} {'original':>12} {'rebuild':>12}")
            for metric, (before, after) in sorted(self.scores.items()):
                lines.append(f"  {metric:<16} {_num(before):>12} {_num(after):>12}")
        return "\n".join(lines)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _scores(tags: dict[str, str]) -> dict[str, float]:
    out = {}
    for key, value in tags.items():
        if key.startswith(SCORE_PREFIX):
            try:
                out[key.removeprefix(SCORE_PREFIX)] = float(value)
            except ValueError:
                continue
    return out


def _hf_dir(uri: str, cache_dir: Path) -> Path:
    from otdistill.evaluation.registry import resolve_registered_model

    resolved, _ = resolve_registered_model(uri, cache_dir=cache_dir)
    return Path(resolved.path)


def _version_hash(tags: dict[str, str], uri: str, cache_dir: Path) -> str:
    return tags.get(WEIGHTS_SHA256_TAG) or weights_sha256(_hf_dir(uri, cache_dir))


def compare_versions(
    client: Any,
    original: tuple[str, str],
    rebuild: tuple[str, str],
    *,
    original_run_id: str,
    rebuild_run_id: str,
    tolerance: float = 0.0,
    cache_dir: Path | None = None,
) -> Verdict:
    """Compare registered versions (name, version) `original` and `rebuild` (on `client`'s registry)."""
    import tempfile

    uris = [f"models:/{name}/{version}" for name, version in (original, rebuild)]
    tags = [dict(client.get_model_version(name, version).tags) for name, version in (original, rebuild)]
    with tempfile.TemporaryDirectory(prefix="otdistill-verdict-") as tmp:
        root = cache_dir or Path(tmp)
        hashes = [_version_hash(t, u, root) for t, u in zip(tags, uris, strict=True)]
        diff = None
        if hashes[0] != hashes[1]:
            diff = max_abs_difference(_hf_dir(uris[0], root), _hf_dir(uris[1], root))
    before, after = _scores(tags[0]), _scores(tags[1])
    if diff is None:
        verdict = BIT_FOR_BIT
    elif diff.comparable and diff.max_abs_difference <= tolerance:
        verdict = WITHIN_TOLERANCE
    else:
        verdict = DIFFERENT
    return Verdict(
        verdict=verdict,
        original_uri=uris[0],
        rebuild_uri=uris[1],
        original_run_id=original_run_id,
        rebuild_run_id=rebuild_run_id,
        original_sha256=hashes[0],
        rebuild_sha256=hashes[1],
        diff=diff,
        tolerance=tolerance,
        scores={m: (before.get(m), after.get(m)) for m in sorted(set(before) | set(after))},
    )
