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
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from xlt import PROJECT_ROOT
from xlt.orchestration.rundir import PREVIOUS_CKPT, UNUSABLE_CKPT, checkpoint_problem, resume_checkpoint
from xlt.training.callbacks import keep_previous
from xlt.training.sharded_ckpt import DCP_METADATA, META_FILE, read_meta, read_weights, remove

FAULTS = Path(__file__).parent / "faults"


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


FSDP_PROFILES = ("xlmr_xl", "xlmr_xxl", "qwen2_5_3b", "qwen2_5_7b", "tiny_xl", "tiny_qwen")


def test_the_fsdp_profiles_save_sharded_by_default_and_full_on_request(compose_cfg) -> None:
    assert compose_cfg("+target=xnli", "model=tiny", "scale=fsdp").scale.strategy.state_dict_type == "sharded"
    for (
        model
    ) in FSDP_PROFILES:  # each model's own profile (scale: ${model}), FSDP through conf/scale/fsdp.yaml
        strategy = compose_cfg("+target=xnli", f"model={model}").scale.strategy
        assert (
            strategy._target_ == "xlt.training.strategies.FSDP" and strategy.state_dict_type == "sharded"
        ), model
    for model in ("xlmr_base", "xlmr_large", "tiny"):  # DDP: one file, as before
        assert "state_dict_type" not in str(compose_cfg("+target=xnli", f"model={model}").scale.strategy), (
            model
        )
    cfg = compose_cfg("+target=xnli", "model=tiny", "scale=fsdp", "scale.strategy.state_dict_type=full")
    assert cfg.scale.strategy.state_dict_type == "full"


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


def test_a_finished_best_replaces_the_older_one_without_deleting_it_first(
    monkeypatch, tmp_path: Path
) -> None:
    """best.ckpt is missing only between two renames, not while a large older directory is deleted."""
    from xlt.training.sharded_ckpt import put_in_place

    best, partial = tmp_path / "best.ckpt", tmp_path / "best.ckpt.partial"
    write_sharded(best, sample_weights(1), step=2)
    write_sharded(partial, sample_weights(2), step=4)
    events: list[str] = []
    real_replace, real_rmtree = os.replace, shutil.rmtree
    monkeypatch.setattr(os, "replace", lambda s, d: (events.append(f"{Path(s).name}->{Path(d).name}"),
                                                      real_replace(s, d))[1])  # fmt: skip
    monkeypatch.setattr(
        shutil, "rmtree", lambda p, **k: (events.append(f"rm {Path(p).name}"), real_rmtree(p, **k))[1]
    )
    put_in_place(partial, best)
    assert events == ["best.ckpt->best.ckpt.old", "best.ckpt.partial->best.ckpt", "rm best.ckpt.old"]
    assert read_meta(best)["global_step"] == 4 and sorted(p.name for p in tmp_path.iterdir()) == ["best.ckpt"]
    torch.testing.assert_close(read_weights(best)["heads.xnli.bias"], sample_weights(2)["heads.xnli.bias"])


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


@pytest.mark.slow  # 2 processes, ~12 min loaded
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


def test_every_rank_waits_until_rank_0_has_put_the_sharded_best_in_place(monkeypatch, tmp_path: Path) -> None:
    """The root cause of the failed relaunch after a SIGTERM during a sharded save: rank 0 renames
    best.ckpt.partial into place after the save's barrier, and the other ranks read best.ckpt as soon
    as the fit ends. BestCheckpoint must meet the other ranks in a barrier after the rename."""
    from types import SimpleNamespace

    from pytorch_lightning.callbacks import ModelCheckpoint

    import xlt.training.callbacks as callbacks
    from xlt.training.callbacks import BestCheckpoint

    events: list[str] = []

    def save(self, trainer, filepath):  # ModelCheckpoint's save: the shards, then Lightning's barrier
        write_sharded(Path(filepath), sample_weights(0), step=3)
        events.append(f"save {Path(filepath).name}")

    monkeypatch.setattr(ModelCheckpoint, "_save_checkpoint", save)
    real = callbacks.put_in_place
    monkeypatch.setattr(
        callbacks, "put_in_place", lambda s, d: (real(s, d), events.append(f"place {d.name}"))
    )
    for rank in (0, 1):
        strategy = SimpleNamespace(
            _state_dict_type="sharded", barrier=lambda name=None: events.append("barrier")
        )
        trainer = SimpleNamespace(strategy=strategy, is_global_zero=rank == 0)
        BestCheckpoint(dirpath=tmp_path, filename="best", monitor="m", mode="max")._save_checkpoint(
            trainer, str(tmp_path / f"r{rank}" / "best.ckpt")
        )
    assert events == [
        "save best.ckpt.partial", "place best.ckpt", "barrier",  # rank 0
        "save best.ckpt.partial", "barrier",  # rank 1: waits for rank 0's rename
    ]  # fmt: skip
    assert checkpoint_problem(tmp_path / "r0" / "best.ckpt") is None


# Only the target stage, one epoch, validated once at its end: the fit's one best.ckpt save is its last
# act, after which every rank reads best.ckpt (the evaluation copies).
TARGET_ONLY = (
    "model=tiny", "+target=xnli", "target.train_task=snli", "target.train_split=dev",
    "target.languages=[en,de]", "target.max_train_examples=32", "target.max_eval_examples=16",
    "target.epochs=1", "target.batch_size=16", "scale.per_device_batch_size=8", "target.eval_batch_size=16",
    "scale=fsdp", "scale.devices=2", "trainer.accelerator=cpu", "scale.precision=32-true",
    "trainer.enable_progress_bar=false", "logger=csv",
)  # fmt: skip


@pytest.mark.slow  # 2 processes: 3.2-4.1 min on the loaded 2-core machine (load average 10-12)
def test_a_slow_rename_of_the_sharded_best_on_rank_0_is_waited_for(data_dir: Path, cache_dir: Path,
                                                                   tmp_path: Path) -> None:  # fmt: skip
    """Two processes, the FSDP profile's sharded checkpoints, rank 0 renaming best.ckpt.partial into
    place 4 s late (a slow or loaded file system): the run ends with every row. Before the barrier,
    rank 1 read best.ckpt before it existed and the job died (rank 0 in the evaluation's broadcast)."""
    from tests.test_fsdp import results, xlt_train

    run_dir = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "XLT_FAULT": "best.ckpt:place:0:SLEEP4",
           "XLT_FAULT_MARK": str(tmp_path / "mark"),
           "PYTHONPATH": os.pathsep.join([str(FAULTS), os.environ.get("PYTHONPATH", str(PROJECT_ROOT))])}  # fmt: skip
    proc = subprocess.run(xlt_train(run_dir, cache_dir, *TARGET_ONLY), cwd=PROJECT_ROOT, env=env, timeout=600,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    assert (tmp_path / "mark").exists(), "the slow rename never happened:\n" + proc.stdout[-3000:]
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert (run_dir / "checkpoints" / "target" / "best.ckpt").is_dir()
    assert {(k[0], k[2], k[3]) for k in results(run_dir)} >= {
        ("target", "test", "en"),
        ("target", "test", "de"),
    }
