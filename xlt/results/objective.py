"""The value ``python -m xlt.train`` returns to a Hydra sweeper (Optuna, Nevergrad): what the run
selected its checkpoint on, never a test score."""

from __future__ import annotations

from collections.abc import Mapping

from xlt.tasks.registry import get_task


def sweep_objective(summary: Mapping[str, float], target: str) -> float | None:
    """The target's English dev selection metric (its spec's first metric: accuracy for XNLI, seqeval
    F1 for UD-POS, (EM + F1) / 2 for XQuAD), from a run's summary (``{split}/{task}/{language}/{metric}``
    of the target stage). None when the target has no selection set (TyDiQA keeps its final
    checkpoint; Tatoeba trains nothing): tuning anything else would tune on the test set."""
    return summary.get(f"dev/{target}/en/{get_task(target).metrics[0]}")
