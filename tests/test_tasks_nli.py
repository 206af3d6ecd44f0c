"""NLI and Tatoeba readers on the real files (and the genuine first lines of the others), plus bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from xlt.tasks import DataError, get_task
from xlt.tasks.loading import MissingDataError, load_split, resolve_source
from xlt.tasks.nli import (
    NLI_LABELS,
    read_anli_jsonl,
    read_glue_nli_tsv,
    read_multinli_jsonl,
    read_nli_tsv3,
    read_xnli_mt_tsv,
    read_xnli_official_tsv,
)

ENT, NEU, CON = (NLI_LABELS.index(x) for x in ("entailment", "neutral", "contradiction"))


def test_xnli_real_test_sets_are_complete_and_parallel(data_dir: Path) -> None:
    xnli = get_task("xnli")
    sets = {lang: load_split(xnli, "test", lang, "local", data_dir).examples for lang in ("en", "de", "sw")}
    assert {lang: len(ex) for lang, ex in sets.items()} == {"en": 5010, "de": 5010, "sw": 5010}
    # XNLI is parallel: the same label sequence in every language, 1,670 of each label.
    labels = [ex["label"] for ex in sets["en"]]
    assert [ex["label"] for ex in sets["de"]] == labels == [ex["label"] for ex in sets["sw"]]
    assert [labels.count(i) for i in range(3)] == [1670, 1670, 1670]
    assert sets["en"][0]["text_b"] == "I havent spoken to him again."  # quotes/tabs stripped in this layout
    assert sets["en"][0]["label"] == CON


def test_xnli_english_dev_is_the_selection_split(data_dir: Path) -> None:
    dev = load_split(get_task("xnli"), "dev", "en", "local", data_dir)
    assert len(dev.examples) == 2490
    assert dev.examples[0]["label"] == NEU


def test_missing_language_is_one_line_naming_the_files(data_dir: Path) -> None:
    with pytest.raises(MissingDataError) as err:
        load_split(get_task("xnli"), "test", "ar", "local", data_dir)
    assert "xnli/test/ar" in str(err.value) and "XNLI-1.0/xnli.test.tsv" in str(err.value)
    assert "\n" not in str(err.value)


def test_snli_drops_nothing_silently_and_matches_official_counts(data_dir: Path) -> None:
    dev = load_split(get_task("snli"), "dev", "en", "local", data_dir)
    assert len(dev.examples) == 9842 and dev.dropped == 0  # the e-SNLI files hold labelled pairs only


def test_anli_rounds_join_with_plus(data_dir: Path) -> None:
    anli = get_task("anli_rounds")
    joined = load_split(anli, "dev_r1+dev_r2", "en", "local", data_dir)
    assert len(joined.examples) == 2000
    r3 = load_split(anli, "dev_r3", "en", "local", data_dir)
    assert len(r3.examples) == 1198  # the analysis CSV lacks 2 of the official 1,200


def test_tatoeba_pairs_line_aligned(data_dir: Path) -> None:
    tatoeba = get_task("tatoeba")
    de = load_split(tatoeba, "test", "de", "local", data_dir).examples
    assert len(de) == 1000 and de[0] == {
        "text": "Maria sagte, sie wisse nicht, wo Tom sei.",
        "en": "Mary said she didn't know where Tom was.",
    }
    assert len(load_split(tatoeba, "test", "te", "local", data_dir).examples) == 234


# The genuine first lines of the original files (HF dummy data), for the formats not present in full.
@pytest.mark.parametrize(
    ("reader", "relpath", "lang", "first_label"),
    [
        (read_multinli_jsonl, "mnli/hf_dummy/multinli_1.0/multinli_1.0_train.jsonl", "en", NEU),
        (read_glue_nli_tsv, "mnli/hf_dummy/glue_MNLI/train.tsv", "en", NEU),
        (read_xnli_mt_tsv, "xnli/hf_dummy/XNLI-MT-1.0/multinli/multinli.train.en.tsv", "en", NEU),
        (read_xnli_official_tsv, "xnli/hf_dummy/XNLI-1.0/xnli.test.tsv", "de", CON),
        (read_anli_jsonl, "anli/hf_dummy/anli_v0.1/R1/train.jsonl", "en", ENT),
    ],
)
def test_original_formats_on_genuine_lines(
    data_dir: Path, reader, relpath: str, lang: str, first_label: int
) -> None:
    rows = [r for r in reader(data_dir / relpath, lang) if not r.get("_drop")]
    assert rows, relpath
    assert rows[0]["label"] == first_label
    assert rows[0]["text_a"] and rows[0]["text_b"]


def test_xnli_official_layout_selects_one_language(data_dir: Path) -> None:
    rows = list(read_xnli_official_tsv(data_dir / "xnli/hf_dummy/XNLI-1.0/xnli.test.tsv", "de"))
    assert len(rows) == 1 and rows[0]["text_b"] == "Ich habe nicht wieder mit ihm gesprochen."


def test_unknown_label_names_file_line_and_choices(tmp_path: Path) -> None:
    bad = tmp_path / "dev-de.tsv"
    bad.write_text("a\tb\tentailment\nc\td\tmaybe\n")
    with pytest.raises(DataError) as err:
        list(read_nli_tsv3(bad, "de"))
    assert f"{bad}:2" in str(err.value) and "'maybe'" in str(err.value) and "entailment" in str(err.value)


def test_wrong_column_count_and_missing_field(tmp_path: Path) -> None:
    bad = tmp_path / "x.tsv"
    bad.write_text("only\ttwo\n")
    with pytest.raises(DataError, match=r"x.tsv:1: expected 3 tab-separated fields"):
        list(read_nli_tsv3(bad, "de"))
    jsonl = tmp_path / "train.jsonl"
    jsonl.write_text('{"sentence1": "a", "gold_label": "neutral"}\n')
    with pytest.raises(DataError, match=r"train.jsonl:1: missing field 'sentence2'"):
        list(read_multinli_jsonl(jsonl, "en"))


def test_local_source_without_directory_is_one_line(tmp_path: Path) -> None:
    # A directory the user named but that is absent is an error for local and auto alike (no
    # silent fall back to the hub); data.source=hub does not read it.
    for source in ("local", "auto"):
        with pytest.raises(DataError, match=r"data\.dir=.*nope: no such directory"):
            resolve_source(source, tmp_path / "nope")
    assert resolve_source("hub", tmp_path / "nope") == ("hub", None)
    assert resolve_source("hub", None) == ("hub", None)
