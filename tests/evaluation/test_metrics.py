"""Metric checks against hand-worked examples and the scorers' own documented outputs, never themselves."""

from __future__ import annotations

import pytest

from otdistill.evaluation.metrics import (
    has_reference,
    metric_family,
    metric_keys,
    rouge_scores,
    score,
    split_sentences,
    squad_em_f1,
    squad_normalize,
)


def test_rouge_hand_worked_example() -> None:
    # prediction tokens: the cat sat on the mat   (6)
    # reference tokens:  the cat is  on the mat   (6)   (no word > 3 characters, so stemming changes nothing)
    # ROUGE-1: clipped overlap the x2, cat, on, mat = 5 -> P = R = F = 5/6
    # ROUGE-2: bigrams {the cat, cat sat, sat on, on the, the mat}
    #          vs      {the cat, cat is, is on, on the, the mat}
    #          overlap {the cat, on the, the mat} = 3 of 5 each side -> F = 3/5
    # ROUGE-L: LCS = "the cat on the mat" = 5 -> P = R = F = 5/6; one sentence each, so ROUGE-Lsum too.
    s = rouge_scores("The cat sat on the mat.", ["the cat is on the mat"])
    assert s["rouge1"] == pytest.approx(5 / 6)
    assert s["rouge2"] == pytest.approx(3 / 5)
    assert s["rougeL"] == pytest.approx(5 / 6)
    assert s["rougeLsum"] == pytest.approx(5 / 6)


def test_rouge_uses_porter_stemming() -> None:
    # Stemmed (words > 3 chars): prediction [run, dog] ("running", "dogs");
    # reference [the, dog, run] ("runs").
    # ROUGE-1: overlap 2 -> P = 2/2, R = 2/3, F = 2PR/(P+R) = (4/3)/(5/3) = 0.8
    # ROUGE-L: LCS([run, dog], [the, dog, run]) = 1 -> P = 1/2, R = 1/3, F = (1/3)/(5/6) = 0.4
    s = rouge_scores("running dogs", ["the dog runs"])
    assert s["rouge1"] == pytest.approx(0.8)
    assert s["rougeL"] == pytest.approx(0.4)
    assert s["rouge2"] == 0.0  # bigram "run dog" vs "the dog", "dog run"


def test_rougelsum_documented_sentence_splitting_example() -> None:
    # rouge-score's testRougeLSumSentenceSplitting: these two summaries hold the same two sentences in the
    # other order. With one sentence per line ROUGE-Lsum is 1.0; as single sentences (ROUGE-L) it is 0.5.
    s = rouge_scores("Second sentence. First Sentence.", ["First sentence. Second Sentence."])
    assert s["rougeLsum"] == pytest.approx(1.0)
    assert s["rougeL"] == pytest.approx(0.5)


def test_rougelsum_documented_union_lcs_example() -> None:
    # rouge-score's testRougeLsum (Lin 2004, section 3.2): union LCS covers w1 w2 w3 w5 = 4 of 5 reference
    # words (R = 0.8) and 4 of 10 prediction words (P = 0.4): F = 2 * 0.32 / 1.2 = 0.5333.
    s = rouge_scores("w1 w2 w6 w7 w8\nw1 w3 w8 w9 w5", ["w1 w2 w3 w4 w5"])
    assert s["rougeLsum"] == pytest.approx(0.5333, abs=1e-4)


def test_rouge_max_over_references() -> None:
    refs = ["a dog barked loudly", "the cat is on the mat", ""]
    s = rouge_scores("the cat sat on the mat", refs)
    assert s["rouge1"] == pytest.approx(5 / 6)
    assert s["rouge2"] == pytest.approx(3 / 5)
    # A reference that matches exactly wins whatever its position.
    assert rouge_scores("the cat sat", ["dogs", "the cat sat", "cats"])["rougeLsum"] == pytest.approx(1.0)


def test_rouge_max_is_per_metric() -> None:
    # ref 1 "b a": both unigrams (R1 = 1), no bigram (R2 = 0), LCS 1 of 2 (RL = 1/2).
    # ref 2 "a b x y": R1 P = 1, R = 2/4 -> 2/3; R2 P = 1/1, R = 1/3 -> 0.5; LCS "a b" P = 1, R = 1/2 -> 2/3.
    # The maximum is taken per metric: R1 from ref 1, R2 and RL from ref 2.
    s = rouge_scores("a b", ["b a", "a b x y"])
    assert s["rouge1"] == pytest.approx(1.0)
    assert s["rouge2"] == pytest.approx(0.5)
    assert s["rougeL"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("prediction", ["", "   ", "\n"])
def test_empty_prediction_scores_zero(prediction: str) -> None:
    zeros = dict.fromkeys(("rouge1", "rouge2", "rougeL", "rougeLsum"), 0.0)
    assert rouge_scores(prediction, ["a summary"]) == zeros
    assert squad_em_f1(prediction, ["an answer"]) == {"exact_match": 0.0, "f1": 0.0}
    # Also against a reference that SQuAD normalisation empties: an empty answer is never right.
    assert squad_em_f1(prediction, ["The"]) == {"exact_match": 0.0, "f1": 0.0}


def test_punctuation_only_prediction_scores_zero() -> None:
    assert rouge_scores("...", ["a summary"])["rougeLsum"] == 0.0


@pytest.mark.parametrize("refs", [[], [""], ["  ", "\n"]])
def test_reference_less_rows_are_rejected(refs: list[str]) -> None:
    assert not has_reference(refs)
    with pytest.raises(ValueError, match="reference"):
        rouge_scores("a prediction", refs)
    with pytest.raises(ValueError, match="reference"):
        squad_em_f1("a prediction", refs)


def test_single_string_reference_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="list"):
        rouge_scores("a", "a")  # type: ignore[arg-type]


def test_squad_normalize_matches_official_rules() -> None:
    assert squad_normalize("The  Quick, brown fox!") == "quick brown fox"
    assert squad_normalize("An apple a day") == "apple day"
    assert squad_normalize("theatre") == "theatre"  # articles only as whole words


def test_squad_documented_example() -> None:
    # The Hugging Face `squad` metric card: prediction "1976" against answer "1976" -> EM 100, F1 100.
    assert squad_em_f1("1976", ["1976"]) == {"exact_match": 1.0, "f1": 1.0}


def test_squad_hand_worked_f1() -> None:
    # normalised prediction: eiffel tower in paris (4 tokens); reference: eiffel tower (2 tokens)
    # common = 2 -> P = 2/4, R = 2/2 -> F1 = 2 * 0.5 * 1 / 1.5 = 2/3; EM = 0
    s = squad_em_f1("The Eiffel Tower, in Paris.", ["Eiffel Tower"])
    assert s["exact_match"] == 0.0
    assert s["f1"] == pytest.approx(2 / 3)


def test_squad_counts_are_clipped() -> None:
    # prediction "cat cat cat" (articles dropped), reference "cat": common = min(3, 1) = 1
    # P = 1/3, R = 1 -> F1 = 2 * (1/3) / (4/3) = 0.5
    assert squad_em_f1("the the cat cat cat", ["cat"])["f1"] == pytest.approx(0.5)


def test_squad_max_over_references() -> None:
    # "Broncos" vs "Denver Broncos": P = 1, R = 1/2 -> F1 = 2/3; vs "the Broncos": exact after normalisation.
    assert squad_em_f1("Broncos", ["Denver Broncos"]) == {"exact_match": 0.0, "f1": pytest.approx(2 / 3)}
    assert squad_em_f1("Broncos", ["Denver Broncos", "the Broncos"]) == {"exact_match": 1.0, "f1": 1.0}


def test_score_dispatches_on_task_metric() -> None:
    assert set(score("rougeLsum", "a b", ["a b"])) == {"rouge1", "rouge2", "rougeL", "rougeLsum"}
    assert score("f1", "Broncos", ["the Broncos"]) == {"exact_match": 1.0, "f1": 1.0}
    assert metric_family("rougeL") == "rouge" and metric_keys("f1") == ("exact_match", "f1")
    with pytest.raises(ValueError, match="bleu"):
        score("bleu", "a", ["a"])


def test_split_sentences() -> None:
    text = 'Mr. Smith met Dr. Jones at 5 p.m. today. "Hello!" she said. Was it late? Yes.\n#Person1# left.'
    assert split_sentences(text) == [
        "Mr. Smith met Dr. Jones at 5 p.m. today.",
        '"Hello!" she said.',
        "Was it late?",
        "Yes.",
        "#Person1# left.",
    ]
    # A full stop followed by a lower-case word is not a boundary; empty lines vanish.
    text = "It costs 3.5 dollars. e.g. this one.\n\n"
    assert split_sentences(text) == ["It costs 3.5 dollars. e.g. this one."]
    assert split_sentences("") == []
