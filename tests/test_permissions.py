"""Files and folders a run writes get the modes the user's umask gives (not tempfile's 0600/0700)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from tokenizers import Tokenizer, pre_tokenizers
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast

from xlt.data.features import featurize
from xlt.results.rows import ResultRow, RunContext, atomic_write_text, current_umask, write_results
from xlt.results.submission import write_predictions


@pytest.fixture(params=[0o022, 0o002], ids=["umask022", "umask002"])
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_current_umask_reads_without_changing(umask: int) -> None:
    assert current_umask() == umask
    assert current_umask() == umask


def test_results_state_predictions_follow_the_umask(umask: int, tmp_path: Path) -> None:
    ctx = RunContext("tiny", 1, "none", "xnli", "snli", 1, "abc", "local")
    write_results(tmp_path / "results.jsonl", [ResultRow("target", "xnli", "test", "en", "acc", 50.0)], ctx)
    atomic_write_text(tmp_path / "state.json", "{}")
    atomic_write_text(tmp_path / "wandb_id", "abc")
    pred = write_predictions(tmp_path / "predictions", "xnli", "test", "de", "labels", ["entailment"])
    for path in (tmp_path / "results.jsonl", tmp_path / "state.json", tmp_path / "wandb_id", pred):
        assert mode(path) == 0o666 & ~umask, path
    # and what a plain open() gives, for comparison
    (tmp_path / "plain").write_text("x")
    assert mode(tmp_path / "plain") == mode(tmp_path / "state.json")


def test_feature_cache_folders_follow_the_umask(umask: int, tmp_path: Path) -> None:
    vocab = {"[UNK]": 0, "[PAD]": 1, "a": 2, "b": 3}
    backend = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]")
    examples = [{"text_a": "a b", "text_b": "b", "label": 0}, {"text_a": "b", "text_b": "a a", "label": 1}]
    featurize(examples, "classification", tok, 16, tmp_path, {"k": "perm"})
    (folder,) = (tmp_path / "features").iterdir()
    assert mode(folder) == 0o777 & ~umask
    assert mode(tmp_path / "features") == 0o777 & ~umask
    for f in folder.iterdir():
        assert mode(f) & 0o044 == 0o044 & ~umask, f  # readable by group/others as the umask allows
