"""Bitext mining (BUCC 2018): per language, margin-scored candidate pairs, the F1-optimal threshold
tuned on dev gold and frozen for test (the protocol is :mod:`xlt.evaluation.bucc`, the scoring
:mod:`xlt.metrics.retrieval`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from xlt.evaluation import bucc
from xlt.evaluation.base import RetrievalEvaluator, RetrievalRun, register_evaluator
from xlt.results.rows import ResultRow, mining_rows
from xlt.tasks.spec import TaskSpec


@register_evaluator
class MiningRetrieval(RetrievalEvaluator):
    kind = "mining"

    def evaluate(
        self, spec: TaskSpec, stage: str, languages: list[str], limit: int | None, run: RetrievalRun
    ) -> list[ResultRow]:
        """``limit`` is not applied: a mined corpus is one example, scored whole."""

        def embed_texts(texts: Sequence[str]) -> torch.Tensor:
            return run.embed(texts, desc=f"{spec.name}")

        results, skipped = bucc.evaluate_languages(
            spec, languages, run.source, run.data_dir, embed_texts, run.device
        )
        for line in skipped:
            run.skip(line)
        if run.write_predictions is not None:
            for lang, result in results:
                run.write_predictions(spec.name, result.split, lang, spec.prediction_format, result.pairs)
        return mining_rows(stage, spec.name, results)
