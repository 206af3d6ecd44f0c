"""Sequence pooling shared by the classification heads and the retrieval embeddings."""

from __future__ import annotations

import torch


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, how: str) -> torch.Tensor:
    """``cls``: first token; ``mean``: mean over attended tokens (special tokens included, as XTREME
    and jiant do for retrieval); ``last``: last attended token (decoder models, right padding)."""
    if how == "cls":
        return hidden[:, 0]
    mask = attention_mask.to(hidden.dtype)
    if how == "mean":
        summed = (hidden * mask.unsqueeze(-1)).sum(dim=1)
        return summed / mask.sum(dim=1, keepdim=True).clamp(min=1.0)
    if how == "last":
        last = attention_mask.long().sum(dim=1) - 1
        return hidden[torch.arange(hidden.size(0), device=hidden.device), last.clamp(min=0)]
    raise ValueError(f"pooling {how!r}: expected cls, mean or last")
