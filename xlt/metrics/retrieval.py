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
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

log = logging.getLogger(__name__)

ArrayLike = Tensor | np.ndarray
Backend = Literal["torch", "faiss", "auto"]
Margin = Literal["ratio", "distance", "absolute"]
Retrieval = Literal["max", "fwd", "bwd", "intersect"]

DEFAULT_CHUNK = 2048


def l2_normalize(x: ArrayLike) -> Tensor:
    """Row-wise L2 normalisation in float32; all-zero rows stay zero (as ``faiss.normalize_L2``)."""
    t = torch.as_tensor(x).to(torch.float32)
    if t.ndim != 2:
        raise ValueError(f"expected a (n, dim) matrix, got shape {tuple(t.shape)}")
    norms = t.norm(dim=1, keepdim=True)
    return torch.where(norms > 0, t / norms.clamp_min(torch.finfo(torch.float32).tiny), t)


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


def _merge_topk(
    sims: Tensor, idx: Tensor, new_sims: Tensor, new_idx: Tensor, k: int
) -> tuple[Tensor, Tensor]:
    all_sims = torch.cat([sims, new_sims], dim=1)
    all_idx = torch.cat([idx, new_idx], dim=1)
    top, pos = all_sims.topk(k, dim=1)
    return top, all_idx.gather(1, pos)


def _row_norms(t: Tensor, chunk_size: int) -> Tensor:
    return torch.cat(
        [t[s : s + chunk_size].to(torch.float32).norm(dim=1) for s in range(0, t.shape[0], chunk_size)]
    )


def _rows(t: Tensor, norms: Tensor | None, start: int, stop: int) -> Tensor:
    # Cast and normalise one chunk at a time: no full float32/normalised copy of the inputs is made.
    block = t[start:stop].to(torch.float32)
    if norms is None:
        return block
    n = norms[start:stop, None]
    return torch.where(n > 0, block / n.clamp_min(torch.finfo(torch.float32).tiny), block)


def _knn_torch(
    x: Tensor, y: Tensor, k_xy: int, k_yx: int, chunk_size: int, normalize: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    # One pass over (chunk x chunk) blocks of x @ y.T serves both directions: row-wise top-k feeds
    # the x->y lists, column-wise top-k the y->x lists. Only the running lists persist.
    nx, ny, dev = x.shape[0], y.shape[0], x.device
    x_norms = _row_norms(x, chunk_size) if normalize else None
    y_norms = _row_norms(y, chunk_size) if normalize else None
    y2x_sim = torch.full((ny, k_yx), -torch.inf, device=dev)
    y2x_ind = torch.full((ny, k_yx), -1, dtype=torch.long, device=dev)
    x2y_sim = torch.empty((nx, k_xy), device=dev)
    x2y_ind = torch.empty((nx, k_xy), dtype=torch.long, device=dev)
    for xs in range(0, nx, chunk_size):
        xb = _rows(x, x_norms, xs, xs + chunk_size)
        run_sim = torch.full((xb.shape[0], k_xy), -torch.inf, device=dev)
        run_ind = torch.full((xb.shape[0], k_xy), -1, dtype=torch.long, device=dev)
        for ys in range(0, ny, chunk_size):
            block = xb @ _rows(y, y_norms, ys, ys + chunk_size).T
            s, i = block.topk(min(k_xy, block.shape[1]), dim=1)
            run_sim, run_ind = _merge_topk(run_sim, run_ind, s, i + ys, k_xy)
            s, i = block.T.topk(min(k_yx, block.shape[0]), dim=1)
            ye = ys + block.shape[1]
            y2x_sim[ys:ye], y2x_ind[ys:ye] = _merge_topk(y2x_sim[ys:ye], y2x_ind[ys:ye], s, i + xs, k_yx)
        x2y_sim[xs : xs + xb.shape[0]] = run_sim
        x2y_ind[xs : xs + xb.shape[0]] = run_ind
    return x2y_sim, x2y_ind, y2x_sim, y2x_ind


def _knn_faiss(x: Tensor, y: Tensor, k_xy: int, k_yx: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    import faiss  # optional: only this backend needs it

    def search(queries: Tensor, database: Tensor, k: int) -> tuple[Tensor, Tensor]:
        index = faiss.IndexFlatIP(database.shape[1])
        index.add(np.ascontiguousarray(database.numpy()))
        sims, ind = index.search(np.ascontiguousarray(queries.numpy()), k)
        return torch.from_numpy(sims), torch.from_numpy(ind).long()

    x2y_sim, x2y_ind = search(x, y, k_xy)
    y2x_sim, y2x_ind = search(y, x, k_yx)
    return x2y_sim, x2y_ind, y2x_sim, y2x_ind


def _resolve_backend(backend: Backend) -> Literal["torch", "faiss"]:
    if backend == "auto":
        try:
            import faiss  # noqa: F401
        except ImportError:
            return "torch"
        return "faiss"
    if backend not in ("torch", "faiss"):
        raise ValueError(f"unknown kNN backend {backend!r}; valid: torch, faiss, auto")
    return backend


def bidirectional_knn(
    x: ArrayLike,
    y: ArrayLike,
    k: int = 4,
    chunk_size: int = DEFAULT_CHUNK,
    backend: Backend = "torch",
    normalize: bool = True,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Exact inner-product k-NN of each x row among y and of each y row among x.

    ``k`` is capped by the other side's size, as ``mine_bitext`` does (``min(n, neighborhood)``).
    With ``normalize`` (the default) rows are L2-normalised first, so similarities are cosines.
    The torch backend works on ``device`` (default: where ``x`` lives, e.g. a GPU) one
    ``chunk_size`` x ``chunk_size`` block at a time; results come back on the CPU.
    Returns ``(x2y_sim, x2y_ind, y2x_sim, y2x_ind)``, each row sorted by decreasing similarity.
    """
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    if x.ndim != 2 or y.ndim != 2:
        raise ValueError(f"expected (n, dim) matrices, got shapes {tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[0] == 0 or y.shape[0] == 0:
        raise ValueError("both sides need at least one sentence")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"dimension mismatch: {x.shape[1]} vs {y.shape[1]}")
    k_xy, k_yx = min(k, y.shape[0]), min(k, x.shape[0])
    if _resolve_backend(backend) == "faiss":
        xf, yf = (l2_normalize(t.cpu()) if normalize else t.cpu().to(torch.float32) for t in (x, y))
        return _knn_faiss(xf, yf, k_xy, k_yx)
    dev = torch.device(device) if device is not None else x.device
    result = _knn_torch(x.to(dev), y.to(dev), k_xy, k_yx, chunk_size, normalize)
    return tuple(t.cpu() for t in result)  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------------
# BUCC mining
# --------------------------------------------------------------------------------------------------


def _margin(cos: Tensor, avg: Tensor, margin: Margin) -> Tensor:
    if margin == "ratio":
        return cos / avg
    if margin == "distance":
        return cos - avg
    if margin == "absolute":
        return cos
    raise ValueError(f"unknown margin {margin!r}; valid: ratio, distance, absolute")


def mine_bitext(
    src_emb: ArrayLike,
    trg_emb: ArrayLike,
    k: int = 4,
    margin: Margin = "ratio",
    retrieval: Retrieval = "max",
    threshold: float = 0.0,
    chunk_size: int = DEFAULT_CHUNK,
    backend: Backend = "torch",
    device: torch.device | str | None = None,
) -> list[tuple[int, int, float]]:
    """Margin-based bitext mining over rows that are already unique (``mine_bitext``, mode "mine").

    Each side's k-NN among the other side (cosine) gives its mean neighbourhood similarity; a
    candidate (x, y) scores ``cos(x, y) / ((mean_fwd(x) + mean_bwd(y)) / 2)`` ("ratio" margin).
    Every x keeps its best-scoring candidate among its k neighbours (forward), every y likewise
    (backward). ``retrieval="max"`` pools both lists, sorts them by decreasing score and keeps a
    pair only if neither side was taken yet (greedy one-to-one), and only if its score exceeds
    ``threshold``. "fwd", "bwd" and "intersect" return the forward list, the backward list or
    their mutual agreements, unthresholded, as the official code does.

    Returns ``(src_row, trg_row, score)`` triples; for "max" in decreasing score order. The sort is
    stable, so exact ties keep forward-before-backward order (numpy's default argsort in the
    official code is not stable; only exact ties can differ).
    """
    x2y_sim, x2y_ind, y2x_sim, y2x_ind = bidirectional_knn(
        src_emb, trg_emb, k, chunk_size, backend, device=device
    )
    fwd_mean, bwd_mean = x2y_sim.mean(dim=1), y2x_sim.mean(dim=1)
    fwd_scores = _margin(x2y_sim, (fwd_mean[:, None] + bwd_mean[x2y_ind]) / 2, margin)
    bwd_scores = _margin(y2x_sim, (bwd_mean[:, None] + fwd_mean[y2x_ind]) / 2, margin)
    fwd_score, fwd_pos = fwd_scores.max(dim=1)
    bwd_score, bwd_pos = bwd_scores.max(dim=1)
    fwd_best = x2y_ind.gather(1, fwd_pos[:, None]).squeeze(1)
    bwd_best = y2x_ind.gather(1, bwd_pos[:, None]).squeeze(1)
    nx, ny = fwd_best.shape[0], bwd_best.shape[0]

    if retrieval == "fwd":
        return list(zip(range(nx), fwd_best.tolist(), fwd_score.tolist(), strict=True))
    if retrieval == "bwd":
        return list(zip(bwd_best.tolist(), range(ny), bwd_score.tolist(), strict=True))
    if retrieval == "intersect":
        mutual = (bwd_best[fwd_best] == torch.arange(nx)).nonzero().squeeze(1).tolist()
        return [(i, int(fwd_best[i]), float(fwd_score[i])) for i in mutual]
    if retrieval != "max":
        raise ValueError(f"unknown retrieval {retrieval!r}; valid: max, fwd, bwd, intersect")

    src = torch.cat([torch.arange(nx), bwd_best]).numpy()
    trg = torch.cat([fwd_best, torch.arange(ny)]).numpy()
    scores = torch.cat([fwd_score, bwd_score])
    order = torch.argsort(scores, descending=True, stable=True).numpy()
    scores_np = scores.numpy()
    src_taken = np.zeros(nx, dtype=bool)
    trg_taken = np.zeros(ny, dtype=bool)
    mined: list[tuple[int, int, float]] = []
    for pos in order:
        i, j = src[pos], trg[pos]
        if src_taken[i] or trg_taken[j]:
            continue
        src_taken[i] = trg_taken[j] = True
        if scores_np[pos] > threshold:
            mined.append((int(i), int(j), float(scores_np[pos])))
    return mined


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
