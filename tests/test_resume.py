"""Exact resume at any point: a run killed (SIGTERM or SIGKILL) in intermediate training, target
training, validation or test, and relaunched with the same command, ends with the same per-step
losses, results and predictions as an uninterrupted run (bitwise, CPU).

The kill points are chosen from the stages' step counts (tests/faults/sitecustomize.py sends the
signal from inside the n-th training/validation/test step), not only right after a validation."""

from __future__ import annotations

import csv
import filecmp
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from xlt import PROJECT_ROOT
from xlt.results.rows import read_results
from xlt.training.callbacks import LoaderStateOnResume, RngStateInCheckpoint, StepCheckpoint

FAULTS = PROJECT_ROOT / "tests" / "faults"


class _Dropout(pl.LightningModule):
    """Reads estimated_stepping_batches in configure_optimizers, as TransferModule does: that builds
    the training loader before Lightning restores a checkpoint (the cause of the inexact resume)."""

    def __init__(self, seen: list) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 4)
        self.seen = seen

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        loss = torch.nn.functional.dropout(self.layer(batch.float().unsqueeze(1)), 0.5).sum()
        self.seen.append((batch.tolist(), float(loss)))
        return loss

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        assert self.trainer.estimated_stepping_batches > 0
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _loader() -> DataLoader:
    from xlt.data.sampling import LengthGroupedBatchSampler, ResumableDataLoader

    return ResumableDataLoader(list(range(10)), batch_sampler=LengthGroupedBatchSampler([1] * 10, 2, True, 7))


def _trainer(callbacks: list, **kwargs) -> pl.Trainer:  # type: ignore[no-untyped-def]
    return pl.Trainer(callbacks=callbacks, logger=False, enable_progress_bar=False, enable_model_summary=False,
                      enable_checkpointing=False, **kwargs)  # fmt: skip


@pytest.mark.parametrize("stop_at", [2, 4, 6, 8, 11])  # 5 batches an epoch: 6 and 11 after its first batch
def test_mid_epoch_resume_is_bitwise_with_dropout_and_stepping_batches(tmp_path: Path, stop_at: int) -> None:
    seen: list = []
    pl.seed_everything(1)
    _trainer([RngStateInCheckpoint(), LoaderStateOnResume()], max_epochs=3).fit(_Dropout(seen), _loader())
    uninterrupted = list(seen)
    seen.clear()
    ckpt = tmp_path / "last.ckpt"
    pl.seed_everything(1)
    first = _trainer([StepCheckpoint(ckpt, every=stop_at), RngStateInCheckpoint(), LoaderStateOnResume()],
                     max_epochs=3, max_steps=stop_at + 1)  # fmt: skip
    first.fit(_Dropout(seen), _loader())  # saves at stop_at, runs one step more, "dies"
    assert seen == uninterrupted[: stop_at + 1]
    seen.clear()
    pl.seed_everything(1)  # the relaunch seeds as the run does, then restores
    _trainer([RngStateInCheckpoint(), LoaderStateOnResume()], max_epochs=3).fit(_Dropout(seen), _loader(),
                                                                                ckpt_path=ckpt)  # fmt: skip
    assert seen == uninterrupted[stop_at:]  # same batches, same dropout masks, same losses


# ----------------------------------------------------------------------------- real relaunches

STEPS_PER_EPOCH, EPOCHS = 8, 2  # 64 examples, batch 8, both stages
ARGS = (
    "model=tiny", "+intermediate=anli_rounds", "+target=xnli", "intermediate.train_split=dev_r1",
    "intermediate.dev_split=dev_r2", "target.train_task=snli", "target.train_split=dev", "target.languages=[en,de]",
    "intermediate.max_train_examples=64", "target.max_train_examples=64", "intermediate.max_eval_examples=32",
    "target.max_eval_examples=32", "scale.per_device_batch_size=8", "intermediate.batch_size=8",
    "target.batch_size=8", "intermediate.epochs=2", "target.epochs=2", "logger=csv", "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false", "scale.checkpoint_every_n_steps=3",
    # selection every 5 steps (the recipe's val_check_every, scaled down): mid-epoch validations and
    # their last.ckpt, plus the validation after the last step, are among the points killed and resumed
    "intermediate.val_check_every=5", "target.val_check_every=5",
)  # fmt: skip


def _kill_points() -> list[str]:
    """Training steps of each stage: right after a step checkpoint, between two, the first step of
    the second epoch (after the epoch-end checkpoint), plus one drawn at random (seed printed in the
    test id); the second validation batch; a test batch."""
    total = STEPS_PER_EPOCH * EPOCHS
    rng = random.Random(int(os.environ.get("XLT_RESUME_SEED", "14")))
    points = [
        f"anli_rounds:training:{s}:{sig}"
        for s, sig in ((4, "TERM"), (STEPS_PER_EPOCH + 2, "KILL"), (rng.randrange(1, total), "KILL"))
    ]
    points += [
        f"xnli:training:{s}:{sig}"
        for s, sig in ((STEPS_PER_EPOCH, "TERM"), (rng.randrange(1, total), "KILL"))
    ]
    points += ["anli_rounds:validation:1:KILL", "xnli:validation:2:TERM", "xnli:test:1:KILL"]
    return points


def _launch(
    run_dir: Path, cache_dir: Path, fault: str = "", mark: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if fault:
        env.update(XLT_FAULT=fault, XLT_FAULT_MARK=str(mark),
                   PYTHONPATH=os.pathsep.join([str(FAULTS), env.get("PYTHONPATH", str(PROJECT_ROOT))]))  # fmt: skip
    argv = [
        sys.executable,
        "-m",
        "xlt.train",
        *ARGS,
        f"hydra.run.dir={run_dir}",
        f"data.cache_dir={cache_dir}",
    ]
    return subprocess.run(argv, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=900)


def losses(run_dir: Path) -> dict[tuple[str, int], str]:
    """(column, step) -> training loss as logged (exact strings); a step logged twice (after a
    resume) keeps its last row."""
    out = {}
    with open(run_dir / "csv" / "metrics.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            for key, value in row.items():
                if key.startswith("train/") and value:
                    out[(key, int(row["step"]))] = value
    return out


def predictions(run_dir: Path) -> list[Path]:
    root = run_dir / "predictions"
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def reference(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    cache = tmp_path_factory.mktemp("resume-cache")
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    proc = _launch(run_dir, cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir, cache


@pytest.mark.slow
@pytest.mark.parametrize("fault", _kill_points())
def test_killed_and_relaunched_run_ends_like_an_uninterrupted_one(
    reference, tmp_path: Path, fault: str
) -> None:
    ref, cache = reference
    run_dir = tmp_path / "run"
    first = _launch(run_dir, cache, fault, tmp_path / "fired")
    assert (tmp_path / "fired").is_file(), first.stderr[-2000:]
    if fault.endswith("KILL"):
        assert first.returncode == -9
    else:  # SIGTERM: a preempted job is not a success, and says so in one line
        assert first.returncode == 143, first.stderr[-2000:]
        assert len([ln for ln in first.stderr.splitlines() if ln.startswith("xlt: preempted (SIGTERM)")]) == 1
    assert not (run_dir / "results.jsonl").exists()
    second = _launch(run_dir, cache, fault, tmp_path / "fired")
    assert second.returncode == 0, second.stderr[-3000:]
    assert losses(run_dir) == losses(ref) and len(losses(ref)) == 2 * STEPS_PER_EPOCH * EPOCHS
    assert read_results(run_dir / "results.jsonl") == [
        {**r, "run_dir": str(run_dir)} for r in read_results(ref / "results.jsonl")
    ]
    assert predictions(run_dir) == predictions(ref) and predictions(ref)
    for name in predictions(ref):
        assert filecmp.cmp(run_dir / "predictions" / name, ref / "predictions" / name, shallow=False), name
