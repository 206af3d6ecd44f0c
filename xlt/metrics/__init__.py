"""Metrics for the XTREME targets and the intermediate tasks, reproducing the official scorers.

- :mod:`xlt.metrics.xtreme`: the task table (languages, metric, file layout, task score).
- :mod:`xlt.metrics.qa`: SQuAD v1.1 (XQuAD, TyDiQA), MLQA, SQuAD v2.0.
- :mod:`xlt.metrics.span_qa`: :class:`SpanQAMetric`, a run's span predictions scored by ``qa``
  (imported on its own: it reads the QA task module's metric names).
- :mod:`xlt.metrics.tagging`: seqeval-0.0.12 chunk F1 (UD-POS, PAN-X), token accuracy; :class:`WordTagScore`.
- :mod:`xlt.metrics.retrieval`: Tatoeba top-1 accuracy, BUCC mining, threshold and F1;
  :mod:`xlt.metrics.knn`: the exact k-NN in both directions and margin mining under them.
- :mod:`xlt.metrics.classification`: accuracy (:class:`Accuracy`) and binary F1.

The torchmetrics classes here are the ones the heads (xlt/modeling/heads*.py) evaluate with: one
implementation per metric, checked against the official scorers by tests/test_metrics_*.py.

Scores are percentages (0-100), as google-research/xtreme's evaluate.py reports them.
"""

import importlib
from typing import TYPE_CHECKING, Any

# The names below are imported on first use (PEP 562), not with the package: ``xlt.metrics.xtreme``
# or ``.qa`` alone must not load torch and torchmetrics (``xlt-score --help`` in well under 2 s).
if TYPE_CHECKING:
    from xlt.metrics.classification import Accuracy, accuracy, binary_f1_metric
    from xlt.metrics.knn import bidirectional_knn, mine_bitext
    from xlt.metrics.qa import (
        MLQA_LANGUAGES,
        exact_match_score,
        f1_score,
        mlqa_evaluate,
        mlqa_normalize,
        qa_task_score,
        squad_evaluate,
        squad_normalize,
        squad_v2_evaluate,
    )
    from xlt.metrics.retrieval import (
        bucc_candidates,
        bucc_extract,
        bucc_f1,
        bucc_optimize,
        tatoeba_accuracy,
        tatoeba_sorted_gold,
        tatoeba_top1,
    )
    from xlt.metrics.tagging import WordTagScore, chunk_f1, get_chunks, seqeval_scores, token_accuracy
    from xlt.metrics.xtreme import (
        QA_TASKS,
        XTREME_GROUP2TASK,
        XTREME_TASK2LANGS,
        XTREME_TASK_METRIC,
        submission_filename,
        task_score,
    )

_MODULE = {
    name: f"xlt.metrics.{module}"
    for module, names in (
        ("classification", "Accuracy accuracy binary_f1_metric"),
        (
            "qa",
            "MLQA_LANGUAGES exact_match_score f1_score mlqa_evaluate mlqa_normalize qa_task_score "
            "squad_evaluate squad_normalize squad_v2_evaluate",
        ),
        ("knn", "bidirectional_knn mine_bitext"),
        (
            "retrieval",
            "bucc_candidates bucc_extract bucc_f1 bucc_optimize tatoeba_accuracy tatoeba_sorted_gold tatoeba_top1",
        ),
        ("tagging", "WordTagScore chunk_f1 get_chunks seqeval_scores token_accuracy"),
        (
            "xtreme",
            "QA_TASKS XTREME_GROUP2TASK XTREME_TASK2LANGS XTREME_TASK_METRIC submission_filename task_score",
        ),
    )
    for name in names.split()
}


def __getattr__(name: str) -> Any:
    if name not in _MODULE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_MODULE[name]), name)


__all__ = [
    "MLQA_LANGUAGES",
    "QA_TASKS",
    "XTREME_GROUP2TASK",
    "XTREME_TASK2LANGS",
    "XTREME_TASK_METRIC",
    "Accuracy",
    "WordTagScore",
    "accuracy",
    "bidirectional_knn",
    "binary_f1_metric",
    "bucc_candidates",
    "bucc_extract",
    "bucc_f1",
    "bucc_optimize",
    "chunk_f1",
    "exact_match_score",
    "f1_score",
    "get_chunks",
    "mine_bitext",
    "mlqa_evaluate",
    "mlqa_normalize",
    "qa_task_score",
    "seqeval_scores",
    "squad_evaluate",
    "squad_normalize",
    "squad_v2_evaluate",
    "submission_filename",
    "task_score",
    "tatoeba_accuracy",
    "tatoeba_sorted_gold",
    "tatoeba_top1",
    "token_accuracy",
]
