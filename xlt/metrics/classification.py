"""Sentence-level classification scores: accuracy (XNLI, PAWS-X, QQP, MNLI, ...) and binary F1 (QQP).

Percentages (0-100), like XTREME's evaluate.py ``accuracy``. :func:`accuracy` scores written
prediction files (``python -m xlt.score``); :class:`Accuracy` is the torchmetrics class the heads
evaluate with (DDP-synced integer counts), and both divide with :func:`percent`, so a run's logged
accuracy and the score of its prediction file agree to the last digit. :func:`binary_f1_metric` is
QQP's F1 of the duplicate class (jiant's scheme).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import torch
import torchmetrics


def percent(correct: int, total: int) -> float:
    """``correct / total * 100`` (evaluate.py ``accuracy``'s arithmetic)."""
    return correct / total * 100


def accuracy(labels: Sequence[Hashable], predictions: Sequence[Hashable]) -> float:
    """Percentage of predictions equal to their label (evaluate.py ``accuracy``, same arithmetic)."""
    if len(labels) != len(predictions):
        raise ValueError(f"{len(labels)} labels but {len(predictions)} predictions")
    if not predictions:
        raise ValueError("nothing to score")
    return percent(
        sum(int(p == label) for p, label in zip(predictions, labels, strict=True)), len(predictions)
    )


class Accuracy(torchmetrics.Metric):
    """Percentage of correct predictions, counted in integers and divided in float64 by :func:`percent`:
    the value ``python -m xlt.score`` (:func:`accuracy`) computes from the written predictions, to the
    last digit (torchmetrics' MulticlassAccuracy works in float32: 1/3 reads 33.333336)."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    correct: torch.Tensor
    total: torch.Tensor

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("correct", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        self.correct += (preds == target).sum()
        self.total += target.numel()

    def compute(self) -> torch.Tensor:
        total = int(self.total)
        return torch.tensor(percent(int(self.correct), total) if total else float("nan"), dtype=torch.float64)


def binary_f1_metric() -> torchmetrics.Metric:
    """F1 of the positive class (label 1) in percent, GLUE QQP's F1: torchmetrics' ``BinaryF1Score``
    (float32, DDP-synced counts) times 100."""
    return torchmetrics.classification.BinaryF1Score() * 100
