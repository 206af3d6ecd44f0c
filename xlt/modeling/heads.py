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
from torchmetrics.utilities import dim_zero_cat

from xlt.metrics.classification import Accuracy, binary_f1_metric
from xlt.modeling.pooling import pool
from xlt.tasks.spec import TaskSpec
from xlt.utils.registry import Registry

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

    def prediction_rows(self, logits: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """What :class:`PredictionCollector` keeps of a batch: (example index per row, rows (n, width)).
        Default: one row per feature holding its predicted class."""
        return batch["example_idx"], self.predict(logits, batch).reshape(-1, 1)

    def decode_predictions(
        self, example_idx: list[int], rows: list[list[float]], eval_set: EvalSet
    ) -> dict[int, Any]:
        """Example index -> its prediction as the submission file writes it (default: the label name).
        Examples without a prediction are absent; a repeated row (DDP padding) counts once."""
        out: dict[int, Any] = {}
        for idx, row in zip(example_idx, rows, strict=True):
            out.setdefault(idx, self.spec.label_names[int(row[0])])
        return out


class ExampleCounter(torchmetrics.Metric):
    """How many distinct examples an evaluation set's batches covered (gathered across ranks): the
    ``n_examples`` a debug or partial run's row reports, not the set's size."""

    is_differentiable = False
    full_state_update = False
    example_idx: list[torch.Tensor]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("example_idx", default=[], dist_reduce_fx="cat")

    def update(self, example_idx: torch.Tensor) -> None:
        self.example_idx.append(example_idx.detach().reshape(-1))

    def compute(self) -> int:  # type: ignore[override]
        return int(dim_zero_cat(self.example_idx).unique().numel()) if len(self.example_idx) else 0


class PredictionCollector(torchmetrics.Metric):
    """Keeps every evaluated row's (example index, prediction row) and gathers them across DDP ranks
    ("cat" states), so rank zero can write the whole test set's predictions in dataset order.
    States are flat float64 vectors (an empty rank then syncs like the others); ``compute`` returns
    (example indices, rows) as Python lists."""

    is_differentiable = False
    full_state_update = False

    example_idx: list[torch.Tensor]
    values: list[torch.Tensor]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("example_idx", default=[], dist_reduce_fx="cat")
        self.add_state("values", default=[], dist_reduce_fx="cat")
        self.set_dtype(torch.float64)

    def update(self, example_idx: torch.Tensor, rows: torch.Tensor) -> None:
        self.example_idx.append(example_idx.detach().reshape(-1).to(torch.float64))
        self.values.append(rows.detach().reshape(-1).to(torch.float64))

    def compute(self) -> tuple[list[int], list[list[float]]]:  # type: ignore[override]
        idx = dim_zero_cat(self.example_idx).tolist() if len(self.example_idx) else []
        values = dim_zero_cat(self.values) if len(self.values) else torch.zeros(0, dtype=torch.float64)
        if not idx:
            return [], []
        return [int(i) for i in idx], values.reshape(len(idx), -1).tolist()


# Head kind -> class; heads_*.py register theirs when xlt/modeling/__init__.py imports them.
HEADS: Registry[type[Head]] = Registry("head")


def register_head(kind: str) -> Callable[[type[Head]], type[Head]]:
    def wrap(cls: type[Head]) -> type[Head]:
        cls.kind = kind
        return HEADS.add(kind, cls)

    return wrap


def build_head(spec: TaskSpec, hidden_size: int, pooling: str, **kwargs: Any) -> Head:
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
            {"acc": Accuracy, "f1": binary_f1_metric},
        )
