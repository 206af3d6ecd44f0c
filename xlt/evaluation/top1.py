"""Top-1 retrieval (Tatoeba): English sentences query the other language's, nearest neighbour by
cosine; accuracy is the share of queries whose neighbour is their translation."""

from __future__ import annotations

import torch

from xlt.evaluation.base import RetrievalEvaluator, RetrievalRun, register_evaluator
from xlt.metrics.retrieval import tatoeba_accuracy, tatoeba_sorted_gold, tatoeba_top1
from xlt.results.rows import ResultRow, language_rows
from xlt.tasks.loading import MissingDataError, load_split
from xlt.tasks.spec import TaskSpec


@register_evaluator
class Top1Retrieval(RetrievalEvaluator):
    kind = "top1"

    def evaluate(
        self, spec: TaskSpec, stage: str, languages: list[str], limit: int | None, run: RetrievalRun
    ) -> list[ResultRow]:
        scores: dict[str, dict[str, float]] = {}
        counts: dict[str, int] = {}
        for lang in languages:
            try:
                loaded = load_split(spec, spec.test_split, lang, run.source, run.data_dir, limit=limit)
            except MissingDataError as err:
                run.skip(str(err))
                continue
            texts = [ex["text"] for ex in loaded.examples]
            english = [ex["en"] for ex in loaded.examples]
            index = run.embed(texts, desc=f"{spec.name} {lang}")
            queries = run.embed(english, desc=f"{spec.name} en-{lang}")
            pred = tatoeba_top1(queries, index)
            scores[lang] = {"acc": tatoeba_accuracy(pred, torch.arange(len(texts)))}
            counts[lang] = len(texts)
            if run.write_predictions is not None:
                # XTREME's layout: English lines sorted, so the gold of sorted line j is its original index.
                _, order = tatoeba_sorted_gold(english)
                run.write_predictions(
                    spec.name, spec.test_split, lang, spec.prediction_format, [int(pred[i]) for i in order]
                )
        return language_rows(stage, spec.name, spec.test_split, scores, counts, with_gap=False)
