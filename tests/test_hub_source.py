"""The hub path maps the hub's columns onto the task fields (no network: load_dataset is replaced)."""

from __future__ import annotations

import datasets
import pytest

from xlt.tasks import get_task
from xlt.tasks.loading import MissingDataError, load_split


def test_hub_rows_are_mapped_and_no_consensus_rows_dropped(monkeypatch) -> None:
    calls = []

    def fake_load(path, name=None, split=None, revision=None):
        calls.append((path, name, split))
        return datasets.Dataset.from_dict(
            {"premise": ["p1", "p2", "p3"], "hypothesis": ["h1", "h2", "h3"], "label": [0, -1, 2]}
        )

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    loaded = load_split(get_task("snli"), "train", "en", "hub", None)
    assert calls == [("stanfordnlp/snli", None, "train")]
    assert [ex["label"] for ex in loaded.examples] == [0, 2] and loaded.dropped == 1
    load_split(get_task("xnli"), "test", "de", "hub", None)
    assert calls[-1] == ("facebook/xnli", "de", "test")
    load_split(get_task("mnli"), "dev", "en", "hub", None)
    assert calls[-1] == ("nyu-mll/glue", "mnli", "validation_matched")


def test_tatoeba_hub_config_uses_the_three_letter_code(monkeypatch) -> None:
    def fake_load(path, name=None, split=None, revision=None):
        assert (path, name, split) == ("google/xtreme", "tatoeba.deu", "validation")
        return datasets.Dataset.from_dict({"source_sentence": ["Hallo "], "target_sentence": ["Hello"]})

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    assert load_split(get_task("tatoeba"), "test", "de", "hub", None).examples == [
        {"text": "Hallo", "en": "Hello"}
    ]


def test_hub_failure_is_one_line(monkeypatch) -> None:
    def offline(*args, **kwargs):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(
        MissingDataError, match=r"hub:facebook/xnli/de\[test\]: could not load \(ConnectionError"
    ):
        load_split(get_task("xnli"), "test", "de", "hub", None)
