"""Multiple-choice features: one (context, choice) pair per choice, so ``input_ids`` is (choices, seq)."""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedTokenizerBase

from xlt.data.features import register_featurizer


@register_featurizer("multiple_choice")
def featurize_multiple_choice(
    tokenizer: PreTrainedTokenizerBase, batch: dict[str, list[Any]], max_len: int
) -> dict[str, list[Any]]:
    """Pair the context with every choice (``<s> context </s></s> choice </s>`` for XLM-R).

    Over-long pairs are cut longest-first, like jiant's ``truncate_sequences``. ``length`` is the
    longest choice, so the length-grouped sampler groups examples by what padding will cost.
    """
    input_ids, attention_mask, lengths = [], [], []
    for context, choices in zip(batch["context"], batch["choices"], strict=True):
        enc = tokenizer(
            [context] * len(choices), list(choices), truncation="longest_first", max_length=max_len
        )
        input_ids.append(enc["input_ids"])
        attention_mask.append(enc["attention_mask"])
        lengths.append(max(len(ids) for ids in enc["input_ids"]))
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": batch["label"],
        "length": lengths,
    }
