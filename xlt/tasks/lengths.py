"""The one rule for a stage's sequence length (issue 26: it was decided in four places).

A stage's ``max_seq_length`` when set, else its task spec's (``TaskSpec.max_seq_length``); a mixture
member's own ``members.<task>.max_seq_length`` before the stage's; the retrieval probes' length is
``retrieval.max_seq_length`` (pass ``cfg.retrieval`` as the stage). Validation fills the stages' null
lengths with it, so the validated config, the config lock and the result rows record the value used;
the mixture's data, the range checks, the planner and the retrieval evaluation read it here.
"""

from __future__ import annotations

from typing import Any

from xlt.tasks.registry import get_task


def seq_length(stage: Any, task: str | None = None) -> int:
    """The ``max_seq_length`` that ``stage`` (a stage's config, or ``cfg.retrieval`` for the probes)
    uses for ``task`` (a mixture's member; None: the stage's own task)."""
    members = stage.get("members") or {}
    member = members.get(task) if task is not None else None
    if member is not None and member.get("max_seq_length") is not None:
        return int(member.max_seq_length)
    if stage.get("max_seq_length") is not None:
        return int(stage.max_seq_length)
    return int(get_task(task or stage.name).max_seq_length)
