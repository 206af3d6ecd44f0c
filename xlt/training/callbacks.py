"""The run's Lightning callbacks: divergence and preemption, the random generators' states in
checkpoints, the resume points (last.ckpt and prev.ckpt), checkpoint selection, and the progress bar."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint, TQDMProgressBar
from pytorch_lightning.strategies import FSDPStrategy

from xlt.orchestration.rundir import PREVIOUS_CKPT
from xlt.training.lightning_adapter import restore_loader_states, state_dict_type
from xlt.training.sharded_ckpt import put_in_place, rotate

if TYPE_CHECKING:
    from xlt.orchestration.plan import SelectionPlan


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
        raise Diverged(
            f"{self.stage} training diverged: {what} is {value} at step {trainer.global_step} "
            f"(epoch {trainer.current_epoch}, batch {batch_idx}); no results written, the "
            "checkpoints on disk are from before this step"
        )

    @staticmethod
    def _scaler(trainer: pl.Trainer) -> Any:
        return getattr(trainer.precision_plugin, "scaler", None)

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        logged = bool(
            getattr(trainer, "loggers", None)
        )  # learning rate and norm, where a logger records them
        if logged:  # this step's learning rate (first parameter group; a Python float, no device sync)
            pl_module.log("train/lr", float(optimizer.param_groups[0]["lr"]), on_step=True, on_epoch=False)
        if self._scaler(trainer) is not None:
            return
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        # FSDP1 (FSDPStrategy) holds flat shards; FSDP2 DTensor shards: this rank's part of each gradient
        sharded = isinstance(trainer.strategy, FSDPStrategy) or any(hasattr(g, "to_local") for g in grads)
        if sharded:
            grads = [grad.to_local() if hasattr(grad, "to_local") else grad for grad in grads]
        local = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())
        if hasattr(pl_module, "unclipped_grad_norm"):  # xlt.modeling.module.TransferModule
            # torch's own total norm over the optimizer's gradients, in its order: exactly the norm
            # that norm clipping computes next, so the module's clipping reuses it (one pass over the
            # gradients per step, not two). Not a shard's norm: that is not the whole gradient's.
            setattr(pl_module, "unclipped_grad_norm", None if sharded else local)  # noqa: B010
        bad = (~torch.isfinite(local)).float().to(pl_module.device)
        if trainer.world_size > 1:
            bad = trainer.strategy.reduce(bad, reduce_op="sum")
        if bad.item():
            batch_idx = trainer.fit_loop.epoch_loop.batch_idx
            self._stop(trainer, "the gradient norm", float(local), batch_idx)
        # The whole gradient's norm before clipping (never a shard's). An xlt TransferModule logs it
        # where its clipping takes it (under FSDP too: the norm over every rank's shards).
        if logged and not sharded and not hasattr(pl_module, "unclipped_grad_norm"):
            pl_module.log("train/grad_norm", local.detach(), on_step=True, on_epoch=False)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
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
        restore_loader_states(trainer)


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

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._pending is not None:
            set_rng_states(self._pending)
            self._pending = None
        self._mid_epoch = True  # a save from now until the epoch's last batch ends follows its draw

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
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
            state_dict = {
                **(ranks[rank] if rank < len(ranks) else ranks[0]),
                "mid_epoch": state_dict["mid_epoch"],
            }
        if state_dict.get("mid_epoch"):
            self._pending = dict(state_dict)
        else:
            set_rng_states(state_dict)


def keep_previous(last: Path) -> None:
    """Before ``last`` is overwritten, keep it as ``prev.ckpt`` beside it (an atomic rename): if the
    new file ends up unreadable, a relaunch resumes from the previous one. A sharded checkpoint
    (a directory, xlt/training/sharded_ckpt.py) is renamed too, after the older prev.ckpt is deleted."""
    if last.exists():
        rotate(last, last.with_name(PREVIOUS_CKPT))


class BestCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint for the selected weights (``best.ckpt``). A sharded checkpoint (a
    directory, xlt/training/sharded_ckpt.py) is written beside it as ``best.ckpt.partial`` and renamed into
    place once every rank has written (``Trainer.save_checkpoint`` ends in a barrier): a kill
    mid-save leaves the previous best whole instead of shards of two saves in one directory. Every
    rank then waits until rank 0 has renamed it: the other ranks read ``best.ckpt`` as soon as the
    fit ends (the evaluation copies, the next stage's encoder), and until rank 0 has renamed the new
    one into place (the older ``best.ckpt/`` renamed aside first) there is no ``best.ckpt`` (a rank
    failed there with "No such file or directory" and left rank 0 in the evaluation's first
    broadcast). A file is written as Lightning writes it (an atomic save)."""

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        if state_dict_type(trainer.strategy) != "sharded":
            super()._save_checkpoint(trainer, filepath)
            return
        staging = filepath + ".partial"
        super()._save_checkpoint(trainer, staging)
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            put_in_place(Path(staging), Path(filepath))
        trainer.strategy.barrier("best.ckpt in place")


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

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        last_batch = batch_idx + 1 >= trainer.num_training_batches
        if step and step % self.every == 0 and step != self._saved_at and not last_batch:
            if trainer.is_global_zero:
                keep_previous(self.path)
            trainer.save_checkpoint(self.path)
            self._saved_at = step


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

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        last_epoch = trainer.max_epochs is not None and 0 <= trainer.max_epochs <= trainer.current_epoch + 1
        epoch_end = batch_idx + 1 >= trainer.num_training_batches
        at_max_steps = trainer.max_steps is not None and 0 < trainer.max_steps <= trainer.global_step
        if (last_epoch and epoch_end) or at_max_steps:
            trainer.should_stop = True


def selection_callbacks(
    selection: SelectionPlan, monitor: str, accumulate: int, trainer_kwargs: dict[str, Any]
) -> list[pl.Callback]:
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
    if selection.val_check_every and not trainer_kwargs.get("fast_dev_run"):
        trainer_kwargs["val_check_interval"] = int(selection.val_check_every) * accumulate
        trainer_kwargs["check_val_every_n_epoch"] = None
        callbacks.append(ValidateAfterLastStep())
    if selection.patience:
        from pytorch_lightning.callbacks import EarlyStopping

        callbacks.append(
            EarlyStopping(
                monitor=monitor, mode="max", patience=int(selection.patience), check_on_train_epoch_end=False
            )
        )
    return callbacks
