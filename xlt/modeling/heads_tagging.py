"""The token-tagging head and its word-level metric (windows reassembled into whole sentences)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torchmetrics
from torch import nn
from torchmetrics.utilities import dim_zero_cat

from xlt.metrics.tagging import seqeval_scores, token_accuracy
from xlt.modeling.heads import Batch, Head, _select, register_head
from xlt.tasks.spec import TaskSpec

if TYPE_CHECKING:
    from xlt.data.datamodule import EvalSet

IGNORE = -100
# The label a word gets when no window of its sentence was scored (limit_*_batches): always wrong.
MISSING = "<unscored>"


class WordTagScore(torchmetrics.Metric):
    """One score of word-level tagging over whole sentences.

    ``update`` keeps (example, word, predicted label) for each scored word; ``compute`` gathers them
    (across DDP ranks too), puts every sentence back together from its windows and scores it against
    the gold tags of the evaluation set's raw examples: ``f1``/``precision``/``recall`` are seqeval
    0.0.12 chunk scores as XTREME's evaluate.py computes them (:mod:`xlt.metrics.tagging`), ``acc`` is
    token accuracy, all in percent. Sentences none of whose windows were scored are left out; a word
    of a scored sentence without a prediction counts as wrong.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    example: list[torch.Tensor]
    word: list[torch.Tensor]
    pred: list[torch.Tensor]

    def __init__(
        self, score: str, gold: Sequence[Sequence[int]], label_names: Sequence[str], **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        if score not in ("f1", "precision", "recall", "acc"):
            raise ValueError(f"unknown tagging score {score!r}")
        self.score = score
        self.gold = [list(g) for g in gold]
        self.label_names = list(label_names)
        for name in ("example", "word", "pred"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, preds: torch.Tensor, example_idx: torch.Tensor, word_index: torch.Tensor) -> None:
        """``preds`` and ``word_index`` are (batch, seq); ``example_idx`` is (batch,)."""
        scored = word_index != IGNORE
        self.example.append(example_idx.unsqueeze(1).expand_as(word_index)[scored])
        self.word.append(word_index[scored])
        self.pred.append(preds[scored])

    def sentences(self) -> tuple[list[list[str]], list[list[str]]]:
        """(gold, predicted) label strings of every sentence with at least one scored window."""
        if not self.example:
            return [], []
        examples, words, preds = (dim_zero_cat(s).tolist() for s in (self.example, self.word, self.pred))
        predicted: dict[tuple[int, int], int] = {}
        for key in zip(examples, words, preds, strict=True):
            predicted.setdefault(key[:2], key[2])  # first occurrence: DDP pads with repeated batches
        names = self.label_names
        gold, pred = [], []
        for e in sorted({e for e, _ in predicted}):
            tags = self.gold[e]
            gold.append([names[t] for t in tags])
            pred.append(
                [names[predicted[(e, w)]] if (e, w) in predicted else MISSING for w in range(len(tags))]
            )
        return gold, pred

    def compute(self) -> torch.Tensor:
        gold, pred = self.sentences()
        if not gold:
            return torch.tensor(float("nan"), dtype=torch.float64)
        value = token_accuracy(gold, pred) if self.score == "acc" else seqeval_scores(gold, pred)[self.score]
        return torch.tensor(value, dtype=torch.float64)


@register_head("tagging")
class TaggingHead(Head):
    """A linear layer over every token (jiant's ``TokenClassificationHead``); only the first sub-word
    of each word carries a label (the rest are -100 and ignored by the loss)."""

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
