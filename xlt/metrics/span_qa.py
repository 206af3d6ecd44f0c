"""Example-level scores of span-QA predictions, as the official scripts compute them.

The span-QA head (:mod:`xlt.modeling.heads_qa`) keeps, per context window, its best span and its
no-answer score; :func:`best_answers` turns those rows into one answer per example (the best span over
the example's windows), and :class:`SpanQAMetric` scores the answers with :mod:`xlt.metrics.qa`'s
SQuAD v1.1, MLQA or SQuAD v2.0 functions. Which one is the task spec's fact
(``TaskSpec.qa_scoring``, read by the head's ``build_metrics``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
import torchmetrics
from torchmetrics.utilities import dim_zero_cat

from xlt.metrics.qa import mlqa_evaluate, qa_task_score, squad_evaluate, squad_v2_evaluate
from xlt.tasks.qa_formats import QA_METRICS, SCORINGS, SQUAD_V2_METRICS
from xlt.tasks.spec import Example

log = logging.getLogger(__name__)

# BERT's / HF run_squad's default: answer "" when null score > best span score + 0. The official
# v2.0 best-threshold search is reported beside it (best_em, best_f1, best_f1_thresh).
NULL_SCORE_DIFF_THRESHOLD = 0.0
STATES = ("example_idx", "char_start", "char_end", "span_score", "null_score")
# Stands in for "no span" (a finite number, so thresholds and sorting stay finite).
NO_SPAN_SCORE = -1.0e9


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
        if scoring not in SCORINGS:
            raise ValueError(f"unknown span-QA scoring {scoring!r} (valid: {', '.join(SCORINGS)})")
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

    def update(
        self,
        example_idx: torch.Tensor,
        char_start: torch.Tensor,
        char_end: torch.Tensor,
        span_score: torch.Tensor,
        null_score: torch.Tensor,
    ) -> None:
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
            values = {
                "em": v2["exact"],
                "f1": v2["f1"],
                "best_em": v2["best_exact"],
                "best_f1": v2["best_f1"],
                "best_f1_thresh": v2["best_f1_thresh"],
            }
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
