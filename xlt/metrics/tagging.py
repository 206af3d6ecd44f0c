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

:class:`WordTagScore` is the torchmetrics class the tagging head evaluates with: it puts whole
sentences back together from their windows and scores them with :func:`seqeval_scores` /
:func:`token_accuracy`, so tests/test_metrics_tagging.py's seqeval 0.0.12 oracle checks the code
that runs.

All scores are percentages (0-100), as evaluate.py reports them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torchmetrics
from torchmetrics.utilities import dim_zero_cat

Chunk = tuple[str, int, int]

# ``word_index`` of a token that is not a word's first sub-word (xlt/data/features_tagging.py).
IGNORE = -100
# The label a word gets when no window of its sentence was scored (limit_*_batches): always wrong.
MISSING = "<unscored>"


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


class WordTagScore(torchmetrics.Metric):
    """One score of word-level tagging over whole sentences.

    ``update`` keeps (example, word, predicted label) for each scored word; ``compute`` gathers them
    (across DDP ranks too), puts every sentence back together from its windows and scores it against
    the gold tags of the evaluation set's raw examples: ``f1``/``precision``/``recall`` are seqeval
    0.0.12 chunk scores as XTREME's evaluate.py computes them (:func:`seqeval_scores`), ``acc`` is
    token accuracy, all in percent. Sentences none of whose windows were scored are left out; a word
    of a scored sentence without a prediction counts as wrong.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    example: list[torch.Tensor]
    word: list[torch.Tensor]
    pred: list[torch.Tensor]

    def __init__(
        self, score: str, gold: Sequence[Sequence[int]], label_names: Sequence[str], **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        if score not in ("f1", "precision", "recall", "acc"):
            raise ValueError(f"unknown tagging score {score!r}")
        self.score = score
        self.gold = [list(g) for g in gold]
        self.label_names = list(label_names)
        for name in ("example", "word", "pred"):
            self.add_state(name, default=[], dist_reduce_fx="cat")
        # float64 states (integers below 2**53 are exact): an idle DDP rank's placeholder state is an
        # empty tensor of the metric's dtype, which must match the busy ranks' states.
        self.set_dtype(torch.float64)

    def update(self, preds: torch.Tensor, example_idx: torch.Tensor, word_index: torch.Tensor) -> None:
        """``preds`` and ``word_index`` are (batch, seq); ``example_idx`` is (batch,)."""
        scored = word_index != IGNORE
        self.example.append(example_idx.unsqueeze(1).expand_as(word_index)[scored].to(torch.float64))
        self.word.append(word_index[scored].to(torch.float64))
        self.pred.append(preds[scored].to(torch.float64))

    def sentences(self) -> tuple[list[list[str]], list[list[str]]]:
        """(gold, predicted) label strings of every sentence with at least one scored window."""
        # Lists before a DDP sync (empty when nothing was scored), tensors after it.
        if isinstance(self.example, list) and not self.example:
            return [], []
        examples, words, preds = (
            [int(v) for v in dim_zero_cat(s).tolist()] for s in (self.example, self.word, self.pred)
        )
        predicted: dict[tuple[int, int], int] = {}
        for key in zip(examples, words, preds, strict=True):
            predicted.setdefault(key[:2], key[2])  # first occurrence: DDP pads with repeated batches
        names = self.label_names
        gold, pred = [], []
        for e in sorted({e for e, _ in predicted}):
            tags = self.gold[e]
            gold.append([names[t] for t in tags])
            pred.append(
                [names[predicted[(e, w)]] if (e, w) in predicted else MISSING for w in range(len(tags))]
            )
        return gold, pred

    def compute(self) -> torch.Tensor:
        gold, pred = self.sentences()
        if not gold:
            return torch.tensor(float("nan"), dtype=torch.float64)
        value = token_accuracy(gold, pred) if self.score == "acc" else seqeval_scores(gold, pred)[self.score]
        return torch.tensor(value, dtype=torch.float64)
