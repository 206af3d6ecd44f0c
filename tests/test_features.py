"""Featurisation: fast tokenizers through datasets.map, the on-disk cache, dynamic padding."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from xlt.data import features as features_module
from xlt.data.features import Collator, featurize
from xlt.e5 import ensure_e5_small

PAIRS = [
    {"text_a": "A man is playing a guitar.", "text_b": "Someone makes music.", "label": 0},
    {
        "text_a": "Ein Mann spielt Gitarre auf einer sehr langen Bühne im Park.",
        "text_b": "Niemand.",
        "label": 2,
    },
    {"text_a": "一个人在弹吉他。", "text_b": "有人在演奏音乐。", "label": 0},
]


@pytest.fixture(scope="module")
def tokenizer(cache_dir: Path):
    return AutoTokenizer.from_pretrained(ensure_e5_small(cache_dir / "models" / "multilingual-e5-small"))


def test_features_match_the_tokenizer_and_record_lengths(tokenizer, tmp_path: Path) -> None:
    feats = featurize(PAIRS, "classification", tokenizer, 128, tmp_path, {"k": 1})
    for ex, row in zip(PAIRS, feats, strict=True):
        assert row["input_ids"] == tokenizer(ex["text_a"], ex["text_b"])["input_ids"]
        assert row["length"] == len(row["input_ids"]) and row["labels"] == ex["label"]
    assert feats["example_idx"] == [0, 1, 2]


def test_truncation_to_max_length(tokenizer, tmp_path: Path) -> None:
    feats = featurize(PAIRS, "classification", tokenizer, 8, None, {})
    assert max(feats["length"]) == 8


def test_second_call_reads_the_cache_instead_of_tokenising(tokenizer, tmp_path: Path, monkeypatch) -> None:
    first = featurize(PAIRS, "classification", tokenizer, 128, tmp_path, {"data": "v1"})

    def refuse(*args, **kwargs):
        raise AssertionError("re-tokenised although the features were cached")

    monkeypatch.setitem(features_module.FEATURIZERS, "classification", refuse)
    again = featurize(PAIRS, "classification", tokenizer, 128, tmp_path, {"data": "v1"})
    assert again["input_ids"] == first["input_ids"]
    with pytest.raises(AssertionError, match="re-tokenised"):
        featurize(PAIRS, "classification", tokenizer, 128, tmp_path, {"data": "v2"})  # new data: rebuilt
    assert not [
        p for p in (tmp_path / "features").iterdir() if p.name.startswith(".")
    ]  # no half-written dirs


def test_collator_pads_to_the_longest_in_the_batch(tokenizer) -> None:
    feats = featurize(PAIRS, "classification", tokenizer, 128, None, {})
    rows = [{k: feats[i][k] for k in ("input_ids", "attention_mask", "labels")} for i in range(3)]
    batch = Collator(tokenizer)(rows)
    longest = max(feats["length"])
    assert batch["input_ids"].shape == (3, longest)  # dynamic padding, not to max_length
    short = min(range(3), key=lambda i: feats["length"][i])
    assert batch["input_ids"][short, -1].item() == tokenizer.pad_token_id
    assert batch["attention_mask"][short].sum().item() == feats["length"][short]
    nested = Collator(tokenizer)([{"input_ids": [[5, 6], [7]]}, {"input_ids": [[8, 9, 10], [11]]}])
    assert nested["input_ids"].shape == (2, 2, 3)  # (batch, choices, seq) for multiple choice
