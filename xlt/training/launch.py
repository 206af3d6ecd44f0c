"""Multi-process jobs in a local Hydra multirun (``python -m xlt.train -m ... scale.devices=2``).

Lightning 2.6.6 starts the other ranks of a job by rerunning the script: ``sys.argv[1:]`` plus
``hydra.run.dir=<hydra.run.dir>``. In a multirun that is the whole sweep (``-m`` and every axis), so
rank 1 ran a sweep of its own, in step with rank 0's only as long as both walked the same jobs. And
the job's process (rank 0, which the basic launcher reuses for the next job) kept what Lightning put
in its environment (``LOCAL_RANK``, ``MASTER_PORT``...) and its process group: the next job then took
its processes for started externally, started no rank 1 and relied on that stray one. A SLURM job
never takes this path (every rank is a task of its own: SLURMEnvironment).

In a multirun job, :func:`job_command` starts the other ranks on that job alone (its own overrides,
its output directory) and tells them the sweep folder (``XLT_SWEEP_DIR``, so that they share the
intermediate stages under it as rank 0 does); :func:`multirun_job` undoes, when the job ends, what
the job's ranks left in this process.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import get_original_cwd

SWEEP_ENV = "XLT_SWEEP_DIR"
# What Lightning's subprocess launcher sets in rank 0's environment before it starts the other ranks.
LAUNCHER_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", SWEEP_ENV)
_ORIGINAL: dict[str, Any] = {}


def job_command(local_rank: int) -> tuple[Sequence[str], str]:
    """The command of rank ``local_rank`` of this Hydra job (Lightning's ``_hydra_subprocess_cmd``):
    in a multirun, the job alone (no ``-m``, its own overrides, its output directory)."""
    hydra = HydraConfig.get()
    if hydra.mode != RunMode.MULTIRUN:
        return _ORIGINAL["fabric"](local_rank)  # type: ignore[no-any-return]
    os.environ[SWEEP_ENV] = str(hydra.sweep.dir)  # the children inherit it (and only they read it)
    command = [
        sys.executable,
        "-m",
        "xlt.train",
        *hydra.overrides.task,
        f'hydra.run.dir="{hydra.runtime.output_dir}"',
        f"hydra.job.name=train_ddp_process_{local_rank}",
        "hydra.output_subdir=null",
    ]
    return command, get_original_cwd()


def install() -> None:
    """Route both Lightning launchers (fabric's and the Trainer's) through :func:`job_command`."""
    from xlt.training.lightning_adapter import replace_hydra_subprocess_cmd

    _ORIGINAL.setdefault("fabric", replace_hydra_subprocess_cmd(job_command))


@contextmanager
def multirun_job() -> Iterator[None]:
    """Around one job of a multirun in the launcher's process: afterwards, the environment as it was
    before the job and no process group, so the next job starts its own ranks."""
    before = {key: os.environ.get(key) for key in LAUNCHER_ENV}
    try:
        yield
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_dir_from_hydra() -> Path:
    """The run directory Hydra created for this job (Hydra owns it; nothing uses the CWD)."""
    return Path(HydraConfig.get().runtime.output_dir)


def is_multirun() -> bool:
    """Whether this process runs a job of a Hydra multirun (``-m``) itself."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def sweep_dir_from_hydra() -> Path | None:
    """The folder of a Hydra multirun (``hydra.sweep.dir``), or None for a single run."""
    if not HydraConfig.initialized():
        return None
    hydra = HydraConfig.get()
    if hydra.mode == RunMode.MULTIRUN:
        return Path(hydra.sweep.dir)
    # another rank of a multirun job, started by Lightning on that job alone (xlt/training/launch.py)
    started_for = os.environ.get(SWEEP_ENV)
    return Path(started_for) if started_for else None
