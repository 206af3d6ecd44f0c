"""The span-QA head (SQuAD, XQuAD, MLQA, TyDiQA); its example-level metric is
:class:`xlt.metrics.span_qa.SpanQAMetric`.

Decoding follows the SQuAD processor's ``compute_predictions_logits`` that XTREME and jiant use:
per window the ``N_BEST`` highest start and end logits, spans that lie in the context, start at a
token in its max-context window, end after they start and are at most ``MAX_ANSWER_LENGTH`` tokens
long; the answer of an example is its best-scoring span over all its windows, cut from the raw
context by character offsets (no ``get_final_text``, which XTREME had to skip for Chinese anyway).
For SQuAD v2.0 the no-answer score is the smallest CLS score over the windows, and a question is
answered with "" when it beats the best span by more than
:data:`xlt.metrics.span_qa.NULL_SCORE_DIFF_THRESHOLD`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torchmetrics
from torch import nn

from xlt.metrics.span_qa import NO_SPAN_SCORE, SpanQAMetric, best_answers
from xlt.modeling.heads import Batch, Head, register_head
from xlt.tasks.spec import TaskSpec

if TYPE_CHECKING:
    from xlt.data.datamodule import EvalSet

N_BEST = 20
MAX_ANSWER_LENGTH = 30


def best_spans(
    logits: torch.Tensor, batch: Batch, n_best: int = N_BEST, max_answer_length: int = MAX_ANSWER_LENGTH
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per window: (char start, char end, span score, null score) of its best valid span.

    ``logits`` is (batch, seq, 2). Windows without a valid candidate get ``NO_SPAN_SCORE`` and
    characters (0, 0).
    """
    start, end = logits.float().unbind(-1)
    padding = batch["attention_mask"] == 0
    start = start.masked_fill(padding, float("-inf"))
    end = end.masked_fill(padding, float("-inf"))
    k = min(n_best, start.size(1))
    # Like the official decoding, the n-best come from every position; invalid ones are dropped after.
    s_val, s_idx = start.topk(k, dim=1)
    e_val, e_idx = end.topk(k, dim=1)
    in_context = batch["offset_starts"] >= 0
    s_ok = (in_context & (batch["max_context"] > 0)).gather(1, s_idx) & torch.isfinite(s_val)
    e_ok = in_context.gather(1, e_idx) & torch.isfinite(e_val)
    length = e_idx[:, None, :] - s_idx[:, :, None]  # end - start, (batch, k, k)
    valid = s_ok[:, :, None] & e_ok[:, None, :] & (length >= 0) & (length < max_answer_length)
    scores = (s_val[:, :, None] + e_val[:, None, :]).masked_fill(~valid, NO_SPAN_SCORE)
    best, flat = scores.flatten(1).max(dim=1)
    best_start = s_idx.gather(1, (flat // k)[:, None])
    best_end = e_idx.gather(1, (flat % k)[:, None])
    found = best > NO_SPAN_SCORE
    char_start = torch.where(found, batch["offset_starts"].gather(1, best_start).squeeze(1), 0)
    char_end = torch.where(found, batch["offset_ends"].gather(1, best_end).squeeze(1), 0)
    null = start[:, 0] + end[:, 0]
    return char_start, char_end, best.clamp_min(NO_SPAN_SCORE), null


@register_head("span_qa")
class SpanQAHead(Head):
    """Start/end logits from one linear layer on every token (``*ForQuestionAnswering``'s ``qa_outputs``)."""

    def __init__(self, hidden_size: int, spec: TaskSpec, pooling: str = "cls", dropout: float = 0.1) -> None:
        super().__init__(hidden_size, spec, pooling, dropout)
        self.qa_outputs = nn.Linear(hidden_size, 2)

    def forward(self, hidden: torch.Tensor, batch: Batch) -> torch.Tensor:
        return self.qa_outputs(hidden)

    def loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Mean of the start and end cross-entropies over the non-padding positions."""
        padding = batch["attention_mask"] == 0
        start, end = (x.masked_fill(padding, -1.0e4) for x in logits.float().unbind(-1))
        ce = nn.functional.cross_entropy
        return (ce(start, batch["start_positions"]) + ce(end, batch["end_positions"])) / 2

    def predict(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """(batch, 4): char start, char end, span score and null score of each window's best span."""
        return torch.stack([x.to(torch.float64) for x in best_spans(logits, batch)], dim=1)

    @classmethod
    def build_metrics(cls, spec: TaskSpec, eval_set: EvalSet) -> dict[str, torchmetrics.Metric]:
        """One :class:`SpanQAMetric` scored as the spec says the set's data is (``spec.qa_scoring``)."""
        if not eval_set.examples:
            raise ValueError(
                "span-QA metrics need the evaluation set's raw examples (EvalSet.examples is empty)"
            )
        scoring = spec.qa_scoring.get(eval_set.data_split, "squad")
        return {"span_qa": SpanQAMetric(eval_set.examples, scoring, eval_set.lang, spec.metrics)}

    def update_metrics(self, metrics: nn.ModuleDict, logits: torch.Tensor, batch: Batch) -> None:
        char_start, char_end, span_score, null_score = best_spans(logits, batch)
        for metric in metrics.values():
            metric.update(batch["example_idx"], char_start, char_end, span_score, null_score)

    def prediction_rows(self, logits: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """One row per window: (char start, char end, span score, null score) of its best span."""
        return batch["example_idx"], torch.stack(
            [x.to(torch.float64) for x in best_spans(logits, batch)], dim=1
        )

    def decode_predictions(
        self, example_idx: list[int], rows: list[list[float]], eval_set: EvalSet
    ) -> dict[int, Any]:
        """Example index -> the answer text (best span over the example's windows)."""
        windows = ([idx, *row] for idx, row in zip(example_idx, rows, strict=True))
        return {i: text for i, (text, _) in best_answers(eval_set.examples, windows).items()}
