"""Evaluation without training: sentence retrieval with the encoder's embeddings, one evaluator per
retrieval kind (``TaskSpec.retrieval``: ``top1`` for Tatoeba, ``mining`` for BUCC), each scored by
:mod:`xlt.metrics.retrieval`. A new kind is a subclass of :class:`RetrievalEvaluator` registered
with :func:`register_evaluator` in a module imported here."""

from xlt.evaluation import mining, top1  # noqa: F401  (they register their evaluators)
from xlt.evaluation.base import (
    RetrievalEvaluator,
    RetrievalRun,
    evaluate_retrieval,
    evaluator_for,
    register_evaluator,
)

__all__ = ["RetrievalEvaluator", "RetrievalRun", "evaluate_retrieval", "evaluator_for", "register_evaluator"]
