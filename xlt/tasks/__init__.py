"""Task specs, their registry and the readers of each task's original files.

Importing the package registers every built-in task: the task-family modules below (plugins) fill
the registries of xlt/tasks/registry.py, which imports none of them.
"""

from xlt.tasks import classification, mixtures, multiple_choice, nli, qa, retrieval, tagging  # noqa: F401
from xlt.tasks.registry import all_tasks, get_task
from xlt.tasks.spec import DataError, TaskSpec

__all__ = ["DataError", "TaskSpec", "all_tasks", "get_task"]
