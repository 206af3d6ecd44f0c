"""Head-free sentence embeddings for retrieval: mean pooling over one encoder layer."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from xlt.modeling.pooling import pool


@torch.no_grad()
def embed(
    encoder: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    layer: int,
    batch_size: int = 64,
    max_length: int = 512,
    device: torch.device | str = "cpu",
    desc: str = "embedding",
) -> torch.Tensor:
    """Mean-pooled ``hidden_states[layer]`` (0 = embeddings output; negative counts from the top),
    special tokens included as XTREME/jiant do. Sentences are batched by length; the result is in
    input order, float32, shape (len(texts), hidden)."""
    n_states = encoder.config.num_hidden_layers + 1
    if not -n_states <= layer < n_states:
        raise ValueError(f"retrieval.layer={layer}: the encoder has hidden_states 0..{n_states - 1}")
    was_training = encoder.training
    encoder.eval()
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    out = torch.empty(len(texts), encoder.config.hidden_size, dtype=torch.float32)
    try:
        for start in tqdm(
            range(0, len(order), batch_size), desc=desc, leave=False, disable=len(order) <= batch_size
        ):
            idx = order[start : start + batch_size]
            enc = tokenizer(
                [texts[i] for i in idx],
                truncation=True,
                max_length=max_length,
                padding=True,
                return_tensors="pt",
            )
            enc = {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
            hidden = encoder(**enc, output_hidden_states=True).hidden_states[layer]
            out[idx] = pool(hidden, enc["attention_mask"], "mean").float().cpu()
    finally:
        encoder.train(was_training)
    return out
