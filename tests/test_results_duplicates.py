"""``xlt.results``' duplicate check: the same target condition and seed in two run directories is a
problem (two sweeps merged); a shared intermediate stage's rows, copied into every job that reuses
it, are not (found by the rehearsal: 36 false "same condition and seed" lines over 81 jobs)."""

from __future__ import annotations

from pathlib import Path

from xlt.results.load import load_sweep
from xlt.results.rows import ResultRow, RunContext, write_results


def _job(root: Path, name: str, target: str, train_task: str) -> None:
    run_dir = root / name
    run_dir.mkdir(parents=True)
    (run_dir / "state.json").write_text('{"finished": true}')
    ctx = RunContext(
        "xlmr_base", 270_000_000, "mnli", target, train_task, 1, "fixture", "local", run_dir=name
    )
    rows = [
        ResultRow("intermediate", "mnli", "dev", "en", "acc", 84.0, 500),  # the shared stage's row
        ResultRow("target", target, "test", "en", "acc", 80.0, 100),
        ResultRow("target", target, "test", "de", "acc", 75.0, 100),
    ]
    write_results(run_dir / "results.jsonl", rows, ctx)


def test_a_shared_intermediate_stage_is_no_duplicate_but_a_repeated_target_job_is(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    _job(sweep, "target=xnli", "xnli", "mnli")
    _job(sweep, "target=pawsx", "pawsx", "pawsx")
    assert [p.message for p in load_sweep(sweep).problems if "same condition" in p.message] == []
    _job(tmp_path / "other_sweep", "target=xnli", "xnli", "mnli")
    problems = [
        p for p in load_sweep([sweep, tmp_path / "other_sweep"]).problems if "same condition" in p.message
    ]
    assert len(problems) == 1 and "task=xnli" in problems[0].message, problems
