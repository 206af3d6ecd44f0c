"""The token-tagging head. Its word-level metric, :class:`xlt.metrics.tagging.WordTagScore`, puts
sentences back together from their windows."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torchmetrics
from torch import nn

from xlt.metrics.tagging import IGNORE, WordTagScore
from xlt.modeling.heads import Batch, Head, _select, register_head
from xlt.tasks.spec import TaskSpec

if TYPE_CHECKING:
    from xlt.data.datamodule import EvalSet


@register_head("tagging")
class TaggingHead(Head):
    """A linear layer over every token (jiant's ``TokenClassificationHead``); one sub-word of
    each word carries a label, the family's ``label_piece`` (first: encoders; last: decoders); the rest
    are -100 and ignored by the loss."""

    def __init__(self, hidden_size: int, spec: TaskSpec, pooling: str = "cls", dropout: float = 0.1) -> None:
        super().__init__(hidden_size, spec, pooling, dropout)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, spec.num_labels)

    def forward(self, hidden: torch.Tensor, batch: Batch) -> torch.Tensor:
        return self.classifier(self.dropout(hidden))

    def loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        return nn.functional.cross_entropy(
            logits.float().flatten(0, 1), batch["labels"].flatten(), ignore_index=IGNORE
        )

    def predict(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        return logits.argmax(dim=-1)

    @classmethod
    def build_metrics(cls, spec: TaskSpec, eval_set: EvalSet) -> dict[str, torchmetrics.Metric]:
        gold = [ex["labels"] for ex in eval_set.examples]

        def make(score: str) -> Any:
            return lambda: WordTagScore(score, gold, spec.label_names)

        return _select(spec, {name: make(name) for name in ("f1", "precision", "recall", "acc")})

    def update_metrics(self, metrics: nn.ModuleDict, logits: torch.Tensor, batch: Batch) -> None:
        preds = self.predict(logits, batch)
        for metric in metrics.values():
            metric.update(preds, batch["example_idx"], batch["word_index"])

    def prediction_rows(self, logits: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """One row per scored word: (word position, predicted label)."""
        preds, word_index = self.predict(logits, batch), batch["word_index"]
        scored = word_index != IGNORE
        example = batch["example_idx"].unsqueeze(1).expand_as(word_index)[scored]
        return example, torch.stack([word_index[scored], preds[scored]], dim=1)

    def decode_predictions(
        self, example_idx: list[int], rows: list[list[float]], eval_set: EvalSet
    ) -> dict[int, Any]:
        """Example index -> the predicted tag of every word; a sentence with an unpredicted word
        (a window that was not evaluated) is left out."""
        predicted: dict[tuple[int, int], int] = {}
        for idx, (word, label) in zip(example_idx, rows, strict=True):
            predicted.setdefault((idx, int(word)), int(label))
        names = self.spec.label_names
        out: dict[int, Any] = {}
        for idx in sorted({i for i, _ in predicted}):
            n_words = len(eval_set.examples[idx]["labels"])
            tags = [predicted.get((idx, w)) for w in range(n_words)]
            if all(t is not None for t in tags):
                out[idx] = [names[t] for t in tags if t is not None]
        return out
