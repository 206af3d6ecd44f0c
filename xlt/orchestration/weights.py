"""How a stage's weights move: into the module after the fit or from an earlier launch, into the
module the test sets are scored with, and on to the next stage's encoder.

Two implementations of one interface, :class:`WeightHandler`, chosen once by the strategy:

- :class:`FullWeights` (a single device, DDP): the module is trained in place and its encoder *is*
  the run's encoder, so the selected checkpoint is loaded into it and the next stage gets it as is.
- :class:`ShardedWeights` (FSDP): FSDP wraps the module in place and flattens its parameters, so a
  wrapped module is never reused; a meta-device skeleton is kept before the fit and every hand-over
  materializes an unwrapped copy from a full state dict read from the checkpoint (a file, or a
  sharded checkpoint's directory, xlt/training/sharded_ckpt.py). A lean rank (not rank 0, encoder built on
  the meta device) reads nothing: FSDP gives it rank 0's weights when it wraps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import torch

from xlt.modeling.module import TransferModule
from xlt.orchestration.rundir import CheckpointError
from xlt.training.sharded_ckpt import NoStateDict, read_weights
from xlt.training.strategies import materialize, meta_skeleton

ENCODER_PREFIX = "encoder."


class WeightHandler:
    """The interface; :func:`weight_handler` picks the implementation."""

    def prepare(self, module: TransferModule) -> None:
        """Called with each stage's fresh module, before anything wraps it."""

    def selected(self, module: TransferModule, path: Path, *, holds_them: bool = False) -> TransferModule:
        """The module holding the weights at ``path`` (``holds_them``: the module was just trained
        to exactly those weights, e.g. the final weights saved where nothing was selected)."""
        raise NotImplementedError

    def for_test(self, module: TransferModule, path: Path, validated: bool) -> TransferModule | None:
        """A module to test after ``module`` was validated, or None to test ``module`` itself."""
        return None

    def next_encoder(self, module: TransferModule, path: Path) -> Any | None:
        """The encoder the next stage and the probes get, or None to keep the run's (trained in place)."""
        return None

    def end_stage(self) -> None:
        """Drop what the handler kept for the stage (nothing of a finished stage outlives it)."""

    def encoder_state(self, path: Path) -> dict[str, torch.Tensor] | None:
        """The encoder's part of a checkpoint (None on a lean rank, which gets rank 0's from FSDP)."""
        state = read_weights(path)
        return {k[len(ENCODER_PREFIX) :]: v for k, v in state.items() if k.startswith(ENCODER_PREFIX)}


class FullWeights(WeightHandler):
    def selected(self, module: TransferModule, path: Path, *, holds_them: bool = False) -> TransferModule:
        if not holds_them:
            load_weights(module, path)
        return module


class ShardedWeights(WeightHandler):
    def __init__(self, lean: bool) -> None:
        self.lean = lean  # an FSDP rank other than 0: reads no checkpoint
        self.skeleton: TransferModule | None = None

    def prepare(self, module: TransferModule) -> None:
        self.skeleton = cast(TransferModule, meta_skeleton(module))

    def end_stage(self) -> None:
        self.skeleton = None

    def _state(self, path: Path) -> dict[str, torch.Tensor] | None:
        return None if self.lean else read_weights(path)

    def _copy(self, path: Path) -> TransferModule:
        assert self.skeleton is not None, "prepare() first"
        return cast(TransferModule, materialize(self.skeleton, self._state(path)))

    def selected(self, module: TransferModule, path: Path, *, holds_them: bool = False) -> TransferModule:
        return self._copy(path)  # the trained module is wrapped: an unwrapped copy from the file

    def for_test(self, module: TransferModule, path: Path, validated: bool) -> TransferModule | None:
        if not validated:
            return None
        # Validation wrapped the module, and FSDP cannot wrap a wrapped module again: test an unwrapped
        # copy of the same weights (with a fresh Trainer), keeping the dev scores.
        fresh = self._copy(path)
        fresh.scores.update(module.scores)
        return fresh

    def next_encoder(self, module: TransferModule, path: Path) -> Any | None:
        assert self.skeleton is not None, "prepare() first"
        state = None if self.lean else super().encoder_state(path)
        return materialize(self.skeleton.encoder, state)

    def encoder_state(self, path: Path) -> dict[str, torch.Tensor] | None:
        return None if self.lean else super().encoder_state(path)


def weight_handler(sharded: bool, lean: bool) -> WeightHandler:
    """The handler of a run: sharded (FSDP, xlt.training.strategies.is_sharded) or full."""
    return ShardedWeights(lean) if sharded else FullWeights()


def load_weights(module: torch.nn.Module, path: Path) -> None:
    """A finished stage's weights into ``module``: data only (``weights_only`` refuses pickled
    code); a missing, unreadable or foreign checkpoint is a :class:`CheckpointError` naming it."""
    try:
        if not path.exists():
            raise FileNotFoundError(path)
        state: dict[str, Any] = {"state_dict": read_weights(path)}  # a file, or a sharded checkpoint
    except FileNotFoundError:
        raise CheckpointError(
            f"{path}: the finished stage's checkpoint is missing; delete state.json's stage entry or "
            "rerun with resume=false"
        ) from None
    except NoStateDict:
        state = {}
    except Exception as err:
        raise CheckpointError(
            f"{path}: not a loadable checkpoint ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
            "delete it and rerun with resume=false"
        ) from None
    if not isinstance(state, dict) or not isinstance(state.get("state_dict"), dict):
        raise CheckpointError(
            f"{path}: holds no state_dict (not a checkpoint of this run); delete it and rerun with resume=false"
        )
    try:
        module.load_state_dict(state["state_dict"])
    except RuntimeError as err:  # other shapes or names: another model's or task's checkpoint
        detail = " ".join(line.strip() for line in str(err).splitlines()[1:3])[:300]
        raise CheckpointError(
            f"{path}: does not fit this run's model ({detail}); it was written by another configuration: "
            "delete it and rerun with resume=false"
        ) from None
