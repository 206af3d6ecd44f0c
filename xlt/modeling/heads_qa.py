"""The span-QA head (SQuAD, XQuAD, MLQA, TyDiQA) and its example-level metric.

Decoding follows the SQuAD processor's ``compute_predictions_logits`` that XTREME and jiant use:
per window the ``N_BEST`` highest start and end logits, spans that lie in the context, start at a
token in its max-context window, end after they start and are at most ``MAX_ANSWER_LENGTH`` tokens
long; the answer of an example is its best-scoring span over all its windows, cut from the raw
context by character offsets (no ``get_final_text``, which XTREME had to skip for Chinese anyway).
For SQuAD v2.0 the no-answer score is the smallest CLS score over the windows, and a question is
answered with "" when it beats the best span by more than ``NULL_SCORE_DIFF_THRESHOLD``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torchmetrics
from torch import nn
from torchmetrics.utilities import dim_zero_cat

from xlt.metrics.qa import mlqa_evaluate, qa_task_score, squad_evaluate, squad_v2_evaluate
from xlt.modeling.heads import Batch, Head, register_head
from xlt.tasks.qa import QA_METRICS, SCORINGS, SQUAD_V2_METRICS
from xlt.tasks.spec import Example, TaskSpec

if TYPE_CHECKING:
    from xlt.data.datamodule import EvalSet

log = logging.getLogger(__name__)

N_BEST = 20
MAX_ANSWER_LENGTH = 30
# BERT's / HF run_squad's default: answer "" when null score > best span score + 0. The official
# v2.0 best-threshold search is reported beside it (best_em, best_f1, best_f1_thresh).
NULL_SCORE_DIFF_THRESHOLD = 0.0
STATES = ("example_idx", "char_start", "char_end", "span_score", "null_score")
# Stands in for "no span" (a finite number, so thresholds and sorting stay finite).
NO_SPAN_SCORE = -1.0e9


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


def best_answers(examples: Sequence[Example], windows: Any) -> dict[int, tuple[str, float]]:
    """Example index -> (text of its best span over all its windows, null score minus that span's
    score), from per-window rows (example index, char start, char end, span score, null score)."""
    best: dict[int, tuple[float, int, int]] = {}
    null: dict[int, float] = {}
    for idx, cs, ce, score, null_score in windows:
        i = int(idx)
        if i not in best or score > best[i][0]:
            best[i] = (score, int(cs), int(ce))
        null[i] = min(null.get(i, null_score), null_score)
    out = {}
    for i, (score, cs, ce) in best.items():
        text = examples[i]["context"][cs:ce] if score > NO_SPAN_SCORE else ""
        out[i] = (text, null[i] - score)
    return out


def _examples_scoring(examples: Sequence[Example]) -> str:
    if not examples:
        raise ValueError("span-QA metrics need the evaluation set's raw examples (EvalSet.examples is empty)")
    kinds = {ex.get("_scoring") for ex in examples}
    if len(kinds) != 1 or not kinds <= set(SCORINGS):
        raise ValueError(
            f"an evaluation set must be scored one way; its examples ask for {sorted(map(str, kinds))}"
        )
    return str(kinds.pop())


class SpanQAMetric(torchmetrics.Metric):
    """Example-level EM/F1 of span predictions, scored by the official scripts (``xlt.metrics.qa``).

    ``update`` keeps, per window, the example index, the character span of its best answer, that
    span's score and the window's no-answer score, as float64 "cat" states (they sync under DDP).
    ``compute`` picks the best span of each example over its windows, cuts the text out of the raw
    context and scores the examples that were predicted: ``scoring`` is ``squad`` (v1.1),
    ``squad_v2`` or ``mlqa`` (with ``lang``). It returns ``{name: value}`` for ``names``.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    example_idx: list[torch.Tensor]
    char_start: list[torch.Tensor]
    char_end: list[torch.Tensor]
    span_score: list[torch.Tensor]
    null_score: list[torch.Tensor]

    def __init__(
        self, examples: Sequence[Example], scoring: str, lang: str, names: Sequence[str], **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        provided = SQUAD_V2_METRICS if scoring == "squad_v2" else QA_METRICS
        unknown = [n for n in names if n not in provided]
        if unknown:
            raise ValueError(f"{scoring} scoring provides {list(provided)}, not {unknown}")
        self.examples = examples
        self.scoring = scoring
        self.lang = lang
        self.names = tuple(names)
        for state in STATES:
            self.add_state(state, default=[], dist_reduce_fx="cat")
        self.set_dtype(torch.float64)  # an empty rank's synced state then matches the others' dtype

    def update(self, example_idx: torch.Tensor, char_start: torch.Tensor, char_end: torch.Tensor,
               span_score: torch.Tensor, null_score: torch.Tensor) -> None:  # fmt: skip
        values = (example_idx, char_start, char_end, span_score, null_score)
        for name, value in zip(STATES, values, strict=True):
            getattr(self, name).append(value.detach().to(torch.float64))

    def _state(self, name: str) -> list[float]:
        value = getattr(self, name)
        if isinstance(value, list):
            value = dim_zero_cat(value) if value else torch.zeros(0, dtype=torch.float64)
        return value.tolist()

    def predictions(self) -> dict[int, tuple[str, float]]:
        """Example index -> (best span text, null score minus best span score) over its windows."""
        columns = [self._state(n) for n in STATES]
        return best_answers(self.examples, zip(*columns, strict=True))

    def compute(self) -> dict[str, torch.Tensor]:
        predicted = self.predictions()
        if not predicted:
            return {name: torch.tensor(float("nan"), dtype=torch.float64) for name in self.names}
        if len(predicted) < len(self.examples):
            log.info(
                "span QA: %d of %d examples had an evaluated window; scoring those",
                len(predicted),
                len(self.examples),
            )
        # Keys are example positions: ids need not be unique across a file (e.g. an "a+b" split union).
        qas = [{"id": str(i), "answers": self.examples[i]["answers"]} for i in sorted(predicted)]
        gold = [{"paragraphs": [{"qas": qas}]}]
        texts = {str(i): text for i, (text, _) in predicted.items()}
        values: dict[str, float]
        if self.scoring == "squad_v2":
            na = {str(i): diff for i, (_, diff) in predicted.items()}
            v2 = squad_v2_evaluate(gold, texts, na_probs=na, na_prob_thresh=NULL_SCORE_DIFF_THRESHOLD)
            values = {"em": v2["exact"], "f1": v2["f1"], "best_em": v2["best_exact"], "best_f1": v2["best_f1"],
                      "best_f1_thresh": v2["best_f1_thresh"]}  # fmt: skip
            for prefix, key in (("has_ans", "HasAns"), ("no_ans", "NoAns")):
                values[f"{prefix}_em"] = v2.get(f"{key}_exact", float("nan"))
                values[f"{prefix}_f1"] = v2.get(f"{key}_f1", float("nan"))
        else:
            if self.scoring == "mlqa":
                result = mlqa_evaluate(gold, texts, self.lang)
            else:
                result = squad_evaluate(gold, texts)
            values = {"em": result["exact_match"], "f1": result["f1"]}
        values["score"] = qa_task_score(values["em"], values["f1"])
        return {name: torch.tensor(values[name], dtype=torch.float64) for name in self.names}


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
        scoring = _examples_scoring(eval_set.examples)
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
