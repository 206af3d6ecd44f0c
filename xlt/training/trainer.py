"""The Lightning Trainer a stage runs under: strategy (plain names or a ``_target_`` object such as
FSDP), precision, devices and cluster plugins, the batch plan (per-device batch and gradient
accumulation), the step limit of a fractional epoch count, and the run's callbacks in their order."""

from __future__ import annotations

import datetime
import gc
import math
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from hydra.utils import instantiate
from pytorch_lightning.callbacks import ModelSummary
from pytorch_lightning.plugins.environments import SLURMEnvironment

from xlt.data.datamodule import StageData
from xlt.orchestration.plan import RunPlan, StagePlan
from xlt.orchestration.rundir import BEST_CKPT, LAST_CKPT
from xlt.training.callbacks import (
    BestCheckpoint,
    DivergenceGuard,
    LoaderStateOnResume,
    LossProgressBar,
    ResumePoint,
    RngStateInCheckpoint,
    StepCheckpoint,
    selection_callbacks,
)
from xlt.training.lightning_adapter import release_strategy, set_logged_steps, set_process_group_timeout
from xlt.training.preemption import use_xlt_signals
from xlt.training.progress import LineProgress
from xlt.utils.frozen import thaw


def resolve_precision(precision: str) -> str:
    """``scale.precision``, with ``auto`` resolved for this machine (bf16 or fp16 on a GPU, fp32 on CPU)."""
    if precision != "auto":
        return precision
    if torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def build_strategy(strategy: Any, several_heads: bool = False) -> Any:
    """``scale.strategy`` for the Trainer: a name as is, or a fresh object from a ``_target_`` dict
    (e.g. FSDPStrategy with its wrap and activation-checkpointing policies). A mixture stage runs one
    head per step, so plain DDP must expect parameters without gradients."""
    if isinstance(strategy, str):
        return "ddp_find_unused_parameters_true" if several_heads and strategy == "ddp" else strategy

    built = instantiate(strategy, _convert_="all")
    set_process_group_timeout(built, PROCESS_GROUP_TIMEOUT)  # Lightning's DDP/FSDP strategies
    return built


# The default process group's timeout under a strategy object (the FSDP profiles): Lightning's default
# (30 min) would end ranks > 0 that wait in init_process_group or FSDP's sync_module_states while rank
# 0 alone loads the model or evaluates a retrieval probe or target first (hours for BUCC with XXL).
# The cost: a real hang in a collective is only ended at this timeout (or the job's time limit).
# Strategy names (``ddp``, ``auto``) keep Lightning's 30 min (docs/slurm-requeue.md).
PROCESS_GROUP_TIMEOUT = datetime.timedelta(hours=24)


def own_device() -> torch.device:
    """This process's accelerator (``cuda:LOCAL_RANK``; Lightning and SLURM set the local rank), or
    the CPU: evaluation outside a Trainer must not pile every rank onto GPU 0."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    local_rank = int(os.environ.get("LOCAL_RANK", os.environ.get("SLURM_LOCALID", "0")))
    return torch.device("cuda", local_rank % torch.cuda.device_count())


_WAIT_GROUPS: dict[str, tuple[Any, Any]] = {}


def wait_for_rank_zero(failure: str | None = None) -> None:
    """Where rank 0 works alone (retrieval, xlt/orchestration/stage.py), the others wait here for it, and rank 0
    comes here when it is done (``failure``: it failed, and the others raise RuntimeError with that
    line instead of going on to collectives rank 0 will never join). Nothing without a process group.

    A gloo group of its own with a one-day timeout: the default group's (30 min in Lightning, NCCL's
    watchdog on GPUs) would abort a job whose rank 0 mines BUCC with a large model for longer."""

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    world = dist.distributed_c10d._get_default_group()
    # Keyed by the default group itself (held here, so its id cannot be reused by a later one), not
    # by id(): a group of an earlier, destroyed default group is no use.
    held = _WAIT_GROUPS.get("world")
    if held is None or held[0] is not world:
        group = dist.new_group(backend="gloo", timeout=datetime.timedelta(days=1))
        _WAIT_GROUPS["world"] = (world, group)
    else:
        group = held[1]
    message: list[Any] = [failure]
    dist.broadcast_object_list(message, src=0, group=group)
    if message[0] is not None and dist.get_rank() != 0:
        raise RuntimeError(f"rank 0 failed, so rank {dist.get_rank()} stops: {message[0]}")


def release(trainer: pl.Trainer | None) -> None:
    """Drop what a Trainer that has finished (fit, validate or test) holds of its stage: the module
    (and through it the FSDP wrapper, the flattened parameters and the heads), the optimizers with
    their AdamW states, the schedulers, the data. A Trainer is full of reference cycles (its loops and
    connectors point back at it), so it is only freed by the cyclic garbage collector, at a time of
    the collector's choosing: without this, a finished stage's model and optimizer states stayed in
    memory until then (tens of GB per GPU for XXL while the next stage wraps its encoder)."""
    if trainer is None:
        return
    release_strategy(trainer)
    trainer.datamodule = None  # type: ignore[attr-defined]


def end_of_stage_collect() -> None:
    """Free what is left of a finished stage now, not when the collector next runs on its own.
    :func:`release` cuts the Trainer's links, so the optimizers and their states go at once (reference
    counting); the module itself (heads, torchmetrics states, under FSDP the wrapped encoder and its
    flat parameters) sits in reference cycles that torch and Lightning hooks make (bound methods of
    the module kept in its own hook tables, the data-hook selector, the profiler), which only the
    cyclic collector frees. One collection per stage, before the next stage builds its model."""
    for _ in range(3):  # a finaliser or weakref callback may free more on the next pass (FSDP's do)
        if not gc.collect():
            break
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def cluster_plugins() -> list[Any]:
    """Under SLURM, Lightning's SLURMEnvironment without its own requeue handler: submitit (USR2)
    owns preemption and requeueing, see docs/slurm-requeue.md."""
    return [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []


def fractional_epoch_steps(stage: StagePlan, data: StageData, accumulate: int) -> int | None:
    """``max_steps`` for a fractional ``epochs`` (e.g. 0.5), None for a whole number of epochs."""
    assert stage.epochs is not None and stage.batch is not None
    epochs = float(stage.epochs)
    if epochs == int(epochs) or (data.train is None and data.mixture is None):
        return None
    if data.mixture is not None:
        steps_per_epoch = data.mixture.steps_per_epoch
    else:
        assert data.train is not None
        batches = math.ceil(len(data.train) / (stage.batch.batch_size // accumulate))
        steps_per_epoch = math.ceil(batches / accumulate)
    return max(1, math.ceil(epochs * steps_per_epoch))


def fit_callbacks(
    stage: str, ckpt_dir: Path, monitor: str | None, every_n_steps: int | None
) -> list[pl.Callback]:
    """The callbacks of a stage's fit, in their order: divergence guard, selection, resume points."""
    return [
        # First: a diverged step must stop the run before any checkpoint callback saves it.
        DivergenceGuard(stage),
        BestCheckpoint(
            dirpath=ckpt_dir,
            filename=BEST_CKPT,
            monitor=monitor,
            mode="max",
            save_top_k=1 if monitor else 0,
            save_weights_only=True,
        ),
        # last.ckpt (one file, overwritten) after every validation and, with
        # scale.checkpoint_every_n_steps, every N optimizer steps: what a preempted job resumes from.
        # (Not save_last=True with save_top_k=0: Lightning 2.6 then never writes last.ckpt.)
        ResumePoint(
            dirpath=ckpt_dir, filename=Path(LAST_CKPT).stem, save_top_k=1, enable_version_counter=False
        ),
        *([StepCheckpoint(ckpt_dir / LAST_CKPT, every_n_steps)] if every_n_steps else []),
        RngStateInCheckpoint(),
        LoaderStateOnResume(),
    ]


def progress_callbacks(trainer: Mapping[str, Any], stage: str) -> list[pl.Callback]:
    """On a terminal tqdm's bar; elsewhere (log file, SLURM output, a pipe) a line per 10% or minute
    with the rate and the time left (xlt/training/progress.py), not a bar redrawn every 25 steps."""
    if not trainer.get("enable_progress_bar", True):
        return []
    if sys.stderr.isatty():
        return [LossProgressBar(refresh_rate=1)]
    return [LineProgress(stage or "evaluation")]


def build_trainer(
    run: RunPlan,
    stage_plan: StagePlan,
    data: StageData,
    accumulate: int,
    *,
    logger: Any,
    run_dir: Path,
    ckpt_dir: Path | None = None,
    monitor: str | None = None,
    stage: str = "",
    eval_step: int = 0,
) -> pl.Trainer:
    """The Trainer of a stage's fit (``ckpt_dir`` given: divergence guard, selection, resume points)
    or of its evaluation (``ckpt_dir`` None: logs at ``eval_step``, the evaluated weights' step).
    The run's plan gives the Trainer settings, the scale (precision, strategy, devices) and clipping."""
    scale = run.scale
    callbacks: list[pl.Callback] = []
    if ckpt_dir is not None:
        every = stage_plan.checkpoint.every_n_steps if stage_plan.checkpoint is not None else None
        callbacks.extend(fit_callbacks(stage, ckpt_dir, monitor, every))
    callbacks.extend(progress_callbacks(run.trainer.kwargs, stage))
    trainer_kwargs = thaw(run.trainer.kwargs)
    if ckpt_dir is not None and monitor is not None and stage_plan.selection is not None:
        callbacks.extend(selection_callbacks(stage_plan.selection, monitor, accumulate, trainer_kwargs))
    max_steps = fractional_epoch_steps(stage_plan, data, accumulate)
    if max_steps is not None:
        trainer_kwargs.setdefault("max_steps", max_steps)
    max_epochs = trainer_kwargs.pop("max_epochs", max(1, math.ceil(float(stage_plan.epochs or 1))))
    plugins = [*(trainer_kwargs.pop("plugins", None) or []), *cluster_plugins()]
    # Lightning's model summary as a log line (the log file), not the Rich table it prints directly.
    callbacks.append(ModelSummary(max_depth=1))
    trainer = pl.Trainer(
        **trainer_kwargs,
        max_epochs=max_epochs,
        precision=resolve_precision(run.precision),  # type: ignore[arg-type]
        strategy=build_strategy(thaw(scale.strategy), several_heads=data.mixture is not None),
        devices=scale.devices,
        num_nodes=scale.num_nodes,
        accumulate_grad_batches=accumulate,
        gradient_clip_val=run.optim.max_grad_norm,
        logger=logger,
        callbacks=callbacks,
        enable_checkpointing=ckpt_dir is not None,
        default_root_dir=str(run_dir),
        use_distributed_sampler=False,
        plugins=plugins,
    )
    # SIGTERM without Lightning's broadcast inside the handler (xlt/training/preemption.py)
    use_xlt_signals(trainer)
    if ckpt_dir is None:  # an evaluator: log at the evaluated weights' step, not a fresh Trainer's 0
        set_logged_steps(trainer, eval_step)
    return trainer
