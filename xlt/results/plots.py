"""Plots of a sweep's analysis: matplotlib figures built without pyplot (no backend, no display
needed; savefig renders PNG on any machine, and notebooks show the files).

:func:`plot_gap_vs_size`: the transfer gap (absolute, and relative) against the parameter count on
a log axis, one line per (model family, intermediate task): XLM-R and Qwen points never share a
line. Error bars: the t-based 95% CI over seeds.
:func:`plot_scores_vs_size`: English and the mean over the other languages against size.
Both take :func:`xlt.results.stats.gap_by_size`'s table and return the figure. ``x`` picks the
size: ``params`` (every encoder parameter) or ``params_non_embedding``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.transforms import ScaledTranslation

from xlt.results.load import NO_INTERMEDIATE

X_LABELS = {"params": "encoder parameters", "params_non_embedding": "encoder parameters without embeddings"}


def _curves(table: pd.DataFrame) -> list[tuple[str, str]]:
    """(family, intermediate) pairs, one line each: per family, the baseline first."""
    families = (
        table["family"].fillna("") if "family" in table else pd.Series([""] * len(table), index=table.index)
    )
    pairs = set(zip(families, table["intermediate"], strict=True))
    return sorted(pairs, key=lambda p: (p[0], p[1] != NO_INTERMEDIATE, p[1]))


def _curve(table: pd.DataFrame, family: str, intermediate: str) -> pd.DataFrame:
    families = table["family"].fillna("") if "family" in table else ""
    return table[(families == family) & (table["intermediate"] == intermediate)]


def _errors(table: pd.DataFrame, column: str, scale: float) -> list[list[float]]:
    mean = table[f"{column}_mean"] * scale
    low = (mean - table[f"{column}_ci95_low"] * scale).fillna(0.0)
    high = (table[f"{column}_ci95_high"] * scale - mean).fillna(0.0)
    return [list(low), list(high)]


def _human(params: float) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if params >= size:
            return f"{params / size:.3g}{unit}"
    return f"{params:.0f}"


def _size_axis(ax: Any, table: pd.DataFrame, x: str) -> None:
    sizes = table.drop_duplicates("model").sort_values(x)
    ax.set_xscale("log")
    # At least half a decade on screen, so that close sizes (e5_small vs its 6-layer cut) stay apart.
    low, high = float(sizes[x].min()), float(sizes[x].max())
    pad = max(1.15, (10**0.5 * low / high) ** 0.5)
    ax.set_xlim(low / pad, high * pad)
    labels = [f"{m}\n{_human(p)}" for m, p in zip(sizes["model"], sizes[x], strict=True)]
    ax.set_xticks(list(sizes[x]), labels)
    ax.minorticks_off()
    ax.set_xlabel(f"{X_LABELS.get(x, x)} (log scale)")
    ax.grid(alpha=0.3)


def _lines(
    fig: Figure, ax: Any, table: pd.DataFrame, column: str, x: str, scale: float = 1.0, label_suffix: str = ""
) -> None:
    names = _curves(table)
    for i, (family, intermediate) in enumerate(names):
        part = _curve(table, family, intermediate).sort_values(x)
        label = f"{family}: {intermediate}" if family else intermediate
        # Lines side by side, a few points apart on screen whatever the axis span, so that their
        # error bars do not hide each other.
        dodge = ScaledTranslation(5 * (i - 0.5 * (len(names) - 1)) / 72, 0, fig.dpi_scale_trans)
        mean = part[f"{column}_mean"] * scale
        low, high = _errors(part, column, scale)
        ax.errorbar(
            part[x],
            mean,
            yerr=[low, high],
            marker="o",
            capsize=4,
            label=f"{label}{label_suffix}",
            transform=ax.transData + dodge,
        )
        # A transform other than transData leaves the data limits alone: extend them by hand.
        ax.update_datalim(
            [(px, m - lo) for px, m, lo in zip(part[x], mean, low, strict=True)]
            + [(px, m + hi) for px, m, hi in zip(part[x], mean, high, strict=True)]
        )
    ax.autoscale_view()


def _select(gap_table: pd.DataFrame, task: str, metric: str, x: str) -> pd.DataFrame:
    table = gap_table[(gap_table["task"] == task) & (gap_table["metric"] == metric)]
    if table.empty:
        raise ValueError(f"no gap rows for task={task} metric={metric}")
    if x not in table or table[x].isna().any():
        raise ValueError(f"x={x!r}: not recorded for every model (columns: {', '.join(table.columns)})")
    return table


def _save(fig: Figure, path: Path | None) -> Figure:
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
    return fig


def plot_gap_vs_size(
    gap_table: pd.DataFrame, task: str, metric: str, path: Path | None = None, x: str = "params"
) -> Figure:
    """Gap and relative gap vs parameter count for one task and metric; saved to ``path`` if given."""
    table = _select(gap_table, task, metric, x)
    fig = Figure(figsize=(11, 4.2))
    ax_abs, ax_rel = fig.subplots(1, 2)
    _lines(fig, ax_abs, table, "gap", x)
    ax_abs.set_ylabel(f"gap: en - mean(non-en) [{metric}]")
    _lines(fig, ax_rel, table, "rel_gap", x, scale=100.0)
    ax_rel.set_ylabel("relative gap: 1 - mean(non-en) / en [%]")
    for ax in (ax_abs, ax_rel):
        _size_axis(ax, table, x)
    ax_abs.legend(title="family: intermediate task")
    n = ",".join(str(v) for v in sorted(set(table["n"])))
    langs = ",".join(str(v) for v in sorted(set(table["n_languages"]))) if "n_languages" in table else "?"
    fig.suptitle(
        f"{task} ({metric}): transfer gap vs model size over {langs} languages; "
        f"bars: 95% CI over seeds (n={n})"
    )
    fig.tight_layout()
    return _save(fig, path)


def plot_scores_vs_size(
    gap_table: pd.DataFrame, task: str, metric: str, path: Path | None = None, x: str = "params"
) -> Figure:
    """English and mean non-English score vs parameter count, one pair of lines per intermediate task."""
    table = _select(gap_table, task, metric, x)
    fig = Figure(figsize=(6.5, 4.2))
    ax = fig.subplots()
    _lines(fig, ax, table, "en", x, label_suffix=": en")
    _lines(fig, ax, table, "avg_non_en", x, label_suffix=": mean non-en")
    ax.set_ylabel(metric)
    _size_axis(ax, table, x)
    ax.legend(fontsize="small")
    ax.set_title(f"{task}: scores vs model size (95% CI over seeds)")
    fig.tight_layout()
    return _save(fig, path)


def plot_all(gap_table: pd.DataFrame, out_dir: Path, x: str = "params") -> list[Path]:
    """Both plots for every (task, metric) of the table, as PNG files in ``out_dir``."""
    paths = []
    suffix = "" if x == "params" else f"_{x}"
    for (task, metric), _ in gap_table.groupby(["task", "metric"]):
        for name, plot in (("gap_vs_size", plot_gap_vs_size), ("scores_vs_size", plot_scores_vs_size)):
            path = Path(out_dir) / f"{name}_{task}_{metric}{suffix}.png"
            plot(gap_table, task, metric, path, x=x)
            paths.append(path)
    return paths
