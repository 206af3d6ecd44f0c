"""The shared intermediate stage (xlt/orchestration/reuse.py): its key, and the lock between real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from xlt import PROJECT_ROOT
from xlt.orchestration.reuse import IntermediateKey, ReuseError, SharedStage, intermediate_key

CFG = {
    "model": {"name": "tiny", "revision": None, "dtype": "float32"},
    "intermediate": {"name": "anli_rounds", "epochs": 1, "max_seq_length": 128},
    "target": {"name": "xnli", "epochs": 2},
    "seed": 1,
    "scale": {"name": "default", "precision": "auto", "peft": "none", "checkpoint_every_n_steps": None,
              "gpu_memory_gb": 80},
    "optim": {"weight_decay": 0.01},
    "trainer": {"log_every_n_steps": 20, "enable_progress_bar": True, "max_epochs": None},
    "data": {"source": "local", "dir": None, "cache_dir": "/a", "num_workers": 0},
    "probe": {"tasks": []},
    "logger": {"kind": "csv"},
}  # fmt: skip
ARGS = {"model_revision": "", "exclusions": {}, "code": "abc", "precision": "32-true", "accelerator": "cpu"}


def key_of(cfg: dict, **args) -> IntermediateKey:
    return intermediate_key(cfg, **{**ARGS, **args})


def changed(path: str, value) -> dict:
    import copy

    cfg = copy.deepcopy(CFG)
    *parents, last = path.split(".")
    node = cfg
    for p in parents:
        node = node[p]
    node[last] = value
    return cfg


def test_the_key_names_model_task_seed_and_ignores_what_does_not_change_the_weights() -> None:
    key = key_of(CFG)
    assert key.name.startswith("tiny-anli_rounds-s1-") and len(key.name.rsplit("-", 1)[1]) == 12
    for path, value in [("target.name", "pawsx"), ("target.epochs", 3), ("probe.tasks", ["tatoeba"]),
                        ("logger.kind", "wandb"), ("data.cache_dir", "/b"), ("trainer.log_every_n_steps", 1),
                        ("scale.checkpoint_every_n_steps", 50), ("scale.name", "tiny"),
                        ("intermediate.eval_dev_heldout", False), ("intermediate.eval_dev_languages", True)]:  # fmt: skip
        assert key_of(changed(path, value)).name == key.name, path


def test_the_key_changes_with_whatever_changes_the_intermediate_weights() -> None:
    key = key_of(CFG)
    for path, value in [("intermediate.max_seq_length", 256), ("intermediate.epochs", 2), ("seed", 2),
                        ("model.dtype", "bfloat16"), ("scale.peft", "lora"), ("trainer.max_epochs", 1),
                        ("optim.weight_decay", 0.0), ("data.source", "hub")]:  # fmt: skip
        assert key_of(changed(path, value)).digest != key.digest, path
    for arg, value in [("model_revision", "0123abc"), ("code", "abd"), ("precision", "bf16-mixed"),
                       ("accelerator", "cuda"), ("exclusions", {"squad/dev": ["5733be284776f41900661182"]})]:  # fmt: skip
        assert key_of(CFG, **{arg: value}).digest != key.digest, arg


# A job's use of the shared stage, as xlt.orchestration.run makes it, with the training replaced by a sleep.
CLAIMANT = textwrap.dedent("""
    import logging, sys, time
    from pathlib import Path
    from xlt.orchestration.reuse import IntermediateKey, SharedStage
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    root, who, seconds = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    stage = SharedStage(root, IntermediateKey("tiny-anli-s1-0123456789ab", "d" * 64, {"x": 1}))
    with stage.claim(who, poll_s=0.1) as record:
        if record is None:
            print("TRAINING", who, flush=True)
            time.sleep(seconds)
            stage.ckpt_dir.mkdir(parents=True, exist_ok=True)
            (stage.ckpt_dir / "best.ckpt").write_text(who)
            stage.finish({"checkpoint": str(stage.ckpt_dir / "best.ckpt"), "trained_by": who})
            print("TRAINED", who, flush=True)
        else:
            print("REUSED", record["trained_by"], flush=True)
""")


def start(root: Path, who: str, seconds: float) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    env.pop("XLT_LAUNCH_ID", None)
    return subprocess.Popen([sys.executable, "-c", CLAIMANT, str(root), who, str(seconds)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip


def wait_for(path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


def test_two_processes_racing_for_one_key_one_trains_the_other_waits_and_reuses(tmp_path: Path) -> None:
    first = start(tmp_path, "job-a", 4)
    wait_for(tmp_path / "tiny-anli-s1-0123456789ab" / "owner.json")
    second = start(tmp_path, "job-b", 4)
    out_a, _ = first.communicate(timeout=120)
    out_b, _ = second.communicate(timeout=120)
    assert first.returncode == 0 and second.returncode == 0, out_a + out_b
    assert "TRAINING job-a" in out_a and "TRAINED job-a" in out_a
    assert "TRAINING" not in out_b and "REUSED job-a" in out_b
    assert "is being trained by the job in job-a" in out_b and "waiting for it" in out_b
    # a third job later finds it complete and does not wait
    third = start(tmp_path, "job-c", 0)
    out_c, _ = third.communicate(timeout=60)
    assert "REUSED job-a" in out_c and "waiting" not in out_c


def test_a_killed_holder_releases_the_lock_and_the_waiting_job_trains(tmp_path: Path) -> None:
    first = start(tmp_path, "job-a", 60)
    wait_for(tmp_path / "tiny-anli-s1-0123456789ab" / "owner.json")
    second = start(tmp_path, "job-b", 0.5)
    time.sleep(1.0)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    out_b, _ = second.communicate(timeout=120)
    assert second.returncode == 0 and "TRAINED job-b" in out_b, out_b


def test_other_ranks_follow_their_rank_zero(tmp_path: Path, monkeypatch) -> None:
    stage = SharedStage(tmp_path, IntermediateKey("k-s1-0123456789ab", "e" * 64, {}))
    monkeypatch.setenv("XLT_LAUNCH_ID", "launch-1")
    with stage.claim("rank0") as record:
        assert record is None
        with stage.claim("rank1", rank_zero=False, poll_s=0.01) as follower:
            assert follower is None  # owner.json names this launch: train with rank 0
        monkeypatch.setenv("XLT_LAUNCH_ID", "launch-2")
        waiting = stage.claim("rank1", rank_zero=False, poll_s=0.01, timeout_s=0.1)
        with pytest.raises(ReuseError, match="gave up waiting for rank 0"), waiting:
            pass
        stage.ckpt_dir.mkdir(parents=True)
        (stage.ckpt_dir / "best.ckpt").write_text("x")
        stage.finish({"checkpoint": str(stage.ckpt_dir / "best.ckpt")})
    with stage.claim("rank1", rank_zero=False, poll_s=0.01) as follower:
        assert follower is not None and follower["key"] == "k-s1-0123456789ab"


def test_a_record_whose_checkpoint_is_gone_is_an_error_not_a_silent_retrain(tmp_path: Path) -> None:
    stage = SharedStage(tmp_path, IntermediateKey("k-s1-0123456789ab", "e" * 64, {}))
    with stage.claim("a") as record:
        assert record is None
        stage.finish({"checkpoint": str(stage.ckpt_dir / "best.ckpt")})
    with pytest.raises(ReuseError, match="which is missing; delete"), stage.claim("b"):
        pass


def test_a_folder_holding_another_key_is_refused(tmp_path: Path) -> None:
    SharedStage(tmp_path, IntermediateKey("k", "a" * 64, {})).dir.mkdir()
    (tmp_path / "k" / "key.json").write_text('{"digest": "' + "b" * 64 + '"}')
    with (
        pytest.raises(ReuseError, match="holds another key"),
        SharedStage(tmp_path, IntermediateKey("k", "a" * 64, {})).claim("a"),
    ):
        pass


def test_a_second_completion_means_the_lock_did_not_exclude_and_stops(tmp_path: Path) -> None:
    stage = SharedStage(tmp_path, IntermediateKey("k-s1-0123456789ab", "e" * 64, {}))
    with stage.claim("a") as record:
        assert record is None
        stage.finish({"checkpoint": "x"})
        with pytest.raises(ReuseError, match="POSIX locks do not work across the machines"):
            stage.finish({"checkpoint": "y"})


def test_a_moved_strategy_class_keeps_the_key_a_fixed_reuse_code_gave_before_the_move() -> None:
    """xlt.strategies.FSDP moved to xlt.training.strategies (issue 26): the key material names the old
    path, so a sweep with a fixed reuse.code finds the intermediate stages it trained before the move
    (checked against 6b1c9df's code: tiny_xl + mnli, reuse.code=study-v1, the same key); another
    strategy still changes the key."""
    import hashlib
    import json

    new = key_of(
        changed("scale.strategy", {"_target_": "xlt.training.strategies.FSDP", "cpu_offload": False})
    )
    old = key_of(changed("scale.strategy", {"_target_": "xlt.strategies.FSDP", "cpu_offload": False}))
    assert new.name == old.name and new.material["scale"]["strategy"]["_target_"] == "xlt.strategies.FSDP"
    assert (
        new.digest
        == hashlib.sha256(json.dumps(old.material, sort_keys=True, default=str).encode()).hexdigest()
    )
    other = key_of(
        changed("scale.strategy", {"_target_": "xlt.training.strategies.DDP", "cpu_offload": False})
    )
    assert other.name != new.name
