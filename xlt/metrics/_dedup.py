"""Per-example metric states that survive DDP: keys to drop DistributedSampler's padding duplicates.

DistributedSampler pads the evaluation set so every rank gets the same number of examples, by
repeating the first ones; summed counts would count those twice. The metrics here keep one float64
key per example (its id) in a "cat" state and, after sync, keep the first row of each key.
"""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor
from torchmetrics.utilities import dim_zero_cat

NO_KEY = float("nan")
"""Key of a row given without an id: never treated as a duplicate."""


def example_key(example_id: str | int) -> float:
    """A float64-exact key for an example id, used to drop DDP duplicates.

    Non-negative ints below 2**53 map to themselves; strings to a 53-bit BLAKE2 hash (collisions
    are negligible at benchmark sizes: ~1e-6 for 1e5 ids).
    """
    if isinstance(example_id, int) and not isinstance(example_id, bool) and 0 <= example_id < 2**53:
        return float(example_id)
    digest = hashlib.blake2b(str(example_id).encode("utf-8"), digest_size=8).digest()
    return float(int.from_bytes(digest, "big") >> 11)


def cat_state(state: list[Tensor] | Tensor) -> Tensor:
    """A "cat" metric state as one float64 tensor: a list before sync (maybe empty), a tensor after."""
    if isinstance(state, Tensor):
        return state
    return dim_zero_cat(state) if state else torch.zeros(0, dtype=torch.float64)


def first_occurrence_mask(keys: Tensor) -> Tensor:
    """True for rows whose key was not seen earlier; NaN keys (no id given) are always kept."""
    keep = torch.ones(keys.shape[0], dtype=torch.bool, device=keys.device)
    has_key = ~torch.isnan(keys)
    keyed = keys[has_key]
    if keyed.numel() == 0:
        return keep
    _, inverse = torch.unique(keyed, return_inverse=True)
    positions = torch.arange(keyed.numel(), device=keys.device)
    first = torch.full((int(inverse.max()) + 1,), keyed.numel(), dtype=torch.long, device=keys.device)
    first = first.scatter_reduce(0, inverse, positions, reduce="amin")
    keyed_keep = torch.zeros(keyed.numel(), dtype=torch.bool, device=keys.device)
    keyed_keep[first] = True
    keep[has_key] = keyed_keep
    return keep
