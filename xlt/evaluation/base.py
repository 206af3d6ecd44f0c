"""What a retrieval evaluator gets (:class:`RetrievalRun`) and how one is chosen for a task."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, cast

import torch

from xlt.modeling.embedding import embed
from xlt.results.rows import ResultRow
from xlt.tasks.spec import TaskSpec
from xlt.training.trainer import own_device
from xlt.utils.registry import Registry

# (task, split, language, format, content): one prediction file in the submission layout.
WritePredictions = Callable[[str, str, str, str, Any], None]


@dataclass
class RetrievalRun:
    """The encoder and the run's settings an evaluator embeds and reads data with, and where it
    reports: ``skip`` takes one line per language left out, ``write_predictions`` (None: no files)
    the prediction files of a target stage."""

    encoder: Any
    tokenizer: Any
    source: str
    data_dir: Path | None
    layer: int
    batch_size: int
    max_length: int
    skip: Callable[[str], None]
    write_predictions: WritePredictions | None = None
    device: torch.device | str = "cpu"

    def embed(self, texts: Sequence[str], desc: str) -> torch.Tensor:
        """Sentence embeddings of ``texts`` (retrieval.layer, mean-pooled), float32, one row each."""
        return embed(
            self.encoder,
            self.tokenizer,
            texts,
            layer=self.layer,
            batch_size=self.batch_size,
            max_length=self.max_length,
            device=self.device,
            desc=desc,
        )


class RetrievalEvaluator:
    """Scores one retrieval kind: rows per language (and their mean) for ``spec`` at ``stage``."""

    kind: ClassVar[str]

    def evaluate(
        self, spec: TaskSpec, stage: str, languages: list[str], limit: int | None, run: RetrievalRun
    ) -> list[ResultRow]:
        raise NotImplementedError


EVALUATORS: Registry[type[RetrievalEvaluator]] = Registry("retrieval kind")


def register_evaluator(cls: type[RetrievalEvaluator]) -> type[RetrievalEvaluator]:
    return EVALUATORS.add(cls.kind, cls)


def evaluator_for(spec: TaskSpec) -> RetrievalEvaluator:
    """The evaluator of ``spec.retrieval``; a ValueError naming the kinds there are otherwise."""
    try:
        return EVALUATORS[spec.retrieval]()
    except KeyError:
        raise ValueError(
            f"task {spec.name}: no evaluator for retrieval kind {spec.retrieval!r} "
            f"(known: {', '.join(sorted(EVALUATORS))})"
        ) from None


def evaluate_retrieval(
    spec: TaskSpec, stage: str, languages: list[str], limit: int | None, run: RetrievalRun
) -> list[ResultRow]:
    """Evaluate ``spec`` with its kind's evaluator on this process's device, then put the encoder
    back on the CPU (where training stages expect it)."""
    evaluator = evaluator_for(spec)
    device = own_device()
    cast(torch.nn.Module, run.encoder).to(device)
    run.device = device
    try:
        return evaluator.evaluate(spec, stage, languages, limit, run)
    finally:  # also on failure or preemption: the encoder must not stay on the GPU
        cast(torch.nn.Module, run.encoder).to("cpu")
