"""The run's loggers: W&B (a relaunch continues the same W&B run) or a CSV file that a relaunch
appends to, and what the run logs to them besides Lightning's own metrics (its result rows).

The resumable CSV logger: Lightning's ``CSVLogger`` deletes an existing ``metrics.csv`` when a new
process opens it, so a job resumed after preemption would lose every row its earlier attempt wrote.
:class:`ResumableCSVLogger` keeps them and appends, and writes each logged step at once, so a killed
attempt leaves the rows it logged. Steps between an attempt's last checkpoint and its end are logged
again by the next attempt: a reader keeps the last row of each step.
"""

from __future__ import annotations

import csv
import logging
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning_fabric.loggers.logger import rank_zero_experiment
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.utilities import rank_zero_only

from xlt.metrics.keys import metric_key
from xlt.orchestration.plan_sections import LoggerPlan
from xlt.orchestration.rundir import CSV_DIR, FINAL_CKPT, STATE_FILE, WANDB_ID_FILE, is_global_zero
from xlt.results.rows import AGGREGATE_LANGUAGES, ResultRow, RunContext, atomic_write_text
from xlt.schema import ConfigError
from xlt.training.lightning_adapter import wandb_init_kwargs
from xlt.utils.frozen import thaw

log = logging.getLogger(__name__)


class _AppendingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        # Lightning's deletes metrics.csv here; keep it and continue its columns.
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as fh:
                self.metrics_keys = list(next(csv.reader(fh), []))


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` that appends to the run's ``metrics.csv`` across processes (see module doc)."""

    def __init__(self, save_dir: str, name: str = CSV_DIR, version: str = "") -> None:
        super().__init__(save_dir=save_dir, name=name, version=version, flush_logs_every_n_steps=1)

    @property
    @rank_zero_experiment
    def experiment(self) -> _AppendingWriter:
        if not isinstance(self._experiment, _AppendingWriter):
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


def run_dirs_with_wandb_id(
    run_id: str, roots: tuple[str, ...] = ("outputs", "multirun"), depth: int = 4
) -> list[Path]:
    """The run directories (under ``roots``, relative to the working directory, at most ``depth``
    folders down) whose ``wandb_id`` is ``run_id``: where ``logger.run_id`` can continue it."""
    found = []
    for root in roots:
        for folder, dirs, files in os.walk(root):
            if WANDB_ID_FILE in files and Path(folder, WANDB_ID_FILE).read_text().strip() == run_id:
                found.append(Path(folder))
            level = Path(folder).relative_to(root).parts
            # Not into a run's own folders (checkpoints, wandb files, predictions).
            dirs[:] = [] if len(level) >= depth or WANDB_ID_FILE in files else sorted(dirs)
    return found


def check_run_id(settings: LoggerPlan, run_dir: Path) -> None:
    """``logger.run_id`` continues a W&B run in the run directory that run wrote (its checkpoints and
    state are there, not on W&B): refuse it, in one line, in a fresh directory or beside another id."""
    chosen = settings.run_id if settings.kind == "wandb" else None
    if not chosen:
        return
    chosen = str(chosen)
    id_file = run_dir / WANDB_ID_FILE
    if id_file.is_file() and id_file.read_text().strip() != chosen:
        raise ConfigError(
            f"logger.run_id={chosen}: {run_dir} belongs to W&B run {id_file.read_text().strip()} "
            f"({id_file}); give that run's own run directory (hydra.run.dir=...)"
        )
    if not (run_dir / STATE_FILE).is_file():
        found = run_dirs_with_wandb_id(chosen)
        where = (
            f"its run directory is {', '.join(map(str, found))}: add hydra.run.dir={found[0]}"
            if found
            else "no run directory under outputs/ or multirun/ has that wandb_id; give it with hydra.run.dir=..."
        )
        raise ConfigError(
            f"logger.run_id={chosen} resumes a run in the run directory it started in, and "
            f"{run_dir} has no {STATE_FILE}: {where}"
        )


def build_logger(settings: LoggerPlan, config: Mapping[str, Any], run_dir: Path, ctx: RunContext) -> Any:
    """The run's logger as ``settings`` (the plan's) say; W&B gets ``config`` (the plan's public config,
    ``${oc.env:...}`` unresolved) as its run config, with the counted parameters."""
    kind = settings.kind
    if kind == "none":
        return False
    if kind == "csv":
        return ResumableCSVLogger(save_dir=str(run_dir), name=CSV_DIR, version="")
    import wandb
    from pytorch_lightning.loggers import WandbLogger

    mode = settings.mode
    if mode == "auto":
        mode = "online" if _wandb_key_configured() else "offline"
    id_file = run_dir / WANDB_ID_FILE
    # A relaunched job continues the same W&B run; logger.run_id names one (e.g. from the dashboard).
    chosen = settings.run_id
    run_id = str(chosen) if chosen else (id_file.read_text().strip() if id_file.is_file() else None)
    if chosen and is_global_zero():
        atomic_write_text(id_file, str(chosen))
    if run_id is None:
        run_id = uuid.uuid4().hex[:8]
        if is_global_zero():
            atomic_write_text(id_file, run_id)
    tags = [
        *settings.tags,
        f"model:{ctx.model}",
        f"intermediate:{ctx.intermediate}",
        f"target:{ctx.target}",
        f"seed:{ctx.seed}",
    ]
    logger = WandbLogger(
        project=settings.project,
        entity=settings.entity,
        group=settings.group,
        tags=tags,
        name=f"{ctx.model}/{ctx.intermediate}/{ctx.target}/s{ctx.seed}",
        save_dir=str(run_dir),
        offline=mode == "offline",
        id=run_id,
        resume="allow",
        # Not Lightning's log_model, which uploads whatever checkpoint saved last (last.ckpt with the
        # optimizer's state): xlt uploads the selected one itself (log_checkpoint).
        log_model=False,
        config={**thaw(config), "params": counted_params(ctx)},
        # Its banner and history go to <run_dir>/wandb/*/logs, not the terminal.
        settings=wandb.Settings(silent=True),
    )
    rank_zero_only(log.info)(
        "W&B: %s run %s under %s (%s)",
        mode,
        run_id,
        run_dir / "wandb",
        "`wandb sync <its offline-run-* folder>` uploads it" if mode == "offline" else "online",
    )
    # Lightning always passes it; wandb warns it has no effect
    wandb_init_kwargs(logger).pop("anonymous", None)
    return logger


def log_checkpoint(settings: LoggerPlan, logger: Any, path: Path, stage: str, step: int) -> None:
    """With ``logger.log_model``: the stage's selected checkpoint (``best.ckpt``; ``final.ckpt`` where
    nothing was selected) as a version of the W&B artifact ``model-<run id>``, aliased with the stage
    and ``best`` (``final``). Rank 0 only; nothing without a W&B logger."""
    if not (settings.kind == "wandb" and settings.log_model and logger and is_global_zero()):
        return
    import wandb

    run = logger.experiment
    selected = Path(path).name != FINAL_CKPT
    artifact = wandb.Artifact(
        name=f"model-{run.id}",
        type="model",
        metadata={"stage": stage, "step": step, "file": Path(path).name, "selected": selected},
    )
    artifact.add_file(str(path), name=f"{stage}/{Path(path).name}")
    run.log_artifact(artifact, aliases=[stage, "best" if selected else "final"])
    rank_zero_only(log.info)(
        "W&B: %s's checkpoint %s logged as artifact model-%s:%s", stage, path, run.id, stage
    )


def counted_params(ctx: RunContext) -> dict[str, Any]:
    """The encoder's counted parameters (what the result rows hold), for the W&B run config."""
    return {
        "total": ctx.model_params,
        "non_embedding": ctx.extra.get("model_params_non_embedding"),
        "trainable": ctx.extra.get("trainable_params"),
        "published": ctx.extra.get("model_params_published"),
    }


def _wandb_key_configured() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def logged_value(row: ResultRow) -> float:
    """A row's value as W&B shows it: every number in percent (``rel_gap`` is a fraction in results.jsonl)."""
    return row.value * (100 if row.language == "rel_gap" else 1)


def log_rows(logger: Any, rows: list[ResultRow], step: int, already_logged: bool = False) -> None:
    """Result rows as logger metrics at ``step`` (the evaluated weights' optimizer steps);
    ``already_logged``: the per-language rows were logged by the module, only the aggregates are new."""
    if not logger:
        return
    metrics = {
        metric_key(r.split, r.task, r.language, r.metric)
        + ("" if r.stage == "target" else f"@{r.stage}"): logged_value(r)
        for r in rows
        if not (already_logged and r.language not in AGGREGATE_LANGUAGES)
    }
    if metrics:
        logger.log_metrics(metrics, step=step)
        logger.save()


def log_results(logger: Any, rows: list[ResultRow]) -> None:
    """The finished run's rows as a W&B table, and its headline in the W&B summary."""
    if not (logger and hasattr(logger, "log_table")):
        return
    columns = ["stage", "task", "split", "language", "metric", "value", "n_examples"]
    data = [[r.stage, r.task, r.split, r.language, r.metric, logged_value(r), r.n_examples] for r in rows]
    logger.log_table(key="results", columns=columns, data=data)
    # The run's headline in the W&B summary: English, the others' mean and the gap (all percent).
    headline = {
        f"summary/{r.task}/{r.language}/{r.metric}": logged_value(r)
        for r in rows
        if r.stage == "target" and r.split == "test" and r.language in ("en", "avg_non_en", "gap", "rel_gap")
    }
    if headline:
        logger.experiment.summary.update(headline)


def close_wandb(settings: LoggerPlan, logger: Any) -> None:
    """End the run's W&B run, if it has one."""
    if logger and hasattr(logger, "experiment") and settings.kind == "wandb":
        import wandb

        if wandb.run is not None:
            wandb.finish()
