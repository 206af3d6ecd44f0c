"""A sweep's runs as one tidy table: finding the job directories and reading their result files.

Every job of a sweep (``multirun/<sweep>/<overrides>/``) writes ``results.jsonl``. :func:`load_sweep`
gathers them into one row per (run, stage, task, split, language, metric), keeping the run's
context (model, parameter count, intermediate task, seed, ...). A job directory without results,
or a file that cannot be read, becomes a one-line :class:`Problem` naming the file: reported,
never silently dropped.

Rows from W&B runs (:func:`rows_from_wandb_runs`) take the same shape, for browsing runs that are
not on this machine. The statistics are in :mod:`xlt.results.stats`, XTREME's scores in
:mod:`xlt.results.xtreme_scores`, the markdown tables and CSV files in :mod:`xlt.results.tables`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from xlt.metrics.keys import parse_metric_key
from xlt.orchestration.rundir import (
    CHECKPOINTS_DIR,
    CONFIG_FILE,
    CSV_DIR,
    PREDICTIONS_DIR,
    RESULTS_FILE,
    STATE_FILE,
)
from xlt.results.rows import IncompleteResults, read_results
from xlt.schema import NO_INTERMEDIATE

# What a results.jsonl row must carry for the analysis.
REQUIRED_FIELDS = (
    "stage",
    "task",
    "split",
    "language",
    "metric",
    "value",
    "model",
    "model_params",
    "intermediate",
    "seed",
)
# A run's identity apart from its seed: runs that differ only in seed are samples of one condition.
# select_on: the dev set the target stage selected its checkpoint on ("target": the target's English
# dev; "train_task": its training task's validation set): scores selected on different sets are
# different conditions, never ranked or averaged together.
CONDITION = ("task", "split", "metric", "model", "peft", "train_task", "select_on", "intermediate")
DEFAULT_SELECT_ON = "target"  # rows written before select_on was recorded: the only choice then
# Files and folders that mark a job directory (Hydra's .hydra/, or what xlt.orchestration.run writes).
_RUN_MARKERS = (RESULTS_FILE, STATE_FILE, CONFIG_FILE, ".hydra")
_NOT_RUNS = {".submitit", CHECKPOINTS_DIR, CSV_DIR, "wandb", PREDICTIONS_DIR, "analysis", ".hydra"}


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
        raise RunFileError(
            Problem(path, str(err).removeprefix(f"{path}: ").removeprefix(f"{path}:"))
        ) from None
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
            raise RunFileError(
                Problem(path, f"line {lineno}: value {record['value']} is not finite (a diverged run?)")
            )
    return records


def is_debug(records: Sequence[dict[str, Any]]) -> str:
    """The run's debug mode ('' for a real run): rows carry ``debug`` (debug=fdr/limit/overfit or a
    trainer.limit_*/fast_dev_run/overfit_batches setting)."""
    return next((str(r["debug"]) for r in records if r.get("debug")), "")


def _run_status(run_dir: Path) -> str:
    import json

    state = run_dir / STATE_FILE
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
                problems.append(
                    Problem(
                        run_dir / RESULTS_FILE,
                        f"a debug run ({debug}): left out (--include-debug to analyse it)",
                    )
                )
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
    return Sweep(rows, run_dirs, problems + duplicate_runs(rows) + mixed_commits(rows))


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
            "select_on": target.get("select_on") or DEFAULT_SELECT_ON,
            "run_dir": f"wandb:{run.id}",
        }
        for key, value in summary.items():
            parts = parse_metric_key(key)
            if parts is None or "@" in key or not isinstance(value, int | float) or isinstance(value, bool):
                continue
            split, task, language, metric = parts
            records.append(
                {
                    "stage": "target",
                    "task": task,
                    "split": split,
                    "language": language,
                    "metric": metric,
                    "value": float(value),
                    **context,
                }
            )
    return _normalise(
        pd.DataFrame.from_records(
            records, columns=[*REQUIRED_FIELDS, "train_task", "peft", "select_on", "run_dir"]
        )
    )


def load_wandb(path: str, group: str | None = None) -> pd.DataFrame:
    """Rows of the W&B runs of ``entity/project`` (optionally one sweep's group); needs network."""
    import wandb

    filters = {"group": group} if group else None
    return rows_from_wandb_runs(wandb.Api().runs(path, filters=filters))


def _normalise(rows: pd.DataFrame) -> pd.DataFrame:
    rows = rows.copy()
    for column, default in (
        ("peft", "none"),
        ("train_task", ""),
        ("n_examples", None),
        ("select_on", DEFAULT_SELECT_ON),
    ):
        if column not in rows:
            rows[column] = default
    rows["peft"] = rows["peft"].fillna("none")
    rows["select_on"] = rows["select_on"].fillna(DEFAULT_SELECT_ON)
    rows["train_task"] = rows["train_task"].fillna("")
    rows["value"] = pd.to_numeric(rows["value"], errors="coerce")
    rows["model_params"] = pd.to_numeric(rows["model_params"], errors="coerce")
    return rows


def duplicate_runs(rows: pd.DataFrame) -> list[Problem]:
    """Conditions with the same seed in more than one run directory (e.g. two sweeps merged). Target
    rows only: a shared intermediate stage's rows (and a probe's) are copied into every job that
    reuses it, so they repeat across the targets by design."""
    runs = rows[rows["stage"] == "target"][[*CONDITION, "seed", "run_dir"]].drop_duplicates()
    problems = []
    for key, group in runs.groupby([*CONDITION, "seed"], dropna=False):
        if len(group) > 1:
            what = ", ".join(f"{k}={v}" for k, v in zip([*CONDITION, "seed"], key, strict=True))
            dirs = sorted(group["run_dir"])
            problems.append(
                Problem(Path(dirs[0]), f"same condition and seed as {', '.join(dirs[1:])} ({what})")
            )
    return problems


def mixed_commits(rows: pd.DataFrame) -> list[Problem]:
    """Jobs of one sweep that read different hub commits of one model (``model_revision``) or one
    dataset (``data_commits``: ``repo[/config]@commit;...``): their scores are not comparable as is."""
    problems = []
    for column in ("model_revision", "data_commits"):
        if column not in rows or "sweep" not in rows:
            continue
        runs = rows[["sweep", "model", "run_dir", column]].drop_duplicates()
        seen: dict[tuple[str, str], dict[str, list[str]]] = {}
        for sweep, model, run_dir, value in runs.itertuples(index=False):
            if not isinstance(value, str) or not value:
                continue
            pairs = (
                [("model " + str(model), value)]
                if column == "model_revision"
                else [tuple(item.rsplit("@", 1)) for item in value.split(";") if "@" in item]
            )
            for what, commit in pairs:
                seen.setdefault((str(sweep), what), {}).setdefault(commit, []).append(str(run_dir))
        for (sweep, what), commits in sorted(seen.items()):
            if len(commits) > 1:
                listed = "; ".join(
                    f"{c} ({len(d)} jobs, e.g. {sorted(d)[0]})" for c, d in sorted(commits.items())
                )
                problems.append(
                    Problem(
                        Path(sorted(next(iter(commits.values())))[0]),
                        f"sweep {sweep}: jobs read different commits of {what}: {listed}",
                    )
                )
    return problems
