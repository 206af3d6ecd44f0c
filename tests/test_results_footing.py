"""Issue 23, cases 1 and 2: comparisons on equal footing and model choice on dev, on a synthetic sweep
built by hand (rows as xlt.results.load reads them).

Case 1: MNLI seed 2 lacks sw. Scored over each run's own languages, MNLI "narrows the gap" by 2.25;
over the languages every compared run has (de, en, fr) it widens it by 0.25:

    intermediate seed  en   de   fr    sw     gap over de,en,fr   gap over own languages
    none         1     80   72   72    60     8                   12
    none         2     80   72   72    60     8                   12
    mnli         1     82   74   73.5  64.75  8.25                11.25
    mnli         2     82   74   73.5  -      8.25                8.25

Case 2: ANLI+ wins on test (mean 81 vs MNLI's 80), MNLI on English dev (85 vs 84): the choice is
MNLI, reported with its test score (80) beside none's (75.5 over de,en: none's seed 2 also has sw,
which the chosen runs lack), never ANLI+ chosen on test.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest

from tests.mdtable import md
from xlt.results.choice import best_intermediate_on_dev, xstilts_overall
from xlt.results.stats import gap_by_size, intermediate_effect, refusals

CASE1 = {
    ("none", 1): {"en": 80, "de": 72, "fr": 72, "sw": 60},
    ("none", 2): {"en": 80, "de": 72, "fr": 72, "sw": 60},
    ("mnli", 1): {"en": 82, "de": 74, "fr": 73.5, "sw": 64.75},
    ("mnli", 2): {"en": 82, "de": 74, "fr": 73.5},
}


def _rows(scores, dev=None, task="xnli", metric="acc", model="xlmr_large") -> pd.DataFrame:
    records = []
    for (inter, seed), by_lang in scores.items():
        base = {"stage": "target", "task": task, "metric": metric, "model": model, "model_params": 5.6e8,
                "intermediate": inter, "seed": seed, "peft": "none", "train_task": "mnli",
                "run_dir": f"{model}/{inter}/{seed}/{task}"}  # fmt: skip
        for lang, value in by_lang.items():
            records.append({**base, "split": "test", "language": lang, "value": float(value)})
        records.append(
            {**base, "split": "test", "language": "avg", "value": sum(by_lang.values()) / len(by_lang)}
        )  # as the run writes it
        if dev is not None:
            records.append({**base, "split": "dev", "language": "en", "value": float(dev[(inter, seed)])})
    return pd.DataFrame.from_records(records)


def test_case1_the_intermediate_effect_is_over_the_languages_every_run_has() -> None:
    table = intermediate_effect(_rows(CASE1))
    (row,) = table.itertuples()
    assert row.d_gap_mean == pytest.approx(0.25)  # was -2.25 from each run's own gap
    assert row.n == 2 and row.languages == "de,en,fr" and row.n_languages == 3
    assert row.dropped == "sw (xlmr_large/mnli/2)"  # the run that caused the drop
    assert row.d_en_mean == pytest.approx(2.0) and row.d_avg_non_en_mean == pytest.approx(1.75)


def test_case1_gap_by_size_averages_seeds_over_the_same_languages() -> None:
    table = gap_by_size(_rows(CASE1))
    mnli = table[table["intermediate"] == "mnli"].iloc[0]
    none = table[table["intermediate"] == "none"].iloc[0]
    assert mnli.gap_mean == pytest.approx(8.25) and mnli.gap_std == pytest.approx(0.0)  # was 11.25 and 8.25
    assert none.gap_mean == pytest.approx(
        8.0
    )  # the baseline too: over de,en,fr, as the runs it is set against
    assert set(table["languages"]) == {"de,en,fr"} and set(table["dropped"]) == {"sw (xlmr_large/mnli/2)"}


def test_no_shared_language_is_refused_in_one_line() -> None:
    scores = {("none", 1): {"en": 80, "de": 70}, ("mnli", 1): {"en": 82, "sw": 60}}
    (line,) = refusals(_rows(scores))
    assert line.startswith("refused: task=xnli") and "share only en" in line and "\n" not in line
    assert "lacking: de (xlmr_large/mnli/1); sw (xlmr_large/none/1)" in line
    assert gap_by_size(_rows(scores)).empty


CASE2_TEST = {
    ("none", 1): {"en": 80, "de": 70}, ("none", 2): {"en": 80, "de": 72, "sw": 50},
    ("mnli", 1): {"en": 84, "de": 76}, ("mnli", 2): {"en": 84, "de": 76},
    ("anli", 1): {"en": 85, "de": 77}, ("anli", 2): {"en": 85, "de": 77},
}  # fmt: skip
CASE2_DEV = {
    ("none", 1): 80,
    ("none", 2): 80,
    ("mnli", 1): 85,
    ("mnli", 2): 85,
    ("anli", 1): 84,
    ("anli", 2): 84,
}


def test_case2_the_winner_is_chosen_on_dev_and_reported_on_test() -> None:
    from xlt.results.xtreme_scores import best_intermediate

    rows = _rows(CASE2_TEST, CASE2_DEV)
    (row,) = best_intermediate_on_dev(rows).itertuples()
    assert row.chosen == "mnli" and row.dev_score == pytest.approx(85.0)
    # no held-out dev score (runs before it existed): chosen on the selection subset, and flagged
    assert row.chosen_on.startswith("en dev acc (selection subset, biased upwards") and not row.heldout
    assert row.test_score == pytest.approx(80.0) and row.none_test == pytest.approx(75.5)
    assert row.gain == pytest.approx(4.5) and row.seeds == 2 and row.languages == "de,en"
    assert row.dropped == "sw (xlmr_large/mnli/1, xlmr_large/mnli/2, xlmr_large/none/1)"
    assert row.compared == "mnli 85.00 (n=2), anli 84.00 (n=2)"
    # what the old table did: ranked on the test scores it then reports
    assert best_intermediate(rows.assign(metric="acc")).iloc[0]["best"] == "anli"


def test_a_target_without_dev_scores_gets_no_choice_and_the_overall_is_built_from_choices() -> None:
    rows = pd.concat([_rows(CASE2_TEST, CASE2_DEV),
                      _rows({("none", 1): {"en": 60, "de": 50}, ("mnli", 1): {"en": 70, "de": 60}},
                            task="pawsx")])  # fmt: skip
    table = best_intermediate_on_dev(rows).set_index("task")
    assert table.loc["pawsx", "chosen"] == "" and "never chosen on test" in table.loc["pawsx", "note"]
    overall = xstilts_overall(table.reset_index())
    (row,) = overall.itertuples()
    assert (row.n_tasks, row.choices, row.overall, row.none_overall) == (1, "xnli:mnli", 80.0, 75.5)
    assert not math.isnan(row.overall)


# ----------------------------------------------------------------------------- published numbers


def test_published_xtreme_prints_every_xlmr_large_number_with_its_citation(capsys) -> None:
    from pathlib import Path

    from xlt.results.__main__ import main
    from xlt.results.published import PUBLISHED, XTREME, XTREME_SECONDARY

    fixture = Path(__file__).resolve().parent / "fixtures" / "results" / "toy_sweep"
    assert (
        main([str(fixture), "--no-plots", "--out", "/tmp/xlt-published-test", "--published", "xtreme"]) == 0
    )
    out = md(capsys.readouterr().out)
    table = [p for p in PUBLISHED if p.source == "xtreme" and p.model == "xlmr_large"]
    assert {p.task for p in table} == {
        "xnli",
        "pawsx",
        "udpos",
        "panx",
        "xquad",
        "mlqa",
        "tydiqa",
        "bucc2018",
        "tatoeba",
    }  # every task; the values: test_published_values_match_reference_md
    for p in table:
        assert f"| xlmr_large | {p.task} | {p.metric} | {p.value:.1f} | - |" in out
    # the choice table's heading states the bias of the dev score it chose on (docs/analysis.md)
    assert "Best intermediate task per target" in out and "biased upwards" in out
    assert XTREME in out and XTREME_SECONDARY in out


def test_published_numbers_beside_ours_flag_a_difference_beyond_the_tolerance() -> None:
    from xlt.results.published import compare

    rows = _rows({("none", 1): {"en": 90, "de": 70}, ("none", 2): {"en": 88, "de": 70}})
    table = compare(rows, "xtreme").set_index(["task", "metric"])
    xnli = table.loc[("xnli", "acc")]
    assert xnli.ours == pytest.approx(79.5) and xnli.seeds == 2 and xnli["diff"] == pytest.approx(0.3)
    assert xnli.flag == "ok; ours over 2/15 languages" and xnli.languages == "2/15"
    assert (
        compare(rows, "xtreme", tolerance=0.1)
        .set_index(["task", "metric"])
        .loc[("xnli", "acc")]
        .flag.startswith("BEYOND TOLERANCE")
    )
    stilts = compare(
        _rows(CASE2_TEST, CASE2_DEV), "x-stilts", choices={("xnli", "xlmr_large", "none", "target"): "mnli"}
    )
    row = stilts.set_index("task").loc["xnli"]  # X-STILTs selected on MNLI's dev (jiant); these runs did not
    assert (
        row.intermediate == "mnli (selected on target)"
        and row.ours == pytest.approx(80.0)
        and row.published == 80.4
    )


def test_families_compared_say_what_differs_by_construction() -> None:
    from xlt.results.families import construction_notes

    assert construction_notes(["xlmr", "xlmr"]) == []
    lines = construction_notes(["xlmr", "qwen2.5", ""])
    assert lines[0].startswith("Families compared (qwen2.5, xlmr) differ by construction")
    assert "causal attention" in lines[1] and "29+ languages" in lines[1] and "bidirectional" in lines[2]


# ----------------------------------------------------------------------------- review follow-up (analysis2)


def test_xstilts_overall_averages_both_over_the_targets_where_both_exist() -> None:
    """pawsx has a chosen task but no run without one: its score must not enter the overall alone
    (the old overall was 90 over xnli+pawsx against none's 75.5 over xnli only)."""
    rows = pd.concat([_rows(CASE2_TEST, CASE2_DEV),
                      _rows({("mnli", 1): {"en": 100, "de": 100}}, dev={("mnli", 1): 90}, task="pawsx")])  # fmt: skip
    overall = xstilts_overall(best_intermediate_on_dev(rows))
    (row,) = overall.itertuples()
    assert row.n_tasks == 2 and row.n_compared == 1 and row.compared_tasks == "xnli"
    assert row.overall == pytest.approx(80.0) and row.none_overall == pytest.approx(75.5)
    only_unpaired = xstilts_overall(best_intermediate_on_dev(_rows({("mnli", 1): {"en": 1, "de": 1}},
                                                                   dev={("mnli", 1): 9}, task="pawsx")))  # fmt: skip
    assert only_unpaired.iloc[0].n_compared == 0 and math.isnan(only_unpaired.iloc[0].overall)


def test_choice_scores_are_over_the_paired_seeds() -> None:
    """MNLI ran seeds 1-3 (dev varies by seed), none seeds 1-2: test and none scores over seeds 1, 2."""
    test = {("none", 1): {"en": 80, "de": 70}, ("none", 2): {"en": 82, "de": 72},
            ("mnli", 1): {"en": 84, "de": 76}, ("mnli", 2): {"en": 86, "de": 78}, ("mnli", 3): {"en": 60, "de": 50}}  # fmt: skip
    dev = {("none", 1): 80, ("none", 2): 81, ("mnli", 1): 85, ("mnli", 2): 87, ("mnli", 3): 83}
    (row,) = best_intermediate_on_dev(_rows(test, dev)).itertuples()
    assert row.dev_score == pytest.approx(85.0)
    assert row.test_score == pytest.approx(81.0) and row.test_seeds == 2  # was 74.0 over seeds 1-3
    assert row.none_test == pytest.approx(76.0) and row.none_seeds == 2
    assert row.gain == pytest.approx(5.0) and row.seeds == 2 and "seeds 3 left out" in row.note


def test_the_choice_table_labels_its_score_columns_by_split(capsys) -> None:
    from xlt.results.choice import format_best_on_dev

    table = best_intermediate_on_dev(_rows(CASE2_TEST, CASE2_DEV))
    header = md(format_best_on_dev(table, "dev")).splitlines()[0]
    assert "| dev | none dev |" in header and "test" not in header
    assert "(n=2)" in format_best_on_dev(table).splitlines()[2]
    from xlt.results.published import compare, format_published

    rows = _rows(CASE2_TEST, CASE2_DEV)
    assert "beside ours (dev," in format_published(compare(rows, "xtreme", "dev"), "xtreme", split="dev")


def test_published_citations_name_what_was_read() -> None:
    """V rows were read in mT5's Table 2 (reference.md section 4.1): cite it, XTREME's table unverified."""
    from xlt.results.published import PUBLISHED

    for p in PUBLISHED:
        if p.source == "xtreme":
            assert "table number unverified" in p.citation
        if p.checked == "V":
            assert "read in Xue et al. 2021, mT5" in p.citation
        else:
            assert "secondary source" in p.citation


def test_a_lora_choice_never_stands_for_the_full_fine_tuning_one() -> None:
    from xlt.results.published import choices_from, compare

    full = _rows(CASE2_TEST, CASE2_DEV)
    lora_dev = {k: (90 if k[0] == "anli" else v) for k, v in CASE2_DEV.items()}
    lora = _rows(CASE2_TEST, lora_dev).assign(peft="lora", run_dir=lambda d: d["run_dir"] + "/lora")
    rows = pd.concat([full, lora])  # LoRA's choice (anli) comes after full fine-tuning's (mnli)
    choices = choices_from(best_intermediate_on_dev(rows))
    assert choices[("xnli", "xlmr_large", "none", "target")] == "mnli"
    assert choices[("xnli", "xlmr_large", "lora", "target")] == "anli"
    row = compare(rows, "x-stilts", choices=choices).set_index("task").loc["xnli"]
    assert (
        row.intermediate == "mnli (selected on target)" and row.ours == pytest.approx(80.0) and row.seeds == 2
    )


def test_a_sweep_mixing_selection_sets_never_ranks_across_them() -> None:
    """ANLI+ runs selected on MNLI's dev (select_on=train_task) score 90 on their dev set; the runs
    selected on XNLI's dev choose among themselves (mnli), and the train_task runs form their own row."""
    target_sel = _rows(CASE2_TEST, CASE2_DEV).assign(select_on="target")
    anli_dev = {k: 90 for k in CASE2_DEV if k[0] != "mnli"}
    train_sel = _rows({k: v for k, v in CASE2_TEST.items() if k[0] != "mnli"}, anli_dev).assign(
        select_on="train_task", run_dir=lambda d: d["run_dir"] + "/train_task"
    )
    table = best_intermediate_on_dev(pd.concat([target_sel, train_sel])).set_index("select_on")
    assert table.loc["target", "chosen"] == "mnli" and table.loc["train_task", "chosen"] == "anli"
    assert table.loc["target", "compared"] == "mnli 85.00 (n=2), anli 84.00 (n=2)"
    effect = intermediate_effect(pd.concat([target_sel, train_sel]))
    assert set(effect["select_on"]) == {"target", "train_task"}
    overall = xstilts_overall(table.reset_index())
    assert sorted(overall["select_on"]) == ["target", "train_task"]
    from xlt.results.xtreme_scores import best_intermediate, xtreme_task_scores

    mixed = pd.concat([target_sel, train_sel])
    scores = xtreme_task_scores(mixed)
    assert len(scores) == 10 and set(scores["runs"]) == {1}  # 6 + 4 runs, none merged across selection sets
    old_table = best_intermediate(mixed).set_index("select_on")
    assert (
        old_table.loc["train_task", "compared"].startswith("anli")
        and "mnli" not in old_table.loc["train_task", "compared"]
    )


def test_a_run_records_the_set_it_selected_on() -> None:
    from xlt.results.load import CONDITION, rows_from_wandb_runs
    from xlt.results.rows import ResultRow, RunContext

    assert "select_on" in CONDITION
    ctx = RunContext("m", 1, "none", "xnli", "mnli", 1, "c", "local", select_on="train_task")
    assert ResultRow("target", "xnli", "test", "en", "acc", 1.0).to_record(ctx)["select_on"] == "train_task"

    class Run:
        id, summary = "r", {"test/xnli/en/acc": 80.0}
        config = {"model": {"name": "m"}, "target": {"select_on": "train_task"}, "seed": 1}

    assert set(rows_from_wandb_runs([Run()])["select_on"]) == {"train_task"}


def test_dropped_names_the_runs_that_caused_each_drop_and_caps_them() -> None:
    from xlt.results.stats import dropped_languages

    scores = {("none", seed): {"en": 80, "de": 70, "sw": 60} for seed in range(1, 6)}
    scores.update({("mnli", seed): {"en": 80, "de": 70} for seed in range(1, 6)})
    rows = _rows(scores).query("language != 'avg'")
    assert dropped_languages(rows) == [
        "sw (xlmr_large/mnli/1, xlmr_large/mnli/2, xlmr_large/mnli/3, +2 more)"
    ]
    lora = rows.assign(peft="lora", run_dir=rows["run_dir"] + "/lora").query("intermediate == 'mnli'")
    assert dropped_languages(pd.concat([rows.query("intermediate == 'none'"), lora]), most=1) == [
        "sw (xlmr_large/mnli/1/lora, +4 more)"
    ]


REFERENCE_COLUMNS = {"XNLI": ("xnli", "acc"), "PAWS-X": ("pawsx", "acc"), "WikiAnn-NER": ("panx", "f1"),
                     "XQuAD": ("xquad", "f1"), "MLQA": ("mlqa", "f1"), "TyDiQA-GoldP": ("tydiqa", "f1")}  # fmt: skip
REFERENCE_ROWS = {"XLM-R (large)": "xtreme", "X-STILTs": "x-stilts"}


def _reference_numbers() -> dict[tuple[str, str, str], float]:
    """(source, task, metric) -> value, parsed from reference.md section 4.1 (the mT5 Table 2 copy)."""
    import os
    from pathlib import Path

    path = Path(
        os.environ.get(
            "XLT_REFERENCE_MD", Path(__file__).resolve().parents[2] / "shared" / "docs" / "reference.md"
        )
    )
    if not path.is_file():
        pytest.skip(f"{path}: absent (the shared reference notes); set XLT_REFERENCE_MD")
    section = path.read_text().split("## 4.", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    out = {}
    for line in lines[2:]:
        cells = [c.strip().strip("*").strip() for c in line.strip("|").split("|")]
        source = REFERENCE_ROWS.get(cells[0])
        if source is None:
            continue
        for name, cell in zip(header[1:], cells[1:], strict=False):
            if name in REFERENCE_COLUMNS:
                out[(source, *REFERENCE_COLUMNS[name])] = float(cell)
    return out


def test_published_values_match_reference_md() -> None:
    """Every published number is checked against reference.md section 4 where it has it (no hand copy):
    each "V" value must be there and equal; every number there must be in the table."""
    from xlt.results.published import PUBLISHED

    reference = _reference_numbers()
    assert len(reference) == 12  # the two rows of section 4.1, six tasks each
    ours = {(p.source, p.task, p.metric): p for p in PUBLISHED if p.model == "xlmr_large"}
    for key, value in reference.items():
        assert key in ours and ours[key].value == pytest.approx(value), key
    for key, p in ours.items():
        if p.checked == "V":
            assert key in reference, f"{key} marked V but not in reference.md section 4"
