"""Task specs, their registry and the readers of each task's original files."""

from xlt.tasks.registry import all_tasks, get_task
from xlt.tasks.spec import DataError, TaskSpec

__all__ = ["DataError", "TaskSpec", "all_tasks", "get_task"]
