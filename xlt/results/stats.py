"""The gap-vs-size statistics over seeds of a sweep's tidy rows (:func:`xlt.results.load.load_sweep`).

The gap is the one of :mod:`xlt.results.gap` (English minus the mean over the other languages),
recomputed per run from the per-language rows with :func:`~xlt.results.gap.compute_gap`; then
:func:`gap_by_size` summarises it over seeds (mean, sample std, t-based 95% CI) per model and
intermediate task, and :func:`intermediate_effect` pairs each intermediate task's runs with the
no-intermediate runs ("none") of the same model and seed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import pandas as pd

from xlt.results.gap import compute_gap
from xlt.results.load import CONDITION, DEFAULT_SELECT_ON, NO_INTERMEDIATE
from xlt.results.rows import AGGREGATE_LANGUAGES


def seed_stats(values: Iterable[float]) -> dict[str, float]:
    """n, mean, sample std (ddof=1) and the t-based 95% confidence interval of the mean.

    std and the interval are NaN with fewer than two values."""
    from scipy import stats

    xs = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    n = len(xs)
    mean = sum(xs) / n if n else math.nan
    if n < 2:
        return {"n": n, "mean": mean, "std": math.nan, "ci95_low": math.nan, "ci95_high": math.nan}
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "ci95_low": mean - half, "ci95_high": mean + half}


# Model families by name prefix, for rows written before ``model_family`` was recorded.
_FAMILY_PREFIXES = (("xlmr", "xlmr"), ("qwen2_5", "qwen2.5"), ("e5", "e5"))


def model_families(rows: pd.DataFrame) -> pd.Series:
    """Each row's model family: the recorded ``model_family`` (conf/model/*.yaml ``family``), else
    the name's prefix (``xlmr_large`` -> ``xlmr``), else ""."""
    guessed = (
        rows["model"]
        .astype(str)
        .map(lambda m: next((family for prefix, family in _FAMILY_PREFIXES if m.startswith(prefix)), ""))
    )
    if "model_family" not in rows:
        return guessed
    recorded = rows["model_family"].astype(object)
    return recorded.where(recorded.notna() & (recorded.astype(str) != ""), guessed).astype(str)


def model_sizes(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per model: its family, its counted parameter count (the smallest recorded, i.e.
    without LoRA adapters) and, when recorded, its non-embedding count; sorted by size."""
    agg: dict[str, tuple[str, str]] = {"params": ("model_params", "min"), "family": ("family", "first")}
    if "model_params_non_embedding" in rows:
        agg["params_non_embedding"] = ("model_params_non_embedding", "min")
    sizes = rows.assign(family=model_families(rows)).groupby("model", as_index=False).agg(**agg)
    return sizes.sort_values(["params", "model"], ignore_index=True)


def _target_rows(rows: pd.DataFrame, split: str) -> pd.DataFrame:
    selected = rows[(rows["stage"] == "target") & (rows["split"] == split)]
    if "select_on" not in selected or selected["select_on"].isna().any():  # rows built before it was recorded
        selected = selected.assign(select_on=selected.get("select_on", DEFAULT_SELECT_ON))
        selected["select_on"] = selected["select_on"].fillna(DEFAULT_SELECT_ON)
    return selected


def _language_rows(rows: pd.DataFrame, split: str) -> pd.DataFrame:
    selected = _target_rows(rows, split)
    return selected[~selected["language"].isin(AGGREGATE_LANGUAGES)]


def _run_gaps(selected: pd.DataFrame, keep: Iterable[str] | None = None) -> list[dict]:
    """Per run (and task, metric) of ``selected`` (per-language rows): its gap over its languages, or
    over those of ``keep`` only."""
    keys = ["run_dir", *CONDITION, "seed"]
    wanted = None if keep is None else set(keep)
    out = []
    for key, group in selected.groupby(keys, sort=False, dropna=False):
        scores = {
            lang: v
            for lang, v in zip(group["language"], group["value"], strict=True)
            if wanted is None or lang in wanted
        }
        gap = compute_gap(scores)
        if gap is None:
            continue
        out.append(
            {
                **dict(zip(keys, key, strict=True)),
                "en": gap.en,
                "avg_non_en": gap.avg_non_en,
                "gap": gap.gap,
                "rel_gap": gap.rel_gap,
                "n_languages": len(scores),
                "languages": ",".join(sorted(scores)),
            }
        )
    return out


GAP_COLUMNS = [
    "run_dir",
    *CONDITION,
    "seed",
    "en",
    "avg_non_en",
    "gap",
    "rel_gap",
    "n_languages",
    "languages",
]
# The runs a gap-by-size table compares with one another: every model and intermediate task of a
# target task, metric and training source.
COMPARED = ("task", "split", "metric", "train_task")


def gaps_per_run(rows: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """One row per (run, task, metric): en, avg_non_en, gap, rel_gap and the number of languages,
    from the run's per-language rows through :func:`compute_gap`, over every language the run scored.
    Tasks without an English score (retrieval) have no gap and no row."""
    return pd.DataFrame.from_records(_run_gaps(_language_rows(rows, split)), columns=GAP_COLUMNS)


def run_label(run: pd.DataFrame) -> str:
    """A run, as the tables name it: model/intermediate/seed (and peft or select_on where not the default)."""
    first = run.iloc[0]
    label = f"{first['model']}/{first['intermediate']}/{first['seed']}"
    for column, default in (("peft", "none"), ("select_on", "target")):
        value = first.get(column, default)
        if isinstance(value, str) and value not in (default, ""):
            label += f"/{value}"
    return label


def dropped_languages(group: pd.DataFrame, common: set[str] | None = None, most: int = 3) -> list[str]:
    """The languages some run of ``group`` (per-language rows of the compared runs) lacks, each with
    the runs that lack it: ``sw (xlmr_base/none/2)``; past ``most`` runs, "+N more"."""
    per_run = {run_label(g): set(g["language"]) for _, g in group.groupby("run_dir", sort=False)}
    common = set.intersection(*per_run.values()) if common is None else common
    out = []
    for lang in sorted(set.union(*per_run.values()) - common):
        lacking = sorted(label for label, langs in per_run.items() if lang not in langs)
        more = f", +{len(lacking) - most} more" if len(lacking) > most else ""
        out.append(f"{lang} ({', '.join(lacking[:most])}{more})")
    return out


def shared_languages(selected: pd.DataFrame, keys: Sequence[str]) -> dict[tuple, tuple[list[str], list[str]]]:
    """Per group of ``keys``: (the languages every run of the group scored, those some run lacks,
    each with the runs that lack it: :func:`dropped_languages`)."""
    out: dict[tuple, tuple[list[str], list[str]]] = {}
    for key, group in selected.groupby(list(keys), sort=False, dropna=False):
        per_run = [set(g["language"]) for _, g in group.groupby("run_dir", sort=False)]
        common = set.intersection(*per_run)
        out[key if isinstance(key, tuple) else (key,)] = (sorted(common), dropped_languages(group, common))
    return out


def gaps_on_equal_footing(
    rows: pd.DataFrame, split: str = "test", keys: Sequence[str] = COMPARED
) -> pd.DataFrame:
    """:func:`gaps_per_run`, each run's gap over the languages every run of its ``keys`` group scored
    (by default every model and intermediate task of a task and metric); ``dropped`` names the
    languages left out because some compared run lacks them. A group sharing no English and other
    language has no rows (:func:`refusals` says so)."""
    selected = _language_rows(rows, split)
    out = []
    for key, (common, dropped) in shared_languages(selected, keys).items():
        mask = pd.Series(True, index=selected.index)
        for k, v in zip(keys, key, strict=True):
            mask &= selected[k] == v
        for record in _run_gaps(selected[mask], common):
            record["dropped"] = "; ".join(dropped)
            out.append(record)
    return pd.DataFrame.from_records(out, columns=[*GAP_COLUMNS, "dropped"])


def refusals(rows: pd.DataFrame, split: str = "test", keys: Sequence[str] = COMPARED) -> list[str]:
    """One line per compared group whose runs share no English score and other language: no gap
    can be compared there."""
    selected = _language_rows(rows, split)
    lines = []
    for key, (common, dropped) in shared_languages(selected, keys).items():
        if "en" not in common or len(common) < 2:
            what = ", ".join(f"{k}={v}" for k, v in zip(keys, key, strict=True))
            lines.append(
                f"refused: {what}: the compared runs share only {','.join(common) or 'no language'} "
                f"(lacking: {'; '.join(dropped)}); no gap compared"
            )
    return lines


def _with_sizes(table: pd.DataFrame, rows: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """Add each model's size and sort by ``order`` then size, the no-intermediate rows first."""
    table = table.merge(model_sizes(rows), on="model", how="left")
    table["_baseline_last"] = table["intermediate"] != NO_INTERMEDIATE
    table = table.sort_values([*order, "_baseline_last", "intermediate", "params"], ignore_index=True)
    return table.drop(columns="_baseline_last")


def _summarise(frame: pd.DataFrame, keys: list[str], values: Sequence[str]) -> pd.DataFrame:
    """Seed statistics of ``values`` per ``keys``; a frame with ``languages`` (gaps) also gets
    ``n_languages`` (the fewest over the seeds) and ``languages`` (" | " between seeds that differ)."""
    out = []
    with_languages = "languages" in frame
    for key, group in frame.groupby(keys, sort=False, dropna=False):
        record = dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True))
        record["seeds"] = ",".join(str(s) for s in sorted(group["seed"].unique()))
        for value in values:
            stats = seed_stats(group[value])
            record["n"] = stats.pop("n")
            record.update({f"{value}_{k}": v for k, v in stats.items()})
        if with_languages:
            record["n_languages"] = int(group["n_languages"].min())
            record["languages"] = " | ".join(sorted(set(group["languages"])))
            if "dropped" in group:
                record["dropped"] = " | ".join(sorted(set(group["dropped"])))
        out.append(record)
    columns = [*keys, "n", "seeds"] + [
        f"{v}_{s}" for v in values for s in ("mean", "std", "ci95_low", "ci95_high")
    ]
    columns += ["n_languages", "languages"] if with_languages else []
    columns += ["dropped"] if with_languages and "dropped" in frame else []
    return pd.DataFrame.from_records(out, columns=columns)


def score_by_size(rows: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """Per task, metric, language (and the avg/avg_non_en rows) and condition: the score over
    seeds, with each model's size; sorted by task, metric, language, intermediate, size."""
    selected = _target_rows(rows, split)
    selected = selected[~selected["language"].isin(("gap", "rel_gap"))]
    table = _summarise(selected.rename(columns={"value": "score"}), [*CONDITION, "language"], ["score"])
    return _with_sizes(table, rows, ["task", "metric", "language"])


def gap_by_size(rows: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """Per task, metric, model and intermediate task: gap (absolute), rel_gap, en and avg_non_en
    over seeds (mean, std, 95% CI), with the model's size; sorted by task, intermediate, size. Every
    gap is over the languages all compared runs (every model, intermediate task and seed of the task
    and metric) scored: ``languages`` lists them, ``dropped`` those some run lacks."""
    table = _summarise(
        gaps_on_equal_footing(rows, split), list(CONDITION), ["gap", "rel_gap", "en", "avg_non_en"]
    )
    return _with_sizes(table, rows, ["task", "metric"])


def intermediate_effect(rows: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """Each intermediate task minus no intermediate ("none"), paired by seed (same model, task,
    metric, training source and peft): the change in en, avg_non_en, gap and rel_gap, over the
    seeds present in both (mean, std, 95% CI). Both sides are scored over the languages every run of
    the pair (both tasks, all seeds) has: ``languages`` lists them, ``dropped`` those left out."""
    pair_keys = [k for k in CONDITION if k != "intermediate"]
    measures = ["en", "avg_non_en", "gap", "rel_gap"]
    tagged = _language_rows(rows, split)
    out = [
        pd.DataFrame(
            columns=[*CONDITION, "seed", *(f"d_{m}" for m in measures), "n_languages", "languages", "dropped"]
        )
    ]
    for treated in sorted(set(tagged["intermediate"]) - {NO_INTERMEDIATE}):
        frame = tagged[tagged["intermediate"].isin([treated, NO_INTERMEDIATE])]
        gaps = gaps_on_equal_footing(frame, split, pair_keys)
        base = gaps[gaps["intermediate"] == NO_INTERMEDIATE]
        treated_gaps = gaps[gaps["intermediate"] != NO_INTERMEDIATE]
        paired = treated_gaps.merge(
            base[[*pair_keys, "seed", *measures]], on=[*pair_keys, "seed"], suffixes=("", "_none")
        )
        for m in measures:
            paired[f"d_{m}"] = paired[m] - paired[f"{m}_none"]
        out.append(paired)
    effect = pd.concat([o for o in out if not o.empty] or out[:1], ignore_index=True)
    table = _summarise(effect, list(CONDITION), [f"d_{m}" for m in measures])
    return _with_sizes(table, rows, ["task", "metric"])
