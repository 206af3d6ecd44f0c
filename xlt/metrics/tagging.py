"""Chunk F1 for UD-POS and PAN-X as XTREME computes it (seqeval 0.0.12), plus token accuracy.

XTREME's ``evaluate.py`` scores both tagging tasks with ``seqeval.metrics.{f1,precision,recall}_score``
and its published numbers and ``evaluate_test.py`` expectations come from seqeval 0.0.12. This module
re-implements 0.0.12's ``get_entities`` / ``end_of_chunk`` / ``start_of_chunk`` (source of the
behaviour: ``seqeval-0.0.12/seqeval/metrics/sequence_labeling.py`` on PyPI) without depending on any
installed seqeval:

- A label's *tag* is its first character and its *type* is the text after its **last** ``-``
  (the whole label when it has none). So UPOS labels are chunked by their own name: ``CCONJ`` and
  ``SCONJ`` are different types. seqeval 1.x instead types a chunk by the label minus its first
  character (``CONJ`` for both), so the two versions disagree on UD-POS.
- Tags B, I, E, S, O keep their IOBES meaning, also when they are only the first letter of a UPOS
  label: ``INTJ`` behaves as an I tag, ``SCONJ`` and ``SYM`` as S tags (one chunk per token), and a
  run of any other identical UPOS label (``NOUN NOUN``) is one chunk.
- Several sentences are scored by concatenating them with an ``O`` between each (0.0.12's flattening),
  then comparing the sets of (type, start, end) chunks.

Per-sentence counting then summing (what :class:`ChunkF1` does, so it can sync across ranks) equals the
flattened computation: the ``O`` separator closes every open chunk, whatever its tag, because its type
``O`` differs from the chunk's, and the next sentence starts from the same state as a fresh sequence.
The only exceptions are labels whose type is ``O`` or empty, or whose first letter is ``O`` without
being ``O`` itself (``B-O``, ``I-``, ``OTHER``); no XTREME label set has one. tests/test_metrics_tagging.py
checks the equivalence on random UPOS, IOB2 and IOBES data against the flattened computation.

All scores are percentages (0-100), as evaluate.py reports them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from xlt.metrics._dedup import NO_KEY, cat_state, example_key, first_occurrence_mask

Chunk = tuple[str, int, int]


def _split_label(label: str) -> tuple[str, str]:
    if not label:
        raise ValueError("empty tag label; every token needs a label (e.g. 'O')")
    return label[0], label.split("-")[-1]


def _chunk_ends(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    if prev_tag in ("E", "S"):
        return True
    if prev_tag in ("B", "I") and tag in ("B", "S", "O"):
        return True
    # 0.0.12 exempts "." from the type-change rule (it never starts or ends a chunk by type).
    return prev_tag not in ("O", ".") and prev_type != type_


def _chunk_starts(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    if tag in ("B", "S"):
        return True
    if prev_tag in ("E", "S", "O") and tag in ("E", "I"):
        return True
    return tag not in ("O", ".") and prev_type != type_


def get_chunks(labels: Sequence[str]) -> list[Chunk]:
    """(type, first index, last index) of each chunk of one label sequence, seqeval 0.0.12 style.

    >>> get_chunks(["B-PER", "I-PER", "O", "B-LOC"])
    [('PER', 0, 1), ('LOC', 3, 3)]
    >>> get_chunks(["NOUN", "NOUN", "VERB"])
    [('NOUN', 0, 1), ('VERB', 2, 2)]
    """
    chunks: list[Chunk] = []
    prev_tag, prev_type, begin = "O", "", 0
    for i, label in enumerate([*labels, "O"]):
        tag, type_ = _split_label(label)
        if _chunk_ends(prev_tag, tag, prev_type, type_):
            chunks.append((prev_type, begin, i - 1))
        if _chunk_starts(prev_tag, tag, prev_type, type_):
            begin = i
        prev_tag, prev_type = tag, type_
    return chunks


def _as_sentences(sequences: Sequence[Any]) -> list[Sequence[str]]:
    # A flat list of labels is one sentence (seqeval treats a list without nested lists that way).
    if sequences and all(isinstance(x, str) for x in sequences):
        return [sequences]
    return list(sequences)


def flatten_with_separators(sentences: Sequence[Sequence[str]]) -> list[str]:
    """Concatenate sentences with an ``O`` after each, as seqeval 0.0.12 does for nested input."""
    flat: list[str] = []
    for sentence in sentences:
        flat.extend(sentence)
        flat.append("O")
    return flat


def chunk_counts(gold: Sequence[Any], pred: Sequence[Any]) -> tuple[int, int, int]:
    """(correct, predicted, gold) chunk counts over sentences flattened the seqeval 0.0.12 way."""
    gold_chunks = set(get_chunks(flatten_with_separators(_as_sentences(gold))))
    pred_chunks = set(get_chunks(flatten_with_separators(_as_sentences(pred))))
    return len(gold_chunks & pred_chunks), len(pred_chunks), len(gold_chunks)


def prf_from_counts(correct: int, n_pred: int, n_gold: int) -> dict[str, float]:
    """``{"f1", "precision", "recall"}`` in percent from chunk counts.

    The arithmetic is seqeval 0.0.12's (fractions first, 0 where undefined) times 100 as in
    evaluate.py, so the floats are identical to the official ones.
    """
    p = correct / n_pred if n_pred > 0 else 0
    r = correct / n_gold if n_gold > 0 else 0
    f1 = 2 * p * r / (p + r) if p + r > 0 else 0
    return {"f1": f1 * 100, "precision": p * 100, "recall": r * 100}


def seqeval_scores(gold: Sequence[Any], pred: Sequence[Any]) -> dict[str, float]:
    """Chunk F1, precision and recall (percent) of ``pred`` against ``gold``, exactly as XTREME's
    evaluate.py ``f1`` computes them for UD-POS and PAN-X.

    Both arguments are lists of sentences (lists of label strings), or one flat label list.
    As in seqeval, sentence lengths are not checked: callers that read files should check them.
    """
    return prf_from_counts(*chunk_counts(gold, pred))


def chunk_f1(gold: Sequence[Any], pred: Sequence[Any]) -> float:
    """Chunk F1 in percent (the ``f1`` of :func:`seqeval_scores`)."""
    return seqeval_scores(gold, pred)["f1"]


def _token_counts(gold: Sequence[Any], pred: Sequence[Any]) -> tuple[int, int]:
    gold_s, pred_s = _as_sentences(gold), _as_sentences(pred)
    if len(gold_s) != len(pred_s):
        raise ValueError(f"{len(gold_s)} gold sentences but {len(pred_s)} predicted")
    correct = total = 0
    for i, (g, p) in enumerate(zip(gold_s, pred_s, strict=True)):
        if len(g) != len(p):
            raise ValueError(f"sentence {i}: {len(g)} gold labels but {len(p)} predicted")
        correct += sum(a == b for a, b in zip(g, p, strict=True))
        total += len(g)
    return correct, total


def token_accuracy(gold: Sequence[Any], pred: Sequence[Any]) -> float:
    """Share of tokens whose label is right, in percent; sentences must have equal lengths."""
    correct, total = _token_counts(gold, pred)
    if total == 0:
        raise ValueError("no tokens to score")
    return 100.0 * correct / total


def decode_tag_ids(
    pred_ids: Tensor,
    target_ids: Tensor,
    id2label: Mapping[int, str] | Sequence[str],
    ignore_index: int = -100,
) -> tuple[list[list[str]], list[list[str]]]:
    """Turn (batch, seq) label-id tensors into label-string sentences, dropping positions whose
    target is ``ignore_index`` (special tokens and non-first subwords)."""
    if pred_ids.shape != target_ids.shape:
        raise ValueError(f"pred_ids {tuple(pred_ids.shape)} vs target_ids {tuple(target_ids.shape)}")
    preds: list[list[str]] = []
    targets: list[list[str]] = []
    for p_row, t_row in zip(pred_ids.tolist(), target_ids.tolist(), strict=True):
        keep = [(p, t) for p, t in zip(p_row, t_row, strict=True) if t != ignore_index]
        preds.append([id2label[p] for p, _ in keep])
        targets.append([id2label[t] for _, t in keep])
    return preds, targets


class ChunkF1(Metric):
    """seqeval-0.0.12 chunk F1/precision/recall plus token accuracy (percent), DDP-safe.

    Each update counts chunks per sentence and keeps float64 "cat" states per sentence (key,
    correct, predicted, gold, right tokens, tokens); counts below 2**53 are exact in float64.
    Pass ``ids`` (one per sentence) to drop DistributedSampler's padding duplicates: compute keeps
    the first occurrence of each id. Results equal :func:`seqeval_scores` / :func:`token_accuracy`
    on the same sentences (see the module docstring for why per-sentence counting is exact).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    keys: list[Tensor]
    counts: list[Tensor]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("keys", default=[], dist_reduce_fx="cat")
        # (n_sentences * 5,) flattened rows of [correct, n_pred, n_gold, right_tokens, tokens]:
        # 1-D so an empty rank's placeholder (a 1-D empty tensor) concatenates cleanly.
        self.add_state("counts", default=[], dist_reduce_fx="cat")
        self.set_dtype(torch.float64)

    def update(
        self,
        preds: Sequence[Sequence[str]],
        targets: Sequence[Sequence[str]],
        ids: Sequence[str | int] | None = None,
    ) -> None:
        """Add sentences: ``preds[i]`` and ``targets[i]`` are the label strings of sentence i."""
        if len(preds) != len(targets):
            raise ValueError(f"{len(preds)} predicted sentences but {len(targets)} gold sentences")
        if ids is not None and len(ids) != len(preds):
            raise ValueError(f"{len(preds)} sentences but {len(ids)} ids")
        rows: list[float] = []
        for p, t in zip(preds, targets, strict=True):
            gold_chunks, pred_chunks = set(get_chunks(t)), set(get_chunks(p))
            right, tokens = _token_counts([list(t)], [list(p)])
            rows += [len(gold_chunks & pred_chunks), len(pred_chunks), len(gold_chunks), right, tokens]
        keys = [NO_KEY] * len(preds) if ids is None else [example_key(i) for i in ids]
        self.keys.append(torch.tensor(keys, dtype=torch.float64, device=self.device))
        self.counts.append(torch.tensor(rows, dtype=torch.float64, device=self.device))

    def compute(self) -> dict[str, Tensor]:
        """``{"f1", "precision", "recall", "accuracy"}`` in percent (NaN accuracy with no tokens)."""
        keys = cat_state(self.keys)
        counts = cat_state(self.counts).reshape(-1, 5)[first_occurrence_mask(keys)]
        correct, n_pred, n_gold, right, tokens = (int(v) for v in counts.sum(dim=0).tolist())
        out = {
            k: torch.tensor(v, dtype=torch.float64)
            for k, v in prf_from_counts(correct, n_pred, n_gold).items()
        }
        out["accuracy"] = torch.tensor(
            100.0 * right / tokens if tokens else float("nan"), dtype=torch.float64
        )
        return out
