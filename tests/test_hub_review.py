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


def test_an_error_while_reading_hub_rows_is_one_line_naming_the_dataset(monkeypatch) -> None:
    """A row not shaped as the mapper expects (a missing column) and a failure while iterating the
    rows both stop in one DataError line naming repo, config and split."""

    def missing_column(path, name=None, split=None, revision=None):
        return datasets.Dataset.from_dict({"premise": ["p"], "label": [0]})  # no hypothesis

    monkeypatch.setattr(datasets, "load_dataset", missing_column)
    with pytest.raises(DataError) as err:
        load_split(get_task("xnli"), "test", "de", "hub", None)
    assert "\n" not in str(err.value) and "hub:facebook/xnli/de[test] row 0" in str(err.value)

    class Broken:
        _fingerprint = "x"

        def __iter__(self):
            raise OSError("corrupt\nparquet page")

    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: Broken())
    with pytest.raises(DataError) as err:
        load_split(get_task("xnli"), "test", "de", "hub", None)
    assert str(err.value) == (
        "hub:facebook/xnli/de[test]: could not read its rows (OSError: corrupt parquet page)"
    )


def test_error_hints_are_quoted_for_the_shell() -> None:
    from xlt.tasks.loading import member_missing

    line = member_missing("all9", "ccg", RuntimeError("no file"))
    assert line.endswith("'intermediate.skip_members=[ccg]'")
