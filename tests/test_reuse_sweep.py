"""A sweep trains each intermediate model once: the real ``python -m xlt.train -m`` on the tiny model
and real data, two targets (XNLI, UD-POS) of one (model, intermediate task, seed), launched two at a
time (joblib processes: they race for the shared stage). The intermediate task is trained once
(optimizer steps counted in the CSV logs), and each target's results equal those of a separate
single run that trains its own intermediate model."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from xlt import PROJECT_ROOT

SWEEP = """# @package _global_
defaults:
  - demo_scale_gap
  - _self_
sweep: {name: reuse}
scale: {per_device_batch_size: 8}
intermediate: {train_split: dev_r1, dev_split: dev_r2, batch_size: 16, max_train_examples: 64,
               max_eval_examples: 24, epochs: 2}
target: {languages: [en, de], batch_size: 8, max_train_examples: 48, max_eval_examples: 24, lr: 1.0e-3}
trainer: {log_every_n_steps: 1, enable_progress_bar: false}
hydra:
  sweeper:
    params: {model: tiny, intermediate: anli_rounds, target: "xnli,udpos", seed: "1"}
"""
STEPS = 2 * 64 // 16  # two epochs of 64 examples, batch 16 (2 batches of 8 accumulated per step)


def cli(tmp_path: Path, cache_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    conf = tmp_path / "conf"
    (conf / "sweep").mkdir(parents=True, exist_ok=True)
    (conf / "sweep" / "reuse.yaml").write_text(SWEEP)
    flags = [a for a in args if a.startswith("-")]  # -m before the overrides
    argv = [sys.executable, "-m", "xlt.train", *flags, "+sweep=reuse", f"hydra.searchpath=[file://{conf}]",
            f"data.cache_dir={cache_dir}", *(a for a in args if not a.startswith("-"))]  # fmt: skip
    proc = subprocess.run(argv, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return proc


def values(run_dir: Path) -> dict[tuple[str, ...], float]:
    records = [
        json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines() if line.strip()
    ]
    return {(r["stage"], r["task"], r["split"], r["language"], r["metric"]): r["value"] for r in records
            if "stage" in r}  # fmt: skip


def first_row(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.jsonl").read_text().splitlines()[0])


def intermediate_steps(run_dir: Path) -> set[int]:
    """The optimizer steps at which this job logged an intermediate training loss."""
    with open(run_dir / "csv" / "metrics.csv") as fh:
        return {int(r["step"]) for r in csv.DictReader(fh) if r.get("train/anli_rounds/loss")}


@pytest.mark.slow
def test_a_two_target_sweep_trains_its_intermediate_task_once(
    data_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    sweep_dir = tmp_path / "sweep"
    cli(tmp_path, cache_dir, "-m", f"hydra.sweep.dir={sweep_dir}", "hydra/launcher=local_parallel")
    jobs = {target: next(sweep_dir.glob(f"*target={target}*")) for target in ("xnli", "udpos")}
    shared = list((sweep_dir / "intermediate").iterdir())
    assert len(shared) == 1 and shared[0].name.startswith("tiny-anli_rounds-s1-")
    done = json.loads((shared[0] / "done.json").read_text())
    assert done["optimizer_steps"] == STEPS
    # trained once: the two jobs' CSV logs hold STEPS intermediate steps between them, in one job
    logged = {target: intermediate_steps(job) for target, job in jobs.items()}
    assert sorted(len(s) for s in logged.values()) == [0, STEPS]
    trainer = next(t for t, s in logged.items() if s)
    other = next(t for t in jobs if t != trainer)
    assert done["trained_by"] == str(jobs[trainer])
    assert "intermediate: reusing" in (jobs[other] / "train.log").read_text()
    for job in jobs.values():
        row = first_row(job)
        assert (
            row["intermediate_checkpoint"] == done["checkpoint"] and row["intermediate_key"] == shared[0].name
        )
        assert not (job / "checkpoints" / "intermediate").exists()
        # the intermediate stage's dev rows are in every target's results
        assert any(k[0] == "intermediate" and k[2] == "dev" for k in values(job))

    # Two separate single runs, each training its own intermediate model: the same numbers.
    for target, job in jobs.items():
        alone = tmp_path / f"alone-{target}"
        cli(tmp_path, cache_dir, "model=tiny", "intermediate=anli_rounds", f"target={target}", "seed=1",
            f"hydra.run.dir={alone}")  # fmt: skip
        assert len(intermediate_steps(alone)) == STEPS
        assert values(alone) == values(job), target
        assert first_row(alone)["intermediate_key"] == shared[0].name  # the same key, kept in its own folder


@pytest.mark.slow
def test_a_two_process_ddp_job_trains_the_shared_stage_and_another_reuses_it(
    data_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    """Rank 0 takes the lock; rank 1 (started by Lightning as a subprocess) follows it through
    owner.json and trains with it; a second DDP job (another target) reuses the stage on both ranks."""
    shared = tmp_path / "shared"
    common = ("scale.strategy=ddp", "scale.devices=2", "trainer.accelerator=cpu", f"reuse.dir={shared}",
              "model=tiny", "intermediate=anli_rounds", "seed=1", "target.max_train_examples=32")  # fmt: skip
    # two XNLI jobs that differ in their target's learning rate only: one intermediate key
    # (UD-POS would do, but its tagging metric fails under DDP on main: heads_tagging.py, not this change)
    runs = {lr: tmp_path / f"ddp-{lr}" for lr in ("1.0e-3", "2.0e-3")}
    for lr, run_dir in runs.items():
        cli(tmp_path, cache_dir, *common, "target=xnli", f"target.lr={lr}", f"hydra.run.dir={run_dir}")
    (stage,) = shared.iterdir()
    done = json.loads((stage / "done.json").read_text())
    assert done["trained_by"] == str(runs["1.0e-3"]) and done["optimizer_steps"] == STEPS
    assert "intermediate: reusing" in (runs["2.0e-3"] / "train.log").read_text()
    assert first_row(runs["2.0e-3"])["intermediate_checkpoint"] == done["checkpoint"]
