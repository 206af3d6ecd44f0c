"""``wait_for_rank_zero``'s gloo side group belongs to one default process group: a new default group
(after ``destroy_process_group`` and a new ``init_process_group``) gets a new side group, even when
Python gives the new group the id() of the old one, or torch the same name (its group count restarts
at 0 after a destroy)."""

from __future__ import annotations

from typing import Any

import pytest
import torch.distributed as dist

import xlt.training.trainer


def test_a_new_default_group_gets_a_new_wait_group_even_with_the_old_ones_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    worlds = [object(), object()]
    current = {"world": worlds[0]}
    made: list[object] = []

    def new_group(**kwargs: Any) -> object:
        made.append(object())
        return made[-1]

    monkeypatch.setattr(xlt.training.trainer, "_WAIT_GROUPS", {})
    monkeypatch.setattr(
        xlt.training.trainer, "id", lambda obj: 1, raising=False
    )  # the old group's id, reused
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda *a, **k: 2)
    monkeypatch.setattr(dist, "get_rank", lambda *a, **k: 1)
    monkeypatch.setattr(dist.distributed_c10d, "_get_default_group", lambda: current["world"])
    monkeypatch.setattr(dist, "new_group", new_group)
    used: list[object] = []
    monkeypatch.setattr(dist, "broadcast_object_list", lambda message, src, group: used.append(group))
    xlt.training.trainer.wait_for_rank_zero()
    xlt.training.trainer.wait_for_rank_zero()
    current["world"] = worlds[1]  # destroyed and initialised again
    xlt.training.trainer.wait_for_rank_zero()
    assert len(made) == 2
    assert used == [made[0], made[0], made[1]]
