"""Real token counts for the plan: the measured length distribution of each training task, and the
tokens a stage computes on after xlt's length-grouped batching pads each batch to its longest row.

The table (``token_stats.json`` beside this module) is written by ``python -m xlt.plan.measure_tokens``: it
featurises the real local files (``../shared/data``) with xlt's own featurizer for the task's head at
the task's ``max_seq_length`` and the XLM-R SentencePiece tokenizer (the e5 conversion's), and keeps,
per task, the quantiles of the featurised row lengths (special tokens included), the rows per
example (QA windows) and what was measured. A training split that is not local is measured on the
nearest local split of the same data (named in ``measured_on``).

:func:`padded_tokens_per_example` draws lengths from those quantiles, cuts them at the stage's
``max_seq_length``, runs the real :class:`xlt.data.sampling.LengthGroupedBatchSampler` at the stage's
per-device batch and sums ``rows x longest row`` per batch: the tokens the encoder runs on. A task
without a measurement counts every row as padded to ``max_seq_length`` (the old upper bound), and the
plan says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

STATS_FILE = Path(__file__).with_name("token_stats.json")
QUANTILES = 50  # quantiles at 0, 2, ..., 100 %


@dataclass(frozen=True)
class TokenStats:
    task: str
    measured_on: str
    examples: int
    rows_per_example: float
    max_seq_length: int
    quantiles: tuple[int, ...]
    mean: float
    tokenizer: str

    def lengths(self, n: int) -> list[int]:
        """``n`` lengths spread evenly over the measured distribution (linear between quantiles)."""
        q = self.quantiles
        out = []
        for i in range(n):
            pos = (i + 0.5) / n * (len(q) - 1)
            lo = int(pos)
            hi = min(lo + 1, len(q) - 1)
            out.append(max(1, round(q[lo] + (q[hi] - q[lo]) * (pos - lo))))
        return out


@cache
def token_stats() -> dict[str, TokenStats]:
    if not STATS_FILE.exists():
        return {}
    raw = json.loads(STATS_FILE.read_text())
    return {
        name: TokenStats(**{**entry, "quantiles": tuple(entry["quantiles"])})
        for name, entry in raw["tasks"].items()
    }


@cache
def padded_tokens_per_example(
    task: str, per_device_batch: int, max_seq_length: int
) -> tuple[float, float] | None:
    """(tokens, tokens x padded length) per example after length grouping at ``per_device_batch``
    rows a batch, lengths cut at ``max_seq_length``: what the layers (linear in the tokens) and
    attention (in tokens x length) compute on. None when ``task`` has no measurement."""
    stats = token_stats().get(task)
    if stats is None:
        return None
    from xlt.data.sampling import LengthGroupedBatchSampler

    # Two mega-batches of the sampler's size, so grouping sorts as few rows together as a real epoch does.
    n = max(2 * per_device_batch * 200, 4000)
    lengths = [min(x, max_seq_length) for x in stats.lengths(n)]
    sampler = LengthGroupedBatchSampler(lengths, per_device_batch, shuffle=True, seed=0)
    tokens = squared = 0.0
    for batch in sampler:
        longest = max(lengths[i] for i in batch)
        tokens += len(batch) * longest
        squared += len(batch) * longest * longest
    return tokens / n * stats.rows_per_example, squared / n * stats.rows_per_example


def mean_tokens_per_example(task: str, max_seq_length: int) -> float | None:
    """Unpadded tokens per example (rows x mean length cut at ``max_seq_length``)."""
    stats = token_stats().get(task)
    if stats is None:
        return None
    lengths = [min(x, max_seq_length) for x in stats.lengths(4000)]
    return sum(lengths) / len(lengths) * stats.rows_per_example
