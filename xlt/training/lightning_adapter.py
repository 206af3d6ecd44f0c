"""Every use of Lightning's private internals, in one place, checked against one Lightning version.

xlt needs a few things Lightning has no public API for: the logger step a fit ended at (and giving
an evaluator that step), dropping what a finished Trainer holds, its signal connector and per-batch
SIGTERM broadcast (xlt/training/preemption.py), the training loader's checkpointed state on resume, the
checkpoint format and process-group timeout of a DDP/FSDP strategy, WandbLogger's init kwargs, and the
launchers' per-rank command under Hydra (xlt/training/launch.py).
Each is a function here; nothing else in xlt/ reads or writes a ``trainer._*``/``strategy._*``
attribute. The overrides of Lightning's private methods (``FSDPStrategy._setup_model`` in
xlt/training/strategies.py, ``ModelCheckpoint._save_checkpoint`` in xlt/training/callbacks.py) are subclassing, not
attribute access; they were checked against the same version.

Importing this module warns once when the installed Lightning is not :data:`CHECKED_VERSION`.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.trainer.connectors.signal_connector import _SignalConnector

LightningSignalConnector = _SignalConnector  # the base class of xlt/training/preemption.py's connector

CHECKED_VERSION = "2.6.6"  # the pytorch-lightning release these internals were read in


def version_mismatch(installed: str = pl.__version__) -> str | None:
    """The warning for an installed Lightning other than :data:`CHECKED_VERSION`, or None."""
    if installed == CHECKED_VERSION:
        return None
    return (
        f"pytorch-lightning {installed} is installed; xlt/training/lightning_adapter.py was checked "
        f"against {CHECKED_VERSION} (its private attributes may have moved: run tests/test_lightning_adapter.py)"
    )


if (_mismatch := version_mismatch()) is not None:
    warnings.warn(_mismatch, stacklevel=2)


def logged_steps(trainer: pl.Trainer) -> int:
    """The logger step axis of ``trainer``: the batches that stepped the optimizer so far."""
    return int(trainer.fit_loop.epoch_loop._batches_that_stepped)


def set_logged_steps(trainer: pl.Trainer, step: int) -> None:
    """Make ``trainer`` (an evaluator) log at ``step``, not at a fresh Trainer's 0."""
    trainer.fit_loop.epoch_loop._batches_that_stepped = step


def release_strategy(trainer: pl.Trainer) -> None:
    """Cut a finished Trainer's strategy from the module, optimizers and schedulers it holds."""
    strategy = trainer.strategy
    module = strategy._lightning_module
    if module is not None:
        module._trainer = None
    strategy._lightning_module = None
    strategy._model = None
    strategy._optimizers = []
    strategy._lightning_optimizers = []
    strategy.lr_scheduler_configs = []


def signal_connector(trainer: Any) -> Any:
    return trainer._signal_connector


def set_signal_connector(trainer: Any, connector: Any) -> None:
    trainer._signal_connector = connector


def set_sigterm_check(trainer: Any, check: Any) -> None:
    """Replace the fit loop's per-batch SIGTERM broadcast with ``check`` (xlt/training/preemption.py)."""
    trainer.fit_loop.epoch_loop._broadcast_sigterm_tensor = check


def restore_loader_states(trainer: pl.Trainer) -> None:
    """Hand the training loader its checkpointed state when a resumed fit has one waiting."""
    fit_loop = trainer.fit_loop
    if fit_loop.restarting and fit_loop._combined_loader_states_to_load:
        fit_loop._load_combined_loader_states()


def state_dict_type(strategy: Any) -> str:
    """``full`` or ``sharded``: how an FSDP strategy writes checkpoints (``full`` for any other)."""
    return str(getattr(strategy, "_state_dict_type", "full"))


def set_process_group_timeout(strategy: Any, timeout: Any) -> None:
    """The default process group's timeout of a DDP/FSDP strategy object (no-op for others)."""
    if hasattr(strategy, "_timeout"):
        strategy._timeout = timeout


def wandb_init_kwargs(logger: Any) -> dict[str, Any]:
    """The keyword arguments WandbLogger will pass to ``wandb.init`` (editable in place)."""
    return logger._wandb_init


def replace_hydra_subprocess_cmd(command: Any) -> Any:
    """Route both Lightning launchers (fabric's and the Trainer's ``_hydra_subprocess_cmd``, the
    command of each rank of a Hydra job) through ``command``; return the one fabric had before."""
    import lightning_fabric.strategies.launchers.subprocess_script as fabric
    import pytorch_lightning.strategies.launchers.subprocess_script as trainer_launcher

    before = fabric._hydra_subprocess_cmd
    fabric._hydra_subprocess_cmd = command
    trainer_launcher._hydra_subprocess_cmd = command  # type: ignore[attr-defined]
    return before
