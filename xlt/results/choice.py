"""Model choice on dev, numbers on test: the best intermediate task per (target, model) chosen on the
English dev selection metric, reported with its test score, and the X-STILTs-style overall built from
those choices.

Choosing on test and reporting the same test numbers is the winner's curse: the best of several noisy
scores is biased upwards. Here the choice reads only the target stage's English dev rows (the metric
the stage selected its checkpoint on, ``TaskSpec.metrics[0]``, mean over seeds); the test score of the
chosen task and of no intermediate task ("none") are then read over the languages both scored, and
their difference paired by seed. A target without an English dev score (Tatoeba; any run that did not
select) gets no choice, and says so.

The English dev score of the selection subset is biased upwards: the checkpoint was picked as its
maximum over many validations of those same examples. Runs that also scored the selected checkpoint on
the English dev examples outside the subset (split ``dev_heldout``, xlt/evaluation/analysis_dev.py) are
ranked on that instead, when every compared run has it; otherwise the choice falls back to the
selection subset's score and ``chosen_on`` says so (runs written before the held-out split existed).
Other languages' dev rows (``target.eval_dev_languages``) are analysis only: never read here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import pandas as pd

from xlt.console import text_table
from xlt.results.load import NO_INTERMEDIATE
from xlt.results.rows import AGGREGATE_LANGUAGES
from xlt.results.stats import _target_rows, dropped_languages, model_sizes

# results.jsonl metric names -> evaluate.py's, for xlt.metrics.xtreme.task_score.
_XTREME_METRIC = {"acc": "accuracy", "f1": "f1", "em": "exact_match"}
COLUMNS = [
    "task",
    "model",
    "peft",
    "select_on",
    "chosen",
    "chosen_on",
    "dev_score",
    "test_score",
    "none_test",
    "gain",
    "seeds",
    "test_seeds",
    "none_seeds",
    "languages",
    "n_languages",
    "dropped",
    "compared",
    "note",
    "heldout",
]
HELDOUT_SPLIT = "dev_heldout"  # xlt.evaluation.analysis_dev.HELDOUT_SPLIT (not imported: no torch here)


def selection_metric(task: str) -> str:
    """The metric a target stage selects its checkpoint on: the spec's first metric."""
    from xlt.tasks.registry import get_task

    try:
        return get_task(task).metrics[0]
    except (KeyError, ValueError, IndexError):
        return "acc"


def dev_scores(rows: pd.DataFrame, split: str = "dev") -> pd.DataFrame:
    """Per run: the English dev score of its target task on the selection metric (``split``: "dev", the
    selection subset's, or ``HELDOUT_SPLIT``, the examples outside it)."""
    dev = _target_rows(rows, split)
    dev = dev[dev["language"] == "en"]
    keep = pd.Series(
        [m == selection_metric(t) for t, m in zip(dev["task"], dev["metric"], strict=True)],
        index=dev.index,
        dtype=bool,
    )
    return dev[keep]


def task_score_over(run: pd.DataFrame, task: str, languages: Iterable[str]) -> float:
    """XTREME's task score of one run's per-language test rows, averaged over ``languages`` only."""
    from xlt.metrics.xtreme import QA_TASKS, task_score

    wanted = set(languages)
    averages = {}
    for metric, name in _XTREME_METRIC.items():
        values = run[(run["metric"] == metric) & run["language"].isin(wanted)]["value"]
        if len(values):
            averages[f"avg_{name}"] = float(values.mean())
    try:
        return task_score(task, averages)
    except (KeyError, ValueError):
        if task in QA_TASKS or not averages:
            return math.nan
        return next(iter(averages.values()))


def _test_by_run(rows: pd.DataFrame, split: str) -> pd.DataFrame:
    test = _target_rows(rows, split)
    return test[~test["language"].isin(AGGREGATE_LANGUAGES) & test["metric"].isin(list(_XTREME_METRIC))]


def best_intermediate_on_dev(rows: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """Per target task and model: the intermediate task with the best mean English dev selection
    score (never a test score), its test score and no intermediate task's, over the languages every
    run of the two scored (``dropped``: those left out), and the gain paired by seed."""
    dev = dev_scores(rows)
    heldout = dev_scores(rows, HELDOUT_SPLIT)
    test = _test_by_run(rows, split)
    out = []
    for (task, model, peft, select_on), group in test.groupby(
        ["task", "model", "peft", "select_on"], sort=False, dropna=False
    ):
        record = {c: "" for c in COLUMNS} | {
            "task": task,
            "model": model,
            "peft": peft,
            "select_on": select_on,
        }
        record.update(
            {
                "dev_score": math.nan,
                "test_score": math.nan,
                "none_test": math.nan,
                "gain": math.nan,
                "seeds": 0,
                "test_seeds": 0,
                "none_seeds": 0,
                "n_languages": 0,
                "heldout": False,
            }
        )
        mine = _condition(dev, task, model, peft, select_on)
        held = _condition(heldout, task, model, peft, select_on)
        runs = set(mine[mine["intermediate"] != NO_INTERMEDIATE]["run_dir"])
        record["chosen_on"] = f"en dev {selection_metric(task)}"
        if runs and runs <= set(held["run_dir"]):  # every compared run has a held-out score: rank on it
            mine, record["heldout"] = held[held["run_dir"].isin(runs)], True
            record["chosen_on"] = f"en dev held out of selection, {selection_metric(task)}"
        elif runs:
            record["chosen_on"] += (
                f" (selection subset, biased upwards: {len(runs - set(held['run_dir']))} of "
                f"{len(runs)} runs have no held-out dev score)"
            )
        ranked = (
            mine[mine["intermediate"] != NO_INTERMEDIATE]
            .groupby("intermediate")["value"]
            .agg(["mean", "count"])
            .reset_index()
            .sort_values(["mean", "intermediate"], ascending=[False, True])
        )
        # the checkpoints were selected on (select_on): one choice per set, never ranked across sets
        record["compared"] = ", ".join(
            f"{r.intermediate} {r.mean:.2f} (n={r.count})" for r in ranked.itertuples()
        )
        if ranked.empty:
            record["note"] = (
                "no intermediate task ran"
                if set(group["intermediate"]) <= {NO_INTERMEDIATE}
                else "no English dev score: nothing chosen (never chosen on test)"
            )
            out.append(record)
            continue
        chosen = str(ranked.iloc[0]["intermediate"])
        record["chosen"], record["dev_score"] = chosen, float(ranked.iloc[0]["mean"])
        pair = group[group["intermediate"].isin([chosen, NO_INTERMEDIATE])]
        per_run = [set(g["language"]) for _, g in pair.groupby("run_dir")]
        common = set.intersection(*per_run)
        record["languages"] = ",".join(sorted(common))
        record["n_languages"] = len(common)
        record["dropped"] = "; ".join(dropped_languages(pair, common))
        scores = {
            (r, s): task_score_over(g, task, common) for (r, s), g in pair.groupby(["intermediate", "seed"])
        }
        chosen_seeds = {s for (r, s) in scores if r == chosen}
        none_seeds = {s for (r, s) in scores if r == NO_INTERMEDIATE}
        paired = sorted(chosen_seeds & none_seeds)
        # test, none and gain over the same (paired) seeds; without a pair, each over its own seeds
        test_seeds, base_seeds = (paired, paired) if paired else (sorted(chosen_seeds), sorted(none_seeds))
        record["test_score"] = _mean(scores[(chosen, s)] for s in test_seeds)
        record["none_test"] = _mean(scores[(NO_INTERMEDIATE, s)] for s in base_seeds)
        record["test_seeds"], record["none_seeds"] = len(test_seeds), len(base_seeds)
        record["seeds"] = len(paired)
        record["gain"] = _mean(scores[(chosen, s)] - scores[(NO_INTERMEDIATE, s)] for s in paired)
        if not none_seeds:
            record["note"] = "no run without an intermediate task: no gain"
        elif not paired:
            record["note"] = "no seed run both with and without the intermediate task: no gain"
        unpaired = sorted((chosen_seeds | none_seeds) - set(paired)) if paired else []
        if unpaired:
            record["note"] = f"seeds {','.join(map(str, unpaired))} left out: run on one side only"
        out.append(record)
    table = pd.DataFrame.from_records(out, columns=COLUMNS)
    return table.merge(model_sizes(rows), on="model", how="left") if not table.empty else table


def _condition(frame: pd.DataFrame, task: str, model: str, peft: str, select_on: str) -> pd.DataFrame:
    return frame[
        (frame["task"] == task)
        & (frame["model"] == model)
        & (frame["peft"] == peft)
        & (frame["select_on"] == select_on)
    ]


def _mean(values: Iterable[float]) -> float:
    xs = list(values)
    return sum(xs) / len(xs) if xs else math.nan


def xstilts_overall(best: pd.DataFrame) -> pd.DataFrame:
    """X-STILTs' overall: per model, the mean over target tasks of the dev-chosen intermediate task's
    test score, beside the mean of no intermediate task's, both over the targets where both exist
    (``n_compared`` of the ``n_tasks`` chosen; NaN where none has both)."""
    out = []
    chosen = best[best["chosen"] != ""] if "chosen" in best else best.iloc[0:0]
    for (model, peft, select_on), group in (
        chosen.groupby(["model", "peft", "select_on"], sort=False, dropna=False) if len(chosen) else ()
    ):
        tasks = list(group["task"])
        # both means over the same targets: those with a chosen test score and a none score
        both = group[group["test_score"].notna() & group["none_test"].notna()]
        out.append(
            {
                "model": model,
                "peft": peft,
                "select_on": select_on,
                "n_tasks": len(tasks),
                "tasks": ",".join(tasks),
                "choices": ",".join(f"{t}:{c}" for t, c in zip(tasks, group["chosen"], strict=True)),
                "n_compared": len(both),
                "compared_tasks": ",".join(both["task"]),
                "overall": float(both["test_score"].mean()) if len(both) else math.nan,
                "none_overall": float(both["none_test"].mean()) if len(both) else math.nan,
            }
        )
    return pd.DataFrame.from_records(out, columns=OVERALL_COLUMNS)


OVERALL_COLUMNS = [
    "model",
    "peft",
    "select_on",
    "n_tasks",
    "tasks",
    "choices",
    "n_compared",
    "compared_tasks",
    "overall",
    "none_overall",
]


def format_best_on_dev(table: pd.DataFrame, split: str = "test") -> str:
    """The choice table; the score columns are labelled by the split they were read on."""
    header = [
        "target",
        "model",
        "selected on",
        "chosen (on en dev)",
        "chosen on",
        "dev",
        split,
        f"none {split}",
        "gain (paired)",
        "languages",
        "dropped",
        "compared on dev",
    ]
    rows = []
    for r in table.itertuples(index=False):
        if not r.chosen:
            rows.append([r.task, r.model, r.select_on, *["-"] * 8, r.note])
            continue
        rows.append(
            [
                r.task,
                r.model,
                r.select_on,
                r.chosen,
                r.chosen_on,
                f"{r.dev_score:.2f}",
                f"{r.test_score:.2f} (n={r.test_seeds})",
                f"{_num(r.none_test)} (n={r.none_seeds})",
                f"{_num(r.gain, '+.2f')} (n={r.seeds})",
                f"{r.n_languages}: {r.languages}",
                r.dropped or "-",
                r.compared,
            ]
        )
    return text_table(header, rows)


def format_xstilts_overall(table: pd.DataFrame) -> str:
    header = [
        "model",
        "selected on",
        "targets chosen",
        "chosen intermediate per target",
        "overall (n)",
        "none (n)",
        "over",
    ]
    rows = [
        [
            r.model,
            r.select_on,
            r.n_tasks,
            r.choices,
            f"{_num(r.overall)} (n={r.n_compared})",
            f"{_num(r.none_overall)} (n={r.n_compared})",
            r.compared_tasks or "-",
        ]
        for r in table.itertuples(index=False)
    ]
    return text_table(header, rows)


def _num(value: float, spec: str = ".2f") -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)
