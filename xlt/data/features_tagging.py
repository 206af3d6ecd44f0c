"""Token-tagging features: one sub-word of each word labelled, long sentences split into windows,
never truncated.

Words are tokenised as the model sees them in running text. XLM-R's SentencePiece marks every
pre-split word as word-initial (``▁word``) as it does mid-sentence. A byte-level BPE (Qwen2.5) would
tokenise a bare pre-split word as sentence-initial text without its space ("children": c/hild/ren
in Qwen's vocabulary, or a no-space piece, where running text has the single ``Ġchildren``);
for a tokenizer marked with the family fact ``word_prefix_space`` (xlt/modeling/families.py) a word
is tokenised as " word" (the first word of a sentence included) where running text would have a
space before it, and bare otherwise (:func:`spaced`): a word starting with neither a letter nor a
digit (punctuation: "," not "Ġ,"), a word of a script written without spaces (Chinese, Japanese,
Thai, Lao, Khmer, Myanmar, Tibetan), and a word whose " word" would start with a bare ``Ġ`` piece
(Georgian, digits: Qwen has no merge of the space with them).

The labelled sub-word is the family fact ``label_piece``: the first (XTREME's convention, encoders)
or the last (decoders: under causal attention only the last piece has read the whole word).

A sentence whose sub-words do not fit in ``max_len`` (special tokens included) becomes several
consecutive, non-overlapping windows, cut between words exactly as XTREME's
``udpos/panx_tokenize_preprocess`` re-chunks them: a word goes to the next window when it would
overflow the current one. Each window carries ``word_index`` (the word's position in its sentence at
its first sub-word, -100 elsewhere) and ``example_idx``, so predictions map back to every word of the
original sentence (see ``xlt.modeling.heads_tagging``).

As in XTREME, a word with no sub-word (e.g. a lone zero-width character) is fed as ``<unk>``; a word
with more sub-words than a window holds keeps its first ones (XTREME replaces it by ``<unk>``).
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache
from typing import Any

from transformers import PreTrainedTokenizerBase

from xlt.data.features import register_featurizer
from xlt.modeling.families import LABEL_PIECE, WORD_PREFIX_SPACE

IGNORE = -100


@lru_cache(maxsize=8)
def _special_affixes(tokenizer: PreTrainedTokenizerBase) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The special ids a single sequence gets before and after its tokens (``<s>`` / ``</s>`` for XLM-R)."""
    core = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(core) + 1):
        if full[start : start + len(core)] == core:
            return tuple(full[:start]), tuple(full[start + len(core) :])
    raise ValueError(f"cannot locate the special tokens of {type(tokenizer).__name__}")


# Scripts written without spaces between words (Unicode character-name prefixes).
NO_SPACE_SCRIPTS = (
    "CJK",
    "HIRAGANA",
    "KATAKANA",
    "HALFWIDTH KATAKANA",
    "THAI",
    "LAO",
    "KHMER",
    "MYANMAR",
    "TIBETAN",
)


def spaced(word: str) -> bool:
    """Whether running text would have a space before ``word``, as far as the word itself tells: it
    starts with a letter or a digit of a script written with spaces."""
    if not word or unicodedata.category(word[0])[0] not in "LN":
        return False
    name = unicodedata.name(word[0], "")
    return not name.startswith(NO_SPACE_SCRIPTS)


def word_pieces(
    tokenizer: PreTrainedTokenizerBase, sentences: list[list[str]], budget: int
) -> list[list[list[int]]]:
    """Per sentence, the sub-word ids of each word (``<unk>`` for a word without any), at most
    ``budget`` per word. One tokenizer call for the whole batch of sentences."""
    unk = [tokenizer.unk_token_id] if tokenizer.unk_token_id is not None else []
    if getattr(tokenizer, WORD_PREFIX_SPACE, False):
        # Each word as mid-sentence text, " word" where running text has the space (one call for the
        # batch), bare where not; a " word" whose first piece is the space alone is retokenised bare.
        flat = [w for words in sentences for w in words]
        space = tokenizer(" ", add_special_tokens=False)["input_ids"]
        ids = (
            tokenizer([" " + w if spaced(w) else w for w in flat], add_special_tokens=False)["input_ids"]
            if flat
            else []
        )
        redo = [i for i, p in enumerate(ids) if len(p) > 1 and p[:1] == space and spaced(flat[i])]
        if redo:
            for i, p in zip(
                redo, tokenizer([flat[i] for i in redo], add_special_tokens=False)["input_ids"], strict=True
            ):
                ids[i] = p
        unk = unk or space
        out, at = [], 0
        for words in sentences:
            out.append([(p or unk)[:budget] for p in ids[at : at + len(words)]])
            at += len(words)
        return out
    enc = tokenizer(sentences, is_split_into_words=True, add_special_tokens=False)
    out = []
    for i, words in enumerate(sentences):
        pieces: list[list[int]] = [[] for _ in words]
        for token, word in zip(enc["input_ids"][i], enc.word_ids(i), strict=True):
            if word is not None:
                pieces[word].append(token)
        out.append([(p or unk)[:budget] for p in pieces])
    return out


def windows(pieces: list[list[int]], budget: int) -> list[tuple[int, int]]:
    """Greedy word ranges ``[start, end)`` whose sub-words fit in ``budget`` (XTREME's re-chunking)."""
    spans, start, used = [], 0, 0
    for i, p in enumerate(pieces):
        if used + len(p) > budget and i > start:
            spans.append((start, i))
            start, used = i, 0
        used += len(p)
    if pieces:
        spans.append((start, len(pieces)))
    return spans


@register_featurizer("tagging")
def featurize_tagging(
    tokenizer: PreTrainedTokenizerBase, batch: dict[str, list[Any]], max_len: int
) -> dict[str, list[Any]]:
    prefix, suffix = _special_affixes(tokenizer)
    budget = max_len - len(prefix) - len(suffix)
    if budget < 1:
        raise ValueError(
            f"max_seq_length={max_len} leaves no room for words after {len(prefix) + len(suffix)} special tokens"
        )
    out: dict[str, list[Any]] = {
        "input_ids": [],
        "attention_mask": [],
        "labels": [],
        "word_index": [],
        "example_idx": [],
    }
    sentences = [list(words) for words in batch["words"]]
    last = getattr(tokenizer, LABEL_PIECE, "first") == "last"
    for pieces, tags, idx in zip(
        word_pieces(tokenizer, sentences, budget), batch["labels"], batch["example_idx"], strict=True
    ):
        for start, end in windows(pieces, budget):
            ids, labels, word_index = list(prefix), [IGNORE] * len(prefix), [IGNORE] * len(prefix)
            for w in range(start, end):
                ids.extend(pieces[w])
                rest = [IGNORE] * (len(pieces[w]) - 1)
                labels.extend(rest + [tags[w]] if last else [tags[w]] + rest)
                word_index.extend(rest + [w] if last else [w] + rest)
            ids.extend(suffix)
            labels.extend([IGNORE] * len(suffix))
            word_index.extend([IGNORE] * len(suffix))
            out["input_ids"].append(ids)
            out["attention_mask"].append([1] * len(ids))
            out["labels"].append(labels)
            out["word_index"].append(word_index)
            out["example_idx"].append(idx)
    return out
