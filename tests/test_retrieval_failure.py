"""Rank 0 failing anywhere in a retrieval evaluation (its settings, building the run, the evaluation
itself) tells the waiting ranks (``wait_for_rank_zero`` with the failure line) instead of leaving them
in a wait rank 0 never joins; and the encoder goes back to the CPU even when the evaluation fails."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch

import xlt.evaluation.base
import xlt.orchestration.stage
from xlt.orchestration.plan import EvalTarget
from xlt.orchestration.stage import StageExecutor
from xlt.tasks.registry import get_task

_TATOEBA = EvalTarget("tatoeba", "retrieval", "test", ("de",), 8, 8, 32, retrieval="top1", layer=2)


def _executor() -> StageExecutor:
    """An executor over a session holding only what retrieval reads."""
    model = SimpleNamespace(encoder=None, tokenizer=None)
    session = SimpleNamespace(model=model, skip=print, settings=SimpleNamespace(source=None, data_dir=None))
    return StageExecutor(session)  # type: ignore[arg-type]


def test_a_failure_building_the_retrieval_run_reaches_the_waiting_ranks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    told: list[str | None] = []
    monkeypatch.setattr(xlt.orchestration.stage, "is_global_zero", lambda: True)
    monkeypatch.setattr(
        xlt.orchestration.stage, "wait_for_rank_zero", lambda failure=None: told.append(failure)
    )

    def broken_run(*args: Any, **kwargs: Any) -> None:
        raise ValueError("no tokenizer")

    monkeypatch.setattr(xlt.orchestration.stage, "RetrievalRun", broken_run)
    with pytest.raises(ValueError, match="no tokenizer"):
        _executor().retrieval(_TATOEBA, "target")
    assert told == ["target tatoeba: ValueError: no tokenizer"]


class Encoder:
    def __init__(self) -> None:
        self.moves: list[str] = []

    def to(self, device: Any) -> Encoder:
        self.moves.append(str(device))
        return self


def test_the_encoder_goes_back_to_the_cpu_when_the_evaluation_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    class Failing:
        def evaluate(self, *args: Any) -> None:
            raise RuntimeError("out of memory")

    monkeypatch.setattr(xlt.evaluation.base, "evaluator_for", lambda spec: Failing())
    monkeypatch.setattr(xlt.evaluation.base, "own_device", lambda: torch.device("cuda", 1))
    encoder = Encoder()
    run = SimpleNamespace(encoder=encoder, device=None)
    with pytest.raises(RuntimeError, match="out of memory"):
        xlt.evaluation.base.evaluate_retrieval(get_task("tatoeba"), "target", ["de"], 8, run)  # type: ignore[arg-type]
    assert encoder.moves == ["cuda:1", "cpu"]


def test_rank_zeros_own_error_stands_when_the_waiting_ranks_are_already_gone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SIGTERM to every rank between stages: rank 1 leaves with 143 while rank 0 tells it of its own
    Preempted; the broadcast to the departed rank fails, and rank 0 must still exit with Preempted
    (143), not that RuntimeError (seen: status 1)."""
    from xlt.training.callbacks import Preempted

    def gone(failure: str | None = None) -> None:
        if failure is not None:
            raise RuntimeError("Connection closed by peer")

    monkeypatch.setattr(xlt.orchestration.stage, "is_global_zero", lambda: True)
    monkeypatch.setattr(xlt.orchestration.stage, "wait_for_rank_zero", gone)

    def preempted(*args: Any, **kwargs: Any) -> None:
        raise Preempted("preempted (SIGTERM) outside training")

    monkeypatch.setattr(xlt.orchestration.stage, "RetrievalRun", preempted)
    with pytest.raises(Preempted):
        _executor().retrieval(_TATOEBA, "target")
