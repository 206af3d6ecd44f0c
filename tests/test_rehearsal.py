"""The CI subset of ``make rehearsal`` (benchmarks/rehearsal.py), through the same driver and the real
multirun (``python -m xlt.train -m +sweep=rehearsal``), each job on 2 processes under its stand-in's
own profile (tiny: XLM-R under DDP; tiny_xl, tiny_qwen: their FSDP profiles).

Default suite: two jobs of the decoder stand-in in one multirun (classification, tagging, retrieval
under FSDP; 1.8-4.4 min here). Slow suite: every architecture with each head kind of the sweep
(classification, tagging, span QA) and retrieval under DDP and FSDP. On this 2-core machine, loaded by
other sessions, a trained 2-process job takes 20 s to 2.5 min (much of it rank 1's start-up), so the
whole subset does not fit the default suite.

Before xlt/training/launch.py, Lightning started rank 1 of a multirun job with the whole sweep's command line:
rank 1 ran a sweep of its own, in step with rank 0's only as long as both walked the same jobs, and
later jobs started no rank 1 (they reused that process and the first job's process group).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.qwen_npm import needs_qwen_tokenizer
from xlt import PROJECT_ROOT

ARCHS = {"tiny": "ddp", "tiny_xl": "fsdp", "tiny_qwen": "fsdp"}


def rehearse(work: Path, shared: Path, cache: Path, *overrides: str) -> dict[str, dict]:
    """Run the driver (no SIGTERMs) on a narrowed sweep; its table's rows by job folder."""
    results, log = work / "results", work / "sweep.log"
    sweeps_before = log.read_text().count("[HYDRA] Launching") if log.is_file() else 0
    argv = [
        sys.executable,
        "-m",
        "benchmarks.rehearsal",
        "--no-faults",
        f"--out={work}",
        f"--shared={shared}",
        f"--cache={cache}",
        f"--results={results}",
        *overrides,
    ]
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    proc = subprocess.run(argv, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=1200, env=env)
    tail = proc.stdout[-3000:] + proc.stderr[-2000:] + (log.read_text()[-3000:] if log.is_file() else "")
    assert proc.returncode == 0, tail
    (table,) = results.glob("rehearsal-*.json")
    rows = {row["job"]: row for row in json.loads(table.read_text())["jobs"]}
    assert rows and all(row["passed"] for row in rows.values()), tail
    # one sweep: rank 1 ran its job, not a sweep of its own (before xlt/training/launch.py: two "Launching" lines)
    assert log.read_text().count("[HYDRA] Launching") == sweeps_before + 1, tail
    return rows


def stages(run_dir: Path) -> set[tuple[str, str]]:
    rows = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines() if line.strip()]
    return {(r["stage"], r["task"]) for r in rows if "stage" in r}


def check_job(sweep: Path, job: str, row: dict, model: str, trained: bool) -> None:
    run_dir = sweep / job
    config = (run_dir / "config.yaml").read_text()
    assert f"name: {model}" in config and "devices: 2" in config
    assert ("xlt.training.strategies.FSDP" in config) == (ARCHS[model] == "fsdp"), job
    if trained:  # both ranks trained the target: Lightning started rank 1 on this job alone
        assert "Starting with 2 processes" in (run_dir / "train.log").read_text(), job
        assert (run_dir / "train_ddp_process_1.log").is_file(), job
    assert row["launches"] == 1 and row["peak_rss_rank0_mib"] > 100, row


@needs_qwen_tokenizer
def test_rehearsal_two_jobs_of_the_decoder_under_fsdp_in_one_multirun(
    data_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    """The default suite's part (about 4 min here under load): two 2-process FSDP jobs of tiny_qwen one
    after the other in one multirun, a classification stage (MNLI) and a tagging target (UD-POS), then
    a retrieval target (Tatoeba) on the shared MNLI stage."""
    work = tmp_path / "work"
    rows = rehearse(work, data_dir, cache_dir, "model=tiny_qwen", "intermediate=mnli", "target=udpos,tatoeba")
    sweep = work / "sweep"
    job = "intermediate=mnli,model=tiny_qwen,seed=1,target=udpos"
    check_job(sweep, job, rows[job], "tiny_qwen", trained=True)
    assert {("intermediate", "mnli"), ("target", "udpos")} <= stages(sweep / job)
    assert rows[job]["peak_rss_rank1_mib"] > 100, rows[job]
    job = "intermediate=mnli,model=tiny_qwen,seed=1,target=tatoeba"
    check_job(sweep, job, rows[job], "tiny_qwen", trained=False)
    assert ("target", "tatoeba") in stages(sweep / job)
    assert "intermediate: reusing" in (sweep / job / "train.log").read_text()
    assert len(list((sweep / "intermediate").iterdir())) == 1  # MNLI trained once


@pytest.mark.slow
@needs_qwen_tokenizer
def test_rehearsal_subset_each_architecture_with_each_head_kind(
    data_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    """Every architecture with classification (MNLI), tagging (UD-POS), span QA (XQuAD) and retrieval
    (Tatoeba: DDP for tiny, FSDP for the others): 9 jobs, about 15 min here under load."""
    work = tmp_path / "work"
    rows = rehearse(
        work,
        data_dir,
        cache_dir,
        "model=tiny,tiny_xl,tiny_qwen",
        "intermediate=mnli",
        "target=udpos,xquad,tatoeba",
    )
    sweep = work / "sweep"
    for model in ARCHS:
        for target, kind in (("udpos", "tagging"), ("xquad", "span_qa"), ("tatoeba", "retrieval")):
            job = f"intermediate=mnli,model={model},seed=1,target={target}"
            check_job(sweep, job, rows[job], model, trained=kind != "retrieval")
            assert {("intermediate", "mnli"), ("target", target)} <= stages(sweep / job), (job, kind)
    assert len(list((sweep / "intermediate").iterdir())) == 3  # MNLI trained once per model
