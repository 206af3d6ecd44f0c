"""Published numbers to set beside ours: the one table of them in the package, each with its citation.

``python -m xlt.results DIR --published xtreme`` (or ``x-stilts``) prints, for every published number of
that source, our mean over seeds of the same model, task and metric (language-averaged test score,
intermediate task as the source ran it), the difference, and a flag where it exceeds the tolerance.

``checked`` says how far each value was verified here (docs/analysis.md has the details):
- ``V``: read in a primary source or a verbatim copy of its table (the mT5 README repeats mT5 paper
  Table 2, which quotes XTREME's XLM-R large and X-STILTs rows; reference.md section 4.1);
- ``U``: from a secondary source only (issue 23's list, the XTREME leaderboard); not checked against
  the paper's PDF here, which could not be read. Confirm before relying on it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from xlt.metrics.xtreme import XTREME_TASK2LANGS
from xlt.utils.console import text_table

MT5 = "Xue et al. 2021, mT5 (NAACL), Table 2 (quoting XTREME and X-STILTs); google-research/multilingual-t5 README"
# What was read (V): mT5 Table 2's XLM-R large row, which quotes Hu et al. 2020; XTREME's own table
# for these numbers was not read here, so its number is not given.
XTREME = (
    "read in " + MT5 + ", XLM-R (large) row; first published in Hu et al. 2020, XTREME (ICML), "
    "zero-shot test (XTREME table number unverified)"
)
# Not read in any primary source (U): issue 23's list / the XTREME leaderboard.
XTREME_SECONDARY = (
    "Hu et al. 2020, XTREME (ICML), XLM-R large zero-shot test (table number unverified); "
    "value from a secondary source only (issue 23's list), not checked against the paper"
)
XSTILTS = "Phang et al. 2020, X-STILTs (AACL), best intermediate task per target, XTREME test; read in " + MT5


@dataclass(frozen=True)
class Published:
    source: str  # xtreme | x-stilts
    model: str  # our conf/model name
    task: str
    metric: str  # our results.jsonl metric name (acc, f1, em; "score" is the task's XTREME score)
    value: float
    citation: str
    checked: str  # V | U (see the module docstring)
    intermediate: str = "none"  # what ran before the target: "none", or "best" (chosen per target)


PUBLISHED: tuple[Published, ...] = (
    # XTREME's XLM-R large baseline (all nine tasks): verified where the mT5 README repeats it.
    Published("xtreme", "xlmr_large", "xnli", "acc", 79.2, XTREME, "V"),
    Published("xtreme", "xlmr_large", "pawsx", "acc", 86.4, XTREME, "V"),
    Published("xtreme", "xlmr_large", "udpos", "f1", 72.6, XTREME_SECONDARY, "U"),
    Published("xtreme", "xlmr_large", "panx", "f1", 65.4, XTREME, "V"),
    Published("xtreme", "xlmr_large", "xquad", "f1", 76.6, XTREME, "V"),
    Published("xtreme", "xlmr_large", "xquad", "em", 60.8, XTREME_SECONDARY, "U"),
    Published("xtreme", "xlmr_large", "mlqa", "f1", 71.6, XTREME, "V"),
    Published("xtreme", "xlmr_large", "mlqa", "em", 53.2, XTREME_SECONDARY, "U"),
    Published("xtreme", "xlmr_large", "tydiqa", "f1", 65.1, XTREME, "V"),
    Published("xtreme", "xlmr_large", "tydiqa", "em", 45.0, XTREME_SECONDARY, "U"),
    Published("xtreme", "xlmr_large", "bucc2018", "f1", 66.0, XTREME_SECONDARY, "U"),
    Published("xtreme", "xlmr_large", "tatoeba", "acc", 57.3, XTREME_SECONDARY, "U"),
    # X-STILTs: XLM-R large after the best English intermediate task per target (six of nine tasks are
    # quoted in the mT5 table; POS, BUCC, Tatoeba and the average were not found in a readable source).
    Published("x-stilts", "xlmr_large", "xnli", "acc", 80.4, XSTILTS, "V", "best"),
    Published("x-stilts", "xlmr_large", "pawsx", "acc", 87.7, XSTILTS, "V", "best"),
    Published("x-stilts", "xlmr_large", "panx", "f1", 64.7, XSTILTS, "V", "best"),
    Published("x-stilts", "xlmr_large", "xquad", "f1", 77.2, XSTILTS, "V", "best"),
    Published("x-stilts", "xlmr_large", "mlqa", "f1", 72.3, XSTILTS, "V", "best"),
    Published("x-stilts", "xlmr_large", "tydiqa", "f1", 76.0, XSTILTS, "V", "best"),
)
SOURCES = tuple(dict.fromkeys(p.source for p in PUBLISHED))
TOLERANCE = 1.0  # points: a difference beyond it is flagged


PUBLISHED_PEFT = "none"  # every published number is of full fine-tuning


# The dev set each source's runs selected on: XTREME's reference code the target's English dev,
# X-STILTs (jiant's XTREME scripts) the training task's validation set. Our rows of that set are
# preferred; where a sweep has only the other, it is used and the table says so (selected_on).
SOURCE_SELECT_ON = {"xtreme": "target", "x-stilts": "train_task"}


def choice_key(
    task: str, model: str, peft: str = PUBLISHED_PEFT, select_on: str = "target"
) -> tuple[str, ...]:
    """The full condition a dev choice is made in: a LoRA run's choice never stands for full
    fine-tuning's, nor one selected on another dev set (xlt.results.choice: one choice per
    (task, model, peft, select_on))."""
    return (task, model, peft, select_on)


def choices_from(best: pd.DataFrame) -> dict[tuple[str, ...], str]:
    """xlt.results.choice's table -> {choice_key: chosen intermediate}, one entry per full condition."""
    if best.empty:
        return {}
    return {
        choice_key(r.task, r.model, r.peft, r.select_on): r.chosen
        for r in best.itertuples(index=False)
        if r.chosen
    }


def published(source: str) -> list[Published]:
    if source not in SOURCES:
        raise ValueError(f"--published {source}: unknown source; valid: {', '.join(SOURCES)}")
    return [p for p in PUBLISHED if p.source == source]


def ours(
    rows: pd.DataFrame,
    entry: Published,
    split: str = "test",
    choices: dict[tuple[str, ...], str] | None = None,
) -> tuple[float, int, str, str]:
    """Our mean over seeds of ``entry``'s model, task and metric (each run's language average), the
    number of seeds, the intermediate task it is of, and the languages: "n/N" of the task's XTREME list."""
    peft = rows["peft"] if "peft" in rows else pd.Series("none", index=rows.index)
    select_on = (
        rows["select_on"].fillna("target") if "select_on" in rows else pd.Series("target", index=rows.index)
    )
    condition = (
        (rows["stage"] == "target")
        & (rows["split"] == split)
        & (rows["task"] == entry.task)
        & (rows["model"] == entry.model)
        & (rows["metric"] == entry.metric)
        & (peft == PUBLISHED_PEFT)
    )
    sets = sorted(set(select_on[condition]))
    preferred = SOURCE_SELECT_ON.get(entry.source, "target")
    selected_on = preferred if preferred in sets or not sets else sets[0]
    inter = entry.intermediate
    if inter == "best":
        inter = (choices or {}).get(choice_key(entry.task, entry.model, PUBLISHED_PEFT, selected_on), "")
        if not inter:
            return math.nan, 0, "no dev-chosen intermediate", ""
    mine = rows[condition & (rows["intermediate"] == inter) & (select_on == selected_on)]
    avg = mine[mine["language"] == "avg"]
    if avg.empty:
        return math.nan, 0, inter, ""
    languages = mine[~mine["language"].isin(("avg", "avg_non_en", "gap", "rel_gap"))]
    per_run = languages.groupby("run_dir")["language"].nunique()
    n_all = len(XTREME_TASK2LANGS.get(entry.task, ()))
    inter = inter if selected_on == preferred else f"{inter} (selected on {selected_on})"
    return float(avg["value"].mean()), int(avg["seed"].nunique()), inter, f"{int(per_run.min())}/{n_all}"


def compare(
    rows: pd.DataFrame,
    source: str,
    split: str = "test",
    tolerance: float = TOLERANCE,
    choices: dict[tuple[str, ...], str] | None = None,
) -> pd.DataFrame:
    out = []
    for entry in published(source):
        value, seeds, inter, languages = ours(rows, entry, split, choices)
        diff = value - entry.value
        flag = "" if math.isnan(value) else ("BEYOND TOLERANCE" if abs(diff) > tolerance else "ok")
        if languages and languages.split("/")[0] != languages.split("/")[1]:
            flag = (flag + "; " if flag else "") + f"ours over {languages} languages"
        out.append(
            {
                "model": entry.model,
                "task": entry.task,
                "metric": entry.metric,
                "published": entry.value,
                "ours": value,
                "seeds": seeds,
                "intermediate": inter,
                "languages": languages,
                "diff": diff,
                "flag": flag,
                "checked": entry.checked,
                "citation": entry.citation,
            }
        )
    return pd.DataFrame.from_records(out)


def format_published(
    table: pd.DataFrame, source: str, tolerance: float = TOLERANCE, split: str = "test"
) -> str:
    title = (
        f"Published {source} numbers (test) beside ours ({split}, mean over languages; tolerance {tolerance:g} "
        "points; checked V: read in a primary source, U: secondary source only):"
    )
    header = [
        "model",
        "task",
        "metric",
        "published",
        "ours",
        "seeds",
        "intermediate",
        "languages",
        "diff",
        "flag",
        "checked",
        "source",
    ]
    rows = []
    for r in table.itertuples(index=False):
        mine = "-" if math.isnan(r.ours) else f"{r.ours:.2f}"
        diff = "-" if math.isnan(r.diff) else f"{r.diff:+.2f}"
        rows.append(
            [
                r.model,
                r.task,
                r.metric,
                f"{r.published:.1f}",
                mine,
                r.seeds,
                r.intermediate,
                r.languages or "-",
                diff,
                r.flag or "no run",
                r.checked,
                r.citation,
            ]
        )
    return f"{title}\n{text_table(header, rows)}"
