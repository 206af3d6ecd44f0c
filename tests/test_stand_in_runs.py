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

from tests.qwen_npm import needs_qwen_tokenizer
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
@pytest.mark.parametrize("model", ["tiny_xl", pytest.param("tiny_qwen", marks=needs_qwen_tokenizer)])
def test_stand_in_trains_each_head_kind_on_two_fsdp_processes(
    data_dir: Path, cache_dir: Path, tmp_path: Path, model: str, run: str
) -> None:
    run_dir = tmp_path / "run"
    run_cli(xlt_train(run_dir, cache_dir, f"model={model}", *COMMON, *RUNS[run]), tmp_path / "run.log")
    log = (tmp_path / "run.log").read_text() + (run_dir / "train.log").read_text()
    assert "Starting with 2 processes" in log
    assert (run_dir / "train_ddp_process_1.log").is_file()
    config = (run_dir / "config.yaml").read_text()
    assert "xlt.training.strategies.FSDP" in config and "precision: bf16-mixed" in config
    assert f"name: {model}" in config
    # The wrapped model under the precision policy, as the run has it (xlt.training.strategies.log_precision).
    inv_freq = "torch.float32" if model == "tiny_qwen" else "none"
    assert (f"FSDP precision: bf16-mixed param_dtype=torch.float32 reduce_dtype=torch.float32 "
            f"buffer_dtype=torch.float32 autocast_device=cpu inv_freq={inv_freq}") in log  # fmt: skip
    rows = results(run_dir)
    assert HEADS[run] <= {(stage, task) for (stage, task, _, _, _) in rows}
    tested = {lang for (stage, _, split, lang, _) in rows if stage == "target" and split == "test"}
    assert {"en", "de"} <= tested


@needs_qwen_tokenizer
def test_tiny_qwen_loads_lean_from_its_saved_random_weights(
    data_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    """The stand-in takes the real models' loading path (model.source=saved_random): rank 1 starts on
    the meta device and ends with rank 0's weights (the same checksum after the broadcast), its rotary
    inv_freq filled and fp32."""
    import re

    run_dir = tmp_path / "run"
    run_cli(xlt_train(run_dir, cache_dir, "model=tiny_qwen", *COMMON, "+target=xnli", "target.train_task=snli",
                      "target.train_split=dev", "target.languages=[en]", "target.max_train_examples=16",
                      "target.max_eval_examples=8"), tmp_path / "run.log")  # fmt: skip
    assert "source: saved_random" in (run_dir / "config.yaml").read_text()
    rank0, rank1 = (run_dir / "train.log").read_text(), (run_dir / "train_ddp_process_1.log").read_text()
    assert "encoder built on the meta device" in rank1 and "encoder built on the meta device" not in rank0
    sync = (
        r"FSDP sync_module_states: rank (\d) had (\d+) meta tensors; after rank 0's broadcast, checksum (\S+)"
    )
    zero, one = re.findall(sync, rank0), re.findall(sync, rank1)
    assert zero and one and len(zero) == len(one)
    assert zero[0][:2] == ("0", "0") and one[0][0] == "1" and int(one[0][1]) > 0  # rank 1 started on meta
    assert [c for _, _, c in zero] == [c for _, _, c in one]  # and ends with rank 0's weights and buffers
    assert "inv_freq=torch.float32" in rank1 and "param_dtype=torch.float32" in rank1
