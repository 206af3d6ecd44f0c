"""Checkpoint selection as jiant's X-STILTs recipe: validation every N optimizer steps (and after the
last), on N English dev examples drawn at random with the run's seed, early stopping with patience (stage options)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from xlt.config import validate
from xlt.orchestration.run import run
from xlt.results.rows import read_results

# 48 SNLI pairs, batch 8 = 2 accumulated batches of 4: 6 optimizer steps an epoch, 2 epochs.
TINY = (
    "model=tiny", "+target=xnli", "logger=csv", "target.train_task=snli", "target.train_split=dev",
    "target.languages=[en,de]", "target.max_train_examples=48", "target.max_eval_examples=null",
    "target.batch_size=8", "scale.per_device_batch_size=4", "target.epochs=2", "target.lr=1.0e-3",
    "trainer.log_every_n_steps=1", "predictions=false",
)  # fmt: skip


def validation_steps(run_dir: Path) -> list[int]:
    """The optimizer steps after which training validated, from the CSV log. Lightning logs a
    validation run inside training at the number of steps before the current batch's (its counter
    moves after the validation), hence + 1; the last row is the evaluation after training, logged at
    the fit's last step (xlt/orchestration/stage.py: ``eval_step``)."""
    with open(run_dir / "csv" / "metrics.csv") as fh:
        steps = [int(r["step"]) for r in csv.DictReader(fh) if r.get("dev/xnli/en/acc")]
    assert steps[-1] == steps[-2]
    return [s + 1 for s in steps[:-1]]


def test_the_recipe_is_the_default_of_every_trained_stage(compose_cfg) -> None:
    for stage in (
        "+target=xnli",
        "+target=udpos",
        "+target=xquad",
        "+intermediate=mnli",
        "+intermediate=all9",
    ):
        overrides = (stage, "+target=xnli") if "intermediate" in stage else (stage,)
        cfg = validate(compose_cfg("model=tiny", *overrides))
        s = cfg.intermediate if "intermediate" in stage else cfg.target
        assert (s.val_check_every, s.val_subset, s.patience) == (1000, 500, 30), stage


@pytest.mark.slow
def test_validation_every_n_steps_on_the_dev_subset_and_after_the_last_step(
    compose_cfg, data_dir: Path, tmp_path: Path
) -> None:
    run(
        compose_cfg(*TINY, "target.val_check_every=5", "target.val_subset=40", "target.patience=null"),
        tmp_path,
    )
    # steps, not batches (2 batches a step), counted across the epoch boundary at 6, plus the last
    assert validation_steps(tmp_path) == [5, 10, 12]
    dev = [r for r in read_results(tmp_path / "results.jsonl") if r["split"] == "dev"]
    assert dev and {r["n_examples"] for r in dev if r["language"] == "en"} == {
        40
    }  # 40 drawn at random select
    drawn = json.loads((tmp_path / "state.json").read_text())["stages"]["target"]["selection"]["xnli/dev"]
    assert (drawn["n"], drawn["of"], drawn["seed"], drawn["stratified_by"]) == (40, 2_490, 42, "genre")
    assert len(drawn["strata"]) == 10 and len(drawn["ids_blake2b"]) == 16


@pytest.mark.slow
def test_early_stopping_after_patience_validations_without_improvement(
    compose_cfg, data_dir: Path, tmp_path: Path
) -> None:
    # lr 1e-12 changes no prediction: the dev accuracy never improves on the first validation's
    run(compose_cfg(*TINY, "target.val_check_every=2", "target.patience=2", "target.lr=1.0e-12",
                    "target.val_subset=40"), tmp_path)  # fmt: skip
    assert validation_steps(tmp_path) == [2, 4, 6]  # the first, then two without improvement: stop
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["stages"]["target"]["steps"] == 6  # of 12
