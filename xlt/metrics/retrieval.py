"""Sentence retrieval for XTREME: Tatoeba top-1 accuracy and BUCC 2018 bitext mining F1.

Sources of the behaviour (re-implemented, not copied):

- ``google-research/xtreme: third_party/utils_retrieve.py``: ``similarity_search`` (Tatoeba),
  ``mine_bitext`` with ``text_load_unify`` / ``unique_embeddings`` / ``knn`` / ``score_candidates``
  (BUCC mining), ``read_sent2id`` / ``read_candidate2score`` (mapping mined sentences back to ids),
  ``bucc_optimize`` and ``bucc_extract`` (threshold);
- ``google-research/xtreme: third_party/evaluate_retrieval.py`` (which side is the index);
- ``google-research/xtreme: evaluate.py`` ``accuracy`` and ``bucc_f1`` (scores in percent);
- ``google-research/xtreme: utils_preprocess.py`` ``tatoeba_preprocess`` (the English side is sorted,
  so the gold of English line i is its original index).

Nearest neighbours are exact (blocked matrix products in torch, or faiss ``IndexFlatIP`` when
asked for). With the torch backend, memory beyond the inputs stays O((n_src + n_trg) * k + chunk**2),
never O(n_src * n_trg): rows are cast and normalised chunk by chunk, not copied whole.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from xlt.metrics.knn import (
    DEFAULT_CHUNK,
    ArrayLike,
    Backend,
    Margin,
    Retrieval,
    l2_normalize,
    mine_bitext,
)

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------
# Tatoeba
# --------------------------------------------------------------------------------------------------


def tatoeba_top1(query_emb: ArrayLike, index_emb: ArrayLike, chunk_size: int = DEFAULT_CHUNK) -> Tensor:
    """Row of ``index_emb`` with the highest cosine similarity to each row of ``query_emb``.

    XTREME queries with the English sentences and indexes the non-English ones
    (``similarity_search(x=non_en, y=en)``: L2 search over normalised vectors, the same ranking as
    cosine). Work happens ``chunk_size`` queries at a time on the queries' device, so memory is
    O(chunk_size * n_index). Ties go to the lowest index. Returns a CPU LongTensor of shape (n_query,).
    """
    queries = l2_normalize(query_emb)
    index = l2_normalize(torch.as_tensor(index_emb).to(queries.device))
    if queries.shape[1] != index.shape[1]:
        raise ValueError(f"dimension mismatch: queries {queries.shape[1]} vs index {index.shape[1]}")
    if index.shape[0] == 0:
        raise ValueError("empty index")
    best = [
        (queries[s : s + chunk_size] @ index.T).argmax(dim=1) for s in range(0, queries.shape[0], chunk_size)
    ]
    return torch.cat(best).cpu() if best else torch.empty(0, dtype=torch.long)


def tatoeba_accuracy(pred_idx: Sequence[int] | Tensor, gold_idx: Sequence[int] | Tensor) -> float:
    """Percentage of queries whose predicted index equals the gold one (evaluate.py ``accuracy``)."""
    pred = torch.as_tensor(pred_idx).reshape(-1)
    gold = torch.as_tensor(gold_idx).reshape(-1)
    if pred.numel() != gold.numel():
        raise ValueError(f"{pred.numel()} predictions but {gold.numel()} gold indices")
    if pred.numel() == 0:
        raise ValueError("nothing to score")
    correct = int((pred == gold).sum())
    return float(correct) / pred.numel() * 100


def tatoeba_sorted_gold(english: Sequence[str]) -> tuple[list[str], list[int]]:
    """XTREME's hidden-gold layout: the stripped English lines sorted (stably) by text, and for each
    sorted line its original index, which is the gold row of the aligned non-English sentence."""
    stripped = [line.strip() for line in english]
    order = sorted(range(len(stripped)), key=lambda i: stripped[i])
    return [stripped[i] for i in order], order


# --------------------------------------------------------------------------------------------------
# k nearest neighbours, both directions
# --------------------------------------------------------------------------------------------------
# BUCC mining
# --------------------------------------------------------------------------------------------------


def _unique_rows(texts: Sequence[str]) -> tuple[list[int], list[str]]:
    # text_load_unify keeps unique sentences in first-seen order, and unique_embeddings takes the
    # embedding of the *last* occurrence of each (its dict comprehension overwrites earlier rows).
    last_row: dict[str, int] = {}
    for row, text in enumerate(texts):
        last_row[text] = row
    return list(last_row.values()), list(last_row)


def _text_to_id(ids: Sequence[str], texts: Sequence[str]) -> dict[str, str]:
    # read_sent2id: stripped sentence -> id, and a sentence seen more than once maps to nothing, so
    # pairs involving a repeated sentence are never predicted.
    if len(ids) != len(texts):
        raise ValueError(f"{len(ids)} ids but {len(texts)} sentences")
    mapping: dict[str, str] = {}
    repeated: set[str] = set()
    for sid, text in zip(ids, texts, strict=True):
        key = text.strip()
        if key in mapping:
            repeated.add(key)
        else:
            mapping[key] = sid.strip()
    for key in repeated:
        del mapping[key]
    return mapping


def bucc_candidates(
    src_ids: Sequence[str],
    src_texts: Sequence[str],
    src_emb: ArrayLike,
    trg_ids: Sequence[str],
    trg_texts: Sequence[str],
    trg_emb: ArrayLike,
    k: int = 4,
    margin: Margin = "ratio",
    retrieval: Retrieval = "max",
    chunk_size: int = DEFAULT_CHUNK,
    backend: Backend = "torch",
    device: torch.device | str | None = None,
) -> dict[tuple[str, str], float]:
    """XTREME's BUCC candidate list: ``{(src_id, trg_id): score}`` in decreasing score order.

    Source = the non-English side, target = English. Identical sentences are mined once
    (deduplicated by text, using the last occurrence's embedding), mined with
    :func:`mine_bitext` (threshold 0), then mapped back to ids; a sentence that occurs more than
    once in its file has no id and its candidates are dropped (``read_sent2id``), and a pair seen
    twice keeps its highest score (``read_candidate2score``).
    """
    src_emb_t, trg_emb_t = torch.as_tensor(src_emb), torch.as_tensor(trg_emb)
    for name, texts, emb in (("source", src_texts, src_emb_t), ("target", trg_texts, trg_emb_t)):
        if len(texts) != emb.shape[0]:
            raise ValueError(f"{name}: {len(texts)} sentences but {emb.shape[0]} embeddings")
    src_rows, src_unique = _unique_rows(src_texts)
    trg_rows, trg_unique = _unique_rows(trg_texts)
    mined = mine_bitext(
        src_emb_t[src_rows], trg_emb_t[trg_rows], k, margin, retrieval, 0.0, chunk_size, backend, device
    )
    src_text2id, trg_text2id = _text_to_id(src_ids, src_texts), _text_to_id(trg_ids, trg_texts)
    candidates: dict[tuple[str, str], float] = {}
    for i, j, score in mined:
        src_id = src_text2id.get(src_unique[i].strip())
        trg_id = trg_text2id.get(trg_unique[j].strip())
        if src_id is None or trg_id is None:
            continue
        key = (src_id, trg_id)
        candidates[key] = max(score, candidates.get(key, score))
    return candidates


def _pair_set(pairs: Iterable[Any]) -> set[tuple[str, ...]]:
    # evaluate.py reads each line as tuple(line.split('\t')); tuples are taken as they are.
    return {tuple(p.split("\t")) if isinstance(p, str) else tuple(p) for p in pairs}


def bucc_optimize(candidate_scores: Mapping[tuple[str, str], float], gold: Iterable[Any]) -> float:
    """The F1-optimal score threshold on gold pairs (``bucc_optimize``).

    Candidates are sorted by decreasing score (stable, so ties keep their order); the cut-off sweeps
    down the list and the best F1 (strictly better only) fixes the threshold at the midpoint between
    the last kept candidate's score and the next one's. ``gold`` holds ``(src_id, trg_id)`` tuples or
    ``"src_id\\ttrg_id"`` lines. Returns 0 when no candidate is correct.

    Divergence: when the best cut keeps *every* candidate the official code indexes past the end and
    crashes; here the threshold is then the last candidate's score, which extracts all of them.
    """
    gold_set = _pair_set(line.strip() if isinstance(line, str) else line for line in gold)
    items = sorted(candidate_scores.items(), key=lambda item: -item[1])
    n_gold = len(gold_set)
    n_correct = 0
    best_f1 = 0.0
    threshold = 0.0
    for n_extracted, (pair, score) in enumerate(items, start=1):
        n_correct += tuple(pair) in gold_set
        if n_correct == 0:
            continue
        precision = n_correct / n_extracted
        recall = n_correct / n_gold
        f1 = 2 * precision * recall / (precision + recall)
        if f1 > best_f1:
            best_f1 = f1
            next_score = items[n_extracted][1] if n_extracted < len(items) else score
            threshold = (score + next_score) / 2
    return threshold


def bucc_extract(
    candidate_scores: Mapping[tuple[str, str], float], threshold: float
) -> list[tuple[str, str]]:
    """Candidate pairs whose score is at least ``threshold``, in the mapping's order (``bucc_extract``)."""
    return [pair for pair, score in candidate_scores.items() if score >= threshold]


def bucc_f1(gold_pairs: Iterable[Any], pred_pairs: Iterable[Any]) -> dict[str, float]:
    """``{"f1", "precision", "recall"}`` in percent over sets of (src_id, trg_id) pairs.

    evaluate.py ``bucc_f1``: duplicates count once, and all three are 0 when nothing is correct.
    Pairs are tuples or ``"src\\ttrg"`` lines.
    """
    gold, pred = _pair_set(gold_pairs), _pair_set(pred_pairs)
    n_correct = len(gold & pred)
    if n_correct > 0:
        precision = n_correct / len(pred)
        recall = n_correct / len(gold)
        f1 = 2 * precision * recall / (precision + recall)
    else:
        precision = recall = f1 = 0
    return {"f1": f1 * 100, "precision": precision * 100, "recall": recall * 100}
