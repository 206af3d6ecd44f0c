"""The X-STILTs run: pretrained encoder -> English intermediate task -> English target task ->
zero-shot evaluation on every language of the target, all in one run directory.

:func:`run` is the typed, testable core; ``xlt.train`` is only the Hydra entry point around it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint, ModelSummary, TQDMProgressBar
from pytorch_lightning.utilities import rank_zero_only
from pytorch_lightning.utilities.exceptions import SIGTERMException

from xlt import PROJECT_ROOT
from xlt.config import ConfigError, batch_plan, to_container, validate
from xlt.console import file_only
from xlt.data.datamodule import DataSettings, EvalSet, StageData, StageDataModule, prepare_stage_data
from xlt.data.mixture import log_mixture, prepare_mixture_data
from xlt.modeling.embedding import embed
from xlt.modeling.encoder import (
    add_lora,
    count_parameters,
    encoder_skeleton,
    load_encoder,
    load_tokenizer,
    resolved_revision,
)
from xlt.modeling.heads import build_head
from xlt.modeling.module import TransferModule
from xlt.results.report import format_table
from xlt.results.rows import (
    ResultRow,
    RunContext,
    atomic_write_text,
    eval_rows,
    language_rows,
    read_results,
    write_results,
)
from xlt.results.submission import write_predictions
from xlt.reuse import ROOT_NAME, IntermediateKey, SharedStage, code_version, intermediate_key, launch_id
from xlt.strategies import is_sharded, materialize, meta_skeleton
from xlt.tasks.loading import MissingDataError, check_local_files, load_split, resolve_source
from xlt.tasks.registry import get_mixture, get_task
from xlt.tasks.spec import MixtureSpec, TaskSpec

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
RESULTS_FILE = "results.jsonl"
PREDICTIONS_DIR = "predictions"
WANDB_ID_FILE = "wandb_id"  # the job's W&B run id: a relaunch continues that run
CSV_DIR = "csv"  # the CSV logger's folder: metrics.csv, kept and appended to by a relaunch
RNG_FILE = "rng_after.pt"  # a shared intermediate stage's generator states after it (xlt/reuse.py)


def git_commit() -> str:
    """The project's commit, with ``-dirty`` when the work tree has changes; ``unknown`` outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_ROOT,
                               capture_output=True, text=True, check=True)  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def is_global_zero() -> bool:
    """Rank 0 of a data-parallel job (Lightning sets ``rank_zero_only.rank`` in every process)."""
    return getattr(rank_zero_only, "rank", 0) == 0


def resolve_precision(precision: str) -> str:
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
    from hydra.utils import instantiate

    return instantiate(strategy, _convert_="all")


def own_device() -> torch.device:
    """This process's accelerator (``cuda:LOCAL_RANK``; Lightning and SLURM set the local rank), or
    the CPU: evaluation outside a Trainer must not pile every rank onto GPU 0."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    local_rank = int(os.environ.get("LOCAL_RANK", os.environ.get("SLURM_LOCALID", "0")))
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def cluster_plugins() -> list[Any]:
    """Under SLURM, Lightning's SLURMEnvironment without its own requeue handler: submitit (USR2)
    owns preemption and requeueing, see docs/slurm-requeue.md."""
    from pytorch_lightning.plugins.environments import SLURMEnvironment

    return [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []


@dataclass
class RunState:
    """Which stages are finished, persisted in the run directory so a relaunch resumes."""

    path: Path
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> RunState:
        return cls(path, json.loads(path.read_text()) if path.is_file() else {})

    def stage(self, name: str) -> dict[str, Any] | None:
        return self.data.get("stages", {}).get(name)

    def mark_stage(self, name: str, **info: Any) -> None:
        self.data.setdefault("stages", {})[name] = info
        self.save()

    def save(self) -> None:
        if is_global_zero():
            atomic_write_text(self.path, json.dumps(self.data, indent=1))

    def pinned_model(self, model_cfg: DictConfig) -> DictConfig:
        """``model_cfg`` with ``revision`` set to the hub commit this run first loaded, when the model
        file names none: a relaunch resumes on the same weights even if the hub moved meanwhile."""
        pinned = self.data.get("model_revision")
        if model_cfg.source != "hub" or model_cfg.revision is not None or not pinned:
            return model_cfg
        return cast(DictConfig, OmegaConf.merge(model_cfg, {"revision": pinned}))

    def pin_model(self, revision: str | None) -> None:
        """Record the hub commit the weights came from (first load only)."""
        if revision and not self.data.get("model_revision"):
            self.data["model_revision"] = revision
            self.save()


def build_logger(cfg: DictConfig, run_dir: Path, ctx: RunContext) -> Any:
    kind = cfg.logger.kind
    if kind == "none":
        return False
    if kind == "csv":
        from xlt.resumable_csv import ResumableCSVLogger

        return ResumableCSVLogger(save_dir=str(run_dir), name=CSV_DIR, version="")
    import wandb
    from pytorch_lightning.loggers import WandbLogger

    mode = cfg.logger.mode
    if mode == "auto":
        mode = "online" if _wandb_key_configured() else "offline"
    id_file = run_dir / WANDB_ID_FILE
    # A relaunched job continues the same W&B run.
    run_id = id_file.read_text().strip() if id_file.is_file() else None
    if run_id is None:
        run_id = uuid.uuid4().hex[:8]
        if is_global_zero():
            atomic_write_text(id_file, run_id)
    tags = [*cfg.logger.tags, f"model:{ctx.model}", f"intermediate:{ctx.intermediate}", f"target:{ctx.target}",
            f"seed:{ctx.seed}"]  # fmt: skip
    logger = WandbLogger(
        project=cfg.logger.project,
        entity=cfg.logger.entity,
        group=cfg.logger.group,
        tags=tags,
        name=f"{ctx.model}/{ctx.intermediate}/{ctx.target}/s{ctx.seed}",
        save_dir=str(run_dir),
        offline=mode == "offline",
        id=run_id,
        resume="allow",
        config={**to_container(cfg), "params": counted_params(ctx)},
        settings=wandb.Settings(silent=True),  # its banner and history go to <run_dir>/wandb/*/logs, not the terminal
    )
    rank_zero_only(log.info)("W&B: %s run %s under %s (%s)", mode, run_id, run_dir / "wandb",
                             "`wandb sync <its offline-run-* folder>` uploads it" if mode == "offline" else "online")  # fmt: skip
    logger._wandb_init.pop("anonymous", None)  # Lightning always passes it; wandb warns it has no effect
    return logger


def counted_params(ctx: RunContext) -> dict[str, Any]:
    """The encoder's counted parameters (what the result rows hold), for the W&B run config."""
    return {"total": ctx.model_params, "non_embedding": ctx.extra.get("model_params_non_embedding"),
            "trainable": ctx.extra.get("trainable_params"), "published": ctx.extra.get("model_params_published")}  # fmt: skip


def _wandb_key_configured() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


class Diverged(RuntimeError):
    """Training produced a non-finite loss or gradient norm; the message names stage, step and batch."""


class Preempted(SystemExit):
    """The job was told to stop (SIGTERM) and did; a relaunch of the same command resumes it.
    Exits with status 143 (128 + SIGTERM), as a shell reports a process ended by that signal."""

    def __init__(self, message: str) -> None:
        super().__init__(143)
        self.message = message


class DivergenceGuard(pl.Callback):
    """Stops training at the first optimizer step whose gradient norm (or loss) is not finite,
    before that step updates the weights, by raising :class:`Diverged`: the checkpoints on disk
    stay the last good ones and the run writes no results.

    The gradient norm is checked in ``on_before_optimizer_step`` (after backward, before clipping
    and the update); a NaN or infinite loss makes it non-finite too. Every rank checks its own
    gradients (FSDP shards them) and the flag is reduced over ranks, so all ranks stop at the same
    step. Under a fp16 GradScaler an infinite gradient is routine (the scaler skips that step), so
    there the loss is checked instead, at the batch's end. One host sync per optimizer step.
    """

    def __init__(self, stage: str) -> None:
        self.stage = stage

    def _stop(self, trainer: pl.Trainer, what: str, value: float, batch_idx: int) -> None:
        raise Diverged(f"{self.stage} training diverged: {what} is {value} at step {trainer.global_step} "
                       f"(epoch {trainer.current_epoch}, batch {batch_idx}); no results written, the "
                       "checkpoints on disk are from before this step")  # fmt: skip

    @staticmethod
    def _scaler(trainer: pl.Trainer) -> Any:
        return getattr(trainer.precision_plugin, "scaler", None)

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:  # fmt: skip
        if self._scaler(trainer) is not None:
            return
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if any(hasattr(grad, "to_local") for grad in grads):  # DTensor shards (FSDP2)
            grads = [grad.to_local() if hasattr(grad, "to_local") else grad for grad in grads]
        # torch's own total norm over the optimizer's gradients, in its order: exactly the norm that
        # norm clipping computes next, so the module's clipping reuses it (one pass over the
        # gradients per step, not two; a tenth of an e5_small step on CPU).
        local = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())
        if isinstance(pl_module, TransferModule):
            pl_module.unclipped_grad_norm = local
        bad = (~torch.isfinite(local)).float().to(pl_module.device)
        if trainer.world_size > 1:
            bad = trainer.strategy.reduce(bad, reduce_op="sum")
        if bad.item():
            batch_idx = trainer.fit_loop.epoch_loop.batch_idx
            self._stop(trainer, "the gradient norm", float(local), batch_idx)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:  # fmt: skip
        if self._scaler(trainer) is None:
            return
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):
            bad = (~torch.isfinite(loss.detach())).float()
            if trainer.world_size > 1:
                bad = trainer.strategy.reduce(bad, reduce_op="sum")
            if bad.item():
                self._stop(trainer, "the loss", float(loss), batch_idx)


def rng_states() -> dict[str, Any]:
    """The random generators' states as plain data (tensors, ints, lists): loadable with
    ``torch.load(weights_only=True)`` and, via :func:`rng_states_to_json`, storable in JSON."""
    import random

    import numpy as np

    name, keys, pos, has_gauss, cached = cast(tuple[str, Any, int, int, float], np.random.get_state())
    version, internal, gauss = random.getstate()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [name, torch.from_numpy(keys.astype("int64")), int(pos), int(has_gauss), float(cached)],
        "python": [version, list(internal), gauss],
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    import random

    import numpy as np

    torch.set_rng_state(states["torch"])
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, keys.numpy().astype("uint32"), int(pos), int(has_gauss), float(cached)))
    version, internal, gauss = states["python"]
    random.setstate((int(version), tuple(int(x) for x in internal), gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def rng_states_to_json(states: dict[str, Any]) -> dict[str, Any]:
    out = dict(states)
    out["torch"] = states["torch"].tolist()
    out["numpy"] = [*states["numpy"][:1], states["numpy"][1].tolist(), *states["numpy"][2:]]
    if "cuda" in states:
        out["cuda"] = [s.tolist() for s in states["cuda"]]
    return out


def rng_states_from_json(data: dict[str, Any]) -> dict[str, Any]:
    out = dict(data)
    out["torch"] = torch.tensor(data["torch"], dtype=torch.uint8)
    out["numpy"] = [data["numpy"][0], torch.tensor(data["numpy"][1], dtype=torch.int64), *data["numpy"][2:]]
    if "cuda" in data:
        out["cuda"] = [torch.tensor(s, dtype=torch.uint8) for s in data["cuda"]]
    return out


class LoaderStateOnResume(pl.Callback):
    """Hands the training loader its checkpointed state (epoch, batches consumed) on resume.

    Lightning 2.6 applies it only when the fit loop builds the training loader after the restore.
    ``configure_optimizers`` reads ``trainer.estimated_stepping_batches``, which builds the loader
    before the restore, so the state was never applied: a run resumed mid-epoch started the
    interrupted epoch's batches over (found by tests/test_resume.py). ``on_train_start`` runs after
    the restore and before the first batch is drawn (the sampler draws its batches lazily).
    """

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        fit_loop = trainer.fit_loop
        if fit_loop.restarting and fit_loop._combined_loader_states_to_load:
            fit_loop._load_combined_loader_states()


class RngStateInCheckpoint(pl.Callback):
    """Keeps the random number generators' states (torch, CUDA, numpy, random) in every checkpoint
    and restores them on resume: Lightning's checkpoints do not, so a resumed run would draw other
    dropout masks than an uninterrupted one and end with other numbers.

    *When* the state is put back matters. Every DataLoader iterator draws its base seed from the
    global torch generator when it is created (torch.utils.data ``_BaseDataLoaderIter``), i.e. at
    the start of each training epoch and of each validation. A checkpoint taken after an epoch's
    last batch precedes the next epoch's draw in the uninterrupted run, so its state is restored at
    once (Lightning then creates the iterator and draws, as the uninterrupted run did). A checkpoint
    taken inside an epoch (``StepCheckpoint``, or a mid-epoch validation) follows that epoch's draw,
    which a resumed run makes again when it re-creates the iterator: its state is restored at the
    first training batch instead, after the draw. (Restoring at once made the resumed run's dropout
    masks differ from the uninterrupted run's from the first step after a mid-epoch checkpoint.)
    """

    def __init__(self) -> None:
        self._mid_epoch = False  # has this epoch's iterator drawn and its last batch not yet ended?
        self._pending: dict[str, Any] | None = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._mid_epoch = False

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:  # fmt: skip
        if self._pending is not None:
            set_rng_states(self._pending)
            self._pending = None
        self._mid_epoch = True  # a save from now until the epoch's last batch ends follows its draw

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:  # fmt: skip
        # Callbacks that save in this same hook (StepCheckpoint, listed before) see True: they run
        # first, and StepCheckpoint never saves at an epoch's last batch.
        self._mid_epoch = batch_idx + 1 < trainer.num_training_batches

    def state_dict(self) -> dict[str, Any]:
        states: dict[str, Any] = {**rng_states(), "mid_epoch": int(self._mid_epoch)}
        # Ranks draw different amounts (batches of other shapes, probes on rank 0 only), and only
        # rank 0 writes the checkpoint: keep every rank's states (every rank builds the checkpoint).
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, states)
            return {"ranks": gathered, "mid_epoch": states["mid_epoch"]}
        return states

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "ranks" in state_dict:
            ranks = state_dict["ranks"]
            rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
            state_dict = {**(ranks[rank] if rank < len(ranks) else ranks[0]), "mid_epoch": state_dict["mid_epoch"]}
        if state_dict.get("mid_epoch"):
            self._pending = dict(state_dict)
        else:
            set_rng_states(state_dict)


PREVIOUS_CKPT = "prev.ckpt"


class CheckpointError(RuntimeError):
    """A checkpoint the run needs cannot be used; the message names it and what to do."""


def keep_previous(last: Path) -> None:
    """Before ``last`` is overwritten, keep it as ``prev.ckpt`` beside it (an atomic rename): if the
    new file ends up unreadable, a relaunch resumes from the previous one."""
    if last.is_file():
        os.replace(last, last.with_name(PREVIOUS_CKPT))


def checkpoint_problem(path: Path) -> str | None:
    """Why ``path`` is not a complete checkpoint file, or None. Cheap (reads the zip directory that
    ``torch.save`` writes at the file's end, not the tensors): a truncated or empty file fails."""
    import zipfile

    if path.is_dir():  # a sharded (distributed) checkpoint: left to the strategy
        return None
    try:
        size = path.stat().st_size
        if size == 0:
            return "it is empty (0 bytes)"
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            if not any(i.filename.endswith("data.pkl") for i in infos):
                return "it holds no checkpoint (no data.pkl)"
            if any(i.header_offset + i.compress_size > size for i in infos):
                return "it is truncated"
    except (OSError, zipfile.BadZipFile) as err:
        return f"it is truncated or not a torch checkpoint ({err})"
    return None


def resume_checkpoint(ckpt_dir: Path) -> Path | None:
    """The checkpoint a relaunch resumes the stage from: ``last.ckpt``, or ``prev.ckpt`` (one save
    older) when ``last.ckpt`` is unreadable, said in one line; None when the stage has none."""
    last, prev = ckpt_dir / "last.ckpt", ckpt_dir / PREVIOUS_CKPT
    if not last.exists():
        return prev if prev.exists() and checkpoint_problem(prev) is None else None
    problem = checkpoint_problem(last)
    if problem is None:
        return last
    if prev.exists() and checkpoint_problem(prev) is None:
        rank_zero_only(log.warning)("%s is unusable (%s); resuming from the one before it, %s (the unusable "
                                    "file is kept as last.ckpt.unusable)", last, problem, prev)  # fmt: skip
        if is_global_zero():
            os.replace(last, last.with_name("last.ckpt.unusable"))  # not rotated over prev.ckpt by the next save
        return prev
    raise CheckpointError(f"{last} is unusable ({problem}) and there is no earlier checkpoint to resume from; "
                          "delete it to restart the stage, or rerun with resume=false")  # fmt: skip


class LastCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint for ``last.ckpt``, keeping the file it overwrites as ``prev.ckpt``."""

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        if trainer.is_global_zero:
            keep_previous(Path(filepath))
        super()._save_checkpoint(trainer, filepath)

class StepCheckpoint(pl.Callback):
    """Save ``path`` (the stage's last.ckpt) every ``every`` optimizer steps, so that a preempted job
    loses at most that much work.

    Not at an epoch's last batch: the checkpoint after that epoch's validation follows, and Lightning
    resuming from one taken before the validation would skip it (checked with Lightning 2.6).
    A resume from such a mid-epoch checkpoint is exact: the training loader
    (xlt.data.sampling.ResumableDataLoader) stores the epoch and the batches consumed, so the resumed
    epoch continues with the batches not yet seen, and RngStateInCheckpoint restores the random
    generators at the first of them (tests/test_resume.py kills and relaunches runs to check it).
    """

    def __init__(self, path: Path, every: int) -> None:
        self.path = path
        self.every = every
        self._saved_at = -1

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:  # fmt: skip
        step = trainer.global_step
        last_batch = batch_idx + 1 >= trainer.num_training_batches
        if step and step % self.every == 0 and step != self._saved_at and not last_batch:
            if trainer.is_global_zero:
                keep_previous(self.path)
            trainer.save_checkpoint(self.path)
            self._saved_at = step


DEBUG_TRAINER_KEYS = {"fast_dev_run": False, "overfit_batches": 0.0, "limit_train_batches": 1.0,
                      "limit_val_batches": 1.0, "limit_test_batches": 1.0}  # fmt: skip


def debug_mode(cfg: DictConfig) -> str:
    """What makes this a debug or partial run ('' when nothing does): the trainer settings of
    debug=fdr/limit/overfit or set by hand, e.g. ``fast_dev_run=True`` or ``limit_test_batches=2``."""
    parts = []
    for key, default in DEBUG_TRAINER_KEYS.items():
        value = cfg.trainer.get(key)
        if value is not None and value != default and not (key.startswith("limit_") and value == 1):
            parts.append(f"{key}={value}")
    return ",".join(parts)


def scored_counts(rows: list[ResultRow], sets: list[EvalSet], predicted: dict[str, dict[int, Any]]) -> list[ResultRow]:
    """Per-language rows whose ``n_examples`` is the number of examples actually predicted (a
    debug run scores only some batches), not the set's size."""
    import dataclasses

    counts = {(s.task, s.split, s.lang): len(predicted.get(s.key, {})) for s in sets}
    return [dataclasses.replace(r, n_examples=counts.get((r.task, r.split, r.language), r.n_examples))
            if r.n_examples is not None else r for r in rows]  # fmt: skip


class ResumePoint(LastCheckpoint):
    """The stage's ``last.ckpt`` (weights, AdamW states, loop state) after each validation, except once
    the last optimizer step is done: the stage is then over and deletes last.ckpt, so writing it there
    (1.4 GB for e5_small) would only cost time. A job stopped between that point and the end of the
    stage resumes from the resume point before it."""

    @staticmethod
    def _training_done(trainer: pl.Trainer) -> bool:
        return trainer.global_step >= trainer.estimated_stepping_batches

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._training_done(trainer):
            super().on_train_epoch_end(trainer, pl_module)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._training_done(trainer):
            super().on_validation_end(trainer, pl_module)


class LossProgressBar(TQDMProgressBar):
    """tqdm that shows the training losses (logged without ``prog_bar``) when it redraws: a
    ``prog_bar=True`` metric is turned into a Python number after every batch, a host-device sync per
    step on a GPU; here that happens only at the bar's refresh."""

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        for key, value in trainer.callback_metrics.items():
            if key.startswith("train/") and key.endswith("/loss"):
                items[key] = f"{float(value):.3g}"
        return items


class ValidateAfterLastStep(pl.Callback):
    """With validation every N optimizer steps, Lightning validates at multiples of N only: the steps
    after the last multiple would never be a candidate, and a stage shorter than N steps would select
    nothing. At the last training batch (the last epoch's, or at ``max_steps``) this asks the loop to
    stop, which makes Lightning validate after that batch (``_should_check_val_fx``: a requested stop
    is validated first, checked in Lightning 2.6)."""

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:  # fmt: skip
        last_epoch = trainer.max_epochs is not None and 0 <= trainer.max_epochs <= trainer.current_epoch + 1
        epoch_end = batch_idx + 1 >= trainer.num_training_batches
        at_max_steps = trainer.max_steps is not None and 0 < trainer.max_steps <= trainer.global_step
        if (last_epoch and epoch_end) or at_max_steps:
            trainer.should_stop = True


def selection_callbacks(stage_cfg: DictConfig, monitor: str, accumulate: int, trainer_kwargs: dict[str, Any]) -> list[pl.Callback]:
    """Checkpoint selection as jiant's X-STILTs recipe does it (stage options, conf/*/*.yaml):

    - ``val_check_every`` N: validate every N optimizer steps, counted across epochs, and after the
      last step. Lightning's ``val_check_interval`` counts training *batches*, so it gets N x the
      gradient accumulation, with ``check_val_every_n_epoch=None`` (else the count restarts every
      epoch and an N larger than an epoch is refused). null: once per epoch (the Trainer's own
      ``val_check_interval``).
    - ``patience`` P: stop after P validations without improvement of ``monitor`` (EarlyStopping,
      checked after every validation, not at epoch ends; its counters are in every checkpoint, so a
      resumed stage stops where an uninterrupted one would). null: no early stopping.

    ``trainer_kwargs`` is updated in place."""
    callbacks: list[pl.Callback] = []
    if stage_cfg.get("val_check_every") and not trainer_kwargs.get("fast_dev_run"):
        trainer_kwargs["val_check_interval"] = int(stage_cfg.val_check_every) * accumulate
        trainer_kwargs["check_val_every_n_epoch"] = None
        callbacks.append(ValidateAfterLastStep())
    if stage_cfg.get("patience"):
        from pytorch_lightning.callbacks import EarlyStopping

        callbacks.append(EarlyStopping(monitor=monitor, mode="max", patience=int(stage_cfg.patience),
                                       check_on_train_epoch_end=False))  # fmt: skip
    return callbacks


class Runner:
    """Carries what the stages share: config, run directory, encoder, tokenizer, logger, rows."""

    def __init__(self, cfg: DictConfig, run_dir: Path, sweep_dir: Path | None = None) -> None:
        self.cfg = cfg
        self.run_dir = run_dir
        self.sweep_dir = sweep_dir  # a Hydra multirun's folder: shared intermediate stages live under it
        self.state = RunState.load(run_dir / STATE_FILE)
        source, data_dir = resolve_source(cfg.data.source, cfg.data.dir)
        self.cache_dir = Path(cfg.data.cache_dir).expanduser()
        model_cfg = self.state.pinned_model(cfg.model)
        self.tokenizer = load_tokenizer(model_cfg, self.cache_dir)
        self.settings = DataSettings(source, data_dir, self.cache_dir, self.tokenizer)
        pl.seed_everything(cfg.seed, workers=True)
        # Lean loading: under FSDP, ranks other than 0 build the encoder on the meta device and get
        # rank 0's weights when FSDP wraps it (sync_module_states); a random encoder is built anyway.
        self.lean = self.sharded and not is_global_zero() and cfg.model.source != "random"
        if self.lean:
            log.info("rank %d: encoder built on the meta device; its weights come from rank 0 (sync_module_states)",
                     getattr(rank_zero_only, "rank", 0))  # fmt: skip
        loader = encoder_skeleton if self.lean else load_encoder
        self.encoder = loader(model_cfg, self.cache_dir)
        revision = resolved_revision(self.encoder) if cfg.model.source == "hub" else None
        self.state.pin_model(revision)
        if cfg.scale.activation_checkpointing:
            self.encoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if cfg.scale.peft == "lora":
            self.encoder = add_lora(self.encoder, cfg.scale.lora)
        n_params = count_parameters(self.encoder)
        intermediate = cfg.intermediate.name if cfg.intermediate is not None else "none"
        self.ctx = RunContext(
            model=cfg.model.name,
            model_params=n_params,
            intermediate=intermediate,
            target=cfg.target.name,
            train_task=cfg.target.train_task or "",
            seed=cfg.seed,
            git_commit=git_commit(),
            data_source=source,
            peft=cfg.scale.peft,
            run_dir=str(run_dir),
            extra={
                "model_params_published": cfg.model.params,
                "model_family": cfg.model.family,
                "model_params_non_embedding": n_params - self.encoder.get_input_embeddings().weight.numel(),
                "trainable_params": sum(p.numel() for p in self.encoder.parameters() if p.requires_grad),
                "scale": cfg.scale.name,
                "model_revision": revision or model_cfg.revision or "",  # the hub commit of the weights
                # The learning rates the stages train at (LoRA has its own: scale.lora.lr).
                "lr_intermediate": self.stage_lr(cfg.intermediate) if cfg.intermediate is not None else None,
                "lr_target": self.stage_lr(cfg.target) if cfg.target.get("lr") is not None else None,
                "debug": debug_mode(cfg),  # "" for a real run; xlt.results leaves the others out
            },
        )
        self.logger = build_logger(cfg, run_dir, self.ctx)
        self.rows: list[ResultRow] = []
        self.eval_step = 0  # the logger step of evaluation metrics: the optimizer steps of the evaluated weights
        self.skipped: list[str] = []

    # -- stages ---------------------------------------------------------------------------------

    def probe(self, stage: str) -> None:
        """Retrieval probes on the current encoder (e.g. Tatoeba before and after intermediate training)."""
        probe = self.cfg.probe
        if not probe.tasks:
            return
        # Only rank 0 writes rows: in a multi-process job the other ranks skip the probes and wait.
        if is_global_zero():
            for name in probe.tasks:
                spec = get_task(name, role="probe")
                languages = list(probe.languages or spec.languages)
                self.rows.extend(self.evaluate_retrieval(spec, stage, languages, probe.max_examples))
        else:
            log.info("%s probes run on rank 0; rank %d waits", stage, getattr(rank_zero_only, "rank", 0))
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()

    def evaluate_retrieval(
        self, spec: TaskSpec, stage: str, languages: list[str], limit: int | None
    ) -> list[ResultRow]:
        from xlt.metrics.retrieval import tatoeba_sorted_gold, tatoeba_top1

        if spec.retrieval == "mining":
            return self.evaluate_mining(spec, stage, languages)
        device = own_device()
        cast(torch.nn.Module, self.encoder).to(device)
        scores: dict[str, dict[str, float]] = {}
        counts: dict[str, int] = {}
        for lang in languages:
            try:
                loaded = load_split(
                    spec, spec.test_split, lang, self.settings.source, self.settings.data_dir, limit=limit
                )
            except MissingDataError as err:
                self._skip(str(err))
                continue
            texts = [ex["text"] for ex in loaded.examples]
            english = [ex["en"] for ex in loaded.examples]
            kwargs = {"layer": self.cfg.retrieval.layer, "batch_size": self.cfg.retrieval.batch_size,
                      "max_length": self.cfg.retrieval.max_seq_length, "device": device}  # fmt: skip
            index = embed(self.encoder, self.tokenizer, texts, desc=f"{spec.name} {lang}", **kwargs)
            queries = embed(self.encoder, self.tokenizer, english, desc=f"{spec.name} en-{lang}", **kwargs)
            pred = tatoeba_top1(queries, index)
            gold = torch.arange(len(texts))
            scores[lang] = {"acc": float((pred == gold).double().mean()) * 100}
            counts[lang] = len(texts)
            if self.cfg.predictions and stage == "target":
                # XTREME's layout: English lines sorted, so the gold of sorted line j is its original index.
                _, order = tatoeba_sorted_gold(english)
                self._write_predictions(
                    spec.name, spec.test_split, lang, spec.prediction_format, [int(pred[i]) for i in order]
                )
        cast(torch.nn.Module, self.encoder).to("cpu")
        rows = language_rows(stage, spec.name, spec.test_split, scores, counts, with_gap=False)
        self._log_rows(rows)
        return rows

    def evaluate_mining(self, spec: TaskSpec, stage: str, languages: list[str]) -> list[ResultRow]:
        """BUCC: per language, the threshold tuned on dev gold and frozen for test (see xlt.bucc)."""
        from xlt import bucc

        device = own_device()
        cast(torch.nn.Module, self.encoder).to(device)
        retrieval = self.cfg.retrieval

        def embed_texts(texts: Any) -> torch.Tensor:
            return embed(self.encoder, self.tokenizer, texts, layer=retrieval.layer, batch_size=retrieval.batch_size,
                         max_length=retrieval.max_seq_length, device=device, desc=f"{spec.name}")  # fmt: skip

        results, skipped = bucc.evaluate_languages(
            spec, languages, self.settings.source, self.settings.data_dir, embed_texts, device
        )
        cast(torch.nn.Module, self.encoder).to("cpu")
        for line in skipped:
            self._skip(line)
        if self.cfg.predictions and stage == "target":
            for lang, result in results:
                self._write_predictions(spec.name, result.split, lang, spec.prediction_format, result.pairs)
        rows = bucc.result_rows(stage, spec.name, results)
        self._log_rows(rows)
        return rows

    def train_stage(
        self,
        stage: str,
        stage_cfg: DictConfig,
        spec: TaskSpec | MixtureSpec,
        train_spec: TaskSpec | None,
        test: bool,
        home: SharedStage | None = None,
    ) -> None:
        """Fit fresh heads (and the shared encoder) on English data, select on English dev, then
        evaluate dev (and, for targets, every language's test set). ``spec`` may be a mixture
        (several tasks, one head each or shared; see xlt/data/mixture.py). ``home``: the shared
        folder of an intermediate stage (xlt/reuse.py), whose state and checkpoints are used instead
        of the run directory's; it is always resumed (it is no one job's to start over)."""
        if isinstance(spec, MixtureSpec):
            data = prepare_mixture_data(spec, stage_cfg, self.settings)
        else:
            languages = list(stage_cfg.get("languages") or spec.languages) if test else []
            data = prepare_stage_data(
                task=spec,
                train_task=train_spec,
                train_split=stage_cfg.train_split,
                dev_split=stage_cfg.dev_split or spec.dev_split,
                test_split=spec.test_split if test else None,
                languages=languages,
                settings=self.settings,
                max_len=stage_cfg.max_seq_length,
                max_train=stage_cfg.max_train_examples,
                max_eval=stage_cfg.max_eval_examples,
                val_subset=stage_cfg.get("val_subset"),
            )
        for line in data.skipped:
            self._skip(line)
        n_train = sum(map(len, data.mixture.features)) if data.mixture else len(data.train or ())
        log.info("%s: training %s on %s (%d examples)", stage, spec.name, data.train_origin, n_train)
        scale = self.cfg.scale
        per_device, accumulate = batch_plan(
            stage_cfg.batch_size, scale.per_device_batch_size, scale.devices * scale.num_nodes
        )
        dm = StageDataModule(
            data,
            self.tokenizer,
            per_device,
            stage_cfg.eval_batch_size,
            self.cfg.seed,
            self.cfg.data.num_workers,
            accumulate,
        )
        hidden, pooling = self.encoder.config.hidden_size, self.cfg.model.pooling
        if data.mixture is not None:
            module = TransferModule.for_mixture(self.encoder, data.mixture, self.stage_lr(stage_cfg), self.cfg.optim,
                                                data.val, hidden, pooling)  # fmt: skip
            monitor = f"dev/{spec.name}/en/selection" if data.val else None
            world = scale.devices * scale.num_nodes
            mixture_info = log_mixture(
                data.mixture, per_device, accumulate, self.cfg.seed, stage_cfg.epochs, self.logger, world
            )
        else:
            assert isinstance(spec, TaskSpec)
            module = TransferModule(
                self.encoder, build_head(spec, hidden, pooling), spec, self.stage_lr(stage_cfg), self.cfg.optim,
                val_sets=data.val, test_sets=data.test,
            )  # fmt: skip
            monitor = f"{data.val[0].overall_key}/{spec.metrics[0]}" if data.val else None
            mixture_info = None
        ckpt_dir = home.ckpt_dir if home is not None else self.run_dir / "checkpoints" / stage
        stage_state = RunState.load(home.state_path) if home is not None else self.state
        resume = self.cfg.resume or home is not None
        # FSDP wraps the module in place and flattens its parameters: keep a meta-device skeleton to
        # rebuild it from full-state checkpoints (xlt.strategies).
        skeleton = meta_skeleton(module) if self.sharded else None
        done = stage_state.stage(stage) if resume else None
        if done is not None:
            log.info(
                "%s: finished in an earlier launch; loading %s",
                stage,
                done.get("best") or "its final weights",
            )
            weights = Path(done["best"]) if done.get("best") else ckpt_dir / "final.ckpt"
            self.eval_step = int(done.get("logged_step", 0))
            if skeleton is not None:
                module = cast(TransferModule, materialize(skeleton, self._checkpoint_weights(weights)))
            else:
                self._load_weights(module, weights)
            if done.get("rng"):
                # The generators as the uninterrupted run left this stage: later stages draw the same.
                set_rng_states(rng_states_from_json(done["rng"]))
        else:
            trainer = self._trainer(stage_cfg, data, accumulate, ckpt_dir, monitor, stage=stage)
            last = ckpt_dir / "last.ckpt"
            found = resume_checkpoint(ckpt_dir) if resume else None
            resume_from = str(found) if found else None
            if resume_from:
                log.info("%s: resuming from %s", stage, resume_from)
            try:
                trainer.fit(module, datamodule=dm, ckpt_path=resume_from, weights_only=True)
            except SIGTERMException:
                raise Preempted(self._preempted_line(stage, trainer, last)) from None
            selector = trainer.checkpoint_callback
            best = selector.best_model_path if isinstance(selector, ModelCheckpoint) else ""
            if not best:
                # No selection happened (fast_dev_run or no dev set): keep the final weights.
                best = str(ckpt_dir / "final.ckpt")
                trainer.save_checkpoint(best, weights_only=True)
                if skeleton is not None:  # the trained module is wrapped: reload it from the file
                    module = cast(TransferModule, materialize(skeleton, self._checkpoint_weights(Path(best))))
            elif skeleton is not None:
                module = cast(TransferModule, materialize(skeleton, self._checkpoint_weights(Path(best))))
            else:
                self._load_weights(module, Path(best))
            weights = Path(best)
            # Lightning's logger axis: the fit's last step (where its own epoch-end validation landed).
            self.eval_step = max(0, trainer.fit_loop.epoch_loop._batches_that_stepped - 1)
            stage_state.mark_stage(stage, best=best, task=spec.name, train=data.train_origin, steps=trainer.global_step,
                                   logged_step=self.eval_step, rng=rng_states_to_json(rng_states()),
                                  **({"mixture": mixture_info} if mixture_info else {}))  # fmt: skip
            if is_global_zero():
                last.unlink(missing_ok=True)  # the stage is done; its resume point is no longer needed
                (ckpt_dir / PREVIOUS_CKPT).unlink(missing_ok=True)
        evaluator = self._trainer(stage_cfg, data, 1, None, None)
        try:
            if data.val:
                evaluator.validate(module, datamodule=dm, verbose=False)
                if evaluator.received_sigterm:  # Lightning notes SIGTERM in validate/test but may finish
                    raise SIGTERMException
            if data.test:
                if skeleton is not None and data.val:
                    # Validation wrapped the module, and FSDP cannot wrap a wrapped module again: test an
                    # unwrapped copy of the same weights, with a fresh strategy, keeping the dev scores.
                    scores = module.scores
                    module = cast(TransferModule, materialize(skeleton, self._checkpoint_weights(weights)))
                    module.scores.update(scores)
                    evaluator = self._trainer(stage_cfg, data, 1, None, None)
                if self.cfg.predictions:
                    module.collect_predictions()
                evaluator.test(module, datamodule=dm, verbose=False)
            if evaluator.received_sigterm:
                raise SIGTERMException
        except SIGTERMException:
            raise Preempted(f"preempted (SIGTERM) while evaluating the {stage} stage; its training is saved, "
                            "relaunch the same command to evaluate it again") from None  # fmt: skip
        if data.test and self.cfg.predictions:
            assert isinstance(spec, TaskSpec), "a mixture stage has no test sets"
            self._write_head_predictions(spec, data.test, module.predictions)
        for split, sets in (("dev", data.val), ("test", data.test)):
            if not sets:
                continue
            rows = eval_rows(stage, split, sets, module.scores, module.parts, module.selection_key)
            if split == "test" and self.ctx.extra["debug"] and module.predictions:
                rows = scored_counts(rows, sets, module.predictions)
            self.rows.extend(rows)
            self._log_rows(rows, already_logged=True)
        rank_zero_only(log.info)("%s: %s done (weights: %s)", stage, spec.name, weights)
        if skeleton is not None:
            # The evaluator wrapped this module's encoder: the probes and the next stage get an
            # unwrapped one holding the selected weights.
            state = self._checkpoint_weights(weights)
            encoder_state = None if state is None else {
                k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")
            }  # fmt: skip
            self.encoder = cast(Any, materialize(cast(TransferModule, skeleton).encoder, encoder_state))

    def _write_head_predictions(
        self, spec: TaskSpec, sets: list[EvalSet], predicted: dict[str, dict[int, Any]]
    ) -> None:
        """Write each test language's predictions in the submission layout; a language with
        unpredicted examples (e.g. limit_test_batches) is not written, and says so in one line."""
        fmt = spec.prediction_format
        for s in sets:
            by_example = predicted.get(s.key, {})
            if len(by_example) < len(s):
                self._skip(f"predictions {spec.name}/{s.split}-{s.lang}: only {len(by_example)} of {len(s)} "
                           "examples were predicted; file not written")  # fmt: skip
                continue
            ordered = [by_example[i] for i in range(len(s))]
            content: Any = ordered
            if fmt == "qa":
                content = {str(s.examples[i]["id"]): text for i, text in enumerate(ordered)}
            self._write_predictions(spec.name, s.split, s.lang, fmt, content)

    def _write_predictions(self, task: str, split: str, lang: str, fmt: str, content: Any) -> None:
        if is_global_zero():
            write_predictions(self.run_dir / PREDICTIONS_DIR, task, split, lang, fmt, content)

    def _trainer(self, stage_cfg: DictConfig, data: StageData, accumulate: int, ckpt_dir: Path | None,
                 monitor: str | None, stage: str = "") -> pl.Trainer:  # fmt: skip
        scale = self.cfg.scale
        callbacks: list[pl.Callback] = []
        if ckpt_dir is not None:
            # First: a diverged step must stop the run before any checkpoint callback saves it.
            callbacks.append(DivergenceGuard(stage))
            callbacks.append(ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor=monitor, mode="max",
                                             save_top_k=1 if monitor else 0, save_weights_only=True))  # fmt: skip
            # last.ckpt (one file, overwritten) after every validation and, with
            # scale.checkpoint_every_n_steps, every N optimizer steps: what a preempted job resumes from.
            # (Not save_last=True with save_top_k=0: Lightning 2.6 then never writes last.ckpt.)
            callbacks.append(ResumePoint(dirpath=ckpt_dir, filename="last", save_top_k=1,
                                         enable_version_counter=False))  # fmt: skip
            if scale.checkpoint_every_n_steps:
                callbacks.append(StepCheckpoint(ckpt_dir / "last.ckpt", scale.checkpoint_every_n_steps))
            callbacks.append(RngStateInCheckpoint())
            callbacks.append(LoaderStateOnResume())
        if self.cfg.trainer.get("enable_progress_bar", True):
            # tqdm, not Rich: it stays readable in log files and SLURM output, not only in terminals.
            callbacks.append(LossProgressBar(refresh_rate=1 if sys.stderr.isatty() else 25))
        trainer_kwargs = to_container(self.cfg.trainer)
        if ckpt_dir is not None and monitor is not None:
            callbacks.extend(selection_callbacks(stage_cfg, monitor, accumulate, trainer_kwargs))
        epochs = float(stage_cfg.epochs)
        if epochs != int(epochs) and (data.train is not None or data.mixture is not None):
            if data.mixture is not None:
                steps_per_epoch = data.mixture.steps_per_epoch
            else:
                assert data.train is not None
                batches = math.ceil(len(data.train) / (stage_cfg.batch_size // accumulate))
                steps_per_epoch = math.ceil(batches / accumulate)
            trainer_kwargs.setdefault("max_steps", max(1, math.ceil(epochs * steps_per_epoch)))
        max_epochs = trainer_kwargs.pop("max_epochs", max(1, math.ceil(epochs)))
        plugins = [*(trainer_kwargs.pop("plugins", None) or []), *cluster_plugins()]
        # Lightning's model summary as a log line (the log file), not the Rich table it prints directly.
        callbacks.append(ModelSummary(max_depth=1))
        trainer = pl.Trainer(
            **trainer_kwargs,
            max_epochs=max_epochs,
            precision=resolve_precision(scale.precision),  # type: ignore[arg-type]
            strategy=build_strategy(scale.strategy, several_heads=data.mixture is not None),
            devices=scale.devices,
            num_nodes=scale.num_nodes,
            accumulate_grad_batches=accumulate,
            gradient_clip_val=self.cfg.optim.max_grad_norm,
            logger=self.logger,
            callbacks=callbacks,
            enable_checkpointing=ckpt_dir is not None,
            default_root_dir=str(self.run_dir),
            use_distributed_sampler=False,
            plugins=plugins,
        )
        if ckpt_dir is None:  # an evaluator: log at the evaluated weights' step, not a fresh Trainer's 0
            trainer.fit_loop.epoch_loop._batches_that_stepped = self.eval_step
        return trainer

    def stage_lr(self, stage_cfg: DictConfig) -> float:
        """The learning rate a stage trains at: its own, or ``scale.lora.lr`` under LoRA."""
        lora_lr = self.cfg.scale.lora.get("lr")
        return float(lora_lr if self.cfg.scale.peft == "lora" and lora_lr is not None else stage_cfg.lr)

    @property
    def sharded(self) -> bool:
        """Whether the strategy shards the module in place (FSDP), see xlt.strategies."""
        return is_sharded(self.cfg.scale.strategy)

    def _checkpoint_weights(self, path: Path) -> dict[str, torch.Tensor] | None:
        """The full state dict of a checkpoint file, memory-mapped: the ranks of a node share the
        file's pages instead of each holding a private copy (the tensors are read, then FSDP copies
        its shard out of them). None on a lean rank, which gets rank 0's weights from FSDP."""
        if self.lean:
            return None
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return cast(dict[str, torch.Tensor], checkpoint["state_dict"])

    @staticmethod
    def _load_weights(module: TransferModule, path: Path) -> None:
        """A finished stage's weights: data only (``weights_only=True`` refuses pickled code)."""
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise CheckpointError(f"{path}: the finished stage's checkpoint is missing; delete state.json's "
                                  "stage entry or rerun with resume=false") from None  # fmt: skip
        except Exception as err:
            raise CheckpointError(f"{path}: not a loadable checkpoint ({type(err).__name__}: "
                                  f"{str(err).splitlines()[0][:200]}); delete it and rerun with resume=false") from None  # fmt: skip
        module.load_state_dict(state["state_dict"])

    @staticmethod
    def _preempted_line(stage: str, trainer: pl.Trainer, last: Path) -> str:
        where = str(last) if last.is_file() else "none yet (the stage restarts)"
        return (f"preempted (SIGTERM) during {stage} training at step {trainer.global_step}; resume point: "
                f"{where}; relaunch the same command to resume")  # fmt: skip

    def _skip(self, line: str) -> None:
        self.skipped.append(line)
        rank_zero_only(log.warning)("skipped: %s", line, extra=file_only())  # the report lists them once

    def _log_rows(self, rows: list[ResultRow], already_logged: bool = False) -> None:
        if not self.logger:
            return
        metrics = {
            f"{r.split}/{r.task}/{r.language}/{r.metric}"
            + ("" if r.stage == "target" else f"@{r.stage}"): r.value * (100 if r.language == "rel_gap" else 1)
            for r in rows  # every logged metric in percent (rel_gap is a fraction in results.jsonl)
            if not (already_logged and r.language not in ("avg", "avg_non_en", "gap", "rel_gap"))
        }
        if metrics:
            self.logger.log_metrics(metrics, step=self.eval_step)
            self.logger.save()

    # -- the whole run ----------------------------------------------------------------------------

    def audit(self) -> None:
        """The contamination audit (xlt/audit.py), before any training: an overlap between a set the
        run trains or selects on and a test set of its target stops the run (ContaminationError, one
        line) unless the target's spec declares an exclusion; those are applied to every stage's
        loading. The counts go into state.json (``audit``) and every result row."""
        from xlt.audit import audit, mixture_label

        report = audit(self.cfg, self.settings.source, self.settings.data_dir)
        rank_zero_only(log.info)("%s", report.format(), extra=file_only())
        self.state.data["audit"] = report.record()
        self.state.save()
        report.check()
        self.settings.exclude = report.removals()
        self.ctx.extra.update(report.row_fields())
        label = mixture_label(self.cfg, report)  # a mixture without some members: rows say what it trained
        if label is not None:
            self.ctx = replace(self.ctx, intermediate=label[0])
            self.ctx.extra.update(intermediate_mixture=self.cfg.intermediate.name, intermediate_members=",".join(label[1]))

    # -- the intermediate stage, trained once per key (xlt/reuse.py) -------------------------------

    def intermediate_key(self) -> IntermediateKey:
        """What names this run's intermediate model: see xlt.reuse.intermediate_key."""
        audit = self.state.data.get("audit", {})
        exclusions = {r["set"]: sorted(r.get("excluded_ids", [])) for r in audit.get("sets", [])
                      if r.get("stage") == "intermediate" and r.get("excluded")}  # fmt: skip
        accelerator = "cuda" if torch.cuda.is_available() and self.cfg.trainer.get("accelerator") != "cpu" else "cpu"
        return intermediate_key(to_container(self.cfg), model_revision=self.ctx.extra.get("model_revision", ""),
                                exclusions=exclusions, code=self.cfg.reuse.get("code") or code_version(),
                                precision=resolve_precision(self.cfg.scale.precision), accelerator=accelerator)  # fmt: skip

    def intermediate_home(self, key: IntermediateKey) -> SharedStage | None:
        """The shared folder of this run's intermediate stage, or None when the run keeps it in its
        own directory (reuse.intermediate=false, or a single run without reuse.dir). A relaunch keeps
        the folder its first launch used (state.json ``intermediate_home``), even if the key has
        changed since (a new commit): a job resumes on the intermediate model it started from."""
        pinned = self.state.data.get("intermediate_home") if self.cfg.resume else None
        if pinned:
            home = SharedStage.pinned(Path(pinned))
            if home.key.name != key.name:
                rank_zero_only(log.warning)("intermediate: keeping %s, which this job started from (its settings "
                                            "now give the key %s)", pinned, key.name)  # fmt: skip
            return home
        if not self.cfg.reuse.intermediate:
            return None
        root = self.cfg.reuse.dir or (self.sweep_dir / ROOT_NAME if self.sweep_dir is not None else None)
        return SharedStage(Path(root), key) if root is not None else None

    def run_intermediate(self, home: SharedStage | None) -> None:
        cfg = self.cfg
        mixture = get_mixture(cfg.intermediate.name)
        if mixture is not None:
            self.train_stage("intermediate", cfg.intermediate, mixture, None, test=False, home=home)
        else:
            spec = get_task(cfg.intermediate.name, role="intermediate")
            self.train_stage("intermediate", cfg.intermediate, spec, spec, test=False, home=home)

    def intermediate_phase(self) -> None:
        """Train the intermediate stage (and probe after it), or reuse it from the job that trained
        it under the same key; either way the stage's rows and the random generators' states are the
        same as if this job had trained it itself."""
        key = self.intermediate_key()
        # The key the stage was trained under: a relaunch after a code change reports that one.
        recorded = self.state.data.get("intermediate_key") if self.cfg.resume else None
        self.ctx.extra["intermediate_key"] = recorded or key.name
        if not recorded and is_global_zero():
            self.state.data["intermediate_key"] = key.name
            self.state.save()
        home = self.intermediate_home(key)
        if home is None:
            self.run_intermediate(None)
            self.probe("intermediate")
            best = (self.state.stage("intermediate") or {}).get("best", "")
            # relative to the run dir (as the folder is moved or compared), like the run's other files
            self.ctx.extra["intermediate_checkpoint"] = os.path.relpath(best, self.run_dir) if best else ""
            return
        if is_global_zero():
            self.state.data["intermediate_home"] = str(home.dir)
            self.state.save()
        timeout = self.cfg.reuse.wait_timeout_min
        with home.claim(str(self.run_dir), rank_zero=is_global_zero(),
                        timeout_s=timeout * 60 if timeout is not None else None) as record:  # fmt: skip
            if record is None:
                first_row, first_skip = len(self.rows), len(self.skipped)
                self.run_intermediate(home)
                dev_rows = self.rows[first_row:]
                self.probe("intermediate")
                probe_rows = self.rows[first_row + len(dev_rows):]
                rng = RngStateInCheckpoint().state_dict()  # every rank (gathered when distributed)
                finished = RunState.load(home.state_path).stage("intermediate") or {}
                best = finished.get("best", "")  # written by rank 0 before the evaluation all ranks ran
                record = {"checkpoint": str(Path(best).resolve()) if best else "", "trained_by": str(self.run_dir),
                          "optimizer_steps": finished.get("steps"), "rows": [dataclasses.asdict(r) for r in dev_rows],
                          "probe_rows": [dataclasses.asdict(r) for r in probe_rows], "probe": self._probe_settings(),
                          "skipped": self.skipped[first_skip:]}  # fmt: skip
                if is_global_zero():
                    torch.save(rng, home.dir / RNG_FILE)
                    home.finish(record)
            else:
                self.reuse_intermediate(home, record)
        self.ctx.extra.update(intermediate_key=home.key.name, intermediate_checkpoint=record["checkpoint"],
                              intermediate_trained_by=record["trained_by"])  # fmt: skip

    def _probe_settings(self) -> dict[str, Any]:
        return {"probe": to_container(self.cfg.probe), "retrieval": to_container(self.cfg.retrieval)}

    def reuse_intermediate(self, home: SharedStage, record: dict[str, Any]) -> None:
        """Load the encoder of a shared intermediate stage that another job trained, with its rows."""
        checkpoint = Path(record["checkpoint"])
        rank_zero_only(log.info)("intermediate: reusing %s (key %s, %s optimizer steps, trained by %s)", checkpoint,
                                 home.key.name, record.get("optimizer_steps"), record["trained_by"])  # fmt: skip
        if not self.lean:  # a lean rank (FSDP) gets rank 0's weights when FSDP wraps the encoder
            state = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)["state_dict"]
            prefix = "encoder."
            self.encoder.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
        rows = rows_from_records(record["rows"])
        self.rows.extend(rows)
        self._log_rows(rows)
        self.skipped.extend(record.get("skipped", []))
        if record.get("probe") == self._probe_settings():
            probe_rows = rows_from_records(record["probe_rows"])
            self.rows.extend(probe_rows)
            self._log_rows(probe_rows)
        else:
            rank_zero_only(log.info)("intermediate: probing here (the probe settings differ from the job that trained it)")
            self.probe("intermediate")
        RngStateInCheckpoint().load_state_dict(torch.load(home.dir / RNG_FILE, weights_only=True))

    def execute(self) -> list[ResultRow]:
        cfg = self.cfg
        self.audit()
        self.probe("pretrained")
        if cfg.intermediate is not None:
            self.intermediate_phase()
        target = get_task(cfg.target.name, role="target")
        if target.trainable:
            train_spec = get_task(cfg.target.train_task)
            self.train_stage("target", cfg.target, target, train_spec, test=True)
        else:
            languages = list(cfg.target.languages or target.languages)
            self.rows.extend(
                self.evaluate_retrieval(target, "target", languages, cfg.target.max_eval_examples)
            )
        return self.rows

    def finish(self) -> None:
        if not is_global_zero():
            return
        write_results(self.run_dir / RESULTS_FILE, self.rows, self.ctx)
        self.state.data["finished"] = True
        self.state.data["skipped"] = self.skipped
        self.state.save()
        if self.logger and hasattr(self.logger, "log_table"):
            columns = ["stage", "task", "split", "language", "metric", "value", "n_examples"]
            data = [
                [r.stage, r.task, r.split, r.language, r.metric, r.value, r.n_examples] for r in self.rows
            ]
            self.logger.log_table(key="results", columns=columns, data=data)
            # The run's headline in the W&B summary: English, the others' mean and the gap (all percent).
            headline = {f"summary/{r.task}/{r.language}/{r.metric}": r.value * (100 if r.language == "rel_gap" else 1)
                        for r in self.rows if r.stage == "target" and r.split == "test"
                        and r.language in ("en", "avg_non_en", "gap", "rel_gap")}  # fmt: skip
            if headline:
                self.logger.experiment.summary.update(headline)

    def close(self) -> None:
        if self.logger and hasattr(self.logger, "experiment") and self.cfg.logger.kind == "wandb":
            import wandb

            if wandb.run is not None:
                wandb.finish()


def print_report(rows: list[ResultRow], skipped: list[str]) -> str:
    """The per-language tables with the gap, as printed at the end of a run."""
    blocks = []
    for stage, task, split in dict.fromkeys((r.stage, r.task, r.split) for r in rows):
        blocks.append(format_table(rows, stage, task, split))
    if skipped:
        blocks.append("Skipped (no data):\n" + "\n".join(f"  {line}" for line in skipped))
    text = "\n\n".join(b for b in blocks if b)
    rank_zero_only(print)("\n" + text + "\n")
    return text


def rows_from_records(records: list[dict[str, Any]]) -> list[ResultRow]:
    return [ResultRow(r["stage"], r["task"], r["split"], r["language"], r["metric"], r["value"], r.get("n_examples"),
                      r.get("note", "")) for r in records]  # fmt: skip


CONFIG_FILE = "config.yaml"
# Keys a relaunch may change: they do not change a number the run reports (what is logged where, how
# fast data is read, how often a resume point is written, whether predictions are also written).
# Every other key of the resolved config must equal the stored config.yaml's.
RESULT_NEUTRAL_KEYS = (
    "logger",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
    "data.cache_dir",
    "data.num_workers",
    "resume",
    "predictions",
    "scale.checkpoint_every_n_steps",
    "reuse",  # where the intermediate stage is kept: it is keyed, and a relaunch keeps its folder (xlt/reuse.py)
)


def has_progress(run_dir: Path, state: RunState) -> bool:
    """Whether ``run_dir`` holds work of an earlier launch that a relaunch would reuse."""
    return bool(state.data.get("stages") or state.data.get("finished")) or any(
        (run_dir / "checkpoints").glob("*/*.ckpt")
    )


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out or {prefix[:-1]: {}}
    return {prefix[:-1]: node}


def config_differences(cfg: DictConfig, stored: dict[str, Any]) -> list[str]:
    """The result-changing keys (dotted) whose values differ between ``cfg`` and ``stored``."""
    now, before = _flatten(to_container(cfg)), _flatten(stored)

    def neutral(key: str) -> bool:
        return any(key == k or key.startswith(k + ".") for k in RESULT_NEUTRAL_KEYS)

    keys = sorted(k for k in now.keys() | before.keys() if not neutral(k))
    return [k for k in keys if now.get(k, "<absent>") != before.get(k, "<absent>")]


def check_same_config(cfg: DictConfig, path: Path) -> None:
    """Refuse a relaunch into a run directory whose stored config differs in a key that changes
    results (one line listing the keys): the directory belongs to the configuration that started it."""
    if not path.is_file():
        return  # a run directory from before config.yaml was kept: nothing to compare with
    stored = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    assert isinstance(stored, dict)
    diff = config_differences(cfg, {str(k): v for k, v in stored.items()})
    if diff:
        shown = ", ".join(diff[:12]) + (f" and {len(diff) - 12} more" if len(diff) > 12 else "")
        raise ConfigError(f"{path.parent} belongs to another configuration: {shown} differ from its {path.name} "
                          "(use another run directory, restore those values, or resume=false to start it over)")  # fmt: skip


def run(cfg: DictConfig, run_dir: Path, sweep_dir: Path | None = None) -> dict[str, float]:
    """Validate ``cfg``, run every stage into ``run_dir``, write ``results.jsonl``; return the summary
    metrics (``{split}/{task}/{language}/{metric}`` of the target stage), e.g. for a sweep objective.
    ``sweep_dir``: the multirun folder, under which jobs share their intermediate stages."""
    cfg = validate(cfg)
    launch_id()  # before Lightning starts other ranks as subprocesses: they inherit it (xlt/reuse.py)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    state = RunState.load(run_dir / STATE_FILE)
    results = run_dir / RESULTS_FILE
    if cfg.resume and has_progress(run_dir, state):
        check_same_config(cfg, run_dir / CONFIG_FILE)
    if cfg.resume and state.data.get("finished") and results.is_file():
        rank_zero_only(log.info)("%s is finished; nothing to do (resume=false starts it over)", run_dir)
        rows = rows_from_records(read_results(results))
        print_report(rows, state.data.get("skipped", []))
        return _summary(rows)
    check_local_files(cfg)  # the English files a run needs are there, before anything is written
    if not cfg.resume and is_global_zero():
        # Starting over: forget the stages done, their checkpoints (a later relaunch must not resume
        # the old run's), its results and predictions, the W&B run id (the new run is a new W&B run)
        # and the CSV rows.
        (run_dir / STATE_FILE).unlink(missing_ok=True)
        state.data = {}
        for name in (RESULTS_FILE, WANDB_ID_FILE, f"{CSV_DIR}/metrics.csv"):
            (run_dir / name).unlink(missing_ok=True)
        for folder in ("checkpoints", PREDICTIONS_DIR):
            shutil.rmtree(run_dir / folder, ignore_errors=True)
    if is_global_zero():
        atomic_write_text(run_dir / CONFIG_FILE, OmegaConf.to_yaml(cfg, resolve=True))
    runner = Runner(cfg, run_dir, sweep_dir)
    try:
        rows = runner.execute()
        runner.finish()
    finally:
        runner.close()
    print_report(rows, runner.skipped)
    return _summary(rows)


def _summary(rows: list[ResultRow]) -> dict[str, float]:
    return {f"{r.split}/{r.task}/{r.language}/{r.metric}": r.value for r in rows if r.stage == "target"}
