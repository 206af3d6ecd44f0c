"""Sharded (torch distributed checkpoint) checkpoints of the FSDP profiles (issue 21 item 3).

- the FSDP profile saves sharded; a sharded directory is read back into one full state dict, its
  completeness is checked cheaply, and the resume points (last.ckpt, prev.ckpt) rotate as files do;
- two processes through the real ``python -m xlt.train``: a sharded run killed mid-stage and
  relaunched ends with the losses and rows of an unbroken full-state-dict run, every checkpoint it
  wrote is a directory of one shard file per rank, and xlt.export / xlt.evaluate read its selected
  weights.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from xlt import PROJECT_ROOT
from xlt.callbacks import keep_previous
from xlt.orchestration.rundir import PREVIOUS_CKPT, UNUSABLE_CKPT, checkpoint_problem, resume_checkpoint
from xlt.sharded_ckpt import DCP_METADATA, META_FILE, read_meta, read_weights, remove


def write_sharded(path: Path, weights: dict[str, torch.Tensor], step: int) -> None:
    """A sharded checkpoint as Lightning's FSDPStrategy lays it out (one process, no process group)."""
    import torch.distributed.checkpoint as dcp

    optimizer = {
        "state": {k: {"exp_avg": torch.zeros_like(v)} for k, v in weights.items()},
        "param_groups": [],
    }
    path.mkdir(parents=True)
    dcp.save({"model": weights, "optimizer_0": optimizer}, checkpoint_id=str(path), no_dist=True)
    torch.save({"global_step": step, "epoch": 0}, path / META_FILE)


def sample_weights(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "encoder.layer.0.weight": torch.randn(6, 4, generator=g),
        "heads.xnli.bias": torch.randn(3, generator=g),
    }


def test_the_fsdp_profile_saves_full_by_default_and_sharded_on_request(compose_cfg) -> None:
    # Sharded is opt-in until a relaunch after SIGTERM during a sharded save works (conf/scale/fsdp.yaml).
    assert compose_cfg("+target=xnli", "model=tiny", "scale=fsdp").scale.strategy.state_dict_type == "full"
    cfg = compose_cfg("+target=xnli", "model=tiny", "scale=fsdp", "scale.strategy.state_dict_type=sharded")
    assert cfg.scale.strategy.state_dict_type == "sharded"


def test_a_sharded_directory_reads_into_one_full_state_dict(tmp_path: Path) -> None:
    weights = sample_weights(0)
    ckpt = tmp_path / "best.ckpt"
    write_sharded(ckpt, weights, step=7)
    got = read_weights(ckpt)
    assert got.keys() == weights.keys()  # the model only: the optimizer states stay on disk
    for name, tensor in weights.items():
        torch.testing.assert_close(got[name], tensor, rtol=0, atol=0)
    assert read_meta(ckpt)["global_step"] == 7
    assert checkpoint_problem(ckpt) is None
    # A save cut off before rank 0 wrote meta.pt, or before DCP's coordinator wrote .metadata.
    (ckpt / META_FILE).unlink()
    assert "no meta.pt" in str(checkpoint_problem(ckpt))
    torch.save({"global_step": 7}, ckpt / META_FILE)
    (ckpt / DCP_METADATA).unlink()
    assert "no .metadata" in str(checkpoint_problem(ckpt))


def test_resume_points_rotate_as_directories(tmp_path: Path) -> None:
    last, prev = tmp_path / "last.ckpt", tmp_path / PREVIOUS_CKPT
    write_sharded(prev, sample_weights(1), step=2)
    write_sharded(last, sample_weights(2), step=4)
    keep_previous(last)  # the save of step 6 is about to write last.ckpt
    assert not last.exists() and read_meta(prev)["global_step"] == 4
    write_sharded(last, sample_weights(3), step=6)
    assert resume_checkpoint(tmp_path) == last
    # last.ckpt cut off mid-save: the relaunch resumes from prev.ckpt and sets last.ckpt aside.
    (last / DCP_METADATA).unlink()
    assert resume_checkpoint(tmp_path) == prev
    assert (tmp_path / UNUSABLE_CKPT).is_dir() and not last.exists()
    remove(prev)
    remove(tmp_path / UNUSABLE_CKPT)
    assert list(tmp_path.iterdir()) == []


# -- two processes ---------------------------------------------------------------------------------


@pytest.mark.slow  # 2 processes, ~12 min loaded; sharded checkpoints are opt-in
def test_killed_sharded_run_resumes_to_the_full_state_runs_numbers(
    data_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    """SIGKILL (both ranks) after the target stage's step-4 sharded checkpoint, mid-epoch; the relaunch
    resumes from the directory and ends with the losses and rows of an unbroken run that saved full
    state dicts. The exported model holds the selected weights of the sharded best.ckpt."""
    from tests.test_fsdp import FSDP, SMALL, env, global_step, losses, results, run_cli, xlt_train

    full = tmp_path / "full"
    run_cli(
        xlt_train(full, cache_dir, *SMALL, *FSDP, "scale.strategy.state_dict_type=full"),
        tmp_path / "full.log",
    )
    assert (full / "checkpoints" / "target" / "best.ckpt").is_file()

    run_dir = tmp_path / "sharded"
    argv = xlt_train(
        run_dir,
        cache_dir,
        *SMALL,
        *FSDP,
        "scale.checkpoint_every_n_steps=2",
        "scale.strategy.state_dict_type=sharded",
    )
    last = run_dir / "checkpoints" / "target" / "last.ckpt"
    with open(tmp_path / "first.log", "w") as fh:
        proc = subprocess.Popen(argv, cwd=PROJECT_ROOT, stdout=fh, stderr=subprocess.STDOUT, env=env(),
                                start_new_session=True)  # fmt: skip
    killed_at = None
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None:
            step = global_step(last) if last.is_dir() else None
            if step is not None and step >= 4:
                os.killpg(proc.pid, signal.SIGKILL)
                killed_at = step
                break
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert killed_at is not None, (
        "no sharded step checkpoint:\n" + (tmp_path / "first.log").read_text()[-3000:]
    )
    assert killed_at % 6, "killed mid-epoch"
    # Each rank wrote its own shard; nobody wrote a full file.
    assert sorted(p.name for p in last.glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    run_cli(argv, tmp_path / "relaunch.log")
    assert f"target: resuming from {last}" in (run_dir / "train.log").read_text()
    assert results(run_dir) == results(full)
    got, expected = losses(run_dir), losses(full)
    assert {k: expected[k] for k in got} == got
    missing = expected.keys() - got.keys()
    assert all(k[0] == "train/xnli/loss" and k[1] < killed_at for k in missing), missing
    # The finished stages keep only their selected weights, sharded; the resume points are gone.
    for stage in ("intermediate", "target"):
        kept = sorted(p.name for p in (run_dir / "checkpoints" / stage).iterdir())
        assert kept == ["best.ckpt"] and (run_dir / "checkpoints" / stage / "best.ckpt").is_dir(), kept
    best_sharded = read_weights(run_dir / "checkpoints" / "target" / "best.ckpt")
    best_full = read_weights(full / "checkpoints" / "target" / "best.ckpt")
    assert best_sharded.keys() == best_full.keys()
    for name, tensor in best_full.items():
        torch.testing.assert_close(best_sharded[name], tensor, rtol=0, atol=0, msg=name)

    # xlt.export writes the whole Hugging Face model from the sharded directory: the selected weights.
    from safetensors.torch import load_file

    from xlt.export import HEAD_FILE, export

    out = export(run_dir, tmp_path / "export")
    exported = load_file(str(out / "model.safetensors"))
    encoder = {k.removeprefix("roberta."): v for k, v in exported.items() if k.startswith("roberta.")}
    assert len(encoder) >= len([k for k in best_sharded if k.startswith("encoder.")]) - 1 > 0
    for name, tensor in encoder.items():
        torch.testing.assert_close(tensor, best_sharded[f"encoder.{name}"], rtol=0, atol=0, msg=name)
    head = load_file(str(out / HEAD_FILE))
    for name, tensor in head.items():
        torch.testing.assert_close(tensor, best_sharded[f"heads.xnli.{name}"], rtol=0, atol=0, msg=name)
    assert json.loads((out / "xlt_export.json").read_text())["checkpoint"].endswith("best.ckpt")
