"""Sentence-level classification scores: accuracy (XNLI, PAWS-X, QQP, MNLI, ...) and binary F1 (QQP).

Percentages (0-100), like XTREME's evaluate.py ``accuracy``. During training,
``torchmetrics.classification.MulticlassAccuracy(num_classes=C, average="micro")`` gives the same
accuracy (as a fraction) and syncs across DDP ranks by itself; note that DistributedSampler pads the
last batch with repeated examples, so for exact test numbers score the written prediction files
(``python -m xlt.score``) or use these functions on de-duplicated predictions.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence


def _check(labels: Sequence[Hashable], predictions: Sequence[Hashable]) -> None:
    if len(labels) != len(predictions):
        raise ValueError(f"{len(labels)} labels but {len(predictions)} predictions")
    if not predictions:
        raise ValueError("nothing to score")


def accuracy(labels: Sequence[Hashable], predictions: Sequence[Hashable]) -> float:
    """Percentage of predictions equal to their label (evaluate.py ``accuracy``, same arithmetic)."""
    _check(labels, predictions)
    correct = sum(int(p == label) for p, label in zip(predictions, labels, strict=True))
    return float(correct) / len(predictions) * 100


def binary_f1(labels: Sequence[Hashable], predictions: Sequence[Hashable], positive: Hashable = 1) -> float:
    """F1 of the ``positive`` class in percent, ``2tp / (2tp + fp + fn)``; 0 when undefined.

    Equals scikit-learn's ``f1_score(average="binary")`` (GLUE QQP's F1) up to float rounding.
    """
    _check(labels, predictions)
    tp = sum(1 for y, p in zip(labels, predictions, strict=True) if p == positive and y == positive)
    fp = sum(1 for y, p in zip(labels, predictions, strict=True) if p == positive and y != positive)
    fn = sum(1 for y, p in zip(labels, predictions, strict=True) if p != positive and y == positive)
    denominator = 2 * tp + fp + fn
    return 100.0 * 2 * tp / denominator if denominator else 0.0
