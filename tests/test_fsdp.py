"""FSDP for real on CPU: two processes (gloo) through the real ``python -m xlt.train``, with the
strategy class the GPU profiles use (xlt.training.strategies.FSDP, Lightning's FSDPStrategy).

- the issue's command (intermediate -> best reload -> target with a fresh head -> every language);
- FSDP against DDP on the same config and data order: the same loss at every step and the same
  results, with norm clipping that binds (max_grad_norm 0.05);
- an FSDP run killed mid-stage after a step checkpoint, relaunched: the same numbers as unbroken;
- gradient-norm clipping over shards equals the norm of the whole gradient (torch only, 2 ranks).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from xlt import PROJECT_ROOT
from xlt.results.rows import read_results
from xlt.training.sharded_ckpt import read_meta, read_weights

pytestmark = pytest.mark.slow  # the issue's tests are also marked ci: `make test` and CI run them

# Tiny model, ANLI round-1 dev -> SNLI dev (XNLI's English source), 16 examples a step (8 per rank,
# no accumulation): intermediate 3 epochs of 3 steps, target 2 epochs of 6 steps; clipping at 0.05
# binds. Tatoeba (German, 16 pairs) is probed before and after the intermediate stage, on rank 0.
SMALL = (
    "model=tiny", "+intermediate=anli_rounds", "+target=xnli",
    "intermediate.train_split=dev_r1", "intermediate.dev_split=dev_r3",
    "intermediate.max_train_examples=48", "intermediate.max_eval_examples=32",
    "target.train_task=snli", "target.train_split=dev", "target.languages=[en,de,sw]",
    "target.max_train_examples=96", "target.max_eval_examples=24", "target.epochs=2",
    "intermediate.batch_size=16", "target.batch_size=16", "scale.per_device_batch_size=8",
    "intermediate.eval_batch_size=16", "target.eval_batch_size=16",
    "scale.devices=2", "trainer.accelerator=cpu", "scale.precision=32-true", "optim.max_grad_norm=0.05",
    "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false", "logger=csv",
    "probe.tasks=[tatoeba]", "probe.languages=[de]", "probe.max_examples=16",
)  # fmt: skip
FSDP = ("scale=fsdp",)
DDP = ("scale=default", "scale.strategy=ddp")
# FSDP reduce-scatters what DDP all-reduces (the same two-term sums), but flattens, pads and shards
# parameters differently. Measured on this config: losses within 1.1e-7 (relative), the same results,
# best weights within 7.5e-9 (see docs/sweeps.md).
REL_TOL = 1e-6


def xlt_train(run_dir: Path, cache_dir: Path, *overrides: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "xlt.train",
        *overrides,
        f"data.cache_dir={cache_dir}",
        f"hydra.run.dir={run_dir}",
    ]


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def run_cli(argv: list[str], log: Path, timeout: int = 600) -> None:
    with open(log, "w") as fh:
        proc = subprocess.run(
            argv, cwd=PROJECT_ROOT, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout, env=env()
        )
    assert proc.returncode == 0, log.read_text()[-4000:]


def grad_norms(run_dir: Path) -> list[float]:
    """Every logged ``train/grad_norm``, in the order logged (both stages)."""
    with open(run_dir / "csv" / "metrics.csv") as fh:
        return [float(row["train/grad_norm"]) for row in csv.DictReader(fh) if row.get("train/grad_norm")]


def losses(run_dir: Path) -> dict[tuple[str, int], float]:
    """(loss key, step) -> training loss, the last row of each step (a relaunch repeats steps)."""
    out: dict[tuple[str, int], float] = {}
    with open(run_dir / "csv" / "metrics.csv") as fh:
        for row in csv.DictReader(fh):
            for key, value in row.items():
                if key.startswith("train/") and key.endswith("/loss") and value:
                    out[(key, int(row["step"]))] = float(value)
    return out


def results(run_dir: Path) -> dict[tuple[str, str, str, str, str], float]:
    return {(r["stage"], r["task"], r["split"], r["language"], r["metric"]): r["value"]
            for r in read_results(run_dir / "results.jsonl")}  # fmt: skip


@pytest.fixture(scope="module")
def fsdp_run(data_dir: Path, cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("fsdp")
    run_cli(xlt_train(run_dir, cache_dir, *SMALL, *FSDP), run_dir.parent / "fsdp.log")
    return run_dir


@pytest.mark.ci
def test_the_issue_command_runs_two_fsdp_processes_to_every_language(
    data_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    cmd = [
        "+intermediate=anli_rounds", "intermediate.train_split=dev_r1", "intermediate.dev_split=dev_r3",
        "+target=xnli", "model=tiny", "scale=fsdp", "scale.devices=2", "trainer.accelerator=cpu",
        "target.train_task=snli", "target.train_split=dev", "debug=fdr", "logger=csv",
    ]  # fmt: skip
    run_cli(xlt_train(tmp_path / "run", cache_dir, *cmd), tmp_path / "run.log")
    # Lightning's set-up lines go to the run's log file, not the (quiet) terminal.
    log = (tmp_path / "run.log").read_text() + (tmp_path / "run" / "train.log").read_text()
    assert "distributed_backend=gloo" in log and "Starting with 2 processes" in log
    assert (tmp_path / "run" / "train_ddp_process_1.log").is_file()  # the second rank ran
    config = (tmp_path / "run" / "config.yaml").read_text()
    assert "xlt.training.strategies.FSDP" in config
    rows = results(tmp_path / "run")
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    tested = {
        lang for (stage, task, split, lang, _) in rows if (stage, task, split) == ("target", "xnli", "test")
    }
    assert {"en", "de", "sw", "avg", "avg_non_en", "gap", "rel_gap"} <= tested
    missing = {line.split("/")[2].split(":")[0] for line in state["skipped"] if line.startswith("xnli/test/")}
    from xlt.tasks.registry import get_task

    assert tested - {"avg", "avg_non_en", "gap", "rel_gap"} | missing == set(get_task("xnli").languages)
    assert ("intermediate", "anli_rounds", "dev", "en", "acc") in rows
    assert ("target", "xnli", "dev", "en", "acc") in rows


@pytest.mark.ci
def test_fsdp_matches_ddp_step_by_step(
    fsdp_run: Path, data_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    ddp_run = tmp_path / "ddp"
    run_cli(xlt_train(ddp_run, cache_dir, *SMALL, *DDP), tmp_path / "ddp.log")
    fsdp_losses, ddp_losses = losses(fsdp_run), losses(ddp_run)
    assert len(ddp_losses) == 3 * 3 + 2 * 6  # every optimizer step of both stages
    assert fsdp_losses.keys() == ddp_losses.keys()
    for key, value in ddp_losses.items():
        assert fsdp_losses[key] == pytest.approx(value, rel=REL_TOL), key
    # The logged gradient norm is the whole gradient's under FSDP too (not rank 0's shard's).
    fsdp_norms, ddp_norms = grad_norms(fsdp_run), grad_norms(ddp_run)
    assert len(ddp_norms) == len(ddp_losses)  # one a step, both stages
    assert fsdp_norms == pytest.approx(ddp_norms, rel=1e-5)
    fsdp_results, ddp_results = results(fsdp_run), results(ddp_run)
    assert fsdp_results.keys() == ddp_results.keys()
    for key, value in ddp_results.items():
        assert fsdp_results[key] == pytest.approx(value, rel=REL_TOL, abs=1e-6), key
    # The selected weights: the best checkpoints hold the same tensors.
    best_f, best_d = (read_weights(r / "checkpoints/target/best.ckpt") for r in (fsdp_run, ddp_run))
    assert best_f.keys() == best_d.keys()
    for name, tensor in best_d.items():
        torch.testing.assert_close(best_f[name], tensor, rtol=1e-5, atol=1e-6, msg=name)
    # The probes ran on rank 0 only, on the encoder each stage left (FSDP: rebuilt from best.ckpt).
    for stage in ("pretrained", "intermediate"):
        assert (
            fsdp_results[(stage, "tatoeba", "test", "de", "acc")]
            == ddp_results[(stage, "tatoeba", "test", "de", "acc")]
        )
    rank1 = (fsdp_run / "train_ddp_process_1.log").read_text()
    assert "intermediate tatoeba: retrieval runs on rank 0; rank 1 waits" in rank1


@pytest.mark.ci
def test_killed_fsdp_run_resumes_to_the_same_numbers(
    fsdp_run: Path, data_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    """Killed (SIGKILL, both ranks) in the target stage after the step-4 checkpoint, mid-epoch;
    the relaunch resumes from it and ends as the unbroken FSDP run did."""
    run_dir = tmp_path / "killed"
    argv = xlt_train(run_dir, cache_dir, *SMALL, *FSDP, "scale.checkpoint_every_n_steps=2")
    last = run_dir / "checkpoints" / "target" / "last.ckpt"
    with open(tmp_path / "first.log", "w") as fh:
        proc = subprocess.Popen(argv, cwd=PROJECT_ROOT, stdout=fh, stderr=subprocess.STDOUT, env=env(),
                                start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        killed_at = None
        while time.monotonic() < deadline and proc.poll() is None:
            step = global_step(last)
            if step is not None and step >= 4:
                os.killpg(proc.pid, signal.SIGKILL)
                killed_at = step
                break
            time.sleep(0.1)
        assert killed_at is not None, (
            "no step checkpoint before the run ended:\n" + (tmp_path / "first.log").read_text()
        )
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert killed_at % 6, "killed mid-epoch"
    assert not (run_dir / "results.jsonl").exists()
    run_cli(argv, tmp_path / "relaunch.log")
    assert f"target: resuming from {last}" in (run_dir / "train.log").read_text()
    assert results(run_dir) == results(fsdp_run)
    # Every logged loss, before the kill and after the mid-epoch resume, bitwise as unbroken (the
    # unbroken run saves no step checkpoints; measured: with them it logs the very same losses).
    # SIGKILL loses the CSV rows not yet flushed; the relaunch does not redo steps before its resume
    # point, so those rows (steps before the kill only) may be missing; none after it.
    got, expected = losses(run_dir), losses(fsdp_run)
    assert {k: expected[k] for k in got} == got
    missing = expected.keys() - got.keys()
    assert all(k[0] == "train/xnli/loss" and k[1] < killed_at for k in missing), missing


def global_step(path: Path) -> int | None:
    try:
        return int(read_meta(path)["global_step"])  # a file, or a sharded checkpoint's directory
    except Exception:  # not written yet, or being written: look again
        return None


# -- clipping over shards, torch only -------------------------------------------------------------


def _clip_worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist
    from torch.distributed.fsdp import FullyShardedDataParallel, ShardingStrategy

    from xlt.training.strategies import clip_grad_norm

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    reference = torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    reference.load_state_dict(model.state_dict())
    x = torch.randn(4, 7, generator=torch.Generator().manual_seed(rank))
    sharded = FullyShardedDataParallel(model, sharding_strategy=ShardingStrategy.FULL_SHARD,
                                       device_id=torch.device("cpu"), use_orig_params=True)  # fmt: skip
    sharded(x).pow(2).sum().backward()
    norm = clip_grad_norm(sharded, 0.1)
    # The reference: whole gradients averaged over the ranks, as DDP holds them.
    reference(x).pow(2).sum().backward()
    for p in reference.parameters():
        assert p.grad is not None
        dist.all_reduce(p.grad)
        p.grad /= world
    full = torch.nn.utils.clip_grad_norm_(reference.parameters(), 0.1)
    with FullyShardedDataParallel.summon_full_params(sharded, with_grads=True):
        clipped = torch.cat([p.grad.flatten() for p in sharded.parameters()])
    expected = torch.cat([p.grad.flatten() for p in reference.parameters()])  # type: ignore[union-attr]
    if rank == 0:
        torch.save({"norm": norm, "full": full, "clipped": clipped, "expected": expected}, out)
    # Both ranks leave together: a rank that tore its gloo pairs down while the other still used them
    # made the other abort ("terminate called without an active exception", 1 run in 4 here).
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.ci
def test_clip_grad_norm_over_shards_is_the_whole_gradients_norm(tmp_path: Path) -> None:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "clip.pt"
    mp.spawn(_clip_worker, args=(2, port, str(out)), nprocs=2, join=True)
    got = torch.load(out, weights_only=True)
    assert float(got["full"]) > 0.1  # the clip binds
    torch.testing.assert_close(got["norm"], got["full"], rtol=1e-6, atol=0)
    torch.testing.assert_close(got["clipped"], got["expected"], rtol=1e-6, atol=1e-8)
    assert float(got["clipped"].norm()) == pytest.approx(0.1, rel=1e-5)


def test_lean_loading_rank_1_starts_on_the_meta_device_and_ends_like_ddp(
    data_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    """e5-small (weights from a file): under FSDP rank 1 builds the encoder on the meta device, never
    reads the weights, and gets rank 0's when FSDP wraps it (sync_module_states), in both stages and
    the evaluations. The results are those of a DDP run in which every rank loaded the weights."""
    config = (
        "model=e5_small", "+intermediate=anli_rounds", "+target=xnli", "debug=fdr",
        "intermediate.train_split=dev_r1", "intermediate.dev_split=dev_r3", "target.train_task=snli",
        "target.train_split=dev", "target.languages=[en,de]", "intermediate.max_eval_examples=16",
        "target.max_eval_examples=16", "scale.per_device_batch_size=8", "scale.devices=2",
        "trainer.accelerator=cpu", "scale.precision=32-true", "trainer.enable_progress_bar=false",
    )  # fmt: skip
    lean, ddp = tmp_path / "fsdp", tmp_path / "ddp"
    run_cli(xlt_train(lean, cache_dir, *config, *FSDP), tmp_path / "fsdp.log")
    run_cli(xlt_train(ddp, cache_dir, *config, *DDP), tmp_path / "ddp.log")
    rank1 = (lean / "train_ddp_process_1.log").read_text()
    assert "rank 1: encoder built on the meta device" in rank1
    assert "meta device" not in (ddp / "train_ddp_process_1.log").read_text()
    got, expected = results(lean), results(ddp)
    assert got.keys() == expected.keys() and got
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=REL_TOL, abs=1e-6), key
