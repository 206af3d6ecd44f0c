"""Span-QA features: question + context windows with gold token spans and the offsets to map back.

Windowing follows the SQuAD processor that XTREME's ``run_squad.py`` and jiant use
(``squad_convert_example_to_features``): the question is cut to ``MAX_QUERY_LENGTH`` tokens, the
context is split into windows of ``max_len - question - special`` tokens whose starts advance by
``DOC_STRIDE`` tokens (so consecutive windows overlap by the rest; Hugging Face's ``run_qa.py`` uses
the stride as the overlap instead), and a context token counts as a candidate answer start only in
the window where it has the most context on both sides (``token_is_max_context``).

Every window is one feature: ``input_ids``, ``attention_mask``, ``start_positions`` and
``end_positions`` (token indices of the first answer; 0, the CLS token, when the answer is not
inside the window or the question has none), ``offset_starts``/``offset_ends`` (character offsets
of each token in the example's context, -1 for tokens outside the context), ``max_context`` (1 where
a context token has its maximal context in this window) and ``example_idx``.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import defaultdict
from typing import Any

import numpy as np
from transformers import PreTrainedTokenizerBase

from xlt.data.features import register_featurizer

MAX_QUERY_LENGTH = 64
DOC_STRIDE = 128
NOT_CONTEXT = -1


def _answer_tokens(
    starts: list[int], ends: list[int], lo: int, hi: int, start_char: int, end_char: int
) -> tuple[int, int]:
    """Token span [s, e] of the characters [start_char, end_char) among context tokens lo..hi; (0, 0) if
    the window does not hold the whole answer."""
    if starts[lo] > start_char or ends[hi] < end_char:
        return 0, 0
    first = lo + bisect_right(ends[lo : hi + 1], start_char)  # first token ending after the answer start
    last = lo + bisect_left(starts[lo : hi + 1], end_char) - 1  # last token starting before the answer end
    return (first, last) if first <= last else (0, 0)


def _max_context(spans: list[tuple[int, int]]) -> list[np.ndarray]:
    """Per window (doc start, length): 1 where a doc token's context is largest in that window.

    A token's score in a window is min(left, right context) + 0.01 * window length; the first window
    with the top score wins ties (``_check_is_max_context`` of the SQuAD processor).
    """
    if len(spans) == 1:
        return [np.ones(spans[0][1], dtype=np.int8)]
    total = max(start + length for start, length in spans)
    best = np.full(total, -1.0)
    owner = np.full(total, -1)
    for w, (start, length) in enumerate(spans):
        pos = np.arange(start, start + length)
        score = np.minimum(pos - start, start + length - 1 - pos) + 0.01 * length
        better = score > best[pos]
        best[pos[better]] = score[better]
        owner[pos[better]] = w
    return [(owner[start : start + length] == w).astype(np.int8) for w, (start, length) in enumerate(spans)]


_OUTPUT_COLUMNS = (
    "input_ids",
    "attention_mask",
    "start_positions",
    "end_positions",
    "offset_starts",
    "offset_ends",
    "max_context",
    "example_idx",
)


@register_featurizer("span_qa")
def featurize_span_qa(
    tokenizer: PreTrainedTokenizerBase, batch: dict[str, list[Any]], max_len: int
) -> dict[str, list[Any]]:
    questions, by_length = _cut_questions(tokenizer, batch["question"])
    windows, advance_of = _context_windows(tokenizer, questions, batch["context"], by_length, max_len)
    return _window_features(batch, windows, advance_of)


def _cut_questions(
    tokenizer: PreTrainedTokenizerBase, raw_questions: list[str]
) -> tuple[list[str], dict[int, list[int]]]:
    """The questions (left-stripped, long ones cut at their 64th token, as the text the pair encoding
    then tokenises again) and the indices of the questions of each token length (at most 64)."""
    questions = [q.lstrip() for q in raw_questions]
    q_enc = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)
    by_length: dict[int, list[int]] = defaultdict(list)
    for i, (ids, offsets) in enumerate(zip(q_enc["input_ids"], q_enc["offset_mapping"], strict=True)):
        if len(ids) > MAX_QUERY_LENGTH:
            questions[i] = questions[i][: offsets[MAX_QUERY_LENGTH - 1][1]]
        by_length[min(len(ids), MAX_QUERY_LENGTH)].append(i)
    return questions, by_length


def _context_windows(
    tokenizer: PreTrainedTokenizerBase,
    questions: list[str],
    contexts: list[str],
    by_length: dict[int, list[int]],
    max_len: int,
) -> tuple[list[list[dict[str, Any]]], dict[int, int]]:
    """Per example its windows (ids, mask, per-token context offsets, first and last context token)
    and by how many context tokens its windows advance."""
    special = tokenizer.num_special_tokens_to_add(pair=True)
    windows: list[list[dict[str, Any]]] = [[] for _ in range(len(questions))]
    advance_of: dict[int, int] = {}
    # One tokeniser call per question length: the overlap that makes windows advance by DOC_STRIDE
    # depends on how many tokens the question leaves for the context.
    for q_len, members in by_length.items():
        budget = max_len - q_len - special
        if budget < 1:
            raise ValueError(
                f"max_seq_length={max_len} leaves no room for context after a {q_len}-token question"
            )
        overlap = max(0, budget - DOC_STRIDE)
        enc = tokenizer(
            [questions[i] for i in members],
            [contexts[i] for i in members],
            truncation="only_second",
            max_length=max_len,
            stride=overlap,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
        )
        for f, local in enumerate(enc["overflow_to_sample_mapping"]):
            i = members[local]
            advance_of[i] = budget - overlap
            sequence = enc.sequence_ids(f)
            context = [t for t, s in enumerate(sequence) if s == 1]
            offsets = enc["offset_mapping"][f]
            windows[i].append(
                {
                    "input_ids": enc["input_ids"][f],
                    "attention_mask": enc["attention_mask"][f],
                    "starts": [
                        o[0] if s == 1 else NOT_CONTEXT for o, s in zip(offsets, sequence, strict=True)
                    ],
                    "ends": [o[1] if s == 1 else NOT_CONTEXT for o, s in zip(offsets, sequence, strict=True)],
                    "lo": context[0] if context else 0,
                    "hi": context[-1] if context else 0,
                }
            )
    return windows, advance_of


def _window_features(
    batch: dict[str, list[Any]], windows: list[list[dict[str, Any]]], advance_of: dict[int, int]
) -> dict[str, list[Any]]:
    """One feature per window: its gold answer tokens, context offsets and max-context flags."""
    out: dict[str, list[Any]] = {k: [] for k in _OUTPUT_COLUMNS}
    for i, example_windows in enumerate(windows):
        answers = batch["answers"][i]
        impossible = bool(batch["is_impossible"][i]) or not answers
        start_char = answers[0]["answer_start"] if not impossible else 0
        end_char = start_char + len(answers[0]["text"]) if not impossible else 0
        spans = [(w * advance_of[i], win["hi"] - win["lo"] + 1) for w, win in enumerate(example_windows)]
        for win, max_context in zip(example_windows, _max_context(spans), strict=True):
            s, e = (
                (0, 0)
                if impossible
                else _answer_tokens(win["starts"], win["ends"], win["lo"], win["hi"], start_char, end_char)
            )
            flags = np.zeros(len(win["input_ids"]), dtype=np.int8)
            flags[win["lo"] : win["hi"] + 1] = max_context
            out["input_ids"].append(win["input_ids"])
            out["attention_mask"].append(win["attention_mask"])
            out["start_positions"].append(s)
            out["end_positions"].append(e)
            out["offset_starts"].append(np.asarray(win["starts"], dtype=np.int32))
            out["offset_ends"].append(np.asarray(win["ends"], dtype=np.int32))
            out["max_context"].append(flags)
            out["example_idx"].append(batch["example_idx"][i])
    return out
