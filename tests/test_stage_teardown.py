"""A finished stage leaves nothing of itself in memory: no optimizer (nor its AdamW states), no
LightningModule, no Trainer, no FSDP wrapper, counted with the cyclic garbage collector switched off
(``gc.disable``), i.e. what reference counting and the run's own end-of-stage collection free.
Before, the intermediate stage's 2 optimizers, 2 modules and 2 Trainers (and under FSDP its wrapped
modules) were still there when the next phase began, until the collector happened to run.
"""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

import xlt.orchestration.stage
from xlt.orchestration.run import run
from xlt.orchestration.stage import StageExecutor

CONFIG = (
    "model=tiny", "+intermediate=anli_rounds", "intermediate.train_split=dev_r1", "intermediate.dev_split=dev_r3",
    "intermediate.max_train_examples=32", "intermediate.max_eval_examples=16", "+target=tatoeba",
    "target.languages=[de]", "target.max_eval_examples=8", "trainer.accelerator=cpu", "probe.tasks=[tatoeba]",
    "probe.languages=[de]", "probe.max_examples=8",
)  # fmt: skip


def census() -> Counter[str]:
    from torch.distributed.fsdp import FullyShardedDataParallel

    counts: Counter[str] = Counter()
    for obj in gc.get_objects():
        if isinstance(obj, torch.optim.Optimizer):
            counts["optimizer"] += 1
        elif isinstance(obj, pl.Trainer):
            counts["trainer"] += 1
        elif isinstance(obj, FullyShardedDataParallel):
            counts["fsdp"] += 1
        elif isinstance(obj, pl.LightningModule):
            counts["module"] += 1
    return counts


def holding_trainers() -> int:
    """Trainers still holding a module or optimizers (what :func:`xlt.training.trainer.release` drops)."""
    held = 0
    for obj in gc.get_objects():
        if isinstance(obj, pl.Trainer):
            strategy = obj.strategy
            if strategy._lightning_module is not None or strategy._model is not None or strategy.optimizers:
                held += 1
    return held


@pytest.mark.parametrize(
    "scale", [("scale=default",), ("scale=fsdp", "scale.devices=1")], ids=["default", "fsdp"]
)
def test_nothing_of_a_finished_stage_is_left_without_the_collector(
    compose_cfg: Callable[..., DictConfig],
    data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    scale: tuple[str, ...],
) -> None:
    seen: dict[str, Counter[str]] = {}
    probe = StageExecutor.probe

    def counting_probe(self: StageExecutor, stage: str, probes: tuple) -> None:
        if stage == "intermediate":  # the intermediate stage is over; the next phase has not begun
            seen["after stage"] = census()
        probe(self, stage, probes)

    monkeypatch.setattr(StageExecutor, "probe", counting_probe)
    collect = xlt.orchestration.stage.end_of_stage_collect

    def counting_collect() -> None:
        # Before the run's own collection: what release() and reference counting alone have freed.
        if "before collect" not in seen:
            seen["before collect"] = census()
            seen["before collect"]["holding trainer"] = holding_trainers()
        collect()

    monkeypatch.setattr(xlt.orchestration.stage, "end_of_stage_collect", counting_collect)
    gc.collect()
    gc.disable()
    try:
        run(compose_cfg(*CONFIG, *scale), tmp_path)
    finally:
        gc.enable()
    assert "after stage" in seen
    # release() cut every link: no optimizer (with its AdamW states) waits for the collector, and no
    # Trainer left in a cycle still holds a module or optimizers.
    before = seen["before collect"]
    assert before["optimizer"] == 0, seen
    assert before["holding trainer"] == 0, seen
    assert seen["after stage"] == Counter(), seen
