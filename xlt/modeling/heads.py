"""Task heads, picked by a task's ``head`` kind. A new task of an existing kind needs no code here.

Each head maps the encoder's last hidden states to logits, computes its loss, turns logits into
predictions, and builds the torchmetrics objects for the metric names its tasks report. Metrics are
torchmetrics (correct under DDP) and report percentages, as XTREME does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import torch
import torchmetrics
from torch import nn

from xlt.modeling.pooling import pool
from xlt.tasks.spec import TaskSpec

if TYPE_CHECKING:
    from xlt.data.datamodule import EvalSet

Batch = dict[str, torch.Tensor]


class Head(nn.Module):
    """Base class: ``forward(hidden, batch) -> logits``, ``loss``, ``predict`` and ``build_metrics``."""

    kind: str = ""

    def __init__(self, hidden_size: int, spec: TaskSpec, pooling: str = "cls", dropout: float = 0.1) -> None:
        super().__init__()
        self.spec = spec
        self.pooling = pooling

    def forward(self, hidden: torch.Tensor, batch: Batch) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        raise NotImplementedError

    def predict(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        raise NotImplementedError

    @classmethod
    def build_metrics(cls, spec: TaskSpec, eval_set: EvalSet) -> dict[str, torchmetrics.Metric]:
        """Metrics for one evaluation set; ``eval_set`` carries its language and raw examples."""
        raise NotImplementedError

    def update_metrics(self, metrics: nn.ModuleDict, logits: torch.Tensor, batch: Batch) -> None:
        preds = self.predict(logits, batch)
        for metric in metrics.values():
            cast(torchmetrics.Metric, metric).update(preds, batch["labels"])


HEADS: dict[str, type[Head]] = {}


def register_head(kind: str) -> Callable[[type[Head]], type[Head]]:
    def wrap(cls: type[Head]) -> type[Head]:
        if kind in HEADS:
            raise ValueError(f"head {kind!r} is registered twice")
        cls.kind = kind
        HEADS[kind] = cls
        return cls

    return wrap


def _load_builtin_heads() -> None:
    # Head modules register themselves on import.
    from xlt.modeling import heads_mc, heads_qa, heads_tagging  # noqa: F401


def build_head(spec: TaskSpec, hidden_size: int, pooling: str, **kwargs: Any) -> Head:
    _load_builtin_heads()
    try:
        cls = HEADS[spec.head]
    except KeyError:
        raise ValueError(
            f"task {spec.name}: no head {spec.head!r} (registered: {', '.join(sorted(HEADS))})"
        ) from None
    return cls(hidden_size, spec, pooling=pooling, **kwargs)


def _select(
    spec: TaskSpec, available: dict[str, Callable[[], torchmetrics.Metric]]
) -> dict[str, torchmetrics.Metric]:
    unknown = [m for m in spec.metrics if m not in available]
    if unknown:
        raise ValueError(
            f"task {spec.name}: metrics {unknown} not provided by its head (available: {sorted(available)})"
        )
    return {name: available[name]() for name in spec.metrics}


@register_head("classification")
class ClassificationHead(Head):
    """Sentence or sentence-pair classification on the pooled sequence (RoBERTa's head: dense, tanh, out)."""

    def __init__(self, hidden_size: int, spec: TaskSpec, pooling: str = "cls", dropout: float = 0.1) -> None:
        super().__init__(hidden_size, spec, pooling, dropout)
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.out_proj = nn.Linear(hidden_size, self.out_features(spec))

    @staticmethod
    def out_features(spec: TaskSpec) -> int:
        return spec.num_labels

    def score(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pool, then dropout, dense, tanh, dropout, out: (sequences, out_features)."""
        x = pool(hidden, attention_mask, self.pooling)
        x = torch.tanh(self.dense(self.dropout(x)))
        return self.out_proj(self.dropout(x))

    def forward(self, hidden: torch.Tensor, batch: Batch) -> torch.Tensor:
        return self.score(hidden, batch["attention_mask"])

    def loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        return nn.functional.cross_entropy(logits.float(), batch["labels"])

    def predict(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        return logits.argmax(dim=-1)

    @classmethod
    def build_metrics(cls, spec: TaskSpec, eval_set: EvalSet) -> dict[str, torchmetrics.Metric]:
        return _select(
            spec,
            {
                "acc": lambda: (
                    torchmetrics.classification.MulticlassAccuracy(spec.num_labels, average="micro") * 100
                ),
                "f1": lambda: torchmetrics.classification.BinaryF1Score() * 100,
            },
        )
