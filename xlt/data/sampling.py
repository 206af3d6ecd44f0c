"""Length-grouped batches with dynamic padding: similar lengths share a batch, so little is padding.

The sampler also shards batches across data-parallel ranks itself (Lightning cannot inject a
DistributedSampler into a custom batch sampler), so the Trainer runs with use_distributed_sampler=False.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Batches of indices grouped by length.

    Training (``shuffle=True``): indices are shuffled, cut into mega-batches of ``batch_size * 50``,
    each sorted by length and cut into batches; batch order is shuffled again. Deterministic for a
    given ``seed`` and epoch (call ``set_epoch``). Every rank gets the same number of batches.
    Evaluation (``shuffle=False``): sorted by length, longest first; each example is scored exactly
    once. With several ranks, examples are dealt out in turn and every rank gets the SAME number of
    batches (sizes may differ by one example): during ``fit`` Lightning runs validation through the
    DDP wrapper, whose forward synchronises buffers, so unequal batch counts would hang.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        mega_batch_factor: int = 50,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.mega = batch_size * mega_batch_factor
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _eval_batches(self) -> list[list[int]]:
        n = len(self.lengths)
        order = sorted(range(n), key=lambda i: -self.lengths[i])
        if self.world_size == 1:
            return [order[i : i + self.batch_size] for i in range(0, n, self.batch_size)]
        if n < self.world_size:
            raise ValueError(
                f"an evaluation set of {n} examples cannot be split over {self.world_size} ranks"
            )
        shard = order[self.rank :: self.world_size]
        n_batches = math.ceil(n / (self.batch_size * self.world_size))
        bounds = [round(j * len(shard) / n_batches) for j in range(n_batches + 1)]
        return [shard[bounds[j] : bounds[j + 1]] for j in range(n_batches)]

    def _batches(self) -> list[list[int]]:
        n = len(self.lengths)
        gen = torch.Generator().manual_seed(self.seed + self.epoch)
        perm = torch.randperm(n, generator=gen).tolist()
        batches: list[list[int]] = []
        for start in range(0, n, self.mega):
            chunk = sorted(perm[start : start + self.mega], key=lambda i: -self.lengths[i])
            batches.extend(chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size))
        shuffled = torch.randperm(len(batches), generator=gen).tolist()
        return [batches[i] for i in shuffled]

    def __iter__(self) -> Iterator[list[int]]:
        if not self.shuffle:
            return iter(self._eval_batches())
        batches = self._batches()
        if self.world_size > 1:
            # Equal counts on every rank, or ranks would wait for each other at the end of an epoch.
            per_rank = len(batches) // self.world_size
            batches = batches[: per_rank * self.world_size][self.rank :: self.world_size]
        return iter(batches)

    def __len__(self) -> int:
        if not self.shuffle:
            return math.ceil(len(self.lengths) / (self.batch_size * self.world_size))
        return self._count_train() // self.world_size

    def _count_train(self) -> int:
        n = len(self.lengths)
        full, rest = divmod(n, self.mega)
        return full * math.ceil(self.mega / self.batch_size) + math.ceil(rest / self.batch_size)


def mixture_probabilities(
    sizes: Sequence[int], cap: int | None = None, temperature: float = 1.0
) -> list[float]:
    """p(task t) ∝ min(n_t, cap) ** (1 / temperature): examples-proportional when ``cap`` is None and
    ``temperature`` is 1 (jiant's ProportionalMultiTaskSampler), capped (SpecifiedProb with min(n, cap))
    or temperature-scaled (TemperatureMultiTaskSampler)."""
    if not sizes or any(n < 1 for n in sizes):
        raise ValueError(f"every task needs at least one example, got sizes {list(sizes)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    weights = [min(n, cap) if cap is not None else n for n in sizes]
    scaled = [w ** (1.0 / temperature) for w in weights]
    total = sum(scaled)
    return [w / total for w in scaled]


class MultiTaskBatchSampler(Sampler[list[int]]):
    """Batches for a mixture: each batch holds examples of ONE task (heads and feature shapes differ).

    Indices address the tasks' datasets concatenated in order. Per epoch, the task of each of the
    ``batches_per_rank`` steps is drawn from ``probabilities`` with a generator seeded by ``seed`` and
    the epoch, identically on every rank; at each step every rank takes its own length-grouped batch of
    that SAME task, so all ranks run the same head at the same time (DDP/FSDP collectives line up) and
    every rank gets exactly ``batches_per_rank`` batches. A task's batches come from its own
    :class:`LengthGroupedBatchSampler` stream, reshuffled whenever the task is exhausted.
    ``draws(epoch)`` counts the batches and examples each task gets in an epoch, over all ranks.
    """

    def __init__(
        self,
        lengths: Sequence[Sequence[int]],
        batch_size: int,
        probabilities: Sequence[float],
        batches_per_rank: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if len(lengths) != len(probabilities):
            raise ValueError(f"{len(lengths)} tasks but {len(probabilities)} probabilities")
        if batches_per_rank < 1:
            raise ValueError(f"batches_per_rank must be >= 1, got {batches_per_rank}")
        self.lengths = [list(task) for task in lengths]
        self.offsets = [0]
        for task in self.lengths[:-1]:
            self.offsets.append(self.offsets[-1] + len(task))
        self.batch_size = batch_size
        self.probabilities = torch.tensor(list(probabilities), dtype=torch.float64)
        self.batches_per_rank = batches_per_rank
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _plan(self, epoch: int) -> list[tuple[int, list[list[int]]]]:
        """Per step: (task, one batch of dataset indices per rank). The same on every rank."""
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        tasks = torch.multinomial(self.probabilities, self.batches_per_rank, replacement=True, generator=gen)
        streams: dict[int, Iterator[list[int]]] = {}
        passes = dict.fromkeys(range(len(self.lengths)), 0)

        def next_batch(task: int) -> list[int]:
            while True:
                if task not in streams:
                    stream_seed = self.seed * 1_000_003 + epoch * 7_919 + task * 104_729
                    sampler = LengthGroupedBatchSampler(
                        self.lengths[task], self.batch_size, True, stream_seed
                    )
                    sampler.set_epoch(passes[task])
                    passes[task] += 1
                    streams[task] = iter(sampler)
                batch = next(streams[task], None)
                if batch is not None:
                    return [self.offsets[task] + i for i in batch]
                del streams[task]

        return [(task, [next_batch(task) for _ in range(self.world_size)]) for task in tasks.tolist()]

    def __iter__(self) -> Iterator[list[int]]:
        return iter([batches[self.rank] for _, batches in self._plan(self.epoch)])

    def __len__(self) -> int:
        return self.batches_per_rank

    def draws(self, epoch: int | None = None) -> list[tuple[int, int]]:
        """(batches, examples) drawn per task in ``epoch`` (default: the current one), all ranks together."""
        counts = [[0, 0] for _ in self.lengths]
        for task, batches in self._plan(self.epoch if epoch is None else epoch):
            counts[task][0] += len(batches)
            counts[task][1] += sum(len(b) for b in batches)
        return [(b, e) for b, e in counts]
