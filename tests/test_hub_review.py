"""Review follow-ups of the hub data work (issue 22): pins checked, realignment direction, config
keys checked, error hints copy-pasteable, errors in row processing named in one line."""

from __future__ import annotations

import datasets
import pytest

from xlt.tasks import hub as hubio
from xlt.tasks.loading import load_split
from xlt.tasks.registry import get_task
from xlt.tasks.spec import DataError


@pytest.fixture(autouse=True)
def _fresh_hub_settings():
    hubio.configure()
    yield
    hubio.configure()


def test_realign_prefers_the_occurrence_at_or_before_the_original_start() -> None:
    # Stripping moves text towards the front: "ab" at 3 was not there; the one at 0 is before it.
    assert hubio.realign_answer("ab x ab", "ab", 3) == 0
    assert hubio.realign_answer("  ab ab", "ab", 1) == 2  # none at or before 1 -> the nearest after
    assert hubio.realign_answer("ab ab", "ab", 3) == 3  # at the offset: kept
    assert hubio.realign_answer("ab", "cd", 0) is None
