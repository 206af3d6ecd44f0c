"""The XTREME (2020) evaluation table: languages, metric and file layout of each target task.

One place for these facts. Source of the behaviour: ``google-research/xtreme: evaluate.py``
(``XTREME_TASK2LANGS``, ``XTREME_GROUP2TASK``, ``READER_FUNCTION``, ``METRIC_FUNCTION``,
``get_suffix`` and the ``avg_metric`` rule in ``evaluate``) at commit 838c13b, with
``xtreme_version='xtreme'``. The language order is the official one: per-task averages are summed
in this order, so keeping it keeps the floating-point result identical.

Task specs elsewhere (``xlt/tasks``) should import ``XTREME_TASK2LANGS`` instead of re-declaring
languages.
"""

from __future__ import annotations

from typing import Literal


def _langs(codes: str) -> tuple[str, ...]:
    return tuple(codes.split())


XTREME_TASK2LANGS: dict[str, tuple[str, ...]] = {
    "pawsx": _langs("de en es fr ja ko zh"),
    "xnli": _langs("ar bg de el en es fr hi ru sw th tr ur vi zh"),
    "panx": _langs(
        "ar he vi id jv ms tl eu ml ta te af nl en de el bn hi mr ur fa fr it pt es bg ru ja ka ko th sw yo my zh kk tr et fi hu"
    ),
    "udpos": _langs(
        "af ar bg de el en es et eu fa fi fr he hi hu id it ja kk ko mr nl pt ru ta te th tl tr ur vi yo zh"
    ),
    "bucc2018": _langs("de fr ru zh"),
    "tatoeba": _langs(
        "ar he vi id jv tl eu ml ta te af nl de el bn hi mr ur fa fr it pt es bg ru ja ka ko th sw zh kk tr et fi hu"
    ),
    "xquad": _langs("en es de el ru tr ar vi th zh hi"),
    "mlqa": _langs("en es de ar hi vi zh"),
    "tydiqa": _langs("en ar bn fi id ko ru sw te"),
}
"""Official XTREME test languages per task, in evaluate.py's order."""

XTREME_GROUP2TASK: dict[str, tuple[str, ...]] = {
    "classification": ("pawsx", "xnli"),
    "tagging": ("udpos", "panx"),
    "qa": ("xquad", "mlqa", "tydiqa"),
    "retrieval": ("bucc2018", "tatoeba"),
}
"""Task groups whose mean ``avg_metric`` evaluate.py reports when every task of the group is scored."""

MetricKind = Literal["accuracy", "seqeval", "bucc_f1", "squad", "mlqa"]

XTREME_TASK_METRIC: dict[str, MetricKind] = {
    "pawsx": "accuracy",
    "xnli": "accuracy",
    "panx": "seqeval",
    "udpos": "seqeval",
    "bucc2018": "bucc_f1",
    "tatoeba": "accuracy",
    "xquad": "squad",
    "mlqa": "mlqa",
    "tydiqa": "squad",
}
"""Which scorer each task uses (evaluate.py ``METRIC_FUNCTION``).

``seqeval`` is chunk F1/precision/recall with seqeval 0.0.12 chunking (also for UD-POS);
``squad`` is the SQuAD v1.1 script (English normalisation for every language); ``mlqa`` is the MLQA
script with language-specific normalisation.
"""

QA_TASKS: tuple[str, ...] = XTREME_GROUP2TASK["qa"]

# The metric keys each scorer returns, in the order evaluate.py's dicts hold them.
METRIC_KEYS: dict[MetricKind, tuple[str, ...]] = {
    "accuracy": ("accuracy",),
    "seqeval": ("f1", "precision", "recall"),
    "bucc_f1": ("f1", "precision", "recall"),
    "squad": ("exact_match", "f1"),
    "mlqa": ("exact_match", "f1"),
}


def file_suffix(task: str) -> str:
    """File extension of a task's submission and label files: ``json`` for QA, ``tsv`` otherwise."""
    _check_task(task)
    return "json" if task in QA_TASKS else "tsv"


def submission_filename(task: str, lang: str, split: str = "test") -> str:
    """``test-{lang}.{suffix}``, the name evaluate.py expects inside the task folder (``split`` other
    than ``test`` names a split evaluate.py never reads, e.g. ``dev`` for scoring a dev submission)."""
    return f"{split}-{lang}.{file_suffix(task)}"


def task_score(task: str, averages: dict[str, float]) -> float:
    """The task's ``avg_metric`` from its per-metric language averages (keys ``avg_<metric>``).

    QA tasks: ``(avg_exact_match + avg_f1) / 2``; tasks with an F1: ``avg_f1``; else ``avg_accuracy``
    (evaluate.py's precedence).
    """
    _check_task(task)
    if task in QA_TASKS:
        return (averages["avg_exact_match"] + averages["avg_f1"]) / 2
    if "avg_f1" in averages:
        return averages["avg_f1"]
    return averages["avg_accuracy"]


def _check_task(task: str) -> None:
    if task not in XTREME_TASK2LANGS:
        raise ValueError(f"unknown XTREME task {task!r}; valid: {', '.join(XTREME_TASK2LANGS)}")
