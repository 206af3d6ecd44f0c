"""The multiple-choice head: one score per (context, choice) pair, softmax over the choices."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torchmetrics
from torch import nn

from xlt.modeling.heads import Accuracy, Batch, Head, _select, register_head
from xlt.modeling.pooling import pool
from xlt.tasks.spec import TaskSpec

if TYPE_CHECKING:
    from xlt.data.datamodule import EvalSet


@register_head("multiple_choice")
class MultipleChoiceHead(Head):
    """Scores each choice's pooled sequence with one output unit; logits are (batch, choices).

    The scorer is jiant's ``RegressionHead`` (dropout, dense, tanh, dropout, a single linear unit) as
    its ``MultipleChoiceModel`` uses it. The encoder sees the choices flattened to (batch * choices,
    seq) (:meth:`TransferModule.forward`); the choice count comes back from ``batch["input_ids"]``.
    """

    def __init__(self, hidden_size: int, spec: TaskSpec, pooling: str = "cls", dropout: float = 0.1) -> None:
        super().__init__(hidden_size, spec, pooling, dropout)
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.out_proj = nn.Linear(hidden_size, 1)

    def forward(self, hidden: torch.Tensor, batch: Batch) -> torch.Tensor:
        n_choices = batch["input_ids"].size(1)
        x = pool(hidden, batch["attention_mask"].flatten(0, 1), self.pooling)
        x = torch.tanh(self.dense(self.dropout(x)))
        return self.out_proj(self.dropout(x)).view(-1, n_choices)

    def loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        return nn.functional.cross_entropy(logits.float(), batch["labels"])

    def predict(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        return logits.argmax(dim=-1)

    @classmethod
    def build_metrics(cls, spec: TaskSpec, eval_set: EvalSet) -> dict[str, torchmetrics.Metric]:
        return _select(
            spec,
            {"acc": Accuracy},
        )
