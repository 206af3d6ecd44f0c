"""A sweep's analysis as text and files: the markdown tables ``python -m xlt.results`` prints and
the CSV files :func:`write_tables` writes."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from xlt.metrics.xtreme import XTREME_TASK2LANGS
from xlt.results.choice import best_intermediate_on_dev, xstilts_overall
from xlt.results.load import Sweep
from xlt.results.stats import gap_by_size, gaps_per_run, intermediate_effect, score_by_size
from xlt.results.xtreme_scores import _xtreme_order, overall_by_size, xtreme_overall
from xlt.utils.console import text_table


def format_overall_table(table: pd.DataFrame) -> str:
    """The overall rows as GitHub markdown, each with the tasks it averages and those it has only
    some languages of."""
    n_all = len(XTREME_TASK2LANGS)
    rows = []
    for r in table.itertuples(index=False):
        notes = [f"{r.n_tasks} of {n_all}"] if r.n_tasks < n_all else []
        if r.partial:
            notes.append("some languages only: " + r.partial.replace(",", ", "))
        which = r.tasks.replace(",", ", ") + (
            f" ({'; '.join(notes)}: not XTREME's full score)" if notes else ""
        )
        rows.append([r.model, r.intermediate, r.seed, f"{r.overall:.2f}", which])
    return text_table(["model", "intermediate", "seed", "overall", "tasks averaged"], rows)


def _num(value: float, spec: str = ".2f") -> str:
    return "-" if value is None or math.isnan(value) else format(value, spec)


def format_best_intermediate(table: pd.DataFrame) -> str:
    header = [
        "target",
        "model",
        "family",
        "params",
        "best intermediate",
        "score",
        "none",
        "gain",
        "languages",
        "compared",
    ]
    rows = [
        [
            r.task,
            r.model,
            r.family,
            _human(r.params),
            r.best or "-",
            _num(r.best_score),
            _num(r.none_score),
            _num(r.gain, "+.2f"),
            f"{r.languages}/{r.n_languages}",
            r.compared,
        ]
        for r in table.itertuples(index=False)
    ]
    return text_table(header, rows)


def format_main_table(table: pd.DataFrame) -> str:
    """:func:`overall_by_size` as markdown: sizes down, the overall then one column per XTREME task."""
    tasks = _xtreme_order()
    rows = []
    for r in table.itertuples(index=False):
        cells = [_num(getattr(r, f"score_{t}"), ".1f") for t in tasks]
        notes = [f"{r.n_tasks} of {len(tasks)} tasks"] if r.n_tasks < len(tasks) else []
        notes += [f"some languages only: {r.partial.replace(',', ', ')}"] if r.partial else []
        note = "XTREME" if r.complete else "; ".join(notes)
        rows.append(
            [r.model, r.family, _human(r.params), r.intermediate, r.n, f"{r.overall_mean:.2f}", *cells, note]
        )
    header = ["model", "family", "params", "intermediate", "seeds", "overall", *tasks, "over"]
    return text_table(header, rows)


def write_tables(sweep: Sweep, out_dir: Path, split: str = "test") -> dict[str, Path]:
    """Write runs.csv (the tidy rows), scores_by_size.csv, gaps_per_run.csv, gap_by_size.csv,
    intermediate_effect.csv, xtreme_overall.csv, overall_by_size.csv, best_intermediate.csv (chosen on
    English dev), xstilts_overall.csv and
    problems.txt into ``out_dir``; return their paths by name."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tables = {
        "runs": sweep.rows,
        "scores_by_size": score_by_size(sweep.rows, split),
        "gaps_per_run": gaps_per_run(sweep.rows, split),
        "gap_by_size": gap_by_size(sweep.rows, split),
        "intermediate_effect": intermediate_effect(sweep.rows, split),
        "xtreme_overall": xtreme_overall(sweep.rows, split),
        "overall_by_size": overall_by_size(sweep.rows, split),
        "best_intermediate": best_intermediate_on_dev(sweep.rows, split),
        "xstilts_overall": xstilts_overall(best_intermediate_on_dev(sweep.rows, split)),
    }
    paths = {}
    for name, table in tables.items():
        paths[name] = out_dir / f"{name}.csv"
        table.to_csv(paths[name], index=False)
    paths["problems"] = out_dir / "problems.txt"
    paths["problems"].write_text("".join(f"{p}\n" for p in sweep.problems))
    return paths


def format_gap_table(table: pd.DataFrame, task: str | None = None, metric: str | None = None) -> str:
    """The gap-by-size table as GitHub markdown: one line per (intermediate, model), sizes ascending."""
    if task is not None:
        table = table[table["task"] == task]
    if metric is not None:
        table = table[table["metric"] == metric]
    header = [
        "task",
        "metric",
        "intermediate",
        "model",
        "params",
        "seeds",
        "en",
        "avg non-en",
        "gap (95% CI)",
        "rel. gap (95% CI)",
        "languages",
    ]
    rows = [
        [
            r.task,
            r.metric,
            r.intermediate,
            r.model,
            _human(r.params),
            r.n,
            f"{r.en_mean:.2f}",
            f"{r.avg_non_en_mean:.2f}",
            f"{r.gap_mean:.2f} {_ci(r.gap_ci95_low, r.gap_ci95_high)}",
            f"{100 * r.rel_gap_mean:.1f}% {_ci(100 * r.rel_gap_ci95_low, 100 * r.rel_gap_ci95_high, '%')}",
            _languages(r.n_languages, r.languages),
        ]
        for r in table.itertuples(index=False)
    ]
    return text_table(header, rows)


def _languages(n: int, languages: str) -> str:
    """``3: de,en,sw``; a gap over 3 languages must not read like one over 15."""
    return f"{n}: {languages}"


def _ci(low: float, high: float, unit: str = "") -> str:
    if math.isnan(low) or math.isnan(high):
        return "(n<2)"
    return f"[{low:.2f}{unit}, {high:.2f}{unit}]" if unit == "" else f"[{low:.1f}{unit}, {high:.1f}{unit}]"


def _human(params: float) -> str:
    if params is None or math.isnan(params):
        return "?"
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if params >= size:
            return f"{params / size:.3g}{unit}"
    return f"{params:.0f}"
