"""Result rows, gap arithmetic and atomic writes, against hand-computed values."""

from __future__ import annotations

import json
import math

import pytest

from xlt.results.gap import compute_gap
from xlt.results.report import format_table
from xlt.results.rows import ResultRow, RunContext, language_rows, read_results, write_results

CTX = RunContext(model="m", model_params=10, intermediate="mnli", target="xnli", train_task="mnli", seed=1,
                 git_commit="abc", data_source="local")  # fmt: skip


def test_gap_matches_hand_computation() -> None:
    # en 80, others 70 and 60 -> mean 65, gap 15, relative 1 - 65/80 = 0.1875
    gap = compute_gap({"en": 80.0, "de": 70.0, "sw": 60.0})
    assert gap is not None
    assert gap.avg_non_en == pytest.approx(65.0)
    assert gap.gap == pytest.approx(15.0)
    assert gap.rel_gap == pytest.approx(0.1875)
    assert gap.n_non_en == 2


def test_gap_of_xlmr_large_translate_train_all_row() -> None:
    # Goyal et al. 2021 (fairseq README), XNLI translate-train-all, XLM-R large: en 89.1 and 14 others;
    # reference.md derives en - mean(others) = 5.89.
    others = [85.1, 86.6, 85.7, 85.3, 85.9, 83.5, 83.2, 83.1, 83.7, 81.5, 83.7, 81.6, 78.0, 78.1]
    scores = {"en": 89.1} | {f"l{i}": v for i, v in enumerate(others)}
    gap = compute_gap(scores)
    assert gap is not None and round(gap.gap, 2) == 5.89


def test_gap_undefined_without_english_or_others() -> None:
    assert compute_gap({"de": 1.0}) is None
    assert compute_gap({"en": 1.0}) is None
    assert math.isnan(compute_gap({"en": 0.0, "de": 1.0}).rel_gap)  # type: ignore[union-attr]


def test_language_rows_aggregates() -> None:
    rows = language_rows("target", "xnli", "test", {"en": {"acc": 80.0}, "de": {"acc": 70.0}, "sw": {"acc": 60.0}},
                         {"en": 5, "de": 5, "sw": 5})  # fmt: skip
    by_lang = {r.language: r.value for r in rows}
    assert by_lang["avg"] == pytest.approx(70.0)
    assert by_lang["avg_non_en"] == pytest.approx(65.0)
    assert by_lang["gap"] == pytest.approx(15.0)
    assert by_lang["rel_gap"] == pytest.approx(0.1875)
    no_gap = language_rows("target", "tatoeba", "test", {"de": {"acc": 50.0}}, with_gap=False)
    assert {r.language for r in no_gap} == {"de", "avg"}


def test_results_file_round_trip_and_context(tmp_path) -> None:
    path = tmp_path / "results.jsonl"
    rows = [ResultRow("target", "xnli", "test", "de", "acc", 70.0, 5)]
    write_results(path, rows, CTX)
    records = read_results(path)
    lines = path.read_text().splitlines()
    assert records == [json.loads(lines[0])] and json.loads(lines[1])["end_of_results"]  # the end marker
    assert records[0]["model"] == "m" and records[0]["intermediate"] == "mnli" and records[0]["value"] == 70.0
    assert not list(tmp_path.glob(".*tmp"))  # no temporary left behind


def test_results_write_is_atomic(tmp_path, monkeypatch) -> None:
    path = tmp_path / "results.jsonl"
    write_results(path, [ResultRow("target", "xnli", "test", "de", "acc", 1.0)], CTX)
    before = path.read_text()

    class Boom(Exception):
        pass

    def explode(*args, **kwargs):
        raise Boom

    monkeypatch.setattr("os.replace", explode)
    with pytest.raises(Boom):
        write_results(path, [ResultRow("target", "xnli", "test", "de", "acc", 2.0)], CTX)
    assert path.read_text() == before
    assert not list(tmp_path.glob(".*tmp"))


def test_malformed_results_line_names_file_and_line(tmp_path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_text('{"a": 1}\nnot json\n')
    with pytest.raises(ValueError, match=r"results.jsonl:2: not a JSON object"):
        read_results(path)


def test_table_lists_languages_then_aggregates() -> None:
    rows = language_rows(
        "target", "xnli", "test", {"en": {"acc": 80.0}, "de": {"acc": 70.0}}, {"en": 3, "de": 3}
    )
    table = format_table(rows, "target", "xnli", "test")
    lines = table.splitlines()
    assert lines[0] == "target / xnli / test"
    assert [ln.split()[0] for ln in lines[3:5]] == ["en", "de"]
    assert "12.5%" in table  # rel_gap = 1 - 70/80


def test_a_results_file_is_complete_only_with_its_end_marker(tmp_path) -> None:
    """A file cut at a line boundary is valid JSONL; the marker (row count, checksum) tells."""
    from xlt.results.rows import IncompleteResults

    path = tmp_path / "results.jsonl"
    rows = [
        ResultRow("target", "xnli", "test", lang, "acc", v, 5) for lang, v in (("en", 80.0), ("sw", 60.0))
    ]
    write_results(path, rows, CTX)
    lines = path.read_text().splitlines(keepends=True)
    assert len(read_results(path)) == 2
    path.write_text("".join(lines[:1]))  # cut after the first row
    with pytest.raises(IncompleteResults, match="no end marker after its 1 rows"):
        read_results(path)
    path.write_text("".join([lines[0], lines[2]]))  # a row lost, the marker kept
    with pytest.raises(IncompleteResults, match="1 rows, the end marker says 2"):
        read_results(path)
    path.write_text("".join([lines[0], lines[1].replace("60.0", "66.0"), lines[2]]))  # a value edited
    with pytest.raises(IncompleteResults, match="checksum"):
        read_results(path)


def test_non_finite_values_are_refused(tmp_path) -> None:
    import math

    for bad in (math.nan, math.inf):
        with pytest.raises(ValueError, match="not finite"):
            write_results(tmp_path / "r.jsonl", [ResultRow("target", "xnli", "test", "en", "acc", bad)], CTX)
    assert not (tmp_path / "r.jsonl").exists()
