"""Task specs, their registry and the readers of each task's original files.

Importing the package registers every built-in task: the task-family modules below (plugins) fill
the registries of xlt/tasks/registry.py, which imports none of them.
"""

from xlt.tasks import classification, multiple_choice, nli, qa, retrieval, tagging  # noqa: F401

# isort: split
from xlt.tasks import mixtures  # noqa: F401  (after the tasks: a mixture's members must be registered)
from xlt.tasks.registry import all_tasks, get_task
from xlt.tasks.spec import DataError, TaskSpec

__all__ = ["DataError", "TaskSpec", "all_tasks", "get_task"]
