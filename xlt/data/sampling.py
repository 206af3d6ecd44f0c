"""Length-grouped batches with dynamic padding: similar lengths share a batch, so little is padding.

The sampler also shards batches across data-parallel ranks itself (Lightning cannot inject a
DistributedSampler into a custom batch sampler), so the Trainer runs with use_distributed_sampler=False.

Training loaders are :class:`ResumableDataLoader`: Lightning stores their ``state_dict`` (epoch and
batches consumed) in every checkpoint, so a run resumed from a mid-epoch checkpoint continues the
interrupted epoch with exactly the batches it had not seen yet.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler


class _EpochForward:
    """What Lightning's ``_set_sampler_epoch`` finds as ``batch_sampler.sampler``."""

    def __init__(self, owner: EpochBatchSampler) -> None:
        self.owner = owner

    def set_epoch(self, epoch: int) -> None:
        self.owner.set_epoch(epoch)


class EpochBatchSampler(Sampler[list[int]]):
    """A batch sampler whose batches are a function of the epoch (``_epoch_batches``), drawn lazily at
    the first ``next()``, after Lightning's ``set_epoch``. ``resume(epoch, consumed)`` makes the next
    iteration over that epoch skip the batches a checkpointed run had already trained on."""

    def __init__(self) -> None:
        self.epoch = 0
        self.skipped = 0  # batches the current iteration skipped (a resumed epoch's consumed ones)
        self._resume: tuple[int, int] | None = None
        # Lightning calls set_epoch on `loader.sampler` and `loader.batch_sampler.sampler`, never on
        # the batch sampler itself: without this each epoch would repeat epoch 0's batch order.
        self.sampler = _EpochForward(self)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume(self, epoch: int, consumed: int) -> None:
        """Make the next iteration, if it is over ``epoch``, skip its first ``consumed`` batches."""
        if consumed < 0:
            raise ValueError(f"consumed must be >= 0, got {consumed}")
        self._resume = (epoch, consumed)

    def _epoch_batches(self) -> list[list[int]]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[list[int]]:
        # A generator: the batches are drawn at the first next(), after Lightning's set_epoch (it
        # creates the loader's iterator before setting the epoch when it restores a checkpoint).
        batches = self._epoch_batches()
        resume, self._resume = self._resume, None
        self.skipped = resume[1] if resume is not None and resume[0] == self.epoch else 0
        yield from batches[self.skipped :]


class LengthGroupedBatchSampler(EpochBatchSampler):
    """Batches of indices grouped by length.

    Training (``shuffle=True``): indices are shuffled, cut into mega-batches of ``batch_size * 200``,
    each sorted by length and cut into batches; batch order is shuffled again. (HF's factor, 50, left
    UD-POS English train at 0.92 real tokens per padded token with batch 32; 200 gives 0.97, see
    benchmarks/bench_training.py.) Deterministic for a
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
        mega_batch_factor: int = 200,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        super().__init__()
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.mega = batch_size * mega_batch_factor

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

    def _epoch_batches(self) -> list[list[int]]:
        if not self.shuffle:
            return self._eval_batches()
        batches = self._batches()
        if self.world_size > 1:
            # Equal counts on every rank, or ranks would wait for each other at the end of an epoch.
            per_rank = len(batches) // self.world_size
            batches = batches[: per_rank * self.world_size][self.rank :: self.world_size]
        return batches

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


class MultiTaskBatchSampler(EpochBatchSampler):
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
        super().__init__()
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

    def _epoch_batches(self) -> list[list[int]]:
        return [batches[self.rank] for _, batches in self._plan(self.epoch)]

    def __len__(self) -> int:
        return self.batches_per_rank

    def draws(self, epoch: int | None = None) -> list[tuple[int, int]]:
        """(batches, examples) drawn per task in ``epoch`` (default: the current one), all ranks together."""
        counts = [[0, 0] for _ in self.lengths]
        for task, batches in self._plan(self.epoch if epoch is None else epoch):
            counts[task][0] += len(batches)
            counts[task][1] += sum(len(b) for b in batches)
        return [(b, e) for b, e in counts]


class ResumableDataLoader(DataLoader):
    """A training DataLoader over an :class:`EpochBatchSampler` that Lightning can resume.

    Lightning saves ``state_dict()`` of a stateful training loader in each checkpoint and calls
    ``load_state_dict`` before iterating it again. The loader counts the batches it has handed out
    in the current epoch (Lightning does not prefetch from a loader with a length, so that is the
    number trained on); on resume the sampler skips them, if Lightning is still in that epoch.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.batch_sampler, EpochBatchSampler):
            raise TypeError("ResumableDataLoader needs an EpochBatchSampler as batch_sampler")
        self._consumed = 0

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        sampler = self.batch_sampler
        assert isinstance(sampler, EpochBatchSampler)
        self._consumed = 0
        for i, batch in enumerate(super().__iter__()):
            if i == 0:  # the sampler has started: it knows how many batches it skipped
                self._consumed = sampler.skipped
            self._consumed += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        sampler = self.batch_sampler
        assert isinstance(sampler, EpochBatchSampler)
        return {"epoch": sampler.epoch, "consumed": self._consumed}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        sampler = self.batch_sampler
        assert isinstance(sampler, EpochBatchSampler)
        sampler.resume(int(state_dict["epoch"]), int(state_dict["consumed"]))
