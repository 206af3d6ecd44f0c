"""Extractive QA scoring, reproducing the official scripts' numbers exactly.

Sources of the behaviour (re-implemented here, not copied):

- SQuAD v1.1 (``google-research/xtreme: third_party/evaluate_squad.py``, itself the official
  ``evaluate-v1.1.py``): lower-case, drop ``string.punctuation`` characters, replace the English
  articles a/an/the by a space, split on whitespace. EM and token F1 take the max over the gold
  answers; the dataset score is the mean over *all* questions of the gold file (an unanswered
  question scores 0), as a percentage. XTREME uses it for XQuAD and TyDiQA-GoldP in every language.
- MLQA (``google-research/xtreme: third_party/evaluate_mlqa.py``, from ``facebookresearch/MLQA``):
  the same pipeline with every Unicode ``P*`` character plus ``string.punctuation`` removed,
  per-language articles, and mixed segmentation for Chinese. An unknown language is an error.
- SQuAD v2.0 (the official ``evaluate-v2.0.py``): HasAns/NoAns splits, a no-answer probability
  threshold and the best-threshold search, for the SQuAD v2.0 intermediate task.

:mod:`xlt.metrics.span_qa` scores a run's span predictions with these functions.

All scores are percentages (0-100), as the official scripts print them.
"""

from __future__ import annotations

import logging
import re
import string
import sys
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------------------------------

_SQUAD_PUNCT_TABLE = str.maketrans("", "", string.punctuation)
_EN_ARTICLES = re.compile(r"\b(a|an|the)\b")

_MLQA_ARTICLES: dict[str, re.Pattern[str] | None] = {
    "en": _EN_ARTICLES,
    "es": re.compile(r"\b(un|una|unos|unas|el|la|los|las)\b"),
    "hi": None,  # no formal articles
    "vi": re.compile(r"\b(của|là|cái|chiếc|những)\b"),
    "de": re.compile(r"\b(ein|eine|einen|einem|eines|einer|der|die|das|den|dem|des)\b"),
    # The official pattern is "\sال^|ال". Its first branch can never match (``^`` without MULTILINE
    # only matches at offset 0, after three characters were consumed), so it removes every "ال",
    # inside words too (e.g. "مالك" -> "م ك"). tests/test_metrics_qa.py checks the equivalence.
    "ar": re.compile("ال"),
    "zh": None,  # no formal articles
}
_MLQA_MIXED_SEGMENTATION = frozenset({"zh"})
# The languages evaluate_mlqa.py knows (any other raises): those its rules above are written for, in
# its order; the MLQA task spec (xlt/tasks/qa.py) lists the same languages in evaluate.py's order.
MLQA_LANGUAGES: tuple[str, ...] = tuple(_MLQA_ARTICLES)


@lru_cache(maxsize=1)
def mlqa_punctuation() -> frozenset[str]:
    """Every code point below ``sys.maxunicode`` whose category starts with P, plus string.punctuation.

    evaluate_mlqa.py builds the same set (``range(sys.maxunicode)``, so U+10FFFF itself is out; it is
    not punctuation anyway). Built once, lazily: the scan takes a fraction of a second.
    """
    unicode_p = (chr(i) for i in range(sys.maxunicode) if unicodedata.category(chr(i)).startswith("P"))
    return frozenset(unicode_p).union(string.punctuation)


@lru_cache(maxsize=1)
def _mlqa_punct_table() -> dict[int, None]:
    return dict.fromkeys(map(ord, mlqa_punctuation()))


def squad_normalize(text: str) -> str:
    """SQuAD v1.1 ``normalize_answer``: lower, drop ASCII punctuation, drop a/an/the, squash spaces."""
    text = text.lower().translate(_SQUAD_PUNCT_TABLE)
    text = _EN_ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _check_mlqa_lang(lang: str) -> None:
    if lang not in _MLQA_ARTICLES:
        raise ValueError(
            f"MLQA normalisation has no rules for language {lang!r}; valid: {', '.join(MLQA_LANGUAGES)}"
        )


def mixed_segmentation(text: str) -> list[str]:
    """MLQA's Chinese tokenisation: each CJK (U+4E00-U+9FA5) or punctuation char is its own token;
    the runs between them are split on whitespace."""
    punct = mlqa_punctuation()
    tokens: list[str] = []
    run: list[str] = []
    for ch in text:
        if "\u4e00" <= ch <= "\u9fa5" or ch in punct:
            if run:
                tokens.extend("".join(run).split())
                run = []
            tokens.append(ch)
        else:
            run.append(ch)
    if run:
        tokens.extend("".join(run).split())
    return tokens


def mlqa_normalize(text: str, lang: str) -> str:
    """evaluate_mlqa.py ``normalize_answer(s, lang)``: lower, drop Unicode+ASCII punctuation, drop the
    language's articles, tokenise (whitespace, or mixed segmentation for zh), join with spaces.

    Raises:
        ValueError: ``lang`` is not one of :data:`MLQA_LANGUAGES` (the official script raises too).
    """
    _check_mlqa_lang(lang)
    text = text.lower().translate(_mlqa_punct_table())
    articles = _MLQA_ARTICLES[lang]
    if articles is not None:
        text = articles.sub(" ", text)
    tokens = mixed_segmentation(text) if lang in _MLQA_MIXED_SEGMENTATION else text.split()
    return " ".join(t for t in tokens if t.strip())


def _normalizer(lang: str | None) -> Callable[[str], str]:
    """SQuAD v1.1 normalisation for ``lang=None``, MLQA normalisation for an MLQA language."""
    if lang is None:
        return squad_normalize
    _check_mlqa_lang(lang)
    return lambda text: mlqa_normalize(text, lang)


# --------------------------------------------------------------------------------------------------
# Per-answer scores (SQuAD v1.1 / MLQA semantics)
# --------------------------------------------------------------------------------------------------


def _token_f1(prediction_tokens: list[str], gold_tokens: list[str]) -> float:
    # v1.1/MLQA semantics: no overlap (including both sides empty) scores 0.
    num_same = sum((Counter(prediction_tokens) & Counter(gold_tokens)).values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(prediction_tokens)
    recall = num_same / len(gold_tokens)
    return (2 * precision * recall) / (precision + recall)


def exact_match_score(prediction: str, ground_truth: str, lang: str | None = None) -> bool:
    """Normalised string equality; SQuAD v1.1 rules for ``lang=None``, MLQA rules otherwise."""
    norm = _normalizer(lang)
    return norm(prediction) == norm(ground_truth)


def f1_score(prediction: str, ground_truth: str, lang: str | None = None) -> float:
    """Token-overlap F1 in [0, 1]; SQuAD v1.1 rules for ``lang=None``, MLQA rules otherwise."""
    norm = _normalizer(lang)
    return _token_f1(norm(prediction).split(), norm(ground_truth).split())


def max_over_ground_truths(
    prediction: str, ground_truths: Sequence[str], lang: str | None = None
) -> tuple[bool, float]:
    """(EM, F1) of one prediction, each maximised over the gold answers.

    Raises:
        ValueError: no gold answer (the official scripts fail on ``max([])``).
    """
    if not ground_truths:
        raise ValueError("a question has no gold answer; SQuAD v1.1/MLQA scoring needs at least one")
    norm = _normalizer(lang)
    pred_norm = norm(prediction)
    pred_tokens = pred_norm.split()
    em = False
    f1 = 0.0
    for gold in ground_truths:
        gold_norm = norm(gold)
        em = em or pred_norm == gold_norm
        f1 = max(f1, _token_f1(pred_tokens, gold_norm.split()))
    return em, f1


# --------------------------------------------------------------------------------------------------
# Dataset-level scores
# --------------------------------------------------------------------------------------------------


def _articles(dataset: Any) -> list[dict[str, Any]]:
    """Accept a whole SQuAD-format file (dict with ``data``) or its ``data`` list (evaluate.py's read_squad)."""
    if isinstance(dataset, Mapping) and "data" in dataset:
        return list(dataset["data"])
    return list(dataset)


def _iter_qas(dataset: Any) -> Iterable[dict[str, Any]]:
    for article in _articles(dataset):
        for paragraph in article["paragraphs"]:
            yield from paragraph["qas"]


def _evaluate_v1(
    dataset: Any, predictions: Mapping[str, str], lang: str | None, unanswered: list[str] | None
) -> dict[str, float]:
    _normalizer(lang)  # fail fast on an unknown language
    exact_match = 0
    f1 = 0.0
    total = 0
    missing: list[str] = []
    for qa in _iter_qas(dataset):
        total += 1
        qid = qa["id"]
        if qid not in predictions:
            missing.append(qid)
            continue
        golds = [answer["text"] for answer in qa["answers"]]
        if not golds:
            raise ValueError(f"question {qid!r} has no gold answer")
        em, f1_q = max_over_ground_truths(predictions[qid], golds, lang)
        exact_match += em
        f1 += f1_q  # summed in file order, as the official script does, so the float result matches
    if total == 0:
        raise ValueError("the gold dataset holds no question")
    if unanswered is not None:
        unanswered.extend(missing)
    elif missing:
        log.warning("%d of %d questions unanswered (scored 0), e.g. %s", len(missing), total, missing[:3])
    return {"exact_match": 100.0 * exact_match / total, "f1": 100.0 * f1 / total}


def squad_evaluate(
    dataset: Any, predictions: Mapping[str, str], unanswered: list[str] | None = None
) -> dict[str, float]:
    """SQuAD v1.1 EM and F1 (percent) of ``predictions`` (question id -> answer text) on ``dataset``.

    ``dataset`` is a SQuAD-format file's content or its ``data`` list. Used by XTREME for XQuAD and
    TyDiQA-GoldP in every language. Unanswered questions score 0; their ids are appended to
    ``unanswered`` when given, else logged. Extra prediction ids are ignored. Returns
    ``{"exact_match": ..., "f1": ...}`` like evaluate_squad.py.
    """
    return _evaluate_v1(dataset, predictions, None, unanswered)


def mlqa_evaluate(
    dataset: Any, predictions: Mapping[str, str], lang: str, unanswered: list[str] | None = None
) -> dict[str, float]:
    """MLQA EM and F1 (percent) with ``lang``'s normalisation (evaluate_mlqa.py ``evaluate``).

    Unanswered questions are handled as in :func:`squad_evaluate`.

    Raises:
        ValueError: ``lang`` is not an MLQA language.
    """
    _check_mlqa_lang(lang)
    return _evaluate_v1(dataset, predictions, lang, unanswered)


def qa_task_score(exact_match: float, f1: float) -> float:
    """XTREME's QA task score: ``(EM + F1) / 2`` (evaluate.py ``avg_metric`` for QA tasks)."""
    return (exact_match + f1) / 2


# --------------------------------------------------------------------------------------------------
# SQuAD v2.0
# --------------------------------------------------------------------------------------------------


def _v2_exact(gold: str, pred: str) -> int:
    return int(squad_normalize(gold) == squad_normalize(pred))


def _v2_f1(gold: str, pred: str) -> float:
    gold_tokens = squad_normalize(gold).split()
    pred_tokens = squad_normalize(pred).split()
    if not gold_tokens or not pred_tokens:
        # v2.0: a no-answer on either side scores 1 if both are empty, else 0.
        return float(gold_tokens == pred_tokens)
    return _token_f1(pred_tokens, gold_tokens)


def _v2_summary(exact: Mapping[str, float], f1: Mapping[str, float], qids: Sequence[str]) -> dict[str, float]:
    total = len(qids)
    return {
        "exact": 100.0 * sum(exact[q] for q in qids) / total,
        "f1": 100.0 * sum(f1[q] for q in qids) / total,
        "total": total,
    }


def _best_threshold(
    predictions: Mapping[str, str],
    scores: Mapping[str, float],
    na_probs: Mapping[str, float],
    has_answer: Mapping[str, bool],
) -> tuple[float, float]:
    # Start from "abstain on everything" (every NoAns question right), then answer questions in
    # increasing no-answer probability, keeping the best running score (evaluate-v2.0.py
    # find_best_thresh, including its tie handling and its denominator, the number of scored ids).
    current: float = sum(1 for has in has_answer.values() if not has)
    best, best_thresh = current, 0.0
    for qid in sorted(na_probs, key=lambda q: na_probs[q]):
        if qid not in scores:
            continue
        if has_answer[qid]:
            current += scores[qid]
        elif predictions[qid]:
            current -= 1
        if current > best:
            best, best_thresh = current, na_probs[qid]
    return 100.0 * best / len(scores), best_thresh


def squad_v2_evaluate(
    dataset: Any,
    predictions: Mapping[str, str],
    na_probs: Mapping[str, float] | None = None,
    na_prob_thresh: float = 1.0,
) -> dict[str, float]:
    """SQuAD v2.0 scores with the official script's keys and numbers (percent).

    Returns ``exact``, ``f1``, ``total`` and, when the gold has such questions, ``HasAns_*`` and
    ``NoAns_*``. With ``na_probs`` (question id -> probability of no answer) a question whose
    probability exceeds ``na_prob_thresh`` counts as answered with "", and ``best_exact``,
    ``best_exact_thresh``, ``best_f1``, ``best_f1_thresh`` are added.

    Unanswered questions are left out of every total, as the official script does for the overall
    score (it crashes on the HasAns/NoAns split instead; here those splits also skip them).

    Raises:
        ValueError: a scored question has no entry in ``na_probs``, or nothing was scored.
    """
    has_answer: dict[str, bool] = {}
    exact_raw: dict[str, float] = {}
    f1_raw: dict[str, float] = {}
    for qa in _iter_qas(dataset):
        qid = qa["id"]
        has_answer[qid] = bool(qa["answers"])
        golds = [a["text"] for a in qa["answers"] if squad_normalize(a["text"])] or [""]
        if qid not in predictions:
            continue
        pred = predictions[qid]
        exact_raw[qid] = max(_v2_exact(g, pred) for g in golds)
        f1_raw[qid] = max(_v2_f1(g, pred) for g in golds)
    if not exact_raw:
        raise ValueError("no question of the gold dataset has a prediction")
    missing = len(has_answer) - len(exact_raw)
    if missing:
        log.warning(
            "%d of %d questions unanswered; left out of the SQuAD v2.0 totals", missing, len(has_answer)
        )

    probs = na_probs if na_probs is not None else dict.fromkeys(predictions, 0.0)
    lacking = [q for q in exact_raw if q not in probs]
    if lacking:
        raise ValueError(f"{len(lacking)} scored questions have no no-answer probability, e.g. {lacking[:3]}")

    def thresholded(raw: Mapping[str, float]) -> dict[str, float]:
        return {q: float(not has_answer[q]) if probs[q] > na_prob_thresh else s for q, s in raw.items()}

    exact_th, f1_th = thresholded(exact_raw), thresholded(f1_raw)
    out = _v2_summary(exact_th, f1_th, list(exact_th))
    for prefix, wanted in (("HasAns", True), ("NoAns", False)):
        qids = [q for q, has in has_answer.items() if has is wanted and q in exact_th]
        if qids:
            out.update({f"{prefix}_{k}": v for k, v in _v2_summary(exact_th, f1_th, qids).items()})
    if na_probs is not None:
        out["best_exact"], out["best_exact_thresh"] = _best_threshold(
            predictions, exact_raw, na_probs, has_answer
        )
        out["best_f1"], out["best_f1_thresh"] = _best_threshold(predictions, f1_raw, na_probs, has_answer)
    return out
