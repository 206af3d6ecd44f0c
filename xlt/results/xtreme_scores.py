"""XTREME-style scores of a sweep's tidy rows: per task (evaluate.py's rule, :func:`xtreme_task_scores`),
overall per run family (:func:`xtreme_overall`), the main table by model size (:func:`overall_by_size`)
and the best intermediate task per target and model (:func:`best_intermediate`)."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from xlt.metrics.xtreme import XTREME_TASK2LANGS, task_score
from xlt.results.load import NO_INTERMEDIATE
from xlt.results.rows import AGGREGATE_LANGUAGES
from xlt.results.stats import _target_rows, model_sizes, seed_stats

# A run of one model, intermediate task and seed, whatever its target: the targets of one such run
# family make up an XTREME-style overall score.
FAMILY = ("model", "peft", "select_on", "intermediate", "seed")  # select_on: never averaged across dev sets
# results.jsonl metric names -> evaluate.py's, for xlt.metrics.xtreme.task_score.
_XTREME_METRIC = {"acc": "accuracy", "f1": "f1", "em": "exact_match"}


def xtreme_task_scores(rows: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """One row per (run family, XTREME task): the XTREME task score from the run's language-averaged
    (``avg``) rows: (EM + F1) / 2 for QA, else F1, else accuracy (``xlt.metrics.xtreme.task_score``).
    A task run more than once in a family (e.g. two training sources) is averaged, ``runs`` says so.
    ``languages`` counts the task's XTREME languages that were scored (the fewest over those runs),
    out of ``n_languages``: an average over fewer languages is not the task's XTREME score."""
    selected = _target_rows(rows, split)
    selected = selected[
        selected["task"].isin(list(XTREME_TASK2LANGS)) & selected["metric"].isin(list(_XTREME_METRIC))
    ]
    averaged = selected[selected["language"] == "avg"]
    scored_languages = {
        run: set(group["language"])
        for run, group in selected[~selected["language"].isin(AGGREGATE_LANGUAGES)].groupby("run_dir")
    }
    out = []
    for key, group in averaged.groupby([*FAMILY, "task"], sort=False, dropna=False):
        task = str(key[-1])
        per_run, covered = [], []
        for run_dir, run in group.groupby("run_dir", sort=True):
            averages = {
                f"avg_{_XTREME_METRIC[m]}": v for m, v in zip(run["metric"], run["value"], strict=True)
            }
            try:
                per_run.append(task_score(task, averages))
            except KeyError:  # the run lacks the task's metric (e.g. QA without EM): not scorable
                continue
            covered.append(len(scored_languages.get(run_dir, set()) & set(XTREME_TASK2LANGS[task])))
        if per_run:
            record = dict(zip([*FAMILY, "task"], key, strict=True))
            out.append(
                {
                    **record,
                    "score": sum(per_run) / len(per_run),
                    "runs": len(per_run),
                    "languages": min(covered),
                    "n_languages": len(XTREME_TASK2LANGS[task]),
                }
            )
    return pd.DataFrame.from_records(
        out, columns=[*FAMILY, "task", "score", "runs", "languages", "n_languages"]
    )


def xtreme_overall(rows: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """XTREME's overall score per run family with results for at least two target tasks: the plain
    mean of the task scores (:func:`xtreme_task_scores`), as evaluate.py's ``all_task``. ``tasks``
    lists the tasks that went in (XTREME order), ``partial`` those scored on only some of their
    languages (``udpos 3/33``), and ``complete`` says whether all nine went in on all their
    languages: anything less is not XTREME's overall score. One ``score_<task>`` column per task."""
    scores = xtreme_task_scores(rows, split)
    order = list(XTREME_TASK2LANGS)
    out = []
    for key, group in scores.groupby(list(FAMILY), sort=False, dropna=False):
        if len(group) < 2:
            continue
        by_task = {r.task: r for r in group.itertuples(index=False)}
        tasks = [t for t in order if t in by_task]
        partial = [
            f"{t} {by_task[t].languages}/{by_task[t].n_languages}"
            for t in tasks
            if by_task[t].languages < by_task[t].n_languages
        ]
        record = dict(zip(FAMILY, key, strict=True))
        record.update(
            {
                "n_tasks": len(tasks),
                "tasks": ",".join(tasks),
                "partial": ",".join(partial),
                "complete": len(tasks) == len(order) and not partial,
                "overall": sum(by_task[t].score for t in tasks) / len(tasks),
            }
        )
        record.update({f"score_{t}": by_task[t].score if t in by_task else math.nan for t in order})
        out.append(record)
    columns = [*FAMILY, "n_tasks", "tasks", "partial", "complete", "overall", *(f"score_{t}" for t in order)]
    table = pd.DataFrame.from_records(out, columns=columns)
    return table.sort_values(list(FAMILY), ignore_index=True)


def best_intermediate(rows: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """Per target task and model: the intermediate task with the best mean XTREME task score over
    seeds (:func:`xtreme_task_scores`), the no-intermediate score beside it and the difference.
    Ranked on the split it reports: descriptive only, never a model choice (on test it is the
    winner's curse); ``python -m xlt.results`` chooses on English dev (:mod:`xlt.results.choice`).
    ``compared`` lists every intermediate task run for that target and model (best first), with its
    mean and seeds; ``languages`` is the fewest of the task's languages any of them scored."""
    scores = xtreme_task_scores(rows, split)
    if scores.empty:
        return pd.DataFrame(columns=_NO_BEST_COLUMNS)
    means = scores.groupby(
        ["task", "model", "peft", "select_on", "intermediate"], as_index=False, dropna=False
    ).agg(
        score=("score", "mean"),
        seeds=("seed", "nunique"),
        languages=("languages", "min"),
        n_languages=("n_languages", "first"),
    )
    out = [
        _best_of(key, group)
        for key, group in means.groupby(["task", "model", "peft", "select_on"], sort=False, dropna=False)
    ]
    table = pd.DataFrame.from_records(out).merge(model_sizes(rows), on="model", how="left")
    order = {t: i for i, t in enumerate(_xtreme_order())}
    table["_task"] = table["task"].map(order)
    return table.sort_values(["_task", "params", "model"], ignore_index=True).drop(columns="_task")


# The columns of best_intermediate's table when no XTREME task was scored.
_NO_BEST_COLUMNS = [
    "task",
    "model",
    "family",
    "params",
    "best",
    "best_score",
    "best_seeds",
    "none_score",
    "gain",
    "compared",
    "languages",
    "n_languages",
]


def _best_of(key: tuple[str, str, str, str], means: pd.DataFrame) -> dict[str, Any]:
    """One row of :func:`best_intermediate`: the intermediate tasks of one (task, model, peft,
    select_on), each with its mean score over seeds, ranked."""
    task, model, peft, select_on = key
    ranked = means.sort_values(["score", "intermediate"], ascending=[False, True])
    treated = ranked[ranked["intermediate"] != NO_INTERMEDIATE]
    base = ranked[ranked["intermediate"] == NO_INTERMEDIATE]
    none_score = float(base["score"].iloc[0]) if not base.empty else math.nan
    best = treated.iloc[0] if not treated.empty else None  # no intermediate task ran: no best
    best_score = float(best["score"]) if best is not None else math.nan
    return {
        "task": task,
        "model": model,
        "peft": peft,
        "select_on": select_on,
        "best": best["intermediate"] if best is not None else "",
        "best_score": best_score,
        "best_seeds": int(best["seeds"]) if best is not None else 0,
        "none_score": none_score,
        "gain": best_score - none_score,
        "compared": ", ".join(
            f"{r.intermediate} {r.score:.2f} (n={r.seeds})" for r in ranked.itertuples(index=False)
        ),
        "languages": int(ranked["languages"].min()),
        "n_languages": int(ranked["n_languages"].iloc[0]),
    }


def _xtreme_order() -> list[str]:
    return list(XTREME_TASK2LANGS)


def overall_by_size(rows: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """The paper's main table: per model (by size) and intermediate task, the XTREME-style overall
    and each task's score, as means over seeds of :func:`xtreme_overall`. Only run families with the
    same tasks are averaged together: ``tasks`` and ``partial`` say what each row is over, and
    ``complete`` whether it is XTREME's full score for every seed."""
    overall = xtreme_overall(rows, split)
    task_columns = [c for c in overall.columns if c.startswith("score_")]
    out = []
    for key, group in overall.groupby(
        ["model", "peft", "select_on", "intermediate", "tasks", "partial"], sort=False, dropna=False
    ):
        record = dict(
            zip(["model", "peft", "select_on", "intermediate", "tasks", "partial"], key, strict=True)
        )
        stats = seed_stats(group["overall"])
        record.update(
            {
                "seeds": ",".join(str(s) for s in sorted(group["seed"].unique())),
                "n": stats["n"],
                "n_tasks": int(group["n_tasks"].iloc[0]),
                "complete": bool(group["complete"].all()),
                "overall_mean": stats["mean"],
                "overall_ci95_low": stats["ci95_low"],
                "overall_ci95_high": stats["ci95_high"],
            }
        )
        record.update({c: float(group[c].mean()) for c in task_columns})
        out.append(record)
    columns = [
        "model",
        "peft",
        "select_on",
        "intermediate",
        "seeds",
        "n",
        "n_tasks",
        "tasks",
        "partial",
        "complete",
        "overall_mean",
        "overall_ci95_low",
        "overall_ci95_high",
        *task_columns,
    ]
    table = pd.DataFrame.from_records(out, columns=columns).merge(model_sizes(rows), on="model", how="left")
    table["_baseline_last"] = table["intermediate"] != NO_INTERMEDIATE
    table = table.sort_values(["params", "model", "_baseline_last", "intermediate"], ignore_index=True)
    return table.drop(columns="_baseline_last")
