"""Retrieval targets on two processes launched the way a cluster launches them: every rank runs
``python -m xlt.train`` itself (torchrun, or SLURM's one task per GPU with its environment
variables), so no Trainer starts the other ranks. Tatoeba and BUCC must give one process's numbers,
with the evaluation done once (rank 0), under FSDP (where ranks > 0 hold a meta-device encoder) and
DDP (where every rank would repeat the mining).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from xlt import PROJECT_ROOT
from xlt.results.rows import read_results

pytestmark = [pytest.mark.slow, pytest.mark.ci]

COMMON = ("trainer.accelerator=cpu", "logger=none", "trainer.enable_progress_bar=false")
TATOEBA = ("+target=tatoeba", "target.languages=[de]", "target.max_eval_examples=32", "model=e5_small")
BUCC = ("+target=bucc2018", "model=tiny")  # the offline BUCC sample (fr); tiny: random weights on every rank


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_env() -> dict[str, str]:
    drop = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k not in drop}
    return {**env, "OMP_NUM_THREADS": "1"}


def argv(run_dir: Path, cache_dir: Path, *overrides: str) -> list[str]:
    return ["-m", "xlt.train", *overrides, *COMMON, f"data.cache_dir={cache_dir}", f"hydra.run.dir={run_dir}"]


def results(run_dir: Path) -> dict[tuple[str, str, str, str], float]:
    return {(r["task"], r["split"], r["language"], r["metric"]): r["value"]
            for r in read_results(run_dir / "results.jsonl")}  # fmt: skip


def one_process(run_dir: Path, cache_dir: Path, *overrides: str) -> dict[tuple[str, str, str, str], float]:
    proc = subprocess.run([sys.executable, *argv(run_dir, cache_dir, *overrides)], cwd=PROJECT_ROOT,
                          env=base_env(), capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return results(run_dir)


def torchrun(run_dir: Path, cache_dir: Path, *overrides: str) -> str:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(free_port()), *argv(run_dir, cache_dir, *overrides)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=PROJECT_ROOT, env=base_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc.stdout + proc.stderr + (run_dir / "train.log").read_text()


def slurm_tasks(run_dir: Path, cache_dir: Path, *overrides: str) -> str:
    """Two tasks of one SLURM job step, as srun starts them: the same command, SLURM_PROCID 0 and 1."""
    port = str(free_port())
    procs = []
    for rank in (0, 1):
        env = {**base_env(), "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "xlt", "SLURM_NTASKS": "2",
               "SLURM_NTASKS_PER_NODE": "2", "SLURM_NNODES": "1", "SLURM_NODEID": "0",
               "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank), "SLURM_NODELIST": "localhost",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}  # fmt: skip
        procs.append(subprocess.Popen([sys.executable, *argv(run_dir, cache_dir, *overrides)], cwd=PROJECT_ROOT,
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))  # fmt: skip
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    return "\n".join(outputs) + (run_dir / "train.log").read_text()


def test_tatoeba_under_torchrun_fsdp_is_one_process_evaluated_once(cache_dir: Path, tmp_path: Path) -> None:
    # Before: rank 1 (meta-device encoder under FSDP) failed with "Cannot copy out of meta tensor".
    expected = one_process(tmp_path / "one", cache_dir, *TATOEBA)
    out = torchrun(tmp_path / "fsdp", cache_dir, *TATOEBA, "scale=fsdp", "scale.devices=2")
    assert "rank 1: encoder built on the meta device" in out
    assert "target tatoeba: retrieval runs on rank 0; rank 1 waits" in out
    assert (tmp_path / "fsdp" / "train.log").read_text().count("target tatoeba: retrieval on rank 0") == 1
    assert results(tmp_path / "fsdp") == expected and ("tatoeba", "test", "de", "acc") in expected


def test_bucc_as_slurm_tasks_under_ddp_is_one_process_mined_once(
    data_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    # Before: both DDP ranks mined every corpus.
    expected = one_process(tmp_path / "one", cache_dir, *BUCC)
    out = slurm_tasks(
        tmp_path / "ddp", cache_dir, *BUCC, "scale=default", "scale.strategy=ddp", "scale.devices=2"
    )
    assert "retrieval runs on rank 0; rank 1 waits" in out
    assert results(tmp_path / "ddp") == expected and ("bucc2018", "dev", "fr", "f1") in expected
    assert (tmp_path / "ddp" / "train.log").read_text().count("target bucc2018: retrieval on rank 0") == 1
