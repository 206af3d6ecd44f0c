"""Nothing a run reads back can execute code: the feature cache (a group-shared folder, README) holds
JSON and Arrow only, each entry checked (size, SHA-256) and rebuilt in one line when damaged."""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path

import pytest

from xlt.data.features import featurize, load_split_cached
from xlt.tasks import get_task
from xlt.tasks.loading import load_split


class _Payload:
    """What an attacker writes into the shared cache: unpickling it creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204 - pickle protocol
        return (os.system, (f"touch {self.marker}",))


def _xnli_dir(data_dir: Path, root: Path) -> Path:
    src = data_dir / "xnli/en/en.genre.test.tsv"
    lines = src.read_text(encoding="utf-8").splitlines(keepends=True)[:9]
    target = root / "xnli/en/en.genre.test.tsv"
    target.parent.mkdir(parents=True)
    target.write_text("".join(lines), encoding="utf-8")
    return root


def _load(data: Path, cache: Path):
    return load_split_cached(get_task("xnli"), "test", "en", "local", data, None, cache)


def test_planted_pickle_in_the_examples_cache_does_not_run(data_dir: Path, tmp_path: Path, caplog) -> None:
    data, cache, marker = _xnli_dir(data_dir, tmp_path / "data"), tmp_path / "cache", tmp_path / "pwned"
    fresh = _load(data, cache)
    (entry,) = (cache / "examples").iterdir()
    payload = pickle.dumps(_Payload(marker))
    # The payload under the entry's own name and under the name the pickle cache used (<digest>.pkl).
    entry.write_bytes(payload)
    entry.with_suffix(".pkl").write_bytes(payload)
    with caplog.at_level(logging.WARNING, logger="xlt.data.features"):
        again = _load(data, cache)
    assert not marker.exists(), "a pickle in the cache ran"
    assert again == fresh == load_split(get_task("xnli"), "test", "en", "local", data)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and f"{entry} is damaged (not an xlt examples file); rebuilding" in warnings[0]
    import xlt.data.features as features

    assert not hasattr(features, "pickle")


@pytest.mark.parametrize(
    "damage,why",
    [
        (lambda b: b[: len(b) - 7], r"bytes, expected"),
        (lambda b: b + b"{}", r"bytes, expected"),
        (lambda b: b[:-20] + bytes([b[-20] ^ 1]) + b[-19:], r"SHA-256 does not match"),
        (lambda b: b"", r"not an xlt examples file"),
    ],
    ids=["truncated", "appended", "edited", "emptied"],
)
def test_damaged_examples_entry_is_rebuilt_in_one_line(
    data_dir: Path, tmp_path: Path, caplog, damage, why
) -> None:
    import re

    data, cache = _xnli_dir(data_dir, tmp_path / "data"), tmp_path / "cache"
    fresh = _load(data, cache)
    (entry,) = (cache / "examples").iterdir()
    good = entry.read_bytes()
    entry.write_bytes(damage(good))
    with caplog.at_level(logging.WARNING, logger="xlt.data.features"):
        assert _load(data, cache) == fresh
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and re.search(why, warnings[0]) and "\n" not in warnings[0], warnings
    assert entry.read_bytes() == good  # repaired in place


def test_damaged_feature_entry_is_rebuilt(data_dir: Path, tmp_path: Path, compose_cfg, caplog) -> None:
    from xlt.modeling.encoder import load_tokenizer

    cfg = compose_cfg("model=tiny", "+target=xnli")
    tokenizer = load_tokenizer(cfg.model, Path(cfg.data.cache_dir))
    examples = load_split(
        get_task("xnli"), "test", "en", "local", _xnli_dir(data_dir, tmp_path / "data")
    ).examples
    cache = tmp_path / "cache"

    def run() -> list[list[int]]:
        return featurize(examples, "classification", tokenizer, 64, cache, {"t": "x"})["input_ids"]

    fresh = run()
    (entry,) = (cache / "features").iterdir()
    (arrow,) = entry.glob("*.arrow")
    arrow.write_bytes(arrow.read_bytes()[:-50])
    with caplog.at_level(logging.WARNING, logger="xlt.data.features"):
        assert run() == fresh
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and f"{entry} is damaged ({arrow.name} has" in warnings[0], warnings
    assert run() == fresh and len(caplog.records) == 1  # the rebuilt entry reads without a word
