"""Multiple choice: HellaSwag, Cosmos QA and CommonsenseQA readers on the real files, (choices, seq)
features and logits, bad input, fast dev runs, and one slow real training run."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import torch

from xlt.data.features import Collator, featurize
from xlt.modeling.heads import build_head
from xlt.orchestration.run import run
from xlt.results.rows import read_results
from xlt.tasks import DataError, get_task
from xlt.tasks.loading import load_split
from xlt.tasks.multiple_choice import (
    read_cosmosqa_csv,
    read_csqa_jsonl,
    read_hellaswag_jsonl,
    read_hellaswag_text6,
)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    from transformers import AutoTokenizer

    from xlt.e5 import ensure_e5_small

    return AutoTokenizer.from_pretrained(ensure_e5_small(tmp_path_factory.mktemp("e5") / "e5"))


# -- Readers on the real files -------------------------------------------------------------------------


def test_csqa_complete_splits(data_dir: Path) -> None:
    csqa = get_task("csqa")
    train = load_split(csqa, "train", "en", "local", data_dir).examples
    dev = load_split(csqa, "dev", "en", "local", data_dir).examples
    assert (len(train), len(dev)) == (9_741, 1_221)
    assert dev[0] == {
        "context": "A revolving door is convenient for two direction travel, but it also serves as a security measure at a what?",
        "choices": ["bank", "library", "department store", "mall", "new york"],
        "label": 0,
    }
    counts = [sum(ex["label"] == i for ex in dev) for i in range(5)]
    assert counts == [239, 255, 241, 251, 235]  # majority baseline: B, 255/1221 = 20.9%


def test_cosmosqa_dev(data_dir: Path) -> None:
    dev = load_split(get_task("cosmosqa"), "dev", "en", "local", data_dir).examples
    assert len(dev) == 2_985
    assert dev[0]["context"].startswith("Do i need to go for a legal divorce ?")
    assert dev[0]["context"].endswith(
        "complication ? Why is this person asking about divorce ?"
    )  # context + question
    assert dev[0]["choices"][1] == "He wants to get married to a different person ." and dev[0]["label"] == 1


def test_hellaswag_val_text_layout_matches_the_official_jsonl(data_dir: Path) -> None:
    val = load_split(get_task("hellaswag"), "dev", "en", "local", data_dir).examples
    assert len(val) == 10_042
    assert [sum(ex["label"] == i for ex in val) for i in range(4)] == [2515, 2485, 2584, 2458]
    # The derived layout's first two items are the official val file's first two (fixture).
    official = [json.loads(line) for line in (data_dir / "hellaswag/hf_dummy/hellaswag_val.jsonl").open()]
    for derived, row in zip(val[:2], official, strict=True):
        assert derived["context"] == row["ctx"] and derived["choices"] == row["endings"]
        assert derived["label"] == row["label"]
    # The jsonl reader builds jiant's pairs: ctx_a, then ctx_b + " " + ending.
    first = next(read_hellaswag_jsonl(data_dir / "hellaswag/hf_dummy/hellaswag_val.jsonl", "en"))
    assert first["context"] == "A man is sitting on a roof."
    assert first["choices"][3] == "he starts pulling up roofing on a roof." and first["label"] == 3


def test_hellaswag_hidden_test_labels_are_an_error_not_a_guess(data_dir: Path) -> None:
    with pytest.raises(DataError, match="hellaswag_test.jsonl:1"):
        list(read_hellaswag_jsonl(data_dir / "hellaswag/hf_dummy/hellaswag_test.jsonl", "en"))


# -- Bad input ---------------------------------------------------------------------------------------------

CSQA_ROW = {"id": "q1", "answerKey": "B", "question": {"stem": "Where?", "choices": [
    {"label": k, "text": t} for k, t in zip("ABCDE", ["a", "b", "c", "d", "e"], strict=True)]}}  # fmt: skip


def _csqa(tmp_path: Path, **changes) -> Path:
    row = json.loads(json.dumps(CSQA_ROW))
    for key, value in changes.items():
        if key == "choices":
            row["question"]["choices"] = value
        else:
            row[key] = value
    path = tmp_path / "dev_rand_split.jsonl"
    path.write_text(json.dumps(CSQA_ROW) + "\n" + json.dumps(row) + "\n")
    return path


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"choices": []}, "empty choice list"),
        ({"choices": CSQA_ROW["question"]["choices"][:4]}, "4 choices, expected 5"),
        ({"choices": [{"label": k, "text": "t"} for k in "ABCDF"]}, "choice keys ['A', 'B', 'C', 'D', 'F']"),
        ({"answerKey": "F"}, "answerKey 'F' out of range"),
    ],
)
def test_csqa_bad_records_name_file_and_record(tmp_path: Path, changes, message: str) -> None:
    with pytest.raises(DataError, match=re.escape(message)) as err:
        list(read_csqa_jsonl(_csqa(tmp_path, **changes), "en"))
    assert "dev_rand_split.jsonl:2 (id q1)" in str(err.value) and "\n" not in str(err.value)


def test_hellaswag_and_cosmos_bad_records(tmp_path: Path) -> None:
    jsonl = tmp_path / "hellaswag_val.jsonl"
    jsonl.write_text(
        json.dumps({"ctx_a": "A man", "ctx_b": "he", "endings": ["x", "y", "z"], "label": 0}) + "\n"
    )
    with pytest.raises(DataError, match=r"hellaswag_val.jsonl:1: 3 choices, expected 4"):
        list(read_hellaswag_jsonl(jsonl, "en"))
    jsonl.write_text(
        json.dumps({"ctx_a": "A man", "ctx_b": "he", "endings": ["w", "x", "y", "z"], "label": 4}) + "\n"
    )
    with pytest.raises(DataError, match=r"hellaswag_val.jsonl:1: label 4 out of range \(expected 0..3\)"):
        list(read_hellaswag_jsonl(jsonl, "en"))
    text = tmp_path / "hellaswag_val_full.txt"
    text.write_text("Act: ctx\n1\na\nb\nc\n")
    with pytest.raises(DataError, match="5 lines, not a multiple of 6"):
        list(read_hellaswag_text6(text, "en"))
    csv_path = tmp_path / "valid.csv"
    csv_path.write_text("id,context,question,answer0,answer1,answer2,answer3,label\nx1,C,Q,a,b,c,d,7\n")
    with pytest.raises(DataError, match=r"valid.csv:2 \(id x1\): label 7 out of range"):
        list(read_cosmosqa_csv(csv_path, "en"))
    csv_path.write_text("id,context,question,answer0,answer1,answer2,label\nx1,C,Q,a,b,c,1\n")
    with pytest.raises(DataError, match="header lacks"):
        list(read_cosmosqa_csv(csv_path, "en"))


# -- Features and the head -------------------------------------------------------------------------------


def test_choices_become_a_choices_by_seq_batch(data_dir: Path, tokenizer) -> None:
    dev = load_split(get_task("csqa"), "dev", "en", "local", data_dir, limit=6).examples
    feats = featurize(dev, "multiple_choice", tokenizer, 24, None, {"test": "mc"})
    assert all(len(ids) == 5 for ids in feats["input_ids"])
    assert feats["length"] == [max(len(c) for c in ids) for ids in feats["input_ids"]]
    first = feats[0]["input_ids"]
    # <s> stem </s></s> choice </s>, truncated to 24 tokens
    assert first[0][0] == tokenizer.cls_token_id and first[0].count(tokenizer.sep_token_id) == 3
    assert all(len(c) <= 24 for ids in feats["input_ids"] for c in ids)
    batch = Collator(tokenizer)([feats[i] for i in range(4)])
    width = batch["input_ids"].shape[-1]
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (4, 5, width)
    assert batch["labels"].tolist() == [ex["label"] for ex in dev[:4]]

    head = build_head(get_task("csqa"), hidden_size=8, pooling="cls")
    hidden = torch.randn(4 * 5, width, 8)  # what the encoder returns for the flattened choices
    logits = head(hidden, batch)
    assert logits.shape == (4, 5)
    loss = head.loss(logits, batch)
    loss.backward()
    assert loss.item() > 0 and head.predict(logits, batch).shape == (4,)


# -- Fast dev runs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "train_split"), [("csqa", "train"), ("cosmosqa", "dev"), ("hellaswag", "dev")]
)
def test_fast_dev_run(compose_cfg, data_dir: Path, tmp_path: Path, task: str, train_split: str) -> None:
    cfg = compose_cfg(
        "model=tiny", f"+intermediate={task}", "+target=tatoeba", "debug=fdr", f"intermediate.train_split={train_split}",
        "intermediate.max_train_examples=32", "intermediate.max_eval_examples=16", "intermediate.batch_size=8",
        "intermediate.eval_batch_size=16", "scale.per_device_batch_size=8", "intermediate.max_seq_length=64",
        "target.languages=[de]", "target.max_eval_examples=8",
    )  # fmt: skip
    run(cfg, tmp_path)
    rows = [r for r in read_results(tmp_path / "results.jsonl") if r["stage"] == "intermediate"]
    assert {(r["task"], r["split"], r["language"], r["metric"]) for r in rows} >= {(task, "dev", "en", "acc")}


@pytest.mark.slow
def test_e5_small_learns_commonsenseqa(compose_cfg, data_dir: Path, tmp_path: Path) -> None:
    """e5-small (frozen embeddings, mean pooling as e5 was trained) on 1,200 CommonsenseQA training
    questions, one epoch, beats the majority baseline on the first 500 dev questions (B: 106/500 =
    21.2%; 20.9% on the full dev set) by a wide margin.

    Measured on the 2-CPU shared development machine (OMP_NUM_THREADS=1, other jobs running): 33.4%
    dev accuracy; 572 s for the run, 9 min 52 s for the pytest call (about 8-9 min of it training:
    75 steps of 16 questions x 5 choices). With 2 threads on the contended CPUs it was ~3x slower.
    """
    cfg = compose_cfg(
        "model=e5_small", "model.freeze_embeddings=true", "model.pooling=mean", "+intermediate=csqa",
        "+target=tatoeba", "intermediate.max_train_examples=1200", "intermediate.max_eval_examples=500",
        "intermediate.epochs=1", "intermediate.lr=1e-4", "intermediate.batch_size=16",
        "scale.per_device_batch_size=16", "intermediate.max_seq_length=40", "intermediate.eval_batch_size=64",
        "target.languages=[de]", "target.max_eval_examples=8",
    )  # fmt: skip
    started = time.perf_counter()
    run(cfg, tmp_path)
    elapsed = time.perf_counter() - started
    (acc,) = [
        r["value"]
        for r in read_results(tmp_path / "results.jsonl")
        if r["stage"] == "intermediate" and r["language"] == "en" and r["metric"] == "acc"
    ]
    print(f"\ncsqa dev accuracy {acc:.1f} (majority 21.2) after {elapsed:.0f} s")
    assert acc > 27.0, acc
