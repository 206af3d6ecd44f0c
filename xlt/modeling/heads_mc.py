"""The multiple-choice head: one score per (context, choice) pair, softmax over the choices."""

from __future__ import annotations

import torch

from xlt.modeling.heads import Batch, ClassificationHead, register_head
from xlt.tasks.spec import TaskSpec


@register_head("multiple_choice")
class MultipleChoiceHead(ClassificationHead):
    """Scores each choice's pooled sequence with one output unit; logits are (batch, choices).

    The scorer is jiant's ``RegressionHead`` (dropout, dense, tanh, dropout, a single linear unit) as
    its ``MultipleChoiceModel`` uses it: the classification head's layers with one output. The encoder
    sees the choices flattened to (batch * choices, seq) (:meth:`TransferModule.forward`); the choice
    count comes back from ``batch["input_ids"]``. Loss, prediction and metrics (accuracy over the
    choices) are the classification head's.
    """

    @staticmethod
    def out_features(spec: TaskSpec) -> int:
        return 1

    def forward(self, hidden: torch.Tensor, batch: Batch) -> torch.Tensor:
        n_choices = batch["input_ids"].size(1)
        return self.score(hidden, batch["attention_mask"].flatten(0, 1)).view(-1, n_choices)
