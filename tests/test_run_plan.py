"""The run plan (xlt/orchestration/plan.py): built once from the validated config and the specs,
frozen, and printed by ``python -m xlt.train ... +show=plan`` for every target without training."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from xlt import PROJECT_ROOT
from xlt.config import group_choices, validate
from xlt.orchestration.plan import RunPlan, build_plan, format_plan
from xlt.tasks.registry import get_task

TARGETS = group_choices("target")


def test_every_target_has_a_conf_file() -> None:
    assert len(TARGETS) >= 9 and {"xnli", "bucc2018", "tatoeba"} <= set(TARGETS)


@pytest.mark.parametrize("target", TARGETS)
def test_plan_of_every_target(compose_cfg, tmp_path: Path, target: str) -> None:
    cfg = validate(
        compose_cfg("model=tiny", "+intermediate=mnli", f"+target={target}", "probe.tasks=[tatoeba]")
    )
    plan = build_plan(cfg, tmp_path / "run")
    assert isinstance(plan, RunPlan)
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.seed = 1  # type: ignore[misc]
    inter, tgt = plan.stages
    assert (inter.name, inter.task, inter.kind) == ("intermediate", "mnli", "task")
    assert inter.selection is not None and inter.selection.monitor == "dev/mnli/en/acc"
    assert [p.task for p in inter.probes_after] == ["tatoeba"] == [p.task for p in plan.probes_pretrained]
    spec = get_task(target)
    assert tgt.name == "target" and tgt.task == target
    assert (
        tgt.max_seq_length == cfg.target.max_seq_length == (cfg.target.max_seq_length or spec.max_seq_length)
    )
    (evaluation,) = tgt.evaluation
    assert evaluation.languages == tuple(spec.languages)
    assert evaluation.predictions == spec.prediction_format
    if spec.trainable:
        assert tgt.kind == "task" and tgt.train_task == spec.train_task
        assert tgt.batch is not None
        assert tgt.batch.per_device * tgt.batch.devices * tgt.batch.accumulate == tgt.batch.batch_size
        assert tgt.checkpoint is not None and tgt.checkpoint.dir == "checkpoints/target"
        assert evaluation.kind == "head"
    else:
        assert tgt.kind == "retrieval" and not tgt.trains and tgt.batch is None
        assert evaluation.kind == "retrieval" and evaluation.retrieval == spec.retrieval
        assert evaluation.batch_size == cfg.target.eval_batch_size
    assert plan.reuse is not None and plan.reuse.key_prefix == f"tiny-mnli-s{cfg.seed}"
    text = format_plan(plan)
    assert f"task: {target}" in text and "monitor: dev/mnli/en/acc" in text


def test_plan_of_a_mixture_and_a_shared_intermediate(compose_cfg, tmp_path: Path) -> None:
    cfg = validate(
        compose_cfg("model=tiny", "+intermediate=anli", "+target=xnli", f"reuse.dir={tmp_path}/shared")
    )
    plan = build_plan(cfg, tmp_path / "run")
    inter = plan.stage("intermediate")
    assert inter is not None and inter.kind == "mixture" and len(inter.members) >= 2
    assert all(m.max_seq_length for m in inter.members)
    assert inter.selection is not None and inter.selection.monitor == "dev/anli/en/selection"
    assert plan.reuse is not None and plan.reuse.shared and plan.reuse.root == f"{tmp_path}/shared"


def test_show_plan_prints_without_running(tmp_path: Path) -> None:
    """The command line: the plan on stdout, nothing trained (no state.json, no results)."""
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    argv = [
        sys.executable,
        "-m",
        "xlt.train",
        "model=tiny",
        "logger=none",
        "+target=tatoeba",
        "+intermediate=mnli",
        "+show=plan",
        f"hydra.run.dir={run_dir}",
        f"data.cache_dir={tmp_path}/cache",
    ]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, cwd=PROJECT_ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "kind: retrieval" in proc.stdout and "task: tatoeba" in proc.stdout
    # The run-wide sections the executors read instead of the config (issue 26), not the config record.
    for section in ("encoder", "scale", "optim", "trainer", "logger", "data", "rows", "audit", "local_files"):
        assert f"\n{section}:\n" in proc.stdout, section
    assert "\nconfig:" not in proc.stdout
    assert not (run_dir / "state.json").exists() and not (run_dir / "results.jsonl").exists()
    bad = subprocess.run(
        [*argv[:-3], "+show=nonsense", f"hydra.run.dir={run_dir}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=PROJECT_ROOT,
    )
    assert bad.returncode == 2 and "show='nonsense': expected one of plan" in bad.stderr


def test_evaluation_only_plan(compose_cfg, tmp_path: Path) -> None:
    """What xlt.evaluate executes: the target stage scoring given weights, nothing trained."""
    from xlt.orchestration.plan import evaluation_only

    cfg = validate(compose_cfg("model=tiny", "+target=xnli"))
    plan = evaluation_only(build_plan(cfg, tmp_path / "eval"), tmp_path / "best.ckpt", 12)
    (target,) = plan.stages
    assert target.weights == str(tmp_path / "best.ckpt") and target.logged_step == 12
    with_intermediate = build_plan(
        validate(compose_cfg("model=tiny", "+target=xnli", "+intermediate=mnli")), tmp_path
    )
    with pytest.raises(ValueError, match="evaluation-only plan"):
        evaluation_only(with_intermediate, tmp_path / "best.ckpt", 0)
