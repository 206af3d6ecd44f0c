"""Human-readable tables of a run's results: per language, then avg, avg_non_en, gap and rel_gap."""

from __future__ import annotations

import math
from collections.abc import Iterable

from xlt.results.rows import AGGREGATE_LANGUAGES, ResultRow
from xlt.utils.console import RULE, text_table


def _fmt(metric_value: float, rel: bool) -> str:
    if math.isnan(metric_value):
        return "nan"
    return f"{metric_value * 100:.1f}%" if rel else f"{metric_value:.2f}"


def format_table(rows: Iterable[ResultRow], stage: str, task: str, split: str) -> str:
    """Languages down, metrics across; aggregates at the bottom. Empty string when nothing matches."""
    selected = [r for r in rows if r.stage == stage and r.task == task and r.split == split]
    if not selected:
        return ""
    metrics = list(dict.fromkeys(r.metric for r in selected))
    langs = [lang for lang in dict.fromkeys(r.language for r in selected) if lang not in AGGREGATE_LANGUAGES]
    aggregates = [a for a in AGGREGATE_LANGUAGES if any(r.language == a for r in selected)]
    value = {(r.language, r.metric): r.value for r in selected}
    count = {r.language: r.n_examples for r in selected if r.n_examples is not None}
    lines: list[list[str] | object] = []
    for lang in [*langs, *aggregates]:
        if aggregates and lang == aggregates[0]:
            lines.append(RULE)
        cells = [lang]
        for metric in metrics:
            v = value.get((lang, metric))
            cells.append("" if v is None else _fmt(v, lang == "rel_gap"))
        cells.append(str(count.get(lang, "")))
        lines.append(cells)
    header = ["lang", *metrics, "n"]
    table = text_table(header, lines, "plain", ["left"] + ["right"] * (len(header) - 1))
    return f"{stage} / {task} / {split}\n{table}"
