"""A sweep's runs as one tidy table, and the gap-vs-size statistics over seeds.

Every job of a sweep (``multirun/<sweep>/<overrides>/``) writes ``results.jsonl``. :func:`load_sweep`
gathers them into one row per (run, stage, task, split, language, metric), keeping the run's
context (model, parameter count, intermediate task, seed, ...). A job directory without results,
or a file that cannot be read, becomes a one-line :class:`Problem` naming the file: reported,
never silently dropped.

The gap is the one of :mod:`xlt.results.gap` (English minus the mean over the other languages),
recomputed per run from the per-language rows with :func:`~xlt.results.gap.compute_gap`; then
:func:`gap_by_size` summarises it over seeds (mean, sample std, t-based 95% CI) per model and
intermediate task, and :func:`intermediate_effect` pairs each intermediate task's runs with the
no-intermediate runs ("none") of the same model and seed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from xlt.results.gap import compute_gap
from xlt.results.rows import AGGREGATE_LANGUAGES, IncompleteResults, read_results

RESULTS_FILE = "results.jsonl"
NO_INTERMEDIATE = "none"
# What a results.jsonl row must carry for the analysis.
REQUIRED_FIELDS = ("stage", "task", "split", "language", "metric", "value", "model", "model_params",
                   "intermediate", "seed")  # fmt: skip
# A run's identity apart from its seed: runs that differ only in seed are samples of one condition.
CONDITION = ("task", "split", "metric", "model", "peft", "train_task", "intermediate")
# Files and folders that mark a job directory (Hydra's .hydra/, or what xlt.run writes).
_RUN_MARKERS = (RESULTS_FILE, "state.json", "config.yaml", ".hydra")
_NOT_RUNS = {".submitit", "checkpoints", "csv", "wandb", "predictions", "analysis", ".hydra"}


@dataclass(frozen=True)
class Problem:
    """A job directory or file the analysis could not use, in one line."""

    path: Path
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass
class Sweep:
    """The tidy rows of every readable run, the run directories found, and what went wrong."""

    rows: pd.DataFrame
    run_dirs: list[Path]
    problems: list[Problem]


# ----------------------------------------------------------------------------- loading


def find_run_dirs(root: Path) -> list[Path]:
    """Job directories under ``root`` (``root`` itself when it is one), sorted."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such directory")
    if _is_run_dir(root):
        return [root]
    found: list[Path] = []
    stack = [root]
    while stack:
        folder = stack.pop()
        for child in folder.iterdir():
            if not child.is_dir() or child.name in _NOT_RUNS:
                continue
            if _is_run_dir(child):
                found.append(child)
            else:
                stack.append(child)
    return sorted(found)


def _is_run_dir(folder: Path) -> bool:
    return any((folder / marker).exists() for marker in _RUN_MARKERS)


class RunFileError(ValueError):
    """A run's results.jsonl cannot be used; ``problem`` says which file and why, in one line."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


def load_run(run_dir: Path) -> list[dict[str, Any]]:
    """The rows of one run's ``results.jsonl``; :class:`RunFileError` when it is missing,
    malformed, or lacks a field the analysis needs."""
    path = Path(run_dir) / RESULTS_FILE
    if not path.is_file():
        raise RunFileError(Problem(path, f"missing ({_run_status(Path(run_dir))})"))
    try:
        records = read_results(path)
    except IncompleteResults as err:  # no end marker, or one that does not match: cut short or edited
        raise RunFileError(Problem(path, str(err).removeprefix(f"{path}: ").removeprefix(f"{path}:"))) from None
    except ValueError as err:  # "<path>:<line>: not a JSON object (...)"
        raise RunFileError(Problem(path, "line " + str(err).removeprefix(f"{path}:"))) from None
    if not records:
        raise RunFileError(Problem(path, "empty"))
    for lineno, record in enumerate(records, 1):
        if not isinstance(record, dict):
            raise RunFileError(Problem(path, f"line {lineno}: not a JSON object"))
        missing = [f for f in REQUIRED_FIELDS if f not in record]
        if missing:
            raise RunFileError(Problem(path, f"line {lineno}: missing field(s) {', '.join(missing)}"))
        if not isinstance(record["value"], int | float) or isinstance(record["value"], bool):
            raise RunFileError(Problem(path, f"line {lineno}: value {record['value']!r} is not a number"))
        if not math.isfinite(record["value"]):
            raise RunFileError(Problem(path, f"line {lineno}: value {record['value']} is not finite (a diverged run?)"))
    return records


def is_debug(records: Sequence[dict[str, Any]]) -> str:
    """The run's debug mode ('' for a real run): rows carry ``debug`` (debug=fdr/limit/overfit or a
    trainer.limit_*/fast_dev_run/overfit_batches setting)."""
    return next((str(r["debug"]) for r in records if r.get("debug")), "")


def _run_status(run_dir: Path) -> str:
    import json

    state = run_dir / "state.json"
    if not state.is_file():
        return "the job has not started or failed before training"
    try:
        data = json.loads(state.read_text())
    except (OSError, json.JSONDecodeError):
        return "state.json unreadable"
    done = sorted(data.get("stages", {}))
    if data.get("finished"):
        return "state.json says finished, but no results were written"
    return f"unfinished; stages done: {', '.join(done) or 'none'}"


def load_sweep(roots: Path | str | Sequence[Path | str], include_debug: bool = False) -> Sweep:
    """Every run under one or more sweep (or run) directories, as a tidy table plus problems.

    Extra columns: ``run_dir`` (where the file was found) and ``sweep`` (the root's name). A debug or
    partial run (its rows' ``debug`` field) is left out, as a problem line, unless ``include_debug``.
    """
    if isinstance(roots, str | Path):
        roots = [roots]
    frames, run_dirs, problems = [], [], []
    for root in map(Path, roots):
        for run_dir in find_run_dirs(root):
            run_dirs.append(run_dir)
            try:
                records = load_run(run_dir)
            except RunFileError as err:
                problems.append(err.problem)
                continue
            debug = is_debug(records)
            if debug and not include_debug:
                problems.append(Problem(run_dir / RESULTS_FILE, f"a debug run ({debug}): left out "
                                        "(--include-debug to analyse it)"))  # fmt: skip
                continue
            frame = pd.DataFrame.from_records(records)
            frame["run_dir"] = str(run_dir)
            frame["sweep"] = root.name
            frames.append(frame)
    rows = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=[*REQUIRED_FIELDS, "run_dir"])
    )
    rows = _normalise(rows)
    return Sweep(rows, run_dirs, problems + duplicate_runs(rows))


def rows_from_wandb_runs(runs: Iterable[Any]) -> pd.DataFrame:
    """Tidy rows from W&B runs (objects with ``.summary``, ``.config`` and ``.id``, as
    ``wandb.Api().runs(...)`` returns): the target stage's ``{split}/{task}/{language}/{metric}``
    summary keys, with the context from the logged config. The files stay the source of truth;
    this is for browsing runs that are not on this machine."""
    records = []
    for run in runs:
        config, summary = dict(run.config), dict(run.summary)
        model = config.get("model") or {}
        intermediate = config.get("intermediate") or {}
        target = config.get("target") or {}
        context = {
            "model": model.get("name"),
            "model_params": summary.get("model_params") or model.get("params"),
            "intermediate": intermediate.get("name") or NO_INTERMEDIATE,
            "train_task": target.get("train_task") or "",
            "seed": config.get("seed"),
            "peft": (config.get("scale") or {}).get("peft", "none"),
            "run_dir": f"wandb:{run.id}",
        }
        for key, value in summary.items():
            parts = key.split("/")
            if len(parts) != 4 or "@" in key or not isinstance(value, int | float) or isinstance(value, bool):
                continue
            split, task, language, metric = parts
            records.append({"stage": "target", "task": task, "split": split, "language": language,
                            "metric": metric, "value": float(value), **context})  # fmt: skip
    return _normalise(
        pd.DataFrame.from_records(records, columns=[*REQUIRED_FIELDS, "train_task", "peft", "run_dir"])
    )


def load_wandb(path: str, group: str | None = None) -> pd.DataFrame:
    """Rows of the W&B runs of ``entity/project`` (optionally one sweep's group); needs network."""
    import wandb

    filters = {"group": group} if group else None
    return rows_from_wandb_runs(wandb.Api().runs(path, filters=filters))


def _normalise(rows: pd.DataFrame) -> pd.DataFrame:
    rows = rows.copy()
    for column, default in (("peft", "none"), ("train_task", ""), ("n_examples", None)):
        if column not in rows:
            rows[column] = default
    rows["peft"] = rows["peft"].fillna("none")
    rows["train_task"] = rows["train_task"].fillna("")
    rows["value"] = pd.to_numeric(rows["value"], errors="coerce")
    rows["model_params"] = pd.to_numeric(rows["model_params"], errors="coerce")
    return rows


# ----------------------------------------------------------------------------- statistics


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
    guessed = rows["model"].astype(str).map(
        lambda m: next((family for prefix, family in _FAMILY_PREFIXES if m.startswith(prefix)), "")
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
    return rows[(rows["stage"] == "target") & (rows["split"] == split)]


def gaps_per_run(rows: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """One row per (run, task, metric): en, avg_non_en, gap, rel_gap and the number of languages,
    from the run's per-language rows through :func:`compute_gap`. Tasks without an English score
    (retrieval) have no gap and no row."""
    selected = _target_rows(rows, split)
    selected = selected[~selected["language"].isin(AGGREGATE_LANGUAGES)]
    keys = ["run_dir", *CONDITION, "seed"]
    out = []
    for key, group in selected.groupby(keys, sort=False, dropna=False):
        scores = dict(zip(group["language"], group["value"], strict=True))
        gap = compute_gap(scores)
        if gap is None:
            continue
        out.append({**dict(zip(keys, key, strict=True)), "en": gap.en, "avg_non_en": gap.avg_non_en,
                    "gap": gap.gap, "rel_gap": gap.rel_gap, "n_languages": len(scores),
                    "languages": ",".join(sorted(scores))})  # fmt: skip
    columns = [*keys, "en", "avg_non_en", "gap", "rel_gap", "n_languages", "languages"]
    return pd.DataFrame.from_records(out, columns=columns)


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
        out.append(record)
    columns = [*keys, "n", "seeds"] + [
        f"{v}_{s}" for v in values for s in ("mean", "std", "ci95_low", "ci95_high")
    ]
    columns += ["n_languages", "languages"] if with_languages else []
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
    over seeds (mean, std, 95% CI), with the model's size; sorted by task, intermediate, size."""
    table = _summarise(gaps_per_run(rows, split), list(CONDITION), ["gap", "rel_gap", "en", "avg_non_en"])
    return _with_sizes(table, rows, ["task", "metric"])


def intermediate_effect(rows: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """Each intermediate task minus no intermediate ("none"), paired by seed (same model, task,
    metric, training source and peft): the change in en, avg_non_en, gap and rel_gap, over the
    seeds present in both (mean, std, 95% CI)."""
    gaps = gaps_per_run(rows, split)
    pair_keys = [k for k in CONDITION if k != "intermediate"] + ["seed"]
    base = gaps[gaps["intermediate"] == NO_INTERMEDIATE]
    treated = gaps[gaps["intermediate"] != NO_INTERMEDIATE]
    measures = ["en", "avg_non_en", "gap", "rel_gap"]
    paired = treated.merge(base[pair_keys + measures + ["languages"]], on=pair_keys, suffixes=("", "_none"))
    # a pair is over the languages both runs scored
    paired["languages"] = [",".join(sorted(set(a.split(",")) & set(b.split(","))))
                           for a, b in zip(paired["languages"], paired["languages_none"], strict=True)]  # fmt: skip
    paired["n_languages"] = [len(x.split(",")) if x else 0 for x in paired["languages"]]
    for m in measures:
        paired[f"d_{m}"] = paired[m] - paired[f"{m}_none"]
    table = _summarise(paired, list(CONDITION), [f"d_{m}" for m in measures])
    return _with_sizes(table, rows, ["task", "metric"])


# A run of one model, intermediate task and seed, whatever its target: the targets of one such run
# family make up an XTREME-style overall score.
FAMILY = ("model", "peft", "intermediate", "seed")
# results.jsonl metric names -> evaluate.py's, for xlt.metrics.xtreme.task_score.
_XTREME_METRIC = {"acc": "accuracy", "f1": "f1", "em": "exact_match"}


def xtreme_task_scores(rows: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """One row per (run family, XTREME task): the XTREME task score from the run's language-averaged
    (``avg``) rows: (EM + F1) / 2 for QA, else F1, else accuracy (``xlt.metrics.xtreme.task_score``).
    A task run more than once in a family (e.g. two training sources) is averaged, ``runs`` says so.
    ``languages`` counts the task's XTREME languages that were scored (the fewest over those runs),
    out of ``n_languages``: an average over fewer languages is not the task's XTREME score."""
    from xlt.metrics.xtreme import XTREME_TASK2LANGS, task_score

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
            out.append({**record, "score": sum(per_run) / len(per_run), "runs": len(per_run),
                        "languages": min(covered), "n_languages": len(XTREME_TASK2LANGS[task])})  # fmt: skip
    return pd.DataFrame.from_records(
        out, columns=[*FAMILY, "task", "score", "runs", "languages", "n_languages"]
    )


def xtreme_overall(rows: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """XTREME's overall score per run family with results for at least two target tasks: the plain
    mean of the task scores (:func:`xtreme_task_scores`), as evaluate.py's ``all_task``. ``tasks``
    lists the tasks that went in (XTREME order), ``partial`` those scored on only some of their
    languages (``udpos 3/33``), and ``complete`` says whether all nine went in on all their
    languages: anything less is not XTREME's overall score. One ``score_<task>`` column per task."""
    from xlt.metrics.xtreme import XTREME_TASK2LANGS

    scores = xtreme_task_scores(rows, split)
    order = list(XTREME_TASK2LANGS)
    out = []
    for key, group in scores.groupby(list(FAMILY), sort=False, dropna=False):
        if len(group) < 2:
            continue
        by_task = {r.task: r for r in group.itertuples(index=False)}
        tasks = [t for t in order if t in by_task]
        partial = [f"{t} {by_task[t].languages}/{by_task[t].n_languages}" for t in tasks
                   if by_task[t].languages < by_task[t].n_languages]  # fmt: skip
        record = dict(zip(FAMILY, key, strict=True))
        record.update({"n_tasks": len(tasks), "tasks": ",".join(tasks), "partial": ",".join(partial),
                       "complete": len(tasks) == len(order) and not partial,
                       "overall": sum(by_task[t].score for t in tasks) / len(tasks)})  # fmt: skip
        record.update({f"score_{t}": by_task[t].score if t in by_task else math.nan for t in order})
        out.append(record)
    columns = [*FAMILY, "n_tasks", "tasks", "partial", "complete", "overall", *(f"score_{t}" for t in order)]
    table = pd.DataFrame.from_records(out, columns=columns)
    return table.sort_values(list(FAMILY), ignore_index=True)


def format_overall_table(table: pd.DataFrame) -> str:
    """The overall rows as GitHub markdown, each with the tasks it averages and those it has only
    some languages of."""
    from xlt.metrics.xtreme import XTREME_TASK2LANGS

    n_all = len(XTREME_TASK2LANGS)
    lines = ["| model | intermediate | seed | overall | tasks averaged |", "|---|---|---|---|---|"]
    for r in table.itertuples(index=False):
        notes = [f"{r.n_tasks} of {n_all}"] if r.n_tasks < n_all else []
        if r.partial:
            notes.append("some languages only: " + r.partial.replace(",", ", "))
        which = r.tasks.replace(",", ", ") + (
            f" ({'; '.join(notes)}: not XTREME's full score)" if notes else ""
        )
        lines.append(f"| {r.model} | {r.intermediate} | {r.seed} | {r.overall:.2f} | {which} |")
    return "\n".join(lines)


def best_intermediate(rows: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """Per target task and model: the intermediate task with the best mean XTREME task score over
    seeds (:func:`xtreme_task_scores`), the no-intermediate score beside it and the difference.
    ``compared`` lists every intermediate task run for that target and model (best first), with its
    mean and seeds; ``languages`` is the fewest of the task's languages any of them scored."""
    scores = xtreme_task_scores(rows, split)
    if scores.empty:
        return pd.DataFrame(columns=["task", "model", "family", "params", "best", "best_score", "best_seeds",
                                     "none_score", "gain", "compared", "languages", "n_languages"])  # fmt: skip
    means = (
        scores.groupby(["task", "model", "peft", "intermediate"], as_index=False, dropna=False)
        .agg(score=("score", "mean"), seeds=("seed", "nunique"), languages=("languages", "min"),
             n_languages=("n_languages", "first"))  # fmt: skip
    )
    out = []
    for (task, model, peft), group in means.groupby(["task", "model", "peft"], sort=False, dropna=False):
        ranked = group.sort_values(["score", "intermediate"], ascending=[False, True])
        treated = ranked[ranked["intermediate"] != NO_INTERMEDIATE]
        base = ranked[ranked["intermediate"] == NO_INTERMEDIATE]
        none_score = float(base["score"].iloc[0]) if not base.empty else math.nan
        best = treated.iloc[0] if not treated.empty else None  # no intermediate task ran: no best
        best_score = float(best["score"]) if best is not None else math.nan
        out.append({"task": task, "model": model, "peft": peft,
                    "best": best["intermediate"] if best is not None else "",
                    "best_score": best_score, "best_seeds": int(best["seeds"]) if best is not None else 0,
                    "none_score": none_score, "gain": best_score - none_score,
                    "compared": ", ".join(f"{r.intermediate} {r.score:.2f} (n={r.seeds})"
                                          for r in ranked.itertuples(index=False)),
                    "languages": int(ranked["languages"].min()), "n_languages": int(ranked["n_languages"].iloc[0])})  # fmt: skip
    table = pd.DataFrame.from_records(out).merge(model_sizes(rows), on="model", how="left")
    order = {t: i for i, t in enumerate(_xtreme_order())}
    table["_task"] = table["task"].map(order)
    return table.sort_values(["_task", "params", "model"], ignore_index=True).drop(columns="_task")


def _num(value: float, spec: str = ".2f") -> str:
    return "-" if value is None or math.isnan(value) else format(value, spec)


def _xtreme_order() -> list[str]:
    from xlt.metrics.xtreme import XTREME_TASK2LANGS

    return list(XTREME_TASK2LANGS)


def format_best_intermediate(table: pd.DataFrame) -> str:
    lines = ["| target | model | family | params | best intermediate | score | none | gain | languages | compared |",
             "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in table.itertuples(index=False):
        lines.append(f"| {r.task} | {r.model} | {r.family} | {_human(r.params)} | {r.best or '-'} "
                     f"| {_num(r.best_score)} | {_num(r.none_score)} | {_num(r.gain, '+.2f')} "
                     f"| {r.languages}/{r.n_languages} | {r.compared} |")  # fmt: skip
    return "\n".join(lines)


def overall_by_size(rows: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """The paper's main table: per model (by size) and intermediate task, the XTREME-style overall
    and each task's score, as means over seeds of :func:`xtreme_overall`. Only run families with the
    same tasks are averaged together: ``tasks`` and ``partial`` say what each row is over, and
    ``complete`` whether it is XTREME's full score for every seed."""
    overall = xtreme_overall(rows, split)
    task_columns = [c for c in overall.columns if c.startswith("score_")]
    out = []
    for key, group in overall.groupby(["model", "peft", "intermediate", "tasks", "partial"], sort=False,
                                      dropna=False):  # fmt: skip
        record = dict(zip(["model", "peft", "intermediate", "tasks", "partial"], key, strict=True))
        stats = seed_stats(group["overall"])
        record.update({"seeds": ",".join(str(s) for s in sorted(group["seed"].unique())), "n": stats["n"],
                       "n_tasks": int(group["n_tasks"].iloc[0]), "complete": bool(group["complete"].all()),
                       "overall_mean": stats["mean"], "overall_ci95_low": stats["ci95_low"],
                       "overall_ci95_high": stats["ci95_high"]})  # fmt: skip
        record.update({c: float(group[c].mean()) for c in task_columns})
        out.append(record)
    columns = ["model", "peft", "intermediate", "seeds", "n", "n_tasks", "tasks", "partial", "complete",
               "overall_mean", "overall_ci95_low", "overall_ci95_high", *task_columns]  # fmt: skip
    table = pd.DataFrame.from_records(out, columns=columns).merge(model_sizes(rows), on="model", how="left")
    table["_baseline_last"] = table["intermediate"] != NO_INTERMEDIATE
    table = table.sort_values(["params", "model", "_baseline_last", "intermediate"], ignore_index=True)
    return table.drop(columns="_baseline_last")


def format_main_table(table: pd.DataFrame) -> str:
    """:func:`overall_by_size` as markdown: sizes down, the overall then one column per XTREME task."""
    tasks = _xtreme_order()
    lines = ["| model | family | params | intermediate | seeds | overall | " + " | ".join(tasks) + " | over |",
             "|" + "---|" * (7 + len(tasks))]  # fmt: skip
    for r in table.itertuples(index=False):
        cells = [f"{getattr(r, f'score_{t}'):.1f}" if not math.isnan(getattr(r, f"score_{t}")) else "-"
                 for t in tasks]  # fmt: skip
        notes = [f"{r.n_tasks} of {len(tasks)} tasks"] if r.n_tasks < len(tasks) else []
        notes += [f"some languages only: {r.partial.replace(',', ', ')}"] if r.partial else []
        note = "XTREME" if r.complete else "; ".join(notes)
        lines.append(f"| {r.model} | {r.family} | {_human(r.params)} | {r.intermediate} | {r.n} "
                     f"| {r.overall_mean:.2f} | " + " | ".join(cells) + f" | {note} |")  # fmt: skip
    return "\n".join(lines)


def duplicate_runs(rows: pd.DataFrame) -> list[Problem]:
    """Conditions with the same seed in more than one run directory (e.g. two sweeps merged)."""
    runs = rows[[*CONDITION, "seed", "run_dir"]].drop_duplicates()
    problems = []
    for key, group in runs.groupby([*CONDITION, "seed"], dropna=False):
        if len(group) > 1:
            what = ", ".join(f"{k}={v}" for k, v in zip([*CONDITION, "seed"], key, strict=True))
            dirs = sorted(group["run_dir"])
            problems.append(
                Problem(Path(dirs[0]), f"same condition and seed as {', '.join(dirs[1:])} ({what})")
            )
    return problems


# ----------------------------------------------------------------------------- report


def write_tables(sweep: Sweep, out_dir: Path, split: str = "test") -> dict[str, Path]:
    """Write runs.csv (the tidy rows), scores_by_size.csv, gaps_per_run.csv, gap_by_size.csv,
    intermediate_effect.csv, xtreme_overall.csv, overall_by_size.csv, best_intermediate.csv and
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
        "best_intermediate": best_intermediate(sweep.rows, split),
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
    header = ("| task | metric | intermediate | model | params | seeds | en | avg non-en | gap (95% CI) "
              "| rel. gap (95% CI) | languages |")
    lines = [header, "|" + "|".join(["---"] * (header.count("|") - 1)) + "|"]
    for r in table.itertuples(index=False):
        lines.append(
            f"| {r.task} | {r.metric} | {r.intermediate} | {r.model} | {_human(r.params)} | {r.n} "
            f"| {r.en_mean:.2f} | {r.avg_non_en_mean:.2f} "
            f"| {r.gap_mean:.2f} {_ci(r.gap_ci95_low, r.gap_ci95_high)} "
            f"| {100 * r.rel_gap_mean:.1f}% {_ci(100 * r.rel_gap_ci95_low, 100 * r.rel_gap_ci95_high, '%')} "
            f"| {_languages(r.n_languages, r.languages)} |"
        )
    return "\n".join(lines)


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
