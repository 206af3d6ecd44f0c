"""The XTREME (2020) evaluation tables: languages, metric and file layout of each target task.

Source of the behaviour: ``google-research/xtreme: evaluate.py`` (``XTREME_TASK2LANGS``,
``XTREME_GROUP2TASK``, ``READER_FUNCTION``, ``METRIC_FUNCTION``, ``get_suffix`` and the
``avg_metric`` rule in ``evaluate``) at commit 838c13b, with ``xtreme_version='xtreme'``.

The facts of each task live on its spec (``xlt/tasks``): its languages (in evaluate.py's order: per-task
averages are summed in that order, so keeping it keeps the floating-point result identical), its
group and scorer (``TaskSpec.xtreme``) and its file format (``TaskSpec.prediction_suffix``). This
module holds only the benchmark's own facts, the order of its nine tasks and of its four groups, and
builds evaluate.py's tables from the registered specs.
"""

from __future__ import annotations

from xlt.tasks.registry import all_tasks, get_task
from xlt.tasks.spec import TaskSpec, XtremeMetric

# evaluate.py's task order (its XTREME_TASK2LANGS keys): the order the overall score sums the tasks in.
XTREME_TASKS = ("pawsx", "xnli", "panx", "udpos", "bucc2018", "tatoeba", "xquad", "mlqa", "tydiqa")
# evaluate.py's group order (its XTREME_GROUP2TASK keys).
XTREME_GROUPS = ("classification", "tagging", "qa", "retrieval")

MetricKind = XtremeMetric


def _xtreme_spec(task: str) -> TaskSpec:
    spec = get_task(task)
    if spec.xtreme is None:
        raise ValueError(
            f"task {task} is one of XTREME_TASKS but its spec has no xtreme scoring (TaskSpec.xtreme)"
        )
    return spec


def _specs() -> dict[str, TaskSpec]:
    outside = sorted(name for name, spec in all_tasks().items() if spec.xtreme and name not in XTREME_TASKS)
    if outside:
        raise ValueError(
            f"task(s) {', '.join(outside)} have xtreme scoring (TaskSpec.xtreme) but are not in "
            "XTREME_TASKS, the benchmark's task order"
        )
    return {task: _xtreme_spec(task) for task in XTREME_TASKS}


_SPECS = _specs()  # read once, when the module is imported

XTREME_TASK2LANGS: dict[str, tuple[str, ...]] = {task: spec.languages for task, spec in _SPECS.items()}
"""Official XTREME test languages per task, in evaluate.py's order (each task spec's ``languages``)."""

XTREME_GROUP2TASK: dict[str, tuple[str, ...]] = {
    group: tuple(t for t, spec in _SPECS.items() if spec.xtreme and spec.xtreme.group == group)
    for group in XTREME_GROUPS
}
"""Task groups whose mean ``avg_metric`` evaluate.py reports when every task of the group is scored
(tasks in ``XTREME_TASKS`` order; evaluate.py lists tagging as udpos, panx: a mean of two is the same
either way)."""

XTREME_TASK_METRIC: dict[str, MetricKind] = {
    task: spec.xtreme.metric for task, spec in _SPECS.items() if spec.xtreme
}
"""Which scorer each task uses (evaluate.py ``METRIC_FUNCTION``; see ``xlt.tasks.spec.XtremeMetric``)."""

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
    return get_task(task).prediction_suffix


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
