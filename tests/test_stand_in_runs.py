"""Each stand-in (tiny_xl: XLM-R XL's class; tiny_qwen: Qwen2 with Qwen2.5's tokenizer) through the
real ``python -m xlt.train`` on 2 gloo processes under its real counterpart's profile (FSDP full
sharding, activation checkpointing per layer, bf16 compute under the precision policy, 2 devices),
once with each head kind: multiple choice -> classification, QA -> tagging. One batch per stage
(``debug=fdr``); padded batches (length-grouped, right padding).

Measured on the shared 2-core machine under load: about 1-2 min a run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_fsdp import results, run_cli, xlt_train

pytestmark = pytest.mark.slow

COMMON = (
    "scale.devices=2",
    "trainer.accelerator=cpu",
    "debug=fdr",
    "logger=csv",
    "trainer.enable_progress_bar=false",
)
RUNS = {
    "mc_then_classification": (
        "+intermediate=hellaswag", "intermediate.train_split=dev", "intermediate.max_train_examples=32",
        "intermediate.max_eval_examples=16", "intermediate.max_seq_length=64",
        "+target=xnli", "target.train_task=snli", "target.train_split=dev", "target.languages=[en,de]",
        "target.max_train_examples=32", "target.max_eval_examples=16",
    ),
    "qa_then_tagging": (
        "+intermediate=squad", "intermediate.max_train_examples=32", "intermediate.max_eval_examples=16",
        "+target=udpos", "target.languages=[en,de]", "target.max_train_examples=32", "target.max_eval_examples=16",
    ),
}  # fmt: skip
HEADS = {
    "mc_then_classification": {("intermediate", "hellaswag"), ("target", "xnli")},
    "qa_then_tagging": {("intermediate", "squad"), ("target", "udpos")},
}


@pytest.mark.parametrize("run", sorted(RUNS))
@pytest.mark.parametrize("model", ["tiny_xl", "tiny_qwen"])
def test_stand_in_trains_each_head_kind_on_two_fsdp_processes(
    data_dir: Path, cache_dir: Path, tmp_path: Path, model: str, run: str
) -> None:
    run_dir = tmp_path / "run"
    run_cli(xlt_train(run_dir, cache_dir, f"model={model}", *COMMON, *RUNS[run]), tmp_path / "run.log")
    log = (tmp_path / "run.log").read_text() + (run_dir / "train.log").read_text()
    assert "Starting with 2 processes" in log
    assert (run_dir / "train_ddp_process_1.log").is_file()
    config = (run_dir / "config.yaml").read_text()
    assert "xlt.strategies.FSDP" in config and "precision: bf16-mixed" in config
    assert f"name: {model}" in config
    rows = results(run_dir)
    assert HEADS[run] <= {(stage, task) for (stage, task, _, _, _) in rows}
    tested = {lang for (stage, _, split, lang, _) in rows if stage == "target" and split == "test"}
    assert {"en", "de"} <= tested
