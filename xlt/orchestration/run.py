"""The X-STILTs run: pretrained encoder -> English intermediate task -> English target task ->
zero-shot evaluation on every language of the target, all in one run directory.

:func:`run` is the typed, testable core; ``xlt.train`` is only the Hydra entry point around it. It
validates the config, builds the :class:`~xlt.orchestration.plan.RunPlan` once, opens the run
context (:class:`~xlt.orchestration.session.RunSession`) and :func:`execute` runs the plan's parts
in order: the contamination audit, the probes of the pretrained encoder, the intermediate phase
(xlt/orchestration/intermediate.py), the target stage (xlt/orchestration/stage.py), trained or
retrieval-only. ``xlt.evaluate`` executes an evaluation-only plan through the same parts.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig
from pytorch_lightning.utilities import rank_zero_only

from xlt.audit.sets import audit as audit_sets
from xlt.audit.sets import missing_member, mixture_label
from xlt.config import validate
from xlt.metrics.keys import metric_key
from xlt.orchestration.config_lock import check_same_config
from xlt.orchestration.intermediate import IntermediatePhase
from xlt.orchestration.plan import RunPlan, build_plan
from xlt.orchestration.reuse import launch_id
from xlt.orchestration.rundir import (
    CONFIG_FILE,
    RESULTS_FILE,
    STATE_FILE,
    RunDirError,
    RunState,
    has_progress,
    is_global_zero,
    rows_from_records,
    run_dir_lock,
    start_over,
)
from xlt.orchestration.session import RunSession
from xlt.orchestration.stage import StageExecutor
from xlt.results.report import format_table
from xlt.results.rows import ResultRow, atomic_write_text, read_results
from xlt.tasks.loading import check_needed, resolve_source
from xlt.tasks.registry import get_task
from xlt.tasks.spec import DataError
from xlt.training.loggers import check_run_id
from xlt.training.preemption import handling_sigterm
from xlt.utils.console import file_only

log = logging.getLogger(__name__)


def audit(session: RunSession) -> None:
    """The contamination audit (xlt/audit/sets.py), before any training: an overlap between a set the
    run trains or selects on and a test set of its target stops the run (ContaminationError, one
    line) unless the target's spec declares an exclusion; those are applied to every stage's
    loading. The counts go into state.json (``audit``) and every result row."""
    scope, settings = session.plan.audit, session.settings
    report = audit_sets(scope, settings.source, settings.data_dir)
    if missing := missing_member(scope, report):  # a mixture never silently changes: stop early
        raise DataError(missing)
    rank_zero_only(log.info)("%s", report.format(), extra=file_only())
    session.state.data["audit"] = report.record()
    session.state.save()
    report.check()
    settings.exclude = report.removals()
    session.ctx.extra.update(report.row_fields())
    label = mixture_label(scope, report)  # a mixture without some members: rows say what it trained
    if label is not None:
        session.relabel(intermediate=label[0])
        session.ctx.extra.update(intermediate_mixture=scope.mixture, intermediate_members=",".join(label[1]))


def execute(session: RunSession) -> list[ResultRow]:
    """Run the session's plan: audit, probes of the pretrained encoder, the intermediate phase, the target."""
    plan, executor = session.plan, StageExecutor(session)
    audit(session)
    executor.probe("pretrained", plan.probes_pretrained)
    inter = plan.stage("intermediate")
    if inter is not None:
        IntermediatePhase(session, executor, inter).execute()
    target = plan.stage("target")
    assert target is not None
    executor.run(target)
    return session.rows


def print_report(rows: list[ResultRow], skipped: list[str]) -> str:
    """The per-language tables with the gap, as printed at the end of a run."""
    blocks = []
    for stage, task, split in dict.fromkeys((r.stage, r.task, r.split) for r in rows):
        blocks.append(format_table(rows, stage, task, split))
    # A language without data, and a prediction file not written (a partial run), each under its own heading.
    unwritten = [line for line in skipped if line.startswith("predictions ")]
    no_data = [line for line in skipped if line not in unwritten]
    for heading, lines in (("Skipped (no data)", no_data), ("Prediction files not written", unwritten)):
        if lines:
            blocks.append(f"{heading}:\n" + "\n".join(f"  {line}" for line in lines))
    text = "\n\n".join(b for b in blocks if b)
    rank_zero_only(print)("\n" + text + "\n")
    return text


def run(cfg: DictConfig, run_dir: Path, sweep_dir: Path | None = None) -> dict[str, float]:
    """Validate ``cfg``, run every stage into ``run_dir``, write ``results.jsonl``; return the summary
    metrics (``{split}/{task}/{language}/{metric}`` of the target stage), e.g. for a sweep objective.
    ``sweep_dir``: the multirun folder, under which jobs share their intermediate stages."""
    cfg = validate(cfg)
    launch_id()  # before Lightning starts other ranks as subprocesses: they inherit it (xlt/orchestration/reuse.py)
    run_dir = Path(run_dir)
    plan = build_plan(cfg, run_dir, sweep_dir)
    with run_dir_lock(run_dir):  # a second process in this run directory stops here, in one line
        return _run_locked(plan, sweep_dir)


def _finished_rows(run_dir: Path) -> list[ResultRow]:
    results = run_dir / RESULTS_FILE
    try:
        return rows_from_records(read_results(results))
    except (ValueError, KeyError, TypeError) as err:
        detail = str(err) if isinstance(err, ValueError) else f"{results}: a row lacks {err}"
        raise RunDirError(f"{detail}; rerun with resume=false to compute the results again") from None


def _prepare_run_dir(plan: RunPlan) -> RunState:
    """The run directory's state, after the checks a relaunch must pass (the same config)."""
    run_dir = Path(plan.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        state = RunState.load(run_dir / STATE_FILE)
    except RunDirError:
        if plan.resume:
            raise
        state = RunState(run_dir / STATE_FILE, {})  # resume=false starts over: the old state is dropped
    check_run_id(plan.logger, run_dir)  # logger.run_id: only in the run directory of that W&B run
    if plan.resume and has_progress(run_dir, state):
        if not (run_dir / CONFIG_FILE).is_file():
            raise RunDirError(
                f"{run_dir} holds an earlier launch's work but no {CONFIG_FILE} to check this configuration "
                "against; restore it, or rerun with resume=false to start over"
            )
        check_same_config(plan.config, run_dir / CONFIG_FILE)
    return state


def _run_locked(plan: RunPlan, sweep_dir: Path | None) -> dict[str, float]:
    run_dir = Path(plan.run_dir)
    state = _prepare_run_dir(plan)
    if plan.resume and state.data.get("finished") and (run_dir / RESULTS_FILE).is_file():
        rank_zero_only(log.info)("%s is finished; nothing to do (resume=false starts it over)", run_dir)
        rows = _finished_rows(run_dir)
        print_report(rows, state.data.get("skipped", []))
        return _summary(rows)
    # The English files a run needs are there, before anything is written.
    check_needed(plan.local_files, *resolve_source(plan.data_source, plan.data.dir))
    target = plan.stages[-1]
    languages = target.evaluation[0].languages if target.evaluation else ()
    if "en" not in languages and "en" in get_task(target.task).languages:
        rank_zero_only(log.warning)(
            "target.languages=[%s]: no English test, so no cross-lingual gap is reported (add en to measure it)",
            ",".join(languages),
        )
    if not plan.resume and is_global_zero():
        start_over(run_dir, state)
    if is_global_zero():
        atomic_write_text(run_dir / CONFIG_FILE, plan.config.yaml)  # ${oc.env:...} not resolved
    with handling_sigterm():  # every rank ends with 143 within a bounded time (xlt/training/preemption.py)
        session = RunSession.open(plan, sweep_dir)
        try:
            rows = execute(session)
            session.finish()
        finally:
            session.close()
    print_report(rows, session.skipped)
    return _summary(rows)


def _summary(rows: list[ResultRow]) -> dict[str, float]:
    return {metric_key(r.split, r.task, r.language, r.metric): r.value for r in rows if r.stage == "target"}
