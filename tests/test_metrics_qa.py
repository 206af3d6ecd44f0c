"""QA scoring: SQuAD v1.1 (XQuAD, TyDiQA), MLQA per-language normalisation, SQuAD v2.0, and the
span-QA metric class runs score with (xlt.metrics.span_qa).

Expected numbers are computed by hand from the official scripts' rules (xtreme
third_party/evaluate_squad.py, evaluate_mlqa.py, SQuAD evaluate-v2.0.py); see the comments.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from torchmetrics.utilities import dim_zero_cat

from xlt.metrics.qa import (
    MLQA_LANGUAGES,
    exact_match_score,
    f1_score,
    max_over_ground_truths,
    mixed_segmentation,
    mlqa_evaluate,
    mlqa_normalize,
    qa_task_score,
    squad_evaluate,
    squad_normalize,
    squad_v2_evaluate,
)
from xlt.metrics.span_qa import SpanQAMetric


def dataset(*qas: tuple[str, list[str]]) -> list[dict]:
    """A one-article SQuAD-format ``data`` list: (id, gold answers) per question."""
    return [
        {
            "title": "t",
            "paragraphs": [
                {"context": "c", "qas": [{"id": q, "question": "?", "answers": [{"text": a} for a in golds]}]}
                for q, golds in qas
            ],
        }
    ]


# ----------------------------------------------------------------------------------------------
# SQuAD v1.1
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "normalised"),
    [
        ("The Cat sat!", "cat sat"),
        ("  a   b\tc ", "b c"),
        ("An apple, the pear", "apple pear"),
        ("theatre", "theatre"),  # articles only as whole words
        ("«Paris»", "«paris»"),  # only ASCII punctuation is removed in v1.1
        ("北京大学", "北京大学"),  # whitespace tokens even for zh: one token
        ("U.S.A.", "usa"),
    ],
)
def test_squad_normalize(text: str, normalised: str) -> None:
    assert squad_normalize(text) == normalised


def test_squad_em_f1_by_hand() -> None:
    # pred -> "had sustained skin" (3 tokens); gold -> 7 tokens; overlap 3: P=1, R=3/7, F1=0.6
    pred, gold = "had sustained skin,", "had sustained skin, liver, and respiratory injuries"
    assert not exact_match_score(pred, gold)
    assert f1_score(pred, gold) == pytest.approx(0.6, abs=1e-15)
    # repeated tokens count with multiplicity: pred "a b b" (a is an article -> "b b"), gold "b" -> P=1/2, R=1
    assert f1_score("a b b", "b") == pytest.approx(2 * 0.5 * 1 / 1.5)
    # v1.1: two empty answers are an exact match but have F1 0 (no common token)
    assert exact_match_score("the", "")
    assert f1_score("the", "") == 0.0
    # max over gold answers, each metric separately
    em, f1 = max_over_ground_truths("Denver Broncos", ["Broncos", "the Denver Broncos", "Denver"])
    assert em and f1 == 1.0


def test_squad_evaluate_counts_unanswered_questions() -> None:
    data = dataset(("q1", ["Denver Broncos"]), ("q2", ["Santa Clara, California"]), ("q3", ["gold"]))
    preds = {"q1": "the Denver Broncos", "q2": "Santa Clara", "extra": "ignored"}
    # q1: EM 1, F1 1; q2: 2 of 3 gold tokens, P=1 R=2/3 F1=0.8; q3 unanswered: 0 (total stays 3)
    out = squad_evaluate(data, preds)
    assert out == {"exact_match": 100.0 * 1 / 3, "f1": 100.0 * (1 + 0.8) / 3}
    assert squad_evaluate({"data": data, "version": "1.1"}, preds) == out


def test_squad_evaluate_rejects_questions_without_gold() -> None:
    with pytest.raises(ValueError, match="no gold answer"):
        squad_evaluate(dataset(("q1", [])), {"q1": "x"})


def test_qa_task_score() -> None:
    assert qa_task_score(60.0, 80.0) == 70.0


# ----------------------------------------------------------------------------------------------
# MLQA
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lang", "text", "normalised"),
    [
        # en: Unicode punctuation (P*) goes too, unlike SQuAD v1.1
        ("en", "The “Great” Gatsby…", "great gatsby"),
        ("en", "theatre", "theatre"),
        # es: un/una/unos/unas/el/la/los/las
        ("es", "Los rayos de la tormenta", "rayos de tormenta"),
        ("es", "¿El niño?", "niño"),
        # de: ein/eine/einen/einem/eines/einer/der/die/das/den/dem/des
        ("de", "Der Vertrag von Versailles", "vertrag von versailles"),
        ("de", "dem Haus des Vaters", "haus vaters"),
        # vi: của/là/cái/chiếc/những
        ("vi", "những con mèo của tôi", "con mèo tôi"),
        # ar: every "ال" is replaced by a space, also inside words
        ("ar", "الكتاب", "كتاب"),
        ("ar", "مالك", "م ك"),
        # hi: no articles; the danda (U+0964, category Po) is punctuation
        ("hi", "भारत।", "भारत"),
        ("hi", "the भारत", "the भारत"),
        # zh: each CJK character is a token, other runs split on whitespace
        ("zh", "北京大学2008年", "北 京 大 学 2008 年"),
        ("zh", "「电动势」 emf", "电 动 势 emf"),
    ],
)
def test_mlqa_normalize_per_language(lang: str, text: str, normalised: str) -> None:
    assert mlqa_normalize(text, lang) == normalised


def test_mlqa_f1_by_hand_per_language() -> None:
    # es: gold -> "rayos de tormenta" (3), pred "rayos" (1): P=1, R=1/3, F1=0.5
    assert f1_score("rayos", "los rayos de la tormenta", "es") == pytest.approx(0.5)
    # de: the article is dropped on both sides -> exact match
    assert exact_match_score("Vertrag von Versailles", "Der Vertrag von Versailles", "de")
    # vi: "của" dropped -> exact match
    assert exact_match_score("con mèo tôi", "con mèo của tôi", "vi")
    # ar: the definite article vanishes
    assert exact_match_score("كتاب", "الكتاب", "ar")
    # hi: danda removed by MLQA but not by SQuAD v1.1
    assert exact_match_score("भारत", "भारत।", "hi")
    assert not exact_match_score("भारत", "भारत।")
    # zh: character tokens: pred 6 tokens, gold 4, overlap 4: P=2/3, R=1, F1=0.8; SQuAD v1.1 gives 0
    assert f1_score("北京大学2008年", "北京大学", "zh") == pytest.approx(0.8)
    assert f1_score("北京大学2008年", "北京大学") == 0.0
    # en: MLQA and SQuAD differ on non-ASCII punctuation
    assert exact_match_score("“Gatsby”", "Gatsby", "en")
    assert not exact_match_score("“Gatsby”", "Gatsby")


def test_mlqa_dataset_score_by_hand() -> None:
    # Mixed case like XTREME's mock submission: 3 questions in es.
    data = dataset(("a", ["el río Ebro"]), ("b", ["una casa grande, roja"]), ("c", ["los Andes"]))
    preds = {"a": "río Ebro", "b": "casa", "c": "Alpes"}
    # a: EM 1 F1 1; b: gold "casa grande roja" (3), pred 1 token: F1 = 2*(1)(1/3)/(4/3) = 0.5; c: 0
    assert mlqa_evaluate(data, preds, "es") == {"exact_match": 100.0 / 3, "f1": 100.0 * 1.5 / 3}


def test_mlqa_unknown_language_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"'fr'.*en, es, hi, vi, de, ar, zh"):
        mlqa_normalize("x", "fr")
    with pytest.raises(ValueError, match="'th'"):
        mlqa_evaluate(dataset(("q", ["x"])), {"q": "x"}, "th")
    assert set(MLQA_LANGUAGES) == {"en", "es", "de", "ar", "hi", "vi", "zh"}


def test_arabic_pattern_equals_the_official_one() -> None:
    official = re.compile("\\sال^|ال")  # evaluate_mlqa.py's pattern, first branch can never match
    for text in ["الكتاب", " ال", "ال ال", "مالك والبيت", "\tال^", "ال\nال", "بال"]:
        assert official.sub(" ", text) == text.replace("ال", " ")
        expected = " ".join(text.replace("ال", " ").replace("^", "").split())  # ^ is punctuation
        assert mlqa_normalize(text, "ar") == expected


def test_mixed_segmentation_keeps_latin_runs() -> None:
    assert mixed_segmentation("abc 中文 de,f") == ["abc", "中", "文", "de", ",", "f"]


def test_mlqa_real_dev_file_gold_scores_100(data_dir: Path) -> None:
    data = json.loads((data_dir / "mlqa/dev/dev-context-de-question-de.json").read_text())["data"]
    gold = {qa["id"]: qa["answers"][0]["text"] for a in data for p in a["paragraphs"] for qa in p["qas"]}
    assert len(gold) == 512
    assert mlqa_evaluate(data, gold, "de") == {"exact_match": 100.0, "f1": 100.0}
    # Dropping the last word of every multi-word answer: EM falls, F1 stays high.
    clipped = {q: " ".join(a.split()[:-1]) or a for q, a in gold.items()}
    out = mlqa_evaluate(data, clipped, "de")
    assert out["exact_match"] < out["f1"] < 100.0


# ----------------------------------------------------------------------------------------------
# SQuAD v2.0
# ----------------------------------------------------------------------------------------------


def test_squad_v2_by_hand() -> None:
    data = dataset(("h1", ["Paris"]), ("h2", ["red car"]), ("n1", []), ("n2", []))
    preds = {"h1": "Paris", "h2": "car", "n1": "", "n2": "something"}
    # raw: h1 EM1 F1 1; h2 EM0 F1 2*(1)(1/2)/1.5=2/3; n1 (gold "") EM1 F1 1; n2 EM0 F1 0
    out = squad_v2_evaluate(data, preds)
    assert out == {
        "exact": 100.0 * 2 / 4,
        "f1": 100.0 * (1 + 2 / 3 + 1 + 0) / 4,
        "total": 4,
        "HasAns_exact": 100.0 * 1 / 2,
        "HasAns_f1": 100.0 * (1 + 2 / 3) / 2,
        "HasAns_total": 2,
        "NoAns_exact": 100.0 * 1 / 2,
        "NoAns_f1": 100.0 * 1 / 2,
        "NoAns_total": 2,
    }


def test_squad_v2_threshold_and_best_threshold() -> None:
    data = dataset(("h1", ["Paris"]), ("h2", ["red car"]), ("n1", []), ("n2", []))
    preds = {"h1": "Paris", "h2": "car", "n1": "", "n2": "something"}
    na = {"h1": 0.1, "h2": 0.6, "n1": 0.3, "n2": 0.8}
    out = squad_v2_evaluate(data, preds, na, na_prob_thresh=0.5)
    # above 0.5 -> predicted no-answer: h2 becomes 0 (has an answer), n2 becomes 1
    assert out["exact"] == 100.0 * (1 + 0 + 1 + 1) / 4
    assert out["f1"] == 100.0 * (1 + 0 + 1 + 1) / 4
    # best threshold: start at #NoAns = 2, answer in increasing na prob:
    # h1 (+1 -> 3, best, thr 0.1), n1 ("" -> +0), h2 (+EM 0 / +F1 2/3), n2 (non-empty -> -1)
    assert out["best_exact"] == 100.0 * 3 / 4 and out["best_exact_thresh"] == 0.1
    assert out["best_f1"] == 100.0 * (3 + 2 / 3) / 4 and out["best_f1_thresh"] == 0.6


def test_squad_v2_real_dev_gold_is_perfect(data_dir: Path) -> None:
    data = json.loads((data_dir / "squad_v2.0/dev-v2.0.explorer.json").read_text())["data"]
    preds = {
        qa["id"]: (qa["answers"][0]["text"] if qa["answers"] else "")
        for a in data
        for p in a["paragraphs"]
        for qa in p["qas"]
    }
    out = squad_v2_evaluate(data, preds)
    assert out["total"] == 11873 and out["HasAns_total"] == 5928 and out["NoAns_total"] == 5945
    assert out["exact"] == out["f1"] == 100.0


def test_squad_v2_missing_na_probability_is_an_error() -> None:
    with pytest.raises(ValueError, match="no-answer probability"):
        squad_v2_evaluate(dataset(("h1", ["x"])), {"h1": "x"}, {"other": 0.5})


# ----------------------------------------------------------------------------------------------
# The metric class a run scores with (xlt.metrics.span_qa): windows -> answers -> the functions above
# ----------------------------------------------------------------------------------------------


def _span_example(pred: str, golds: list[str]) -> tuple[dict, tuple[int, int]]:
    """A span-QA example whose context holds the prediction (the span it returns) and every gold answer."""
    context = " ## ".join([pred, *golds])
    answers = [{"text": g, "answer_start": context.index(g)} for g in golds]
    return {"id": "?", "question": "?", "context": context, "answers": answers, "is_impossible": False}, (
        0,
        len(pred),
    )


def _windows(metric: SpanQAMetric, rows: list[tuple[int, int, int, float, float]]) -> SpanQAMetric:
    """Update with per-window rows (example index, char start, char end, span score, null score)."""
    columns = [torch.tensor(c, dtype=torch.float64) for c in zip(*rows, strict=True)]
    metric.update(*columns)
    return metric


def _xquad(
    data_dir: Path, lang: str
) -> tuple[list[dict], list[dict], list[tuple[int, int, int, float, float]]]:
    """XQuAD's gold file, its questions as span-QA examples, and two windows per question: a decoy
    (span score 0.5) and the best one, which cuts the first word off every third gold answer."""
    data = json.loads((data_dir / f"xquad/xquad.{lang}.json").read_text())["data"]
    examples, rows = [], []
    for a in data:
        for p in a["paragraphs"]:
            for qa in p["qas"]:
                i, gold = len(examples), qa["answers"][0]
                examples.append({"id": qa["id"], "question": qa["question"], "context": p["context"],
                                 "answers": qa["answers"], "is_impossible": False})  # fmt: skip
                start, end = gold["answer_start"], gold["answer_start"] + len(gold["text"])
                words = gold["text"].split()
                if i % 3 == 0:
                    start = start + gold["text"].index(words[1], len(words[0])) if len(words) > 1 else end
                rows += [(i, 0, 1, 0.5, 0.0), (i, start, end, 1.0, 0.0)]
    return data, examples, rows


@pytest.mark.parametrize(("lang", "mlqa"), [("en", False), ("zh", False), ("zh", True), ("de", True)])
def test_metric_equals_dataset_scorer_on_xquad(data_dir: Path, lang: str, mlqa: bool) -> None:
    data, examples, rows = _xquad(data_dir, lang)
    metric = SpanQAMetric(examples, "mlqa" if mlqa else "squad", lang, ("score", "em", "f1"))
    for start in range(0, len(rows), 100):
        _windows(metric, rows[start : start + 100])
    got = {k: float(v) for k, v in metric.compute().items()}
    answers = {i: text for i, (text, _) in metric.predictions().items()}
    pred_map = {ex["id"]: answers[i] for i, ex in enumerate(examples)}
    assert sum(not t for t in pred_map.values()) < len(pred_map) / 2  # the best windows won, not the decoys
    expected = mlqa_evaluate(data, pred_map, lang) if mlqa else squad_evaluate(data, pred_map)
    assert {"em": got["em"], "f1": got["f1"]} == pytest.approx(
        {"em": expected["exact_match"], "f1": expected["f1"]}, abs=1e-9
    )
    assert got["score"] == qa_task_score(got["em"], got["f1"])


def test_metric_with_an_unknown_mlqa_language_is_a_clear_error() -> None:
    example, (start, end) = _span_example("x", ["x"])
    metric = _windows(SpanQAMetric([example], "mlqa", "ja", ("em",)), [(0, start, end, 1.0, 0.0)])
    with pytest.raises(ValueError, match="'ja'"):
        metric.compute()
    with pytest.raises(ValueError, match="unknown span-QA scoring 'mlqa_v2'"):
        SpanQAMetric([example], "mlqa_v2", "de", ("em",))


ROWS = [
    ("q1", "Denver Broncos", ["Denver Broncos"]),
    ("q2", "Santa Clara", ["Santa Clara, California"]),
    ("q3", "gold", ["Gold", "golden"]),
    ("q4", "1999", ["2000"]),
    ("q5", "the answer", ["an answer!"]),
]
EXAMPLES, SPANS = zip(*(_span_example(pred, golds) for _, pred, golds in ROWS), strict=True)
WINDOWS = [(i, start, end, 1.0, 0.0) for i, (start, end) in enumerate(SPANS)]


def _new(**kwargs: object) -> SpanQAMetric:
    return SpanQAMetric(list(EXAMPLES), "squad", "en", ("score", "em", "f1"), **kwargs)


def _values(metric: SpanQAMetric) -> dict[str, float]:
    return {k: float(v) for k, v in metric.compute().items()}


def test_metric_scores_rows_by_hand() -> None:
    # q1 EM 1 F1 1; q2 F1 2*1*(2/3)/(5/3) = 0.8; q3 EM 1 (case); q4 0; q5 EM 1 (articles, punctuation)
    assert _values(_windows(_new(), WINDOWS)) == pytest.approx(
        {"em": 300 / 5, "f1": 100 * 3.8 / 5, "score": (300 / 5 + 100 * 3.8 / 5) / 2}
    )


def test_metric_merge_state_equals_single_instance() -> None:
    whole = _values(_windows(_new(), WINDOWS))
    left, right = _windows(_new(), WINDOWS[:2]), _windows(_new(), WINDOWS[2:])
    left.merge_state(right)
    assert _values(left) == pytest.approx(whole)


class FakeAllGather:
    """Stands in for torch.distributed all_gather in torchmetrics' own sync code: returns this
    rank's tensor and the other rank's state, in the order torchmetrics gathers the states."""

    def __init__(self) -> None:
        self.other_rank: list[torch.Tensor] = []

    def __call__(self, tensor: torch.Tensor, group: object = None) -> list[torch.Tensor]:
        return [tensor, self.other_rank.pop(0)]


def _rank0(gather: FakeAllGather) -> SpanQAMetric:
    return _new(dist_sync_fn=gather, distributed_available_fn=lambda: True)


def test_metric_ddp_sync_drops_sampler_padding_duplicates() -> None:
    whole = _values(_windows(_new(), WINDOWS))
    # DistributedSampler pads rank 1 with q1's window again; the duplicate must not count twice.
    gather = FakeAllGather()
    rank0, rank1 = _windows(_rank0(gather), WINDOWS[:3]), _windows(_new(), WINDOWS[3:] + WINDOWS[:1])
    gather.other_rank = [dim_zero_cat(getattr(rank1, a)) for a in rank0._reductions]
    assert _values(rank0) == pytest.approx(whole)
    assert not gather.other_rank  # every state went through the gather


def test_metric_ddp_sync_with_an_empty_rank() -> None:
    whole = _values(_windows(_new(), WINDOWS))
    gather = FakeAllGather()
    rank0 = _windows(_rank0(gather), WINDOWS)
    # An idle rank contributes torchmetrics' placeholder: an empty tensor of the metric's dtype,
    # which must match the float64 states of the busy rank.
    assert rank0.dtype == torch.float64
    gather.other_rank = [torch.tensor([], dtype=rank0.dtype) for _ in rank0._reductions]
    assert _values(rank0) == pytest.approx(whole)


def test_metric_scores_only_the_predicted_examples() -> None:
    # limit_*_batches: examples without an evaluated window are left out of the mean.
    assert _values(_windows(_new(), WINDOWS[:2])) == pytest.approx({"em": 50.0, "f1": 90.0, "score": 70.0})


def _ddp_worker(rank: int, port: int, queue: object) -> None:
    import os

    import torch.distributed as dist

    from xlt.metrics.tagging import WordTagScore

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    names = ["O", "B-PER", "NOUN", "VERB"]
    qa, tags = _new(), WordTagScore("f1", [[1, 0], [2, 2, 2]], names)
    if rank == 0:  # rank 1 stays idle: the empty-rank corner of torchmetrics' gather
        _windows(qa, WINDOWS)
        # sentence 0 predicted B-PER O, sentence 1 NOUN NOUN VERB (gold NOUN NOUN NOUN)
        tags.update(
            torch.tensor([[1, 0, 0], [2, 2, 3]]),
            torch.tensor([0, 1]),
            torch.tensor([[0, 1, -100], [0, 1, 2]]),
        )
    result = {f"qa_{k}": float(v) for k, v in qa.compute().items()}
    result["tag_f1"] = float(tags.compute())
    queue.put((rank, result))  # type: ignore[attr-defined]
    dist.destroy_process_group()


@pytest.mark.slow
def test_metrics_under_real_gloo_ddp() -> None:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_ddp_worker, args=(rank, port, queue)) for rank in range(2)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    expected = {f"qa_{k}": v for k, v in _values(_windows(_new(), WINDOWS)).items()}
    assert results[0] == results[1]
    assert {k: results[0][k] for k in expected} == pytest.approx(expected)
    # gold chunks PER, NOUN(0-2) = 2; predicted PER, NOUN(0-1), VERB = 3; 1 correct
    assert results[0]["tag_f1"] == pytest.approx(100 * 2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))
