"""The real xlt.train as a Hydra multirun on a real (single-node) Slurm through
hydra/launcher=slurm (submitit), with one job preempted mid-training.

Three identical jobs (they differ only in a W&B tag, which names their folders): b and c run
undisturbed and must agree bitwise (determinism); a gets `scancel --signal=USR2` after a checkpoint,
is requeued by submitit, resumes from checkpoints/target/last.ckpt in the same run dir and must end
exactly like b. Every wait has a timeout; the cluster cancels every job after the test.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `tests.` importable (no __init__)
from tests.slurm_cluster import SlurmCluster, slurm_cluster  # noqa: E402,F401
from xlt import PROJECT_ROOT  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.ci]  # slow, but in `make test`: CI runs it

STEPS_PER_EPOCH = 6  # 48 SNLI examples, batch 8
EPOCHS = 6
# The study, in a sweep file (settings on the command line would all go into the folder names):
# the real xlt.train on the tiny model, XNLI trained on SNLI (real data), three identical jobs.
PREEMPT_SWEEP = f"""# @package _global_
defaults:
  - demo_scale_gap
  - _self_
sweep: {{name: preempt}}
scale: {{per_device_batch_size: 8}}
target: {{train_task: snli, train_split: dev, languages: [en, de], batch_size: 8, max_train_examples: 48,
         max_eval_examples: 24, lr: 1.0e-3, epochs: {EPOCHS}}}
trainer: {{log_every_n_steps: 1, enable_progress_bar: false}}
hydra:
  sweeper:
    params: {{model: tiny, intermediate: none, target: xnli, seed: "3", logger.tags: "[a],[b],[c]"}}
"""


@pytest.fixture
def cluster(slurm_cluster: SlurmCluster) -> Iterator[SlurmCluster]:  # noqa: F811
    yield slurm_cluster
    slurm_cluster.cancel_all(timeout=60)


def job_dir(sweep_dir: Path, tag: str) -> Path | None:
    return next(iter(sweep_dir.glob(f"*tags=[[]{tag}]*")), None)


def global_step(path: Path) -> int | None:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=False)["global_step"])
    except Exception:  # not there yet, being written, or removed at the end of the stage
        return None


def losses(job: Path) -> dict[int, str]:
    with open(job / "csv" / "metrics.csv") as fh:
        return {int(r["step"]): r["train/xnli/loss"] for r in csv.DictReader(fh) if r.get("train/xnli/loss")}


def results(job: Path) -> dict[tuple[str, str], float]:
    from xlt.results.rows import read_results

    records = read_results(job / "results.jsonl")
    return {(r["split"], r["language"]): r["value"] for r in records}


def best_weights(job: Path) -> dict[str, torch.Tensor]:
    return torch.load(job / "checkpoints" / "target" / "best.ckpt", map_location="cpu", weights_only=False)[
        "state_dict"
    ]


def test_preempted_xlt_job_requeues_resumes_and_matches(
    cluster: SlurmCluster, data_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    sweep_dir = tmp_path / "sweep"
    log = tmp_path / "multirun.log"
    conf = tmp_path / "conf"
    (conf / "sweep").mkdir(parents=True)
    (conf / "sweep" / "preempt.yaml").write_text(PREEMPT_SWEEP)
    argv = [
        sys.executable, "-m", "xlt.train", "-m", "+sweep=preempt", f"hydra.searchpath=[file://{conf}]",
        "hydra/launcher=slurm", f"hydra.launcher.partition={cluster.partition}",
        "hydra.launcher.gpus_per_node=null", "hydra.launcher.cpus_per_task=1",
        f"hydra.sweep.dir={sweep_dir}", f"data.cache_dir={cache_dir}",
    ]  # fmt: skip
    # The launcher's own settings: timeout_min > 10 (a USR2 is a preemption, see docs/slurm-requeue.md).
    t0 = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, cwd=PROJECT_ROOT, env=cluster.env, stdout=out, stderr=subprocess.STDOUT)
    try:
        ckpt = cluster.wait_for(
            lambda: (
                (d := job_dir(sweep_dir, "a"))
                and (p := d / "checkpoints" / "target" / "last.ckpt").exists()
                and p
            ),
            timeout=600,
            interval=0.5,
            desc="job a's first checkpoint",
        )
        run_a = ckpt.parents[2]
        # After its second epoch's validation: mid-training, well before the end (6 epochs).
        step = cluster.wait_for(lambda: (s := global_step(ckpt)) and s >= 2 * STEPS_PER_EPOCH and s, timeout=600,
                                interval=0.5, desc="job a's checkpoint after epoch 2")  # fmt: skip
        assert step < EPOCHS * STEPS_PER_EPOCH
        task = OmegaConf.load(run_a / ".hydra" / "hydra.yaml").hydra.job.id  # "<array job>_<index>"
        assert cluster.squeue_state(task) == "RUNNING"

        cluster.signal(task, "USR2")  # what Slurm sends a preempted job (submitit's signal)
        cluster.wait_for(lambda: cluster.squeue_reason(task) == "BeginTime", timeout=60,
                         desc=f"{task} requeued (PENDING, BeginTime)")  # fmt: skip
        assert cluster.release_begin_time(task)
        cluster.wait_for(lambda: cluster.squeue_state(task) in ("RUNNING", "COMPLETING", "COMPLETED"), timeout=120,
                         desc=f"{task} running again")  # fmt: skip
        rc = proc.wait(timeout=1200)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    print(f"\nmultirun with one preemption: {time.monotonic() - t0:.0f}s")
    assert rc == 0, log.read_text()[-4000:]

    run_b, run_c = job_dir(sweep_dir, "b"), job_dir(sweep_dir, "c")
    assert run_b is not None and run_c is not None and run_a == job_dir(sweep_dir, "a")
    # Determinism first: two undisturbed jobs of one config agree bitwise.
    assert results(run_b) == results(run_c) and losses(run_b) == losses(run_c)
    assert all(torch.equal(v, best_weights(run_c)[k]) for k, v in best_weights(run_b).items())

    # Job a ran twice in the same run dir, resumed from its checkpoint, and ended like b.
    log_a = (run_a / "train.log").read_text()
    assert f"target: resuming from {run_a / 'checkpoints' / 'target' / 'last.ckpt'}" in log_a
    assert "resuming" not in (run_b / "train.log").read_text()
    err = "".join(p.read_text() for p in (sweep_dir / ".submitit" / task).glob("*_log.err"))
    assert "this job is preempted" in err
    assert results(run_a) == results(run_b)
    # Every training step's loss is there, the first attempt's rows kept (xlt.training.loggers), and equal b's.
    assert losses(run_a) == losses(run_b) and max(losses(run_b)) > step
    assert all(torch.equal(v, best_weights(run_b)[k]) for k, v in best_weights(run_a).items())
    assert json.loads((run_a / "state.json").read_text())["finished"]
