"""Per-example metrics with pinned, documented scorers.

Two metric families, chosen by the task's metric name (``Task.metric``):

* ROUGE (``rouge1``, ``rouge2``, ``rougeL``, ``rougeLsum``): Google's ``rouge-score`` package (pinned by the
  project constraints; 0.1.2 at the time of writing), F-measure, Porter stemming on (``use_stemmer=True``),
  its default tokenizer (lower-case, non-alphanumerics to spaces). ``rougeLsum`` is the summary-level LCS
  of Lin (2004) that ``rouge-score`` computes over newline-separated sentences; we put each sentence on its
  own line with `split_sentences` (a documented regular-expression splitter), because ``rouge-score``'s own
  ``split_summaries=True`` needs NLTK's ``punkt`` data, which cannot be downloaded in an offline pod. With
  several references a row scores the maximum F-measure over them, per ROUGE type
  (``RougeScorer.score_multi``), as DialogSum's evaluation does with its three validation summaries.
* SQuAD (``exact_match``, ``f1``): the official SQuAD evaluation (``evaluate-v2.0.py``): answers are
  normalised (lower-case, punctuation removed, articles ``a``/``an``/``the`` removed, whitespace collapsed),
  exact match compares normalised strings, F1 is the bag-of-tokens overlap F1, and each is the maximum over
  the references. When either side normalises to no tokens, F1 is 1 if both are empty and 0 otherwise
  (v2.0's rule; v1.1 divides by zero there), except that an empty prediction always scores 0.

All scores are fractions in [0, 1]. An empty prediction scores 0 on every metric (it is a bad answer, not an
error). A row must have at least one non-empty reference: `score` raises `ValueError` otherwise, and the
evaluation loop skips and counts such rows before it ever generates for them.
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Sequence
from functools import lru_cache

from rouge_score import rouge_scorer

ROUGE_KEYS: tuple[str, ...] = ("rouge1", "rouge2", "rougeL", "rougeLsum")
SQUAD_KEYS: tuple[str, ...] = ("exact_match", "f1")

# The metric names a task may declare as its headline metric, and the family that computes each.
_FAMILY_OF: dict[str, str] = {
    **{k: "rouge" for k in ROUGE_KEYS},
    **{k: "squad" for k in SQUAD_KEYS},
}

# Abbreviations after which a full stop does not end a sentence (lower-case, without the dot).
_ABBREVIATIONS = frozenset(
    {
        *("mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "mt", "vs", "etc", "e.g", "i.e", "fig"),
        *("approx", "dept", "inc", "ltd", "corp", "u.s", "a.m", "p.m"),
    }
)
# A candidate boundary: sentence-final punctuation, optional closing quotes/brackets, then whitespace.
_BOUNDARY_RE = re.compile(r"[.!?]+[\"'\u201d\u2019)\]]*\s+")
_WORD_BEFORE_RE = re.compile(r"(\S+)$")


def split_sentences(text: str) -> list[str]:
    """Split `text` into sentences with a deterministic regular-expression rule (no NLTK data needed).

    Existing line breaks are always boundaries. Inside a line, a boundary is one or more of ``.``, ``!``,
    ``?`` (optionally followed by closing quotes or brackets) followed by whitespace, when the next
    character is not a lower-case letter and the word ending in the full stop is not a common abbreviation
    (``Mr.``, ``Dr.``, ``e.g.``, ...) or a single initial (``J.``). Empty sentences are dropped.
    """
    sentences: list[str] = []
    for line in text.splitlines():
        start = 0
        for match in _BOUNDARY_RE.finditer(line):
            end = match.end()
            if end < len(line) and line[end].islower():
                continue
            punct_end = match.start() + len(match.group(0).rstrip())
            head = line[start : match.start() + 1]
            word = _WORD_BEFORE_RE.search(head)
            if line[match.start()] == "." and word is not None:
                token = word.group(1).rstrip(".").lower()
                if token in _ABBREVIATIONS or (len(token) == 1 and token.isalpha()):
                    continue
            sentence = line[start:punct_end].strip()
            if sentence:
                sentences.append(sentence)
            start = end
        tail = line[start:].strip()
        if tail:
            sentences.append(tail)
    return sentences


def _for_rougelsum(text: str) -> str:
    return "\n".join(split_sentences(text))


@lru_cache(maxsize=1)
def _rouge() -> rouge_scorer.RougeScorer:
    return rouge_scorer.RougeScorer(list(ROUGE_KEYS), use_stemmer=True, split_summaries=False)


def _clean_references(references: Sequence[str]) -> list[str]:
    if isinstance(references, str):
        raise TypeError("references must be a list of strings, not a single string")
    return [r for r in references if isinstance(r, str) and r.strip()]


def rouge_scores(prediction: str, references: Sequence[str]) -> dict[str, float]:
    """ROUGE-1/2/L/Lsum F-measures of `prediction`, each the maximum over the non-empty `references`.

    ROUGE-1/2/L see the texts as they are (``rougeL`` is sentence-agnostic); ``rougeLsum`` sees them with one
    sentence per line (`split_sentences`). Raises `ValueError` when no non-empty reference is given.
    """
    refs = _clean_references(references)
    if not refs:
        raise ValueError("cannot score a prediction without a non-empty reference")
    if not prediction.strip():
        return dict.fromkeys(ROUGE_KEYS, 0.0)
    scorer = _rouge()
    pred = _for_rougelsum(prediction)
    best = scorer.score_multi([_for_rougelsum(r) for r in refs], pred)
    # rougeL ignores newlines (it tokenises them away), so scoring the split texts gives the same rouge1/2/L.
    return {k: float(best[k].fmeasure) for k in ROUGE_KEYS}


_PUNCTUATION = frozenset(string.punctuation)


def squad_normalize(text: str) -> str:
    """SQuAD's ``normalize_answer``: lower-case, drop punctuation, drop articles, collapse whitespace."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _squad_f1(prediction: str, reference: str) -> float:
    pred_tokens = squad_normalize(prediction).split()
    ref_tokens = squad_normalize(reference).split()
    if not pred_tokens or not ref_tokens:
        return float(pred_tokens == ref_tokens)
    common = collections.Counter(pred_tokens) & collections.Counter(ref_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_tokens)
    recall = num_same / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_em_f1(prediction: str, references: Sequence[str]) -> dict[str, float]:
    """SQuAD exact match and token F1 of `prediction`, each the maximum over the non-empty `references`.

    An empty prediction scores 0 against any reference with tokens. Raises `ValueError` when no non-empty
    reference is given.
    """
    refs = _clean_references(references)
    if not refs:
        raise ValueError("cannot score a prediction without a non-empty reference")
    if not prediction.strip():
        return dict.fromkeys(SQUAD_KEYS, 0.0)
    norm_pred = squad_normalize(prediction)
    em = max(float(norm_pred == squad_normalize(r)) for r in refs)
    f1 = max(_squad_f1(prediction, r) for r in refs)
    return {"exact_match": em, "f1": f1}


def metric_family(task_metric: str) -> str:
    """``"rouge"`` or ``"squad"``: which scorer computes a task's headline metric."""
    try:
        return _FAMILY_OF[task_metric]
    except KeyError:
        known = ", ".join(sorted(_FAMILY_OF))
        raise ValueError(f"unknown task metric {task_metric!r}; known: {known}") from None


def metric_keys(task_metric: str) -> tuple[str, ...]:
    """All metric names reported for a task whose headline metric is `task_metric`."""
    return ROUGE_KEYS if metric_family(task_metric) == "rouge" else SQUAD_KEYS


def score(task_metric: str, prediction: str, references: Sequence[str]) -> dict[str, float]:
    """Every metric of `task_metric`'s family for one prediction (the module docstring names the scorers)."""
    if metric_family(task_metric) == "rouge":
        return rouge_scores(prediction, references)
    return squad_em_f1(prediction, references)


def has_reference(references: Sequence[str]) -> bool:
    """Whether a row has at least one non-empty reference, i.e. can be scored at all."""
    return bool(_clean_references(references))
