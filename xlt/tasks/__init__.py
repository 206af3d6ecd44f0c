"""Task specs, their registry and the readers of each task's original files.

Importing the package registers every built-in task: the task-family modules below fill the
registries of xlt/tasks/registry.py (members before the mixtures of mixtures.py, which name them).
"""

from xlt.tasks import classification, multiple_choice, nli, qa, tagging  # noqa: F401  (task plugins)
from xlt.tasks import mixtures, retrieval  # noqa: F401, I001  (after the tasks mixtures name)
from xlt.tasks.registry import all_tasks, get_task
from xlt.tasks.spec import DataError, TaskSpec

__all__ = ["DataError", "TaskSpec", "all_tasks", "get_task"]
