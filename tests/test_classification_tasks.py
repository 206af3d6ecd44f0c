"""QQP and PAWS-X: readers on the real German PAWS-X sets and the genuine first lines of the others,
English-only PAWS-X training, bad input, and a fast dev run QQP -> PAWS-X."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from xlt.orchestration.run import run
from xlt.results.rows import read_results
from xlt.tasks import DataError, get_task
from xlt.tasks.classification import read_glue_qqp_tsv, read_pawsx_tsv
from xlt.tasks.loading import MissingDataError, load_split


def test_pawsx_german_dev_and_test_are_complete(data_dir: Path) -> None:
    pawsx = get_task("pawsx")
    dev = load_split(pawsx, "dev", "de", "local", data_dir).examples
    test = load_split(pawsx, "test", "de", "local", data_dir).examples
    assert (len(dev), len(test)) == (2_000, 2_000)  # the header is not eaten with the first row (xtreme #70)
    assert (
        dev[0]["text_a"].startswith("Durch die Zusammenlegung des Four Rivers Council")
        and dev[0]["label"] == 1
    )
    assert {ex["label"] for ex in test} == {0, 1}


def test_pawsx_english_fixture_is_the_same_pair_as_german(data_dir: Path) -> None:
    en = list(read_pawsx_tsv(data_dir / "pawsx/hf_dummy/en/dev_2k.tsv", "en"))
    assert (
        len(en) == 4
        and en[0]["text_a"].startswith("From the merger of the Four Rivers Council")
        and en[0]["label"] == 1
    )


def test_pawsx_trains_on_english_only(data_dir: Path, tmp_path: Path) -> None:
    """Whatever language is asked for, train is x-final/en/train.tsv; translated_train.tsv is never read."""
    for lang, rows in (("en", "1\tEnglish a\tEnglish b\t1\n"), ("de", "1\tDeutsch a\tDeutsch b\t0\n")):
        folder = tmp_path / "x-final" / lang
        folder.mkdir(parents=True)
        name = "train.tsv" if lang == "en" else "translated_train.tsv"
        (folder / name).write_text("id\tsentence1\tsentence2\tlabel\n" + rows, encoding="utf-8")
    pawsx = get_task("pawsx")
    for lang in ("en", "de"):
        assert load_split(pawsx, "train", lang, "local", tmp_path).examples[0]["text_a"] == "English a"
    assert all("/en/" in raw.pattern and "translated" not in raw.pattern for raw in pawsx.raw["train"])
    assert pawsx.hub["train"].name == "en" and pawsx.train_task == "pawsx"
    with pytest.raises(MissingDataError):
        load_split(pawsx, "train", "de", "local", data_dir)  # the fixture folder is no data source


def test_qqp_glue_tsv_first_lines(data_dir: Path) -> None:
    train = list(read_glue_qqp_tsv(data_dir / "qqp/hf_dummy/QQP/train.tsv", "en"))
    assert [ex["label"] for ex in train] == [0, 1, 0]
    assert train[1] == {"text_a": "How do I control my horny emotions?", "text_b": "How do you control your horniness?",
                        "label": 1}  # fmt: skip
    spec = get_task("qqp")
    assert spec.metrics == ("acc", "f1") and spec.label_names[1] == "duplicate"
    with pytest.raises(DataError, match=r"test.tsv:1: header lacks \['is_duplicate'\]"):
        list(read_glue_qqp_tsv(data_dir / "qqp/hf_dummy/QQP/test.tsv", "en"))  # GLUE test: no labels


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("1\ta\tb\t2\n", "dev_2k.tsv:2: label '2' (expected 0 or 1)"),
        ("1\ta\tb\n", "dev_2k.tsv:2: 3 tab-separated fields, expected 4 as in the header"),
        ("1\ta\tb\t1\textra\n", "dev_2k.tsv:2: 5 tab-separated fields, expected 4 as in the header"),
    ],
)
def test_pawsx_bad_rows(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "dev_2k.tsv"
    path.write_text("id\tsentence1\tsentence2\tlabel\n" + body, encoding="utf-8")
    with pytest.raises(DataError, match=re.escape(message)):
        list(read_pawsx_tsv(path, "de"))


def test_fast_dev_run_qqp_then_pawsx(compose_cfg, data_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "glue_data").mkdir(parents=True)
    (data / "glue_data" / "QQP").symlink_to(data_dir / "qqp/hf_dummy/QQP")
    (data / "x-final").mkdir()
    (data / "x-final" / "en").symlink_to(data_dir / "pawsx/hf_dummy/en")  # the genuine first English lines
    (data / "pawsx").symlink_to(data_dir / "pawsx")  # real German dev/test
    cfg = compose_cfg(
        "model=tiny", "+intermediate=qqp", "+target=pawsx", "debug=fdr", f"data.dir={data}", "data.source=local",
        "target.languages=[en,de,fr]", "target.max_eval_examples=16", "scale.per_device_batch_size=4",
        "intermediate.batch_size=4", "target.batch_size=4", "intermediate.max_seq_length=64", "target.max_seq_length=64",
    )  # fmt: skip
    summary = run(cfg, tmp_path / "run")
    records = read_results(tmp_path / "run" / "results.jsonl")
    assert {r["metric"] for r in records if r["stage"] == "intermediate" and r["language"] == "en"} == {
        "acc",
        "f1",
    }
    assert {"test/pawsx/en/acc", "test/pawsx/de/acc", "test/pawsx/gap/acc"} <= set(summary)
    assert "test/pawsx/fr/acc" not in summary  # no French files: skipped, reported in one line
