"""One row per (stage, task, split, language, metric): the on-disk source of truth of a run.

``results.jsonl`` in the run directory holds these rows, one JSON object a line. Aggregate rows
use a reserved ``language``: ``avg`` (mean over all languages), ``avg_non_en``, ``gap`` (en minus
avg_non_en) and ``rel_gap`` (1 - avg_non_en / en).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from xlt.metrics.keys import SELECTION, parse_set_key
from xlt.results.gap import compute_gap, mean

if TYPE_CHECKING:
    from xlt.evaluation.bucc import MiningResult

AGGREGATE_LANGUAGES = ("avg", "avg_non_en", "gap", "rel_gap")
STAGES = ("pretrained", "intermediate", "target")


@dataclass(frozen=True)
class RunContext:
    """What identifies a run in every one of its rows."""

    model: str
    model_params: int
    intermediate: str  # task name, or "none" for the no-intermediate baseline
    target: str
    train_task: str  # the English training source used for the target ("" when none)
    seed: int
    git_commit: str
    data_source: str  # "local" or "hub"
    peft: str = "none"
    select_on: str = (
        "target"  # the dev set the target stage selected on: target | train_task (target.select_on)
    )
    run_dir: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ResultRow:
    stage: str
    task: str
    split: str
    language: str
    metric: str
    value: float
    n_examples: int | None = None
    note: str = ""  # how the value was obtained when that is not the usual (e.g. a BUCC threshold's split)

    def to_record(self, ctx: RunContext) -> dict[str, Any]:
        record = asdict(self)
        context = asdict(ctx)
        extra = context.pop("extra")
        record.update(context)
        record.update(extra)
        return record


def language_rows(
    stage: str,
    task: str,
    split: str,
    scores: Mapping[str, Mapping[str, float]],
    counts: Mapping[str, int] | None = None,
    with_gap: bool = True,
) -> list[ResultRow]:
    """Rows for per-language scores ``{lang: {metric: value}}`` plus their aggregates.

    ``avg`` is always written; ``avg_non_en``/``gap``/``rel_gap`` only when English and at least one
    other language were scored and ``with_gap`` is set (retrieval tasks have no English side).

    A NaN score is a metric undefined on that set (0/0: SQuAD v2.0's no-answer EM over a subset
    without unanswerable questions), and ``rel_gap`` is undefined when English scores 0: such values
    get no row (a results file holds only finite numbers; a diverged run is stopped in training).
    """
    counts = counts or {}
    scores = {
        lang: {m: v for m, v in metrics.items() if not math.isnan(float(v))}
        for lang, metrics in scores.items()
    }
    rows = [
        ResultRow(stage, task, split, lang, metric, float(value), counts.get(lang))
        for lang, metrics in scores.items()
        for metric, value in metrics.items()
    ]
    metric_names = sorted({m for metrics in scores.values() for m in metrics})
    for metric in metric_names:
        per_lang = {lang: metrics[metric] for lang, metrics in scores.items() if metric in metrics}
        rows.append(ResultRow(stage, task, split, "avg", metric, mean(list(per_lang.values()))))
        gap = compute_gap(per_lang) if with_gap else None
        if gap is not None:
            rows.append(ResultRow(stage, task, split, "avg_non_en", metric, gap.avg_non_en))
            rows.append(ResultRow(stage, task, split, "gap", metric, gap.gap))
            if not math.isnan(gap.rel_gap):
                rows.append(ResultRow(stage, task, split, "rel_gap", metric, gap.rel_gap))
    return rows


class EvaluatedSet(Protocol):
    """What :func:`eval_rows` reads of an evaluation set (``xlt.data.datamodule.EvalSet``)."""

    task: str
    split: str
    lang: str

    @property
    def key(self) -> str: ...

    def __len__(self) -> int: ...


def eval_rows(
    stage: str,
    split: str,
    sets: Sequence[EvaluatedSet],
    scores: Mapping[str, Mapping[str, float]],
    parts: Mapping[str, Sequence[tuple[str, int]]],
    selection_key: str | None = None,
) -> list[ResultRow]:
    """Rows of one stage's evaluation of ``split`` ("dev" or "test"): per task and split (ANLI's rounds
    each), with the test gap; on dev also the whole of each '+'-joined split (``parts``: whole key ->
    (part key, examples) pairs) and a mixture's selection score (``scores[selection_key]``).

    ``scores`` maps an evaluation key (``dev/xnli/en``) to its metric values, as
    :class:`xlt.modeling.module.TransferModule` computes them.
    """
    rows: list[ResultRow] = []
    groups: dict[tuple[str, str], list[EvaluatedSet]] = {}
    for s in sets:
        groups.setdefault((s.task, s.split), []).append(s)
    for (task, part), members in groups.items():
        by_lang = {s.lang: scores.get(s.key, {}) for s in members}
        counts = {s.lang: len(s) for s in members}
        rows.extend(language_rows(stage, task, part, by_lang, counts, with_gap=split == "test"))
    if split == "dev":
        for whole, whole_parts in parts.items():
            _, task, lang = parse_set_key(whole)
            by_lang = {lang: scores.get(whole, {})}
            rows.extend(
                language_rows(
                    stage, task, "dev", by_lang, {lang: sum(n for _, n in whole_parts)}, with_gap=False
                )
            )
        if selection_key is not None and selection_key in scores:
            _, task, lang = parse_set_key(selection_key)
            rows.append(
                ResultRow(stage, task, "dev", lang, SELECTION, scores[selection_key][SELECTION], None)
            )
    return rows


def current_umask() -> int:
    """The process's umask, read without changing it (``/proc``), else by setting and restoring it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(path: Path | str, directory: bool = False) -> None:
    """Give a file (0666) or folder (0777) made by ``tempfile`` (0600 / 0700) the mode that ``open`` or
    ``mkdir`` would have given it under the user's umask, so teammates can read a shared sweep."""
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


def atomic_write_text(path: Path, text: str) -> None:
    """Write a file so that readers see either the old or the complete new content, never half.
    The file gets the mode the user's umask gives new files (not mkstemp's 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


END_MARKER = "end_of_results"


class IncompleteResults(ValueError):
    """A results file without a valid end marker: cut short, edited, or from an older xlt."""


def _checksum(lines: list[str]) -> str:
    import hashlib

    return hashlib.sha256("".join(line + "\n" for line in lines).encode("utf-8")).hexdigest()


def write_results(path: Path, rows: Iterable[ResultRow], ctx: RunContext) -> None:
    """Write ``results.jsonl`` atomically (the whole file at once), ending with a marker line that
    holds the row count and the SHA-256 of the rows' lines: :func:`read_results` accepts a file as
    complete only with it. A row whose value is not finite (NaN, inf) is refused: nothing is written."""
    import math

    rows = list(rows)
    bad = [r for r in rows if not math.isfinite(r.value)]
    if bad:
        first = bad[0]
        raise ValueError(
            f"{path}: {len(bad)} result value(s) not finite, e.g. {first.stage} {first.task} "
            f"{first.split} {first.language} {first.metric} = {first.value}; nothing written"
        )
    lines = [json.dumps(row.to_record(ctx), ensure_ascii=False, sort_keys=True) for row in rows]
    marker = json.dumps({END_MARKER: True, "rows": len(lines), "sha256": _checksum(lines)}, sort_keys=True)
    atomic_write_text(path, "\n".join([*lines, marker]) + "\n")


def read_results(path: Path) -> list[dict[str, Any]]:
    """The rows of ``results.jsonl``; a malformed line raises with the file and line number, and a
    file whose last line is not a matching end marker (row count and checksum) raises
    :class:`IncompleteResults`: e.g. a file cut at a line boundary, which is otherwise valid JSONL."""
    records, lines = [], []
    marker: dict[str, Any] | None = None
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            if marker is not None:
                raise IncompleteResults(f"{path}: line {lineno} follows the end marker")
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{lineno}: not a JSON object ({err.msg})") from None
            if isinstance(record, dict) and END_MARKER in record:
                marker = record
                continue
            records.append(record)
            lines.append(line.rstrip("\n"))
    if marker is None:
        raise IncompleteResults(f"{path}: incomplete (no end marker after its {len(records)} rows)")
    if marker.get("rows") != len(records):
        raise IncompleteResults(
            f"{path}: incomplete: {len(records)} rows, the end marker says {marker.get('rows')}"
        )
    if marker.get("sha256") != _checksum(lines):
        raise IncompleteResults(f"{path}: altered: the rows' checksum differs from the end marker's")
    return records


def mining_rows(stage: str, task: str, results: Sequence[tuple[str, MiningResult]]) -> list[ResultRow]:
    """Bitext mining (xlt.evaluation.bucc): per-language f1/precision/recall rows and their mean per scored split, then one ``threshold``
    row per language whose ``note`` names the split it was tuned on."""
    by_split: dict[str, tuple[dict[str, dict[str, float]], dict[str, int]]] = {}
    thresholds = []
    for lang, result in results:
        if result.scores is not None:
            scores, counts = by_split.setdefault(result.split, ({}, {}))
            scores[lang], counts[lang] = result.scores, result.n_gold or 0
        note = f"threshold tuned on {result.tuned_on}"
        if result.tuned_on == result.split:
            note += " and scored on the same split (no other split with gold): optimistic"
        thresholds.append(
            ResultRow(stage, task, result.split, lang, "threshold", result.threshold, note=note)
        )
    rows = [
        row
        for split, (scores, counts) in by_split.items()
        for row in language_rows(stage, task, split, scores, counts, with_gap=False)
    ]
    return rows + thresholds


def scored_counts(rows: list[ResultRow], sets: Sequence[Any], scored: Mapping[str, int]) -> list[ResultRow]:
    """Per-language rows whose ``n_examples`` is the number of examples actually scored (a debug run
    scores only some batches), not the set's size (``sets``: the stage's EvalSets; ``scored``: eval-set
    key -> examples, the module's ``scored``)."""
    counts = {(s.task, s.split, s.lang): scored[s.key] for s in sets if s.key in scored}
    return [
        replace(r, n_examples=counts.get((r.task, r.split, r.language), r.n_examples))
        if r.n_examples is not None
        else r
        for r in rows
    ]
