"""Plots of a sweep's analysis: matplotlib figures built without pyplot (no backend, no display
needed; savefig renders PNG on any machine, and notebooks show the files).

:func:`plot_gap_vs_size`: the transfer gap (absolute, and relative) against the parameter count on
a log axis, one line per intermediate task, error bars the t-based 95% CI over seeds.
:func:`plot_scores_vs_size`: English and the mean over the other languages against size.
Both take the tables of :mod:`xlt.results.aggregate` and return the figure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from xlt.results.aggregate import NO_INTERMEDIATE


def _intermediates(table: pd.DataFrame) -> list[str]:
    names = sorted(table["intermediate"].unique())
    return ([NO_INTERMEDIATE] if NO_INTERMEDIATE in names else []) + [
        n for n in names if n != NO_INTERMEDIATE
    ]


def _errors(table: pd.DataFrame, column: str, scale: float) -> list[list[float]]:
    mean = table[f"{column}_mean"] * scale
    low = (mean - table[f"{column}_ci95_low"] * scale).fillna(0.0)
    high = (table[f"{column}_ci95_high"] * scale - mean).fillna(0.0)
    return [list(low), list(high)]


def _size_axis(ax: Any, table: pd.DataFrame) -> None:
    sizes = table.drop_duplicates("model").sort_values("params")
    ax.set_xscale("log")
    ax.set_xticks(
        list(sizes["params"]),
        [f"{m}\n{_human(p)}" for m, p in zip(sizes["model"], sizes["params"], strict=True)],
    )
    ax.minorticks_off()
    ax.set_xlabel("encoder parameters (log scale)")
    ax.grid(alpha=0.3)


def _human(params: float) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if params >= size:
            return f"{params / size:.3g}{unit}"
    return f"{params:.0f}"


def _lines(ax: Any, table: pd.DataFrame, column: str, scale: float = 1.0, label_suffix: str = "") -> None:
    for i, intermediate in enumerate(_intermediates(table)):
        part = table[table["intermediate"] == intermediate].sort_values("params")
        # A small horizontal offset per line keeps overlapping error bars readable on the log axis.
        x = part["params"] * (1.0 + 0.04 * (i - 0.5 * (len(_intermediates(table)) - 1)))
        ax.errorbar(x, part[f"{column}_mean"] * scale, yerr=_errors(part, column, scale), marker="o",
                    capsize=4, label=f"{intermediate}{label_suffix}")  # fmt: skip


def plot_gap_vs_size(gap_table: pd.DataFrame, task: str, metric: str, path: Path | None = None) -> Any:
    """Gap and relative gap vs parameter count for one task and metric; saved to ``path`` if given."""
    table = gap_table[(gap_table["task"] == task) & (gap_table["metric"] == metric)]
    if table.empty:
        raise ValueError(f"no gap rows for task={task} metric={metric}")
    fig = Figure(figsize=(11, 4.2))
    ax_abs, ax_rel = fig.subplots(1, 2)
    _lines(ax_abs, table, "gap")
    ax_abs.set_ylabel(f"gap: en - mean(non-en) [{metric}]")
    _lines(ax_rel, table, "rel_gap", scale=100.0)
    ax_rel.set_ylabel("relative gap: 1 - mean(non-en) / en [%]")
    for ax in (ax_abs, ax_rel):
        _size_axis(ax, table)
    n = sorted(set(table["n"]))
    ax_abs.legend(title="intermediate task")
    fig.suptitle(
        f"{task} ({metric}): transfer gap vs model size; bars: 95% CI over seeds (n={','.join(map(str, n))})"
    )
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
    return fig


def plot_scores_vs_size(gap_table: pd.DataFrame, task: str, metric: str, path: Path | None = None) -> Any:
    """English and mean non-English score vs parameter count, one pair of lines per intermediate task."""
    table = gap_table[(gap_table["task"] == task) & (gap_table["metric"] == metric)]
    if table.empty:
        raise ValueError(f"no rows for task={task} metric={metric}")
    fig = Figure(figsize=(6.5, 4.2))
    ax = fig.subplots()
    _lines(ax, table, "en", label_suffix=": en")
    _lines(ax, table, "avg_non_en", label_suffix=": mean non-en")
    ax.set_ylabel(metric)
    _size_axis(ax, table)
    ax.legend(fontsize="small")
    ax.set_title(f"{task}: scores vs model size (95% CI over seeds)")
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
    return fig


def plot_all(gap_table: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Both plots for every (task, metric) of the table, as PNG files in ``out_dir``."""
    paths = []
    for (task, metric), _ in gap_table.groupby(["task", "metric"]):
        for name, fn in (("gap_vs_size", plot_gap_vs_size), ("scores_vs_size", plot_scores_vs_size)):
            path = Path(out_dir) / f"{name}_{task}_{metric}.png"
            fn(gap_table, task, metric, path)
            paths.append(path)
    return paths
