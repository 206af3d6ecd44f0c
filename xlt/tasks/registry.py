"""Registries: task specs by name, raw-file readers by format, hub-row mappers by name."""

from __future__ import annotations

from collections.abc import Callable

from xlt.tasks.spec import HubMapper, Reader, TaskSpec

TASKS: dict[str, TaskSpec] = {}
FORMATS: dict[str, Reader] = {}
HUB_MAPPERS: dict[str, HubMapper] = {}
RETRIEVAL_KINDS = ("top1", "mining")  # how Runner.evaluate_retrieval treats a retrieval task


class UnknownTaskError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; keep it one readable line
        return str(self.args[0])


def register_task(spec: TaskSpec) -> TaskSpec:
    """Add a task; a second task of the same name is a programming error."""
    if spec.name in TASKS:
        raise ValueError(f"task {spec.name!r} is registered twice")
    for split, files in spec.raw.items():
        for raw in files:
            if raw.format not in FORMATS:
                raise ValueError(f"task {spec.name} split {split}: unknown raw format {raw.format!r}")
    if (spec.head == "retrieval") != bool(spec.retrieval) or spec.retrieval not in ("", *RETRIEVAL_KINDS):
        raise ValueError(
            f"task {spec.name}: retrieval={spec.retrieval!r} with head {spec.head!r} "
            f"(a retrieval head needs one of {', '.join(RETRIEVAL_KINDS)}; other heads none)"
        )
    TASKS[spec.name] = spec
    return spec


def register_format(name: str) -> Callable[[Reader], Reader]:
    def wrap(fn: Reader) -> Reader:
        if name in FORMATS:
            raise ValueError(f"raw format {name!r} is registered twice")
        FORMATS[name] = fn
        return fn

    return wrap


def register_hub_mapper(name: str) -> Callable[[HubMapper], HubMapper]:
    def wrap(fn: HubMapper) -> HubMapper:
        if name in HUB_MAPPERS:
            raise ValueError(f"hub mapper {name!r} is registered twice")
        HUB_MAPPERS[name] = fn
        return fn

    return wrap


def get_task(name: str, role: str | None = None) -> TaskSpec:
    """The spec for ``name``; an unknown name (or one not usable in ``role``) lists the valid choices."""
    _load_builtin_tasks()
    spec = TASKS.get(name)
    valid = sorted(n for n, s in TASKS.items() if role is None or role in s.roles)
    if spec is None or (role is not None and role not in spec.roles):
        what = f"{role} task" if role else "task"
        raise UnknownTaskError(f"unknown {what} {name!r}; valid choices: {', '.join(valid)}")
    return spec


def all_tasks() -> dict[str, TaskSpec]:
    _load_builtin_tasks()
    return dict(TASKS)


def _load_builtin_tasks() -> None:
    # Task-family modules register themselves on import; importing here keeps registration lazy
    # and in one place.
    from xlt.tasks import classification, multiple_choice, nli, qa, retrieval, tagging  # noqa: F401
