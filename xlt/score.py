"""Score an XTREME submission folder the way ``google-research/xtreme: evaluate.py`` does.

    python -m xlt.score --predictions PRED_DIR --labels LABEL_DIR [--tasks xnli udpos ...]
                        [--split test|dev] [--format json|table] [--output scores.json]

Layout (both folders): one sub-folder per task (``pawsx xnli panx udpos bucc2018 tatoeba xquad mlqa
tydiqa``) holding ``test-{lang}.tsv``, or ``test-{lang}.json`` for the QA tasks:

- pawsx, xnli, tatoeba: one label per line (Tatoeba: the index of the retrieved sentence);
- udpos, panx: one tag per line, a blank line after each sentence;
- bucc2018: one ``src_id<TAB>trg_id`` pair per line;
- xquad, mlqa, tydiqa: predictions ``{"question id": "answer text"}``; labels a SQuAD-format file.

``--split dev`` reads ``dev-{lang}.*`` instead, the same way (evaluate.py reads only ``test-``). xlt
writes BUCC pairs under the split it mined, which offline is ``dev`` when only dev has gold pairs.

Numbers and aggregation are evaluate.py's (``xtreme_version='xtreme'``): each metric averaged over
the task's languages, the task score ``avg_metric`` ((EM+F1)/2 for QA, else avg F1, else avg
accuracy), group scores when every task of a group is scored, ``all_task`` when all nine are.
``overall`` and ``tasks`` of the JSON output, merged, are the official output file's content.
With two or more complete tasks, ``subset_overall`` gives their mean ``avg_metric`` and names them
(not an official number unless all nine are there, when it equals ``all_task``).

Where the official script crashes or silently misreads, this one reports and goes on: a missing
language file (official: FileNotFoundError) or a malformed one is one line on stderr, the task is
listed under ``incomplete`` with averages over the languages it has, and it is left out of group
and overall scores. Tagging files must agree sentence by sentence in length (official: only the
number of sentences is checked, and a shorter sentence shifts every later chunk). Exit status 1
when anything was reported, else 0.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xlt.metrics.qa import mlqa_evaluate, squad_evaluate
from xlt.metrics.xtreme import (
    XTREME_GROUP2TASK,
    XTREME_TASK2LANGS,
    XTREME_TASK_METRIC,
    submission_filename,
    task_score,
)
from xlt.score_files import BadFile, check_fields, read_lines, read_squad_json, read_tag_sentences
from xlt.utils.console import RULE, cli_parser, run_cli, text_table

# --------------------------------------------------------------------------------------------------
# One language
# --------------------------------------------------------------------------------------------------


def _score_lines(pred_path: Path, label_path: Path) -> dict[str, float]:
    predictions, labels = (
        check_fields(p, read_lines(p), 1, "one label per line") for p in (pred_path, label_path)
    )
    if len(predictions) != len(labels):
        raise BadFile(f"{pred_path}: {len(predictions)} lines, expected {len(labels)} as in {label_path}")
    if not labels:
        raise BadFile(f"{label_path}: empty file")
    from xlt.metrics.classification import accuracy  # torchmetrics: imported when used (fast --help)

    return {"accuracy": accuracy(labels, predictions)}


def _score_tags(pred_path: Path, label_path: Path) -> dict[str, float]:
    predictions, pred_starts = read_tag_sentences(pred_path)
    labels, _ = read_tag_sentences(label_path)
    if len(predictions) != len(labels):
        raise BadFile(
            f"{pred_path}: {len(predictions)} sentences (blank-line separated), expected {len(labels)} as in {label_path}"
        )
    for number, (pred, gold) in enumerate(zip(predictions, labels, strict=True), start=1):
        if len(pred) != len(gold):
            raise BadFile(
                f"{pred_path}: sentence {number} (line {pred_starts[number - 1]}) has {len(pred)} tags, "
                f"expected {len(gold)} as in {label_path}"
            )
    from xlt.metrics.tagging import seqeval_scores  # torch: imported when used

    return seqeval_scores(labels, predictions)


def _score_qa(pred_path: Path, label_path: Path, lang: str | None, notes: list[str]) -> dict[str, float]:
    predictions = read_squad_json(pred_path)
    if not isinstance(predictions, dict) or not all(isinstance(v, str) for v in predictions.values()):
        raise BadFile(f'{pred_path}: expected a JSON object {{"question id": "answer text", ...}}')
    dataset = read_squad_json(label_path)
    unanswered: list[str] = []
    try:
        if lang is None:
            scores = squad_evaluate(dataset, predictions, unanswered)
        else:
            scores = mlqa_evaluate(dataset, predictions, lang, unanswered)
    except (KeyError, TypeError) as err:
        raise BadFile(f"{label_path}: not a SQuAD-format file ({type(err).__name__}: {err})") from err
    except ValueError as err:
        raise BadFile(f"{label_path}: {err}") from err
    if unanswered:
        notes.append(f"{pred_path}: {len(unanswered)} questions unanswered, scored 0 (e.g. {unanswered[0]})")
    return scores


def score_language(
    task: str, lang: str, pred_path: Path, label_path: Path, notes: list[str] | None = None
) -> dict[str, float]:
    """The official metrics of one language's files, e.g. ``{"f1": .., "precision": .., "recall": ..}``.

    Remarks that do not stop scoring (unanswered QA questions) are appended to ``notes``.

    Raises:
        BadFile: the files cannot be scored (lengths disagree, invalid JSON, ...).
    """
    kind = XTREME_TASK_METRIC[task]
    if kind == "accuracy":
        return _score_lines(pred_path, label_path)
    if kind == "seqeval":
        return _score_tags(pred_path, label_path)
    if kind == "bucc_f1":
        gold, pred = (check_fields(p, read_lines(p), 2, "src_id<TAB>trg_id") for p in (label_path, pred_path))
        from xlt.metrics.retrieval import bucc_f1  # torch: imported when used

        return bucc_f1(gold, pred)
    return _score_qa(
        pred_path, label_path, lang if kind == "mlqa" else None, notes if notes is not None else []
    )


# --------------------------------------------------------------------------------------------------
# A submission
# --------------------------------------------------------------------------------------------------


@dataclass
class SubmissionScores:
    """Scores of a submission folder, laid out like evaluate.py's output plus what went wrong."""

    overall: dict[str, float] = field(default_factory=dict)
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The mean avg_metric over the complete tasks when there are at least two, with their names:
    # ``all_task`` when all nine are there, otherwise an overall over a subset that says which.
    subset_overall: dict[str, Any] = field(default_factory=dict)
    incomplete: dict[str, list[str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "overall": self.overall,
            "subset_overall": self.subset_overall,
            "tasks": self.tasks,
            "incomplete": self.incomplete,
            "problems": self.problems,
            "notes": self.notes,
        }


def _task_folders(root: Path) -> set[str]:
    return {p.name for p in root.iterdir() if p.is_dir()}


def _select_tasks(
    pred_dir: Path, label_dir: Path, requested: Sequence[str] | None, out: SubmissionScores
) -> list[str]:
    in_pred, in_labels = _task_folders(pred_dir), _task_folders(label_dir)
    if requested:
        unknown = [t for t in requested if t not in XTREME_TASK2LANGS]
        if unknown:
            raise ValueError(f"unknown task(s) {', '.join(unknown)}; valid: {', '.join(XTREME_TASK2LANGS)}")
        selected = []
        for task in XTREME_TASK2LANGS:
            if task not in requested:
                continue
            for where, folders, root in (
                ("predictions", in_pred, pred_dir),
                ("labels", in_labels, label_dir),
            ):
                if task not in folders:
                    out.problems.append(f"missing task folder: {root / task} ({where})")
            if task in in_pred and task in in_labels:
                selected.append(task)
        return selected
    # As evaluate.py: every task with a folder on both sides, in the official order.
    for task in XTREME_TASK2LANGS:
        if (task in in_pred) != (task in in_labels):
            side = "predictions" if task in in_pred else "labels"
            out.notes.append(f"task {task}: folder only in {side}, not scored")
    for name in sorted((in_pred | in_labels) - set(XTREME_TASK2LANGS)):
        out.notes.append(f"folder {name!r} is not an XTREME task, ignored")
    return [t for t in XTREME_TASK2LANGS if t in in_pred and t in in_labels]


def score_submission(
    pred_dir: Path | str, label_dir: Path | str, tasks: Sequence[str] | None = None, split: str = "test"
) -> SubmissionScores:
    """Score every selected task of a submission folder against a label folder (see module docstring).

    Raises:
        ValueError: a requested task is not an XTREME task.
        FileNotFoundError: a folder does not exist.
    """
    pred_dir, label_dir = Path(pred_dir), Path(label_dir)
    for d in (pred_dir, label_dir):
        if not d.is_dir():
            raise FileNotFoundError(f"not a folder: {d}")
    out = SubmissionScores()
    for task in _select_tasks(pred_dir, label_dir, tasks, out):
        per_metric: dict[str, dict[str, float]] = {}
        skipped: list[str] = []
        for lang in XTREME_TASK2LANGS[task]:
            name = submission_filename(task, lang, split)
            pred_path, label_path = pred_dir / task / name, label_dir / task / name
            absent = [p for p in (pred_path, label_path) if not p.is_file()]
            for path in absent:
                out.problems.append(f"missing file: {path}")
            if absent:
                skipped.append(lang)
                continue
            try:
                scores = score_language(task, lang, pred_path, label_path, out.notes)
            except BadFile as err:
                out.problems.append(f"bad file: {err}")
                skipped.append(lang)
                continue
            for metric, value in scores.items():
                per_metric.setdefault(metric, {})[lang] = value
        if skipped:
            out.incomplete[task] = skipped
        if not per_metric:
            continue
        # Same summation order as evaluate.py (languages in official order), so floats are identical.
        averages = {f"avg_{m}": sum(v.values()) / len(v) for m, v in per_metric.items()}
        out.tasks[task] = {**per_metric, **averages, "avg_metric": task_score(task, averages)}

    complete = [t for t in out.tasks if t not in out.incomplete]
    if set(complete) == set(XTREME_TASK2LANGS):
        out.overall["all_task"] = sum(out.tasks[t]["avg_metric"] for t in XTREME_TASK2LANGS) / len(
            XTREME_TASK2LANGS
        )
    for group, group_tasks in XTREME_GROUP2TASK.items():
        if all(t in complete for t in group_tasks):
            out.overall[group] = sum(out.tasks[t]["avg_metric"] for t in group_tasks) / len(group_tasks)
    if len(complete) >= 2:
        ordered = [t for t in XTREME_TASK2LANGS if t in complete]
        out.subset_overall = {
            "tasks": ordered,
            "avg_metric": sum(out.tasks[t]["avg_metric"] for t in ordered) / len(ordered),
        }
    return out


# --------------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------------


def format_table(scores: SubmissionScores) -> str:
    """A plain-text table: per task one row per language, then the averages; then the overall scores."""
    lines: list[str] = []
    for task, result in scores.tasks.items():
        metrics = [m for m in result if not m.startswith("avg_")]
        flag = (
            "  (incomplete: " + ", ".join(scores.incomplete[task]) + " not scored)"
            if task in scores.incomplete
            else ""
        )
        lines.append(f"== {task}: avg_metric {result['avg_metric']:.2f}{flag}")
        rows: list[list[str] | object] = [
            [lang, *(f"{result[m][lang]:.2f}" for m in metrics)] for lang in result[metrics[0]]
        ]
        rows += [RULE, ["avg", *(f"{result['avg_' + m]:.2f}" for m in metrics)]]
        align = ["left"] + ["right"] * len(metrics)
        lines += [text_table(["lang", *metrics], rows, "plain", align, indent="  "), ""]
    if scores.overall:
        lines.append("== overall")
        overall = [[name, f"{value:.2f}"] for name, value in scores.overall.items()]
        lines.append(text_table(["group", "score"], overall, "plain", ["left", "right"], indent="  "))
    elif scores.tasks:
        lines.append("== overall: no complete group of tasks")
    if scores.subset_overall and len(scores.subset_overall["tasks"]) < len(XTREME_TASK2LANGS):
        tasks = scores.subset_overall["tasks"]
        lines.append(
            f"== overall over {len(tasks)} of {len(XTREME_TASK2LANGS)} tasks ({', '.join(tasks)}): "
            f"{scores.subset_overall['avg_metric']:.2f}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (any error: one line on stderr, exit 2)."""
    return run_cli(lambda: _main(argv))


def _main(argv: Sequence[str] | None) -> int:
    parser = cli_parser(
        "python -m xlt.score",
        "Score an XTREME submission folder with the official evaluate.py numbers.",
        [
            "xlt-score --predictions outputs/<date>/<time>/predictions --labels <gold folder> --format table",
            "python -m xlt.score --predictions PRED --labels GOLD --tasks xnli pawsx --output scores.json",
        ],
    )
    parser.add_argument("--predictions", required=True, type=Path, help="folder with one sub-folder per task")
    parser.add_argument("--labels", required=True, type=Path, help="folder with the gold files, same layout")
    parser.add_argument(
        "--tasks", nargs="+", metavar="TASK", help=f"subset of: {' '.join(XTREME_TASK2LANGS)}"
    )
    parser.add_argument(
        "--split",
        choices=("test", "dev"),
        default="test",
        help="which files to score: {split}-{lang}.tsv/.json (default test, as evaluate.py)",
    )
    parser.add_argument(
        "--format", choices=("json", "table"), default="json", help="stdout format (default json)"
    )
    parser.add_argument("--output", type=Path, help="also write the JSON report to this file")
    args = parser.parse_args(argv)
    try:
        scores = score_submission(args.predictions, args.labels, args.tasks, args.split)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for note in scores.notes:
        print(f"note: {note}", file=sys.stderr)
    for problem in scores.problems:
        print(problem, file=sys.stderr)
    report = json.dumps(scores.to_json(), indent=2, ensure_ascii=False)
    if args.output:
        args.output.write_text(report + "\n", encoding="utf-8")
    print(report if args.format == "json" else format_table(scores))
    return 1 if scores.problems else 0


if __name__ == "__main__":
    sys.exit(main())
