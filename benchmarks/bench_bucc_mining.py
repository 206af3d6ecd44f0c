"""Benchmark BUCC-style margin mining (``xlt.metrics.retrieval.mine_bitext``): time and peak memory.

    python benchmarks/bench_bucc_mining.py                      # BUCC size: 150k x 400k, dim 384
    python benchmarks/bench_bucc_mining.py --n-src 20000 --n-trg 50000 --chunk-size 2048

Random unit vectors with planted pairs (a target is a noisy copy of a source). Reports the mining
wall time, the process peak RSS before and after mining (``resource.getrusage``: torch allocations
are invisible to tracemalloc), what a dense similarity matrix would have needed, and how well the
planted pairs are recovered with the F1-optimal threshold. Not a test.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from xlt.metrics.retrieval import bucc_f1, bucc_optimize, mine_bitext  # noqa: E402


def peak_rss_mib() -> float:
    """Process-lifetime peak resident set size in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_data(n_src: int, n_trg: int, dim: int, n_pairs: int, noise: float, seed: int):
    gen = torch.Generator().manual_seed(seed)
    src = torch.randn(n_src, dim, generator=gen)
    trg = torch.randn(n_trg, dim, generator=gen)
    src_rows = torch.randperm(n_src, generator=gen)[:n_pairs]
    trg_rows = torch.randperm(n_trg, generator=gen)[:n_pairs]
    trg[trg_rows] = src[src_rows] + noise * torch.randn(n_pairs, dim, generator=gen)
    src /= src.norm(dim=1, keepdim=True)
    trg /= trg.norm(dim=1, keepdim=True)
    return src, trg, set(zip(src_rows.tolist(), trg_rows.tolist(), strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-src", type=int, default=150_000)
    parser.add_argument("--n-trg", type=int, default=400_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--pairs", type=int, default=None, help="planted pairs (default: 1%% of n-src)")
    parser.add_argument("--noise", type=float, default=0.5, help="std of the noise added to planted targets")
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--chunk-size", type=int, default=2048)
    parser.add_argument("--backend", choices=("torch", "faiss"), default="torch")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    n_pairs = args.pairs if args.pairs is not None else max(1, args.n_src // 100)

    src, trg, planted = make_data(args.n_src, args.n_trg, args.dim, n_pairs, args.noise, args.seed)
    rss_before = peak_rss_mib()
    start = time.perf_counter()
    mined = mine_bitext(src, trg, k=args.k, chunk_size=args.chunk_size, backend=args.backend)
    seconds = time.perf_counter() - start
    rss_after = peak_rss_mib()

    candidates = {(str(i), str(j)): score for i, j, score in mined}
    gold = [(str(i), str(j)) for i, j in planted]
    threshold = bucc_optimize(candidates, gold)
    scores = bucc_f1(gold, [pair for pair, s in candidates.items() if s >= threshold])
    report = {
        "n_src": args.n_src,
        "n_trg": args.n_trg,
        "dim": args.dim,
        "k": args.k,
        "chunk_size": args.chunk_size,
        "backend": args.backend,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "mine_seconds": round(seconds, 2),
        "gflop_per_s": round(2 * args.n_src * args.n_trg * args.dim / seconds / 1e9, 1),
        "input_mib": round((src.numel() + trg.numel()) * 4 / 2**20, 1),
        "peak_rss_mib_before_mining": round(rss_before, 1),
        "peak_rss_mib_after_mining": round(rss_after, 1),
        "mining_extra_peak_mib": round(rss_after - rss_before, 1),
        "dense_sim_matrix_mib": round(args.n_src * args.n_trg * 4 / 2**20, 1),
        "candidates": len(mined),
        "planted_pairs": n_pairs,
        "threshold": round(threshold, 4),
        "planted_f1": round(scores["f1"], 2),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
