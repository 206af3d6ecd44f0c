"""The sweep's analysis on the W&B dashboard: ``python -m xlt.results multirun/<sweep> --wandb``.

Every table ``xlt.results`` writes (``<name>.csv``: gap by size, the intermediate effect, the
XTREME-style overall, ...) becomes a W&B Table under ``tables/<name>``, and every plot (``*.png``)
an image under ``plots/<name>``, in one run of the sweep's W&B project and group (the jobs'
``logger.project`` / ``logger.group``, read from their ``config.yaml``), named ``<group> analysis``
with ``job_type=analysis``. Its id is derived from project, group and the set of sweep directories, so a rerun (more jobs
finished, a fix) resumes the same run and logs new versions of its tables and plots in place of a new
run beside them. Offline unless a W&B key is configured, as the jobs' runs (``logger.mode``).

At the end of a sweep: ``+hydra.callbacks.wandb_report._target_=xlt.results.wandb_report.ReportAtSweepEnd``
(a Hydra callback: once every job has finished, it runs the analysis into ``<sweep dir>/analysis``
and logs it).
"""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf


def sweep_logger_settings(dirs: Sequence[Path]) -> dict[str, Any]:
    """project, entity, group and mode of the jobs' W&B runs (their first ``config.yaml``); the group
    falls back to the first directory's name."""
    for root in dirs:
        for path in sorted(Path(root).rglob("config.yaml")):
            cfg = OmegaConf.load(path)
            logger = cfg.get("logger") if isinstance(cfg, DictConfig) else None
            if logger is not None and logger.get("project"):
                return {
                    "project": logger.get("project"),
                    "entity": logger.get("entity"),
                    "group": logger.get("group") or Path(dirs[0]).name,
                    "mode": logger.get("mode", "auto"),
                }
    return {"project": "xlt", "entity": None, "group": Path(dirs[0]).name, "mode": "auto"}


def analysis_run_id(project: str, group: str, dirs: Sequence[Path] = ()) -> str:
    """The same id for the same (project, group) and the same set of sweep directories (in any order):
    a rerun updates the run; another sweep in the same group gets its own."""
    key = "\n".join([f"{project}/{group}", *sorted({str(Path(d).resolve()) for d in dirs})])
    return "analysis-" + hashlib.sha1(key.encode()).hexdigest()[:12]


def log_analysis(paths: Mapping[str, Path], dirs: Sequence[Path], save_dir: Path) -> str:
    """Log the written tables and plots to the sweep's analysis run; returns the run's id."""
    import pandas as pd
    import wandb

    from xlt.training.loggers import _wandb_key_configured

    settings = sweep_logger_settings(dirs)
    mode = settings["mode"]
    if mode == "auto":
        mode = "online" if _wandb_key_configured() else "offline"
    mode = os.environ.get("WANDB_MODE", mode)
    run_id = analysis_run_id(str(settings["project"]), str(settings["group"]), dirs)
    save_dir.mkdir(parents=True, exist_ok=True)
    run = wandb.init(
        project=settings["project"],
        entity=settings["entity"],
        group=settings["group"],
        name=f"{settings['group']} analysis",
        job_type="analysis",
        id=run_id,
        resume="allow",
        mode=mode,
        dir=str(save_dir),
        settings=wandb.Settings(silent=True),
    )
    try:
        logged: dict[str, Any] = {}
        for name, path in sorted(paths.items()):
            if path.suffix == ".csv" and path.stat().st_size > 1:
                frame = pd.read_csv(path)
                if not frame.empty:
                    logged[f"tables/{name}"] = wandb.Table(dataframe=frame)
            elif path.suffix == ".png":
                logged[f"plots/{name}"] = wandb.Image(str(path), caption=name)
        run.log(logged)
        run.summary["analysis/sweep_dirs"] = [str(d) for d in dirs]
    finally:
        run.finish()
    print(
        f"W&B: {mode} run {run_id} in group {settings['group']} (project {settings['project']}): "
        f"{len(logged)} tables and plots"
    )
    return run_id


class ReportAtSweepEnd(Callback):
    """A Hydra callback (``hydra.callbacks``): after the last job of a multirun, ``xlt.results
    <sweep dir> --wandb`` (``x``: its ``--x``, e.g. ``params_non_embedding``). A failure is reported on
    stderr in one line with the command to rerun; the jobs' results stay as they are."""

    def __init__(self, x: str | None = None) -> None:
        self.x = x

    def command(self, sweep_dir: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "xlt.results",
            sweep_dir,
            "--wandb",
            *(["--x", self.x] if self.x else []),
        ]

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        # A process of its own, as a user would run it (and no import of xlt.results.__main__ here).
        argv = self.command(str(config.hydra.sweep.dir))
        code = subprocess.run(argv, check=False).returncode
        if code:
            print(
                f"xlt: the sweep's W&B report failed (exit {code}); rerun: python {shlex.join(argv[1:])}",
                file=sys.stderr,
                flush=True,
            )
