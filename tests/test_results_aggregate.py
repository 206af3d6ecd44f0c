"""Sweep aggregation (xlt.results.load, .stats, .xtreme_scores, .tables; python -m xlt.results) on the
toy sweep fixture, against numbers computed by hand (tests/fixtures/results/make_fixture.py lists the scores)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from tests.mdtable import md
from xlt.results.__main__ import main as results_main
from xlt.results.load import load_sweep, rows_from_wandb_runs
from xlt.results.stats import (
    gap_by_size,
    gaps_per_run,
    intermediate_effect,
    model_sizes,
    score_by_size,
    seed_stats,
)

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "results" / "toy_sweep"
UNFINISHED = "intermediate=anli,model=big,seed=1,target=xnli"
T_975_DF1 = 12.706204736174694  # Student t quantile, 0.975, 1 degree of freedom
T_975_DF2 = 4.302652729749462


def one(table, **where):
    selected = table
    for key, value in where.items():
        selected = selected[selected[key] == value]
    assert len(selected) == 1, (where, selected)
    return selected.iloc[0]


@pytest.fixture(scope="module")
def sweep():
    return load_sweep(FIXTURE)


def test_every_job_dir_is_found_and_the_unfinished_one_is_reported(sweep) -> None:
    assert len(sweep.run_dirs) == 9
    assert sweep.rows["run_dir"].nunique() == 8
    (problem,) = sweep.problems
    assert problem.path == FIXTURE / UNFINISHED / "results.jsonl"
    assert "missing" in str(problem) and "unfinished; stages done: intermediate" in str(problem)
    assert "\n" not in str(problem)


def test_seed_stats_match_hand_computation() -> None:
    stats = seed_stats([1.0, 2.0, 3.0])
    assert stats["n"] == 3 and stats["mean"] == pytest.approx(2.0) and stats["std"] == pytest.approx(1.0)
    half = T_975_DF2 / math.sqrt(3)
    assert stats["ci95_low"] == pytest.approx(2.0 - half) and stats["ci95_high"] == pytest.approx(2.0 + half)
    single = seed_stats([5.0])
    assert single["mean"] == 5.0 and math.isnan(single["std"]) and math.isnan(single["ci95_low"])


def test_gaps_per_run_match_hand_computation(sweep) -> None:
    gaps = gaps_per_run(sweep.rows)
    assert len(gaps) == 8
    row = one(gaps, model="small", intermediate="none", seed=2)
    assert (row.en, row.avg_non_en, row.gap) == (82.0, 65.0, 17.0)
    assert row.rel_gap == pytest.approx(1 - 65 / 82)
    assert row.n_languages == 3 and row.languages == "de,en,sw"
    assert one(gaps, model="big", intermediate="mnli", seed=1).gap == pytest.approx(6.0)


def test_recomputed_gaps_agree_with_the_rows_the_runs_stored(sweep) -> None:
    stored = sweep.rows[(sweep.rows["split"] == "test") & (sweep.rows["language"] == "gap")]
    gaps = gaps_per_run(sweep.rows).set_index("run_dir")["gap"]
    for run_dir, value in zip(stored["run_dir"], stored["value"], strict=True):
        assert gaps[run_dir] == pytest.approx(value)


def test_gap_by_size_over_seeds(sweep) -> None:
    table = gap_by_size(sweep.rows)
    assert list(zip(table["intermediate"], table["model"], strict=True)) == [
        ("none", "small"), ("none", "big"), ("mnli", "small"), ("mnli", "big"),
    ]  # fmt: skip
    small = one(table, model="small", intermediate="none")
    assert small.n == 2 and small.seeds == "1,2" and small.params == 100_000_000
    assert small.gap_mean == pytest.approx(16.0) and small.gap_std == pytest.approx(math.sqrt(2))
    assert small.gap_ci95_low == pytest.approx(16.0 - T_975_DF1) and small.gap_ci95_high == pytest.approx(
        16.0 + T_975_DF1
    )
    assert small.rel_gap_mean == pytest.approx((0.1875 + 1 - 65 / 82) / 2)
    assert small.en_mean == pytest.approx(81.0) and small.avg_non_en_mean == pytest.approx(65.0)
    big = one(table, model="big", intermediate="mnli")
    assert big.gap_mean == pytest.approx(6.5) and big.gap_std == pytest.approx(math.sqrt(0.5))
    assert big.gap_ci95_high - big.gap_mean == pytest.approx(T_975_DF1 * math.sqrt(0.5) / math.sqrt(2))
    assert big.params_non_embedding == 700_000_000


def test_intermediate_effect_is_paired_by_seed(sweep) -> None:
    table = intermediate_effect(sweep.rows)
    assert set(table["intermediate"]) == {"mnli"}
    small = one(table, model="small")
    # seed 1: gap 12 - 15, seed 2: 14 - 17; en: 84 - 80, 84 - 82
    assert small.n == 2 and small.d_gap_mean == pytest.approx(-3.0) and small.d_gap_std == pytest.approx(0.0)
    assert small.d_en_mean == pytest.approx(3.0) and small.d_avg_non_en_mean == pytest.approx(6.0)
    big = one(table, model="big")
    # seed 1: 6 - 8, seed 2: 7 - 7
    assert big.d_gap_mean == pytest.approx(-1.0) and big.d_gap_std == pytest.approx(math.sqrt(2))
    assert big.d_gap_ci95_low == pytest.approx(-1.0 - T_975_DF1)


def test_scores_by_size_per_language(sweep) -> None:
    table = score_by_size(sweep.rows)
    assert one(table, model="small", intermediate="none", language="de").score_mean == pytest.approx(68.0)
    assert one(table, model="big", intermediate="mnli", language="avg_non_en").score_mean == pytest.approx(
        85.5
    )
    assert {"gap", "rel_gap"}.isdisjoint(table["language"])
    assert list(model_sizes(sweep.rows)["model"]) == ["small", "big"]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: p.write_text(p.read_text() + "{not json\n"), "line 11 follows the end marker"),
        (lambda p: p.write_text("{not json\n" + p.read_text()), "line 1: not a JSON object"),
        (lambda p: p.write_text(p.read_text().replace('"seed": 1, ', "", 1)), "altered"),
        (lambda p: p.write_text(p.read_text().replace('"value": 79.0', '"value": "high"', 1)), "altered"),
        # cut at a line boundary (the sw row and the summary rows lost): valid JSONL, but incomplete
        (
            lambda p: p.write_text("".join(p.read_text().splitlines(keepends=True)[:3])),
            "incomplete (no end marker after its 3 rows)",
        ),
        (lambda p: p.write_text(""), "incomplete (no end marker after its 0 rows)"),
    ],
)
def test_bad_files_are_one_line_problems_naming_the_file(tmp_path: Path, damage, message: str) -> None:
    root = tmp_path / "sweep"
    shutil.copytree(FIXTURE, root)
    bad = root / "intermediate=none,model=small,seed=1,target=xnli" / "results.jsonl"
    damage(bad)
    sweep = load_sweep(root)
    problems = [p for p in sweep.problems if UNFINISHED not in str(p.path)]
    assert len(problems) == 1 and problems[0].path == bad
    assert message in str(problems[0]) and "\n" not in str(problems[0])
    assert sweep.rows["run_dir"].nunique() == 7  # the others are still analysed


def test_a_run_found_twice_is_reported(tmp_path: Path) -> None:
    shutil.copytree(FIXTURE, tmp_path / "a")
    shutil.copytree(FIXTURE / "intermediate=none,model=big,seed=2,target=xnli", tmp_path / "b" / "copy")
    sweep = load_sweep([tmp_path / "a", tmp_path / "b"])
    assert any("same condition and seed" in str(p) and "model=big" in str(p) for p in sweep.problems)


def test_cli_writes_tables_and_plots(tmp_path: Path, capsys) -> None:
    out = tmp_path / "analysis"
    assert results_main([str(FIXTURE), "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert "| xnli | acc | none | small | 100M | 2 | 81.00 | 65.00 | 16.00 [3.29, 28.71] |" in md(printed.out)
    assert f"{UNFINISHED}/results.jsonl: missing" in printed.err
    for name in ("runs", "scores_by_size", "gaps_per_run", "gap_by_size", "intermediate_effect"):
        assert (out / f"{name}.csv").stat().st_size > 0
    assert UNFINISHED in (out / "problems.txt").read_text()
    for png in ("gap_vs_size_xnli_acc.png", "scores_vs_size_xnli_acc.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    assert results_main([str(FIXTURE), "--out", str(out), "--x", "params_non_embedding"]) == 0
    assert (out / "gap_vs_size_xnli_acc_params_non_embedding.png").read_bytes()[:4] == b"\x89PNG"
    assert results_main([str(FIXTURE), "--out", str(out), "--no-plots", "--strict"]) == 1
    assert results_main([str(tmp_path / "nowhere")]) == 2


def test_rows_from_wandb_runs_use_summary_and_config() -> None:
    config = {"model": {"name": "big", "params": 10}, "intermediate": None, "target": {"train_task": "mnli"},
              "seed": 3, "scale": {"peft": "none"}}  # fmt: skip
    summary = {"test/xnli/en/acc": 90.0, "test/xnli/de/acc": 80.0, "test/xnli/sw/acc": 70.0,
               "test/xnli/gap/acc": 15.0, "dev/anli/en/acc@intermediate": 50.0, "model_params": 12, "_step": 5}  # fmt: skip
    rows = rows_from_wandb_runs([SimpleNamespace(id="abc", config=config, summary=summary)])
    assert set(rows["language"]) == {"en", "de", "sw", "gap"}  # the intermediate-stage key is left out
    gap = one(gaps_per_run(rows), model="big")
    assert gap.gap == pytest.approx(15.0) and gap.intermediate == "none" and gap.seed == 3
    assert set(rows["model_params"]) == {12} and set(rows["run_dir"]) == {"wandb:abc"}


def test_fixture_results_are_what_make_fixture_says() -> None:
    """Guards the hand-computed numbers above against an edited fixture."""
    path = FIXTURE / "intermediate=mnli,model=small,seed=2,target=xnli" / "results.jsonl"
    from xlt.results.rows import read_results

    records = read_results(path)
    test = {r["language"]: r["value"] for r in records if r["split"] == "test"}
    assert test == {"en": 84.0, "de": 74.0, "sw": 66.0, "avg": pytest.approx(224 / 3), "avg_non_en": 70.0,
                    "gap": 14.0, "rel_gap": pytest.approx(1 - 70 / 84)}  # fmt: skip


@pytest.mark.parametrize("notebook", sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb")),
                         ids=lambda p: p.name)  # fmt: skip
def test_notebooks_execute_on_the_fixture(notebook: Path, tmp_path: Path, monkeypatch) -> None:
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("XLT_SWEEP_DIR", str(FIXTURE))
    monkeypatch.setenv("XLT_ANALYSIS_DIR", str(tmp_path / "analysis"))
    monkeypatch.delenv("XLT_WANDB_PATH", raising=False)
    nb = nbformat.read(notebook, as_version=4)
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(notebook.parent)}}
    ).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)
    text = "".join(o.get("text", "") for o in outputs)
    assert "8 runs with results" in text and f"{UNFINISHED}/results.jsonl: missing" in text
    assert (tmp_path / "analysis" / "gap_vs_size_xnli_acc.png").is_file()


MULTI = Path(__file__).resolve().parent / "fixtures" / "results" / "multi_target"


def test_xtreme_overall_matches_hand_computation() -> None:
    from xlt.results.xtreme_scores import xtreme_overall, xtreme_task_scores

    rows = load_sweep(MULTI).rows
    scores = xtreme_task_scores(rows)
    by = {(r.intermediate, r.seed, r.task): r.score for r in scores.itertuples()}
    assert by == {("none", 1, "xnli"): 75, ("none", 1, "udpos"): 80, ("none", 1, "xquad"): 55,
                  ("none", 1, "tatoeba"): 50, ("none", 1, "bucc2018"): 30, ("mnli", 1, "xnli"): 80,
                  ("mnli", 1, "xquad"): 60, ("none", 2, "xnli"): 75}  # fmt: skip
    overall = xtreme_overall(rows)
    got = {
        (r.intermediate, r.seed): (r.overall, r.tasks, r.n_tasks, r.partial, r.complete)
        for r in overall.itertuples()
    }
    # (75 + 80 + 55 + 50 + 30) / 5 and (80 + 60) / 2; seed 2 ran one target only: no overall row.
    # The fixture's runs score 1-2 languages of each task (XTREME: xnli 15, udpos 33, bucc 4, ...).
    assert got == {
        ("none", 1): (58.0, "xnli,udpos,bucc2018,tatoeba,xquad", 5,
                      "xnli 2/15,udpos 2/33,bucc2018 1/4,tatoeba 2/36,xquad 2/11", False),
        ("mnli", 1): (70.0, "xnli,xquad", 2, "xnli 2/15,xquad 2/11", False),
    }  # fmt: skip


def _all_nine(missing: tuple[str, str] | None = None) -> pd.DataFrame:
    """Result rows of one run family with every XTREME task on every language, each language scoring
    the task's index in XTREME order times 10 (so each task score is known), except ``missing``."""
    from xlt.metrics.xtreme import QA_TASKS, XTREME_TASK2LANGS, XTREME_TASK_METRIC

    records = []
    for i, (task, langs) in enumerate(XTREME_TASK2LANGS.items()):
        kind = XTREME_TASK_METRIC[task]
        metrics = (
            ("em", "f1") if task in QA_TASKS else ("f1",) if kind in ("seqeval", "bucc_f1") else ("acc",)
        )
        for metric in metrics:
            for lang in [*(lang for lang in langs if (task, lang) != missing), "avg"]:
                records.append({"stage": "target", "split": "test", "task": task, "language": lang, "metric": metric,
                                "value": 10.0 * i, "run_dir": f"run/{task}", "model": "m", "peft": "none",
                                "intermediate": "none", "seed": 1})  # fmt: skip
    return pd.DataFrame.from_records(records)


def test_xtreme_overall_is_complete_only_with_every_language_of_every_task() -> None:
    from xlt.results.tables import format_overall_table
    from xlt.results.xtreme_scores import xtreme_overall

    full = one(xtreme_overall(_all_nine()), model="m")
    assert (full.overall, full.n_tasks, full.partial, full.complete) == (40.0, 9, "", True)  # mean of 0..80
    assert (
        "| m | none | 1 | 40.00 | pawsx, xnli, panx, udpos, bucc2018, tatoeba, xquad, mlqa, tydiqa |"
        in md(format_overall_table(xtreme_overall(_all_nine())))
    )
    cut = xtreme_overall(_all_nine(missing=("udpos", "yo")))
    assert (one(cut, model="m").partial, one(cut, model="m").complete) == ("udpos 32/33", False)
    assert md(format_overall_table(cut)).endswith(
        "mlqa, tydiqa (some languages only: udpos 32/33: not XTREME's full score) |"
    )


def test_cli_prints_the_overall_with_its_tasks(tmp_path: Path, capsys) -> None:
    from xlt.results.__main__ import main

    assert main([str(MULTI), "--out", str(tmp_path / "out"), "--no-plots"]) == 0
    out = md(capsys.readouterr().out)
    assert (
        "| m | none | 1 | 58.00 | xnli, udpos, bucc2018, tatoeba, xquad (5 of 9; some languages only: "
        "xnli 2/15, udpos 2/33, bucc2018 1/4, tatoeba 2/36, xquad 2/11: not XTREME's full score) |" in out
    )
    assert (
        "| m | mnli | 1 | 70.00 | xnli, xquad (2 of 9; some languages only: xnli 2/15, xquad 2/11: "
        "not XTREME's full score) |" in out
    )
    assert (tmp_path / "out" / "xtreme_overall.csv").is_file()


# ----------------------------------------------------------------------------- confounds shown


def test_gap_tables_carry_the_number_and_list_of_languages(sweep, tmp_path: Path, capsys) -> None:
    table = gap_by_size(sweep.rows)
    assert set(table["n_languages"]) == {3} and set(table["languages"]) == {"de,en,sw"}
    effect = intermediate_effect(sweep.rows)
    assert set(effect["languages"]) == {"de,en,sw"} and set(effect["n_languages"]) == {3}
    assert results_main([str(FIXTURE), "--out", str(tmp_path), "--no-plots"]) == 0
    assert "| 16.00 [3.29, 28.71] | 19.7% [7.2%, 32.3%] | 3: de,en,sw |" in md(capsys.readouterr().out)


def test_seeds_over_different_languages_say_so() -> None:
    from xlt.results.stats import _summarise

    frame = pd.DataFrame({"task": ["xnli"] * 2, "seed": [1, 2], "gap": [1.0, 2.0], "n_languages": [15, 3],
                          "languages": ["ar,en", "de,en,sw"]})  # fmt: skip
    row = one(_summarise(frame, ["task"], ["gap"]), task="xnli")
    assert row.n_languages == 3 and row.languages == "ar,en | de,en,sw"


def test_families_come_from_the_rows_or_the_model_name() -> None:
    from xlt.results.stats import model_families

    rows = pd.DataFrame({"model": ["xlmr_large", "qwen2_5_7b", "e5_small", "tiny", "odd"],
                         "model_family": [None, "", "e5", "xlmr", None]})  # fmt: skip
    assert list(model_families(rows)) == ["xlmr", "qwen2.5", "e5", "xlmr", ""]
    assert list(model_families(rows.drop(columns="model_family"))) == ["xlmr", "qwen2.5", "e5", "", ""]


def test_every_model_file_states_its_family() -> None:
    from omegaconf import OmegaConf

    from xlt.schema import CONF_DIR

    for path in sorted((CONF_DIR / "model").glob("*.yaml")):
        lines = path.read_text().splitlines()
        name = next(i for i, line in enumerate(lines) if line.startswith("name:"))
        assert lines[name + 1].startswith("family:"), path  # one line right after name
        family = OmegaConf.load(path).family
        expected = "qwen2.5" if "qwen" in path.stem else "e5" if path.stem.startswith("e5") else "xlmr"
        assert family == expected, path


def _two_families() -> pd.DataFrame:
    """Gap rows of XLM-R (two sizes) and Qwen (two sizes), both with and without MNLI."""
    records = []
    for model, family, params in (("xlmr_base", "xlmr", 2.8e8), ("xlmr_xl", "xlmr", 3.5e9),
                                  ("qwen2_5_3b", "qwen2.5", 3.1e9), ("qwen2_5_7b", "qwen2.5", 7.6e9)):  # fmt: skip
        for intermediate in ("none", "mnli"):
            for seed, (en, de) in enumerate(((80.0, 70.0), (82.0, 70.0)), 1):
                for lang, value in (("en", en), ("de", de)):
                    records.append({"stage": "target", "split": "test", "task": "xnli", "language": lang,
                                    "metric": "acc", "value": value, "model": model, "model_params": params,
                                    "model_family": family, "intermediate": intermediate, "seed": seed,
                                    "peft": "none", "train_task": "mnli", "run_dir": f"{model}/{intermediate}/{seed}"})  # fmt: skip
    return pd.DataFrame.from_records(records)


def test_plots_draw_one_line_per_family_and_intermediate() -> None:
    from xlt.results.plots import plot_gap_vs_size, plot_scores_vs_size

    table = gap_by_size(_two_families())
    assert set(zip(table["model"], table["family"], strict=True)) == {
        ("xlmr_base", "xlmr"),
        ("xlmr_xl", "xlmr"),
        ("qwen2_5_3b", "qwen2.5"),
        ("qwen2_5_7b", "qwen2.5"),
    }
    fig = plot_gap_vs_size(table, "xnli", "acc")
    for ax in fig.axes:
        lines = [c for c in ax.containers]  # one errorbar container per curve
        assert len(lines) == 4
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert labels == ["qwen2.5: none", "qwen2.5: mnli", "xlmr: none", "xlmr: mnli"]
    assert "over 2 languages" in fig._suptitle.get_text()
    points = {
        label: len(c.lines[0].get_xdata()) for label, c in zip(labels, fig.axes[0].containers, strict=True)
    }
    assert set(points.values()) == {2}  # each curve holds its own family's two sizes, never the other's
    scores = plot_scores_vs_size(table, "xnli", "acc").axes[0].get_legend_handles_labels()[1]
    assert "xlmr: mnli: en" in scores and "qwen2.5: none: mean non-en" in scores


def test_best_intermediate_per_target_and_size() -> None:
    from xlt.results.tables import format_best_intermediate
    from xlt.results.xtreme_scores import best_intermediate

    rows = load_sweep(MULTI).rows
    table = best_intermediate(rows)
    xnli = one(table, task="xnli")
    assert (xnli.best, xnli.best_score, xnli.none_score, xnli.gain) == ("mnli", 80.0, 75.0, 5.0)
    assert xnli.compared == "mnli 80.00 (n=1), none 75.00 (n=2)" and (xnli.languages, xnli.n_languages) == (
        2,
        15,
    )
    udpos = one(table, task="udpos")  # only the baseline ran: no best
    assert udpos.best == "" and math.isnan(udpos.gain)
    text = md(format_best_intermediate(table))
    assert "| xnli | m |  | 1M | mnli | 80.00 | 75.00 | +5.00 | 2/15 |" in text
    assert "| udpos | m |  | 1M | - | - | 80.00 | - | 2/33 |" in text
    assert list(table["task"]) == ["xnli", "udpos", "bucc2018", "tatoeba", "xquad"]  # XTREME order


def test_main_table_is_the_overall_per_size_over_seeds() -> None:
    from xlt.results.tables import format_main_table
    from xlt.results.xtreme_scores import overall_by_size

    two_seeds = pd.concat([_all_nine(), _all_nine().assign(seed=2, value=lambda f: f["value"] + 2,
                                                           run_dir=lambda f: f["run_dir"] + "/s2")])  # fmt: skip
    two_seeds["model_params"] = 5e8
    table = overall_by_size(two_seeds)
    row = one(table, model="m")
    assert (row.n, row.seeds, row.complete, row.overall_mean) == (2, "1,2", True, pytest.approx(41.0))
    assert row.score_udpos == pytest.approx(31.0)  # udpos is XTREME's 4th task: 30 and 32
    assert row.overall_ci95_low < 41.0 < row.overall_ci95_high
    text = md(format_main_table(table))
    assert "| m |  | 500M | none | 2 | 41.00 | 1.0 | 11.0 | 21.0 | 31.0 |" in text and text.endswith(
        "| XTREME |"
    )
    cut = md(format_main_table(overall_by_size(_all_nine(missing=("udpos", "yo")).assign(model_params=5e8))))
    assert cut.endswith("| some languages only: udpos 32/33 |")


def test_debug_runs_and_non_finite_values_are_left_out_and_said(tmp_path: Path) -> None:
    from xlt.results.rows import ResultRow, RunContext, write_results

    root = tmp_path / "sweep"
    shutil.copytree(FIXTURE, root)
    job = root / "intermediate=none,model=small,seed=1,target=xnli"
    ctx = RunContext("small", 100_000_000, "none", "xnli", "", 1, "x", "local",
                     extra={"debug": "fast_dev_run=True"})  # fmt: skip
    write_results(job / "results.jsonl", [ResultRow("target", "xnli", "test", "en", "acc", 50.0, 32)], ctx)
    sweep = load_sweep(root)
    problems = [str(p) for p in sweep.problems if UNFINISHED not in str(p.path)]
    assert problems == [
        f"{job / 'results.jsonl'}: a debug run (fast_dev_run=True): left out (--include-debug to analyse it)"
    ]
    assert sweep.rows["run_dir"].nunique() == 7
    assert load_sweep(root, include_debug=True).rows["run_dir"].nunique() == 8
    # a NaN written by hand (write_results refuses it) is a problem, not a number
    other = root / "intermediate=none,model=small,seed=2,target=xnli" / "results.jsonl"
    lines = other.read_text().splitlines()
    record = json.loads(lines[0])
    record["value"] = float("nan")
    rows = [json.dumps(record, sort_keys=True), *lines[1:-1]]
    from xlt.results.rows import END_MARKER, _checksum

    marker = json.dumps({END_MARKER: True, "rows": len(rows), "sha256": _checksum(rows)})
    other.write_text("\n".join([*rows, marker]) + "\n")
    assert any("line 1: value nan is not finite" in str(p) for p in load_sweep(root).problems)
