"""Exact k nearest neighbours by cosine, in both directions, and margin-based bitext mining: the
machinery of :mod:`xlt.metrics.retrieval`'s Tatoeba and BUCC scores.

Re-implemented from ``google-research/xtreme: third_party/utils_retrieve.py`` (``knn``,
``score_candidates``, ``mine_bitext``), not copied. Nearest neighbours are exact (blocked matrix
products in torch, or faiss ``IndexFlatIP`` when asked for). With the torch backend, memory beyond
the inputs stays O((n_src + n_trg) * k + chunk**2), never O(n_src * n_trg): rows are cast and
normalised chunk by chunk, not copied whole.
"""

from __future__ import annotations

import logging
from typing import Literal

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
# Margin mining
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
    return _one_to_one(src, trg, torch.cat([fwd_score, bwd_score]), nx, ny, threshold)


def _one_to_one(
    src: np.ndarray, trg: np.ndarray, scores: Tensor, nx: int, ny: int, threshold: float
) -> list[tuple[int, int, float]]:
    """``retrieval="max"``: the pooled candidates by decreasing score (stable), each kept only if
    neither side was taken yet, and only if its score exceeds ``threshold``."""
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
