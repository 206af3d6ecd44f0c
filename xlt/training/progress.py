"""Progress that reads well off a terminal (a log file, SLURM output, a pipe): lines, not a redrawn bar.

A training stage starts with one line giving its optimizer steps, and once the first steps are
timed, one saying how long the stage will take at the measured rate. Then a line per ``every_pct``
percent of the steps or per ``every_s`` seconds, whichever comes first, with the step, the rate, the
time spent and left, and the training losses:

    target: 616 optimizer steps (2 epochs)
    target: 31.2 s/step over the first 3 steps: about 5 h 19 min for the 613 left
    target: step 62/616 (10%), 30.8 s/step, 32 min elapsed, about 4 h 44 min left; loss 1.09

The time left counts training steps only: the evaluations (validation each epoch, the test sets at
the stage's end) come on top. Evaluation loops get a line per ``every_s`` seconds only (batches done
of the loop). On a terminal
xlt keeps tqdm's bar (:class:`xlt.training.callbacks.LossProgressBar`); ``trainer.py`` picks one.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ProgressBar


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 5 s``, ``5 h 19 min``."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60)} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"


def rate(seconds_per_step: float) -> str:
    """``31.2 s/step``, ``118 s/step`` (never ``1.2e+02``), ``4.17 steps/s``."""
    if seconds_per_step >= 1:
        return (
            f"{seconds_per_step:.1f} s/step" if seconds_per_step < 100 else f"{seconds_per_step:.0f} s/step"
        )
    per_s = 1 / seconds_per_step
    return f"{per_s:.3g} steps/s" if per_s < 100 else f"{per_s:.0f} steps/s"


class LineProgress(ProgressBar):
    """Lightning's progress bar slot, filled with plain lines (see the module docstring)."""

    def __init__(
        self,
        stage: str = "",
        every_pct: float = 10,
        every_s: float = 60,
        first_after: int = 3,
        stream: Any = None,
    ) -> None:
        super().__init__()
        self.stage, self.every_pct, self.every_s, self.first_after = (
            stage or "train",
            every_pct,
            every_s,
            first_after,
        )
        self.stream = stream
        self._enabled = True
        self._eval_last = 0.0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def _print(self, line: str) -> None:
        if self._enabled and getattr(self, "_trainer", None) is not None and self.trainer.is_global_zero:
            print(f"{self.stage}: {line}", file=self.stream or sys.stderr, flush=True)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.total = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None
        estimated = trainer.estimated_stepping_batches
        if self.total is None and math.isfinite(estimated):
            self.total = int(estimated)
        self.start_step = trainer.global_step
        self.t0 = self.last_t = time.monotonic()
        self.last_bucket = -1
        self.last_step = self.start_step
        epochs = (
            f" ({trainer.max_epochs} epoch{'s' if trainer.max_epochs != 1 else ''})"
            if trainer.max_epochs
            else ""
        )
        resumed = f", resuming at step {self.start_step}" if self.start_step else ""
        self._print(f"{self.total if self.total else 'unknown number of'} optimizer steps{epochs}{resumed}")

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        done = step - self.start_step
        # With gradient accumulation several batches end at the same optimizer step: one line per step.
        if done <= 0 or step == self.last_step:
            return
        self.last_step = step
        now = time.monotonic()
        per_step = (now - self.t0) / done
        left = (self.total - step) * per_step if self.total else None
        if done == self.first_after and left is not None and self.total is not None:
            self._print(
                f"{rate(per_step)} over the first {done} steps: about {duration(left)} "
                f"for the {self.total - step} left (training only; evaluation comes on top)"
            )
        bucket = int(100 * step / self.total // self.every_pct) if self.total else -1
        if bucket > self.last_bucket or now - self.last_t >= self.every_s:
            self.last_bucket, self.last_t = max(bucket, self.last_bucket), now
            where = (
                f"step {step}/{self.total} ({100 * step / self.total:.0f}%)" if self.total else f"step {step}"
            )
            ahead = f", about {duration(left)} left" if left is not None else ""
            losses = {
                k: v
                for k, v in trainer.callback_metrics.items()
                if k.startswith("train/") and k.endswith("/loss")
            }
            loss = (
                "; "
                + ", ".join(
                    f"{'loss' if len(losses) == 1 else k.split('/')[1] + ' loss'} {float(v):.3g}"
                    for k, v in losses.items()
                )
                if losses
                else ""
            )
            self._print(f"{where}, {rate(per_step)}, {duration(now - self.t0)} elapsed{ahead}{loss}")

    def _eval_line(self, trainer: pl.Trainer, kind: str, batch_idx: int, dataloader_idx: int) -> None:
        now = time.monotonic()
        if now - self._eval_last < self.every_s:
            return
        self._eval_last = now
        totals = trainer.num_val_batches if kind == "validating" else trainer.num_test_batches
        total = totals[dataloader_idx] if dataloader_idx < len(totals) else None
        loaders = f" of {len(totals)}" if len(totals) > 1 else ""
        self._print(f"{kind}, set {dataloader_idx + 1}{loaders}, batch {batch_idx + 1}/{total}")

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._eval_last = time.monotonic()

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._eval_last = time.monotonic()

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not trainer.sanity_checking:
            self._eval_line(trainer, "validating", batch_idx, dataloader_idx)

    def on_test_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._eval_line(trainer, "testing", batch_idx, dataloader_idx)
