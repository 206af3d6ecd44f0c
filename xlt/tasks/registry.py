"""Registries: task specs by name, raw-file readers by format, hub-row mappers by name.

The task-family modules (nli.py, qa.py, ...) fill them when ``xlt/tasks/__init__.py`` imports them;
this module imports none of them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from xlt.tasks.spec import RETRIEVAL_KINDS, HubMapper, MixtureSpec, Reader, TaskSpec
from xlt.utils.registry import Registry

TASKS: Registry[TaskSpec] = Registry("task")
MIXTURES: Registry[MixtureSpec] = Registry("mixture")
FORMATS: Registry[Reader] = Registry("raw format")
HUB_MAPPERS: Registry[HubMapper] = Registry("hub mapper")


class UnknownTaskError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; keep it one readable line
        return str(self.args[0])


def register_task(spec: TaskSpec) -> TaskSpec:
    """Add a task; a second task of the same name is a programming error."""
    for split, files in spec.raw.items():
        for raw in files:
            if raw.format not in FORMATS:
                raise ValueError(f"task {spec.name} split {split}: unknown raw format {raw.format!r}")
    if (spec.head == "retrieval") != bool(spec.retrieval) or spec.retrieval not in ("", *RETRIEVAL_KINDS):
        raise ValueError(
            f"task {spec.name}: retrieval={spec.retrieval!r} with head {spec.head!r} "
            f"(a retrieval head needs one of {', '.join(RETRIEVAL_KINDS)}; other heads none)"
        )
    return TASKS.add(spec.name, spec)


def register_mixture(spec: MixtureSpec) -> MixtureSpec:
    """Add a mixture of registered tasks (or mixtures); its name must not be a task's."""
    if spec.name in MIXTURES or spec.name in TASKS:
        raise ValueError(f"mixture {spec.name!r}: the name is registered twice")
    for member in spec.members:
        if member not in TASKS and member not in MIXTURES:
            raise ValueError(f"mixture {spec.name}: unknown member {member!r}")
    for head, tasks in spec.shared_heads.items():
        if not set(tasks) <= set(spec.members):
            raise ValueError(f"mixture {spec.name}: head {head!r} is shared by non-members {tasks}")
    for member in spec.evaluated or ():
        if member not in spec.members:
            raise ValueError(f"mixture {spec.name}: evaluated member {member!r} is not a member")
    MIXTURES.add(spec.name, spec)
    flat = flatten_mixture(spec)  # checks that tasks sharing a head agree on its kind and labels
    for head, group in _head_groups(flat).items():
        kinds = {(TASKS[t].head, TASKS[t].label_names) for t in group}
        if len(kinds) > 1:
            del MIXTURES[spec.name]
            raise ValueError(
                f"mixture {spec.name}: tasks {group} share head {head!r} but differ in head kind or labels"
            )
    return spec


@dataclass(frozen=True)
class FlatMixture:
    """A mixture resolved to tasks: members in order, each task's head name, the tasks scored on dev."""

    name: str
    tasks: tuple[str, ...]
    head_of: Mapping[str, str]
    evaluated: tuple[str, ...]


def flatten_mixture(spec: MixtureSpec) -> FlatMixture:
    """Resolve nested mixtures: tasks in first-seen order, shared heads and evaluated members merged."""
    tasks: list[str] = []
    head_of: dict[str, str] = {}
    evaluated: list[str] = []
    for member in spec.members:
        if member in MIXTURES:
            inner = flatten_mixture(MIXTURES[member])
            inner_tasks, inner_heads, inner_eval = inner.tasks, dict(inner.head_of), inner.evaluated
        else:
            inner_tasks, inner_heads, inner_eval = (member,), {member: member}, (member,)
        for head, shared in spec.shared_heads.items():
            if member in shared:
                inner_heads = dict.fromkeys(inner_tasks, head)
        for task in inner_tasks:
            if task not in tasks:
                tasks.append(task)
                head_of[task] = inner_heads[task]
        if spec.evaluated is None or member in spec.evaluated:
            evaluated.extend(t for t in inner_eval if t not in evaluated)
    return FlatMixture(spec.name, tuple(tasks), head_of, tuple(evaluated))


def _head_groups(flat: FlatMixture) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for task in flat.tasks:
        groups.setdefault(flat.head_of[task], []).append(task)
    return groups


def get_mixture(name: str) -> MixtureSpec | None:
    """The mixture called ``name``, or None when it is not a mixture."""
    return MIXTURES.get(name)


def intermediate_choices() -> list[str]:
    """Every name usable as an intermediate stage: tasks with that role, and mixtures."""
    return sorted([n for n, s in TASKS.items() if "intermediate" in s.roles] + list(MIXTURES))


def register_format(name: str) -> Callable[[Reader], Reader]:
    return FORMATS.register(name)


def register_hub_mapper(name: str) -> Callable[[HubMapper], HubMapper]:
    return HUB_MAPPERS.register(name)


def get_task(name: str, role: str | None = None) -> TaskSpec:
    """The spec for ``name``; an unknown name (or one not usable in ``role``) lists the valid choices."""
    spec = TASKS.get(name)
    valid = sorted(n for n, s in TASKS.items() if role is None or role in s.roles)
    if spec is None or (role is not None and role not in spec.roles):
        what = f"{role} task" if role else "task"
        if role == "intermediate":
            valid = intermediate_choices()
        raise UnknownTaskError(f"unknown {what} {name!r}; valid choices: {', '.join(valid)}")
    return spec


def all_tasks() -> dict[str, TaskSpec]:
    return dict(TASKS)
