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
from dataclasses import dataclass
from typing import Any, NamedTuple

import pandas as pd

from xlt.metrics.xtreme import QA_TASKS, task_score
from xlt.results.load import NO_INTERMEDIATE
from xlt.results.rows import AGGREGATE_LANGUAGES
from xlt.results.stats import _target_rows, dropped_languages, model_sizes
from xlt.tasks.registry import get_task
from xlt.utils.console import text_table

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
    dev = _EnglishDev(dev_scores(rows), dev_scores(rows, HELDOUT_SPLIT))
    test = _test_by_run(rows, split)
    out = [
        _choose(dev, group, Condition(*key))
        for key, group in test.groupby(list(Condition._fields), sort=False, dropna=False)
    ]
    table = pd.DataFrame.from_records(out, columns=COLUMNS)
    return table.merge(model_sizes(rows), on="model", how="left") if not table.empty else table


class Condition(NamedTuple):
    """What one choice is made for: the checkpoints were selected on ``select_on``, one choice per
    set, never ranked across sets."""

    task: str
    model: str
    peft: str
    select_on: str


@dataclass(frozen=True)
class _EnglishDev:
    """Every run's English dev score on the selection metric: on the selection subset, and on the
    examples held out of it."""

    selection: pd.DataFrame
    heldout: pd.DataFrame


def _choose(dev: _EnglishDev, test: pd.DataFrame, condition: Condition) -> dict[str, Any]:
    """One row of the choice table: the intermediate tasks ranked on English dev, the best of them
    and, when there is one, its test score beside no intermediate task's."""
    record: dict[str, Any] = {c: "" for c in COLUMNS} | condition._asdict()
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
    ranked, ranking = _rank_on_dev(dev, condition)
    record.update(ranking)
    if ranked.empty:
        record["note"] = (
            "no intermediate task ran"
            if set(test["intermediate"]) <= {NO_INTERMEDIATE}
            else "no English dev score: nothing chosen (never chosen on test)"
        )
        return record
    chosen = str(ranked.iloc[0]["intermediate"])
    record["chosen"], record["dev_score"] = chosen, float(ranked.iloc[0]["mean"])
    record.update(_chosen_against_none(test, condition.task, chosen))
    return record


def _rank_on_dev(dev: _EnglishDev, condition: Condition) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The intermediate tasks by mean English dev score, best first, ranked on the held-out examples
    when every compared run has a score there, else on the selection subset; and the record's
    ``chosen_on``, ``heldout`` and ``compared``."""
    mine = _condition(dev.selection, *condition)
    held = _condition(dev.heldout, *condition)
    runs = set(mine[mine["intermediate"] != NO_INTERMEDIATE]["run_dir"])
    metric = selection_metric(condition.task)
    fields: dict[str, Any] = {"chosen_on": f"en dev {metric}"}
    if runs and runs <= set(held["run_dir"]):  # every compared run has a held-out score: rank on it
        mine, fields["heldout"] = held[held["run_dir"].isin(runs)], True
        fields["chosen_on"] = f"en dev held out of selection, {metric}"
    elif runs:
        fields["chosen_on"] += (
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
    fields["compared"] = ", ".join(
        f"{r.intermediate} {r.mean:.2f} (n={r.count})" for r in ranked.itertuples()
    )
    return ranked, fields


def _chosen_against_none(test: pd.DataFrame, task: str, chosen: str) -> dict[str, Any]:
    """The test scores of ``chosen`` and of no intermediate task over the languages every run of the
    two scored, and the gain paired by seed (without a pair, each score over its own seeds)."""
    pair = test[test["intermediate"].isin([chosen, NO_INTERMEDIATE])]
    common = set.intersection(*[set(g["language"]) for _, g in pair.groupby("run_dir")])
    scores = {
        (r, s): task_score_over(g, task, common) for (r, s), g in pair.groupby(["intermediate", "seed"])
    }
    chosen_seeds = {s for (r, s) in scores if r == chosen}
    none_seeds = {s for (r, s) in scores if r == NO_INTERMEDIATE}
    paired = sorted(chosen_seeds & none_seeds)
    test_seeds, base_seeds = (paired, paired) if paired else (sorted(chosen_seeds), sorted(none_seeds))
    note = ""
    if not none_seeds:
        note = "no run without an intermediate task: no gain"
    elif not paired:
        note = "no seed run both with and without the intermediate task: no gain"
    unpaired = sorted((chosen_seeds | none_seeds) - set(paired)) if paired else []
    if unpaired:
        note = f"seeds {','.join(map(str, unpaired))} left out: run on one side only"
    return {
        "languages": ",".join(sorted(common)),
        "n_languages": len(common),
        "dropped": "; ".join(dropped_languages(pair, common)),
        "test_score": _mean(scores[(chosen, s)] for s in test_seeds),
        "none_test": _mean(scores[(NO_INTERMEDIATE, s)] for s in base_seeds),
        "test_seeds": len(test_seeds),
        "none_seeds": len(base_seeds),
        "seeds": len(paired),
        "gain": _mean(scores[(chosen, s)] - scores[(NO_INTERMEDIATE, s)] for s in paired),
        "note": note,
    }


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
