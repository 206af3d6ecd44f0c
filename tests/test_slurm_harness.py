"""The Slurm harness against a real single-node cluster (tests/slurm_cluster.py).

(a) a plain ``sbatch --wrap`` job; (b) a Hydra multirun through hydra-submitit-launcher;
(c) preemption: USR2 -> submitit checkpoint -> requeue -> resume from the run dir's checkpoint;
(d) a scancel'ed job: the launcher reports it (thanks to accounting) instead of waiting forever.
Every wait is bounded; the session fixture cancels jobs and stops the daemons at the end.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `tests.` importable (no __init__)
from tests.slurm_cluster import SlurmCluster, slurm_cluster  # noqa: E402,F401

pytestmark = [pytest.mark.slow, pytest.mark.ci]  # slow, but in `make test`: CI runs it

APP = Path(__file__).resolve().parent / "slurm_app" / "app.py"


def expected_total(x: int, steps: int) -> int:
    return x * steps * (steps + 1) // 2


@pytest.fixture
def cluster(slurm_cluster: SlurmCluster) -> Iterator[SlurmCluster]:  # noqa: F811
    """The session cluster, with every job cancelled after each test."""
    yield slurm_cluster
    slurm_cluster.cancel_all(timeout=30)


def launch(cluster: SlurmCluster, sweep_dir: str, log: Path, *overrides: str) -> subprocess.Popen:
    """Start the tiny app as a Hydra multirun on the cluster (the process waits for the jobs)."""
    cmd = [
        sys.executable, str(APP), "-m", *overrides,
        "hydra/launcher=submitit_slurm",
        f"hydra.launcher.partition={cluster.partition}",
        # > 10 min: submitit then treats a USR2 as a preemption, not a timeout (its guaranteed
        # walltime is min(0.8*T, T-10min)); preemptions do not use up max_num_timeout.
        "hydra.launcher.timeout_min=60",
        "hydra.launcher.cpus_per_task=1",
        f"hydra.sweep.dir={sweep_dir}",
    ]  # fmt: skip
    out = open(log, "w")  # noqa: SIM115
    try:
        return subprocess.Popen(cmd, env=cluster.env, cwd=log.parent, stdout=out, stderr=subprocess.STDOUT)
    finally:
        out.close()


def finish(proc: subprocess.Popen, log: Path, timeout: float) -> int:
    """Wait (bounded) for the multirun process; kill it on timeout."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
        pytest.fail(f"multirun did not finish in {timeout}s:\n{log.read_text()[-3000:]}")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def slurm_id(attempt: dict) -> str:
    """``<array job>_<task>`` for a job array task (sweeps of 2+), else the plain job id."""
    if attempt["array_job_id"] is not None:
        return f"{attempt['array_job_id']}_{attempt['array_task_id']}"
    return attempt["job_id"]


def test_sbatch_wrap_runs_and_is_accounted(cluster: SlurmCluster, tmp_path: Path) -> None:
    out = tmp_path / "job.out"
    job = cluster.sbatch(f"--output={out}", "--wrap", "srun echo hello from $SLURM_JOB_ID")
    state = cluster.wait_for(
        lambda: (s := cluster.squeue_state(job)) not in (None, "PENDING", "RUNNING", "COMPLETING") and s,
        timeout=60,
        desc=f"job {job} to end",
    )
    assert state == "COMPLETED"
    assert out.read_text().strip() == f"hello from {job}"
    sacct = cluster.run(["sacct", "-n", "-X", "-P", "-j", job, "-o", "State,ExitCode"]).stdout
    assert sacct.strip() == "COMPLETED|0:0"


def test_hydra_submitit_multirun(cluster: SlurmCluster, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    log = tmp_path / "multirun.log"
    proc = launch(cluster, str(sweep), log, "x=1,2", "steps=4", "step_s=0.1")
    rc = finish(proc, log, timeout=120)
    assert rc == 0, log.read_text()[-3000:]
    for num, x in ((0, 1), (1, 2)):
        result = json.loads((sweep / str(num) / "result.json").read_text())
        assert result == {"x": x, "steps": 4, "total": expected_total(x, 4)}
        assert (sweep / str(num) / ".hydra" / "overrides.yaml").exists()
        (attempt,) = read_jsonl(sweep / str(num) / "attempts.jsonl")
        assert attempt["array_task_id"] == str(num)
    assert (sweep / "multirun.yaml").exists()


def test_preempted_job_requeues_and_resumes(cluster: SlurmCluster, tmp_path: Path) -> None:
    steps = 24  # 24 x 0.25 s: long enough to be signalled mid-run, short for the test
    # A ${now:} sweep dir on purpose: the requeued job must land in the same folder although
    # the clock moved on (Hydra copies the resolver cache into the pickled job config).
    sweep_root = tmp_path / "sweeps"
    log = tmp_path / "multirun.log"
    t0 = time.monotonic()
    proc = launch(
        cluster,
        f"{sweep_root}/${{now:%H-%M-%S-%f}}",
        log,
        "x=1,2",
        f"steps={steps}",
        "step_s=0.25",
    )
    try:
        run0 = cluster.wait_for(
            lambda: next(iter(sweep_root.glob("*/0/state.json")), None),
            timeout=60,
            desc="task 0 to write its first checkpoint",
        ).parent
        sweep = run0.parent
        cluster.wait_for(
            lambda: json.loads(run0.joinpath("state.json").read_text())["step"] >= 3,
            timeout=30,
            desc="task 0 to reach step 3",
        )
        first = read_jsonl(run0 / "attempts.jsonl")[0]
        task = slurm_id(first)
        assert cluster.squeue_state(task) == "RUNNING"

        cluster.signal(task, "USR2")  # what Slurm sends on preemption (submitit's signal)
        cluster.wait_for(
            lambda: cluster.squeue_reason(task) == "BeginTime",
            timeout=30,
            desc=f"{task} to be requeued (PENDING, reason BeginTime)",
        )
        assert cluster.release_begin_time(task)
        cluster.wait_for(
            lambda: len(read_jsonl(run0 / "attempts.jsonl")) == 2,
            timeout=30,
            desc=f"{task} to start again",
        )
        rc = finish(proc, log, timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    print(f"\npreemption round trip (launch to multirun exit): {time.monotonic() - t0:.1f}s")
    assert rc == 0, log.read_text()[-3000:]

    # Task 0 ran twice in the same run dir and resumed from its checkpoint, not from step 0.
    attempts = read_jsonl(run0 / "attempts.jsonl")
    assert [a["restart_count"] for a in attempts] == [0, 1]
    assert attempts[1]["resumed_from_step"] >= 3
    assert attempts[0]["hydra_job_id"] == attempts[1]["hydra_job_id"] == task
    assert attempts[0]["job_id"] == attempts[1]["job_id"]
    assert len(read_jsonl(sweep / "1" / "attempts.jsonl")) == 1  # task 1 was left alone
    assert sorted(p.name for p in sweep_root.iterdir()) == [sweep.name]  # one sweep dir

    # Same results as unpreempted runs: on disk and as the value submitit returned to Hydra.
    for num, x in ((0, 1), (1, 2)):
        result = json.loads((sweep / str(num) / "result.json").read_text())
        assert result["total"] == expected_total(x, steps)
        task_id = f"{first['array_job_id']}_{num}"
        (pkl,) = (sweep / ".submitit" / task_id).glob("*_result.pkl")
        outcome, job_return = pickle.loads(pkl.read_bytes())
        assert outcome == "success"
        assert job_return.return_value == expected_total(x, steps)
    err = next((sweep / ".submitit" / task).glob("*_log.err")).read_text()
    assert "this job is preempted" in err  # not "timed-out": timeout_min > 10


def test_cancelled_job_is_reported_not_waited_for(cluster: SlurmCluster, tmp_path: Path) -> None:
    """With accounting, submitit sees a scancel'ed job end without a result and the multirun
    fails promptly (without slurmdbd it would wait forever)."""
    sweep = tmp_path / "sweep"
    log = tmp_path / "multirun.log"
    proc = launch(cluster, str(sweep), log, "x=1", "steps=400", "step_s=0.25")
    try:
        first = cluster.wait_for(
            lambda: (sweep / "0" / "attempts.jsonl").exists() and read_jsonl(sweep / "0" / "attempts.jsonl"),
            timeout=60,
            desc="the job to start",
        )[0]
        cluster.run(["scancel", slurm_id(first)])
        rc = finish(proc, log, timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert rc != 0
    assert "CANCELLED" in log.read_text()
