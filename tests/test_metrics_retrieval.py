"""Retrieval: Tatoeba top-1 accuracy and BUCC margin mining, threshold optimisation and F1.

Dense reference computations below (full similarity matrices) are only feasible for small n; the
chunked implementation must agree with them for every chunk size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from xlt.metrics.knn import bidirectional_knn, l2_normalize, mine_bitext
from xlt.metrics.retrieval import (
    bucc_candidates,
    bucc_extract,
    bucc_f1,
    bucc_optimize,
    tatoeba_accuracy,
    tatoeba_sorted_gold,
    tatoeba_top1,
)


def _unit(rng: np.random.Generator, n: int, dim: int = 16) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# ----------------------------------------------------------------------------------------------
# Tatoeba
# ----------------------------------------------------------------------------------------------


def test_tatoeba_top1_by_hand_and_chunk_invariant() -> None:
    index = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    queries = torch.tensor([[0.9, 0.1], [0.1, 5.0], [-2.0, -0.1], [1.0, 1.0]])  # norms do not matter
    for chunk in (1, 2, 3, 100):
        # last query is equidistant from rows 0 and 1: the lower index wins
        assert tatoeba_top1(queries, index, chunk_size=chunk).tolist() == [0, 1, 2, 0]


def test_tatoeba_accuracy_percent() -> None:
    assert tatoeba_accuracy([0, 1, 2, 3, 9], [0, 1, 2, 3, 4]) == 80.0
    with pytest.raises(ValueError, match="gold"):
        tatoeba_accuracy([0, 1], [0])


def test_tatoeba_sorted_gold_layout() -> None:
    # XTREME sorts the English side (stable sort on stripped text); gold = original index.
    sorted_en, gold = tatoeba_sorted_gold(["b\n", "a\n", "c", "a "])
    assert sorted_en == ["a", "a", "b", "c"]
    assert gold == [1, 3, 0, 2]


def test_tatoeba_on_real_layout(data_dir: Path) -> None:
    # Real Telugu-English file (234 pairs): planted embeddings stand in for an encoder.
    english = (data_dir / "tatoeba/tatoeba.tel-eng.eng").read_text(encoding="utf-8").splitlines()
    assert len(english) == 234
    sorted_en, gold = tatoeba_sorted_gold(english)
    rng = np.random.default_rng(0)
    non_en = _unit(rng, len(english), 32)
    # query i (sorted English line i) is a noisy copy of its aligned non-English sentence
    queries = non_en[gold] + 0.05 * rng.standard_normal((len(english), 32)).astype(np.float32)
    pred = tatoeba_top1(queries, non_en, chunk_size=50)
    assert tatoeba_accuracy(pred, gold) == 100.0


# ----------------------------------------------------------------------------------------------
# k-NN
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("nx", "ny", "k", "chunk"), [(37, 53, 4, 8), (5, 3, 4, 2), (3, 40, 4, 7), (20, 20, 1, 64)]
)
def test_bidirectional_knn_matches_dense(nx: int, ny: int, k: int, chunk: int) -> None:
    rng = np.random.default_rng(nx * ny)
    x, y = rng.standard_normal((nx, 16)).astype(np.float32), rng.standard_normal((ny, 16)).astype(np.float32)
    x2y_sim, x2y_ind, y2x_sim, y2x_ind = bidirectional_knn(x, y, k=k, chunk_size=chunk)
    sims = (l2_normalize(x) @ l2_normalize(y).T).numpy()
    kx, ky = min(k, ny), min(k, nx)
    assert x2y_ind.shape == (nx, kx) and y2x_ind.shape == (ny, ky)
    np.testing.assert_allclose(x2y_sim.numpy(), -np.sort(-sims, axis=1)[:, :kx], atol=1e-6)
    np.testing.assert_allclose(y2x_sim.numpy(), -np.sort(-sims.T, axis=1)[:, :ky], atol=1e-6)
    np.testing.assert_array_equal(x2y_ind.numpy(), np.argsort(-sims, axis=1, kind="stable")[:, :kx])
    np.testing.assert_array_equal(y2x_ind.numpy(), np.argsort(-sims.T, axis=1, kind="stable")[:, :ky])


def test_faiss_backend_agrees_with_torch() -> None:
    pytest.importorskip("faiss")
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((60, 24)).astype(np.float32), rng.standard_normal((80, 24)).astype(np.float32)
    a, b = bidirectional_knn(x, y, 4, chunk_size=16), bidirectional_knn(x, y, 4, backend="faiss")
    for t, f in zip(a[::2], b[::2], strict=True):
        np.testing.assert_allclose(t.numpy(), f.numpy(), atol=1e-5)
    for t, f in zip(a[1::2], b[1::2], strict=True):
        np.testing.assert_array_equal(t.numpy(), f.numpy())


# ----------------------------------------------------------------------------------------------
# BUCC mining
# ----------------------------------------------------------------------------------------------


def _dense_mine(x: np.ndarray, y: np.ndarray, k: int) -> list[tuple[int, int, float]]:
    """Straightforward dense version of utils_retrieve.mine_bitext (ratio margin, retrieval="max")."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    y = y / np.linalg.norm(y, axis=1, keepdims=True)
    sims = x @ y.T
    kx, ky = min(k, len(y)), min(k, len(x))
    fwd_mean = np.sort(sims, axis=1)[:, ::-1][:, :kx].mean(axis=1)
    bwd_mean = np.sort(sims.T, axis=1)[:, ::-1][:, :ky].mean(axis=1)
    margin = sims / ((fwd_mean[:, None] + bwd_mean[None, :]) / 2)
    fwd_nn = np.argsort(-sims, axis=1, kind="stable")[:, :kx]
    bwd_nn = np.argsort(-sims.T, axis=1, kind="stable")[:, :ky]
    cands = []
    for i in range(len(x)):
        j = max(fwd_nn[i], key=lambda j: margin[i, j])
        cands.append((i, int(j), margin[i, j]))
    for j in range(len(y)):
        i = max(bwd_nn[j], key=lambda i: margin[i, j])
        cands.append((int(i), j, margin[i, j]))
    cands.sort(key=lambda c: -c[2])
    taken_x, taken_y, out = set(), set(), []
    for i, j, s in cands:
        if i in taken_x or j in taken_y:
            continue
        taken_x.add(i)
        taken_y.add(j)
        if s > 0:
            out.append((i, j, float(s)))
    return out


@pytest.mark.parametrize(("nx", "ny", "chunk"), [(40, 70, 16), (70, 40, 7), (2, 9, 4)])
def test_mine_bitext_matches_dense(nx: int, ny: int, chunk: int) -> None:
    rng = np.random.default_rng(nx + ny)
    x = rng.standard_normal((nx, 16)).astype(np.float32)
    y = rng.standard_normal((ny, 16)).astype(np.float32)
    pairs = min(nx, ny) // 2
    y[:pairs] = x[:pairs] + 0.3 * rng.standard_normal((pairs, 16)).astype(np.float32)
    got = mine_bitext(x, y, k=4, chunk_size=chunk)
    expected = _dense_mine(x, y, 4)
    assert [(i, j) for i, j, _ in got] == [(i, j) for i, j, _ in expected]
    np.testing.assert_allclose([s for *_, s in got], [s for *_, s in expected], rtol=1e-5)
    # planted pairs come out on top, one-to-one
    assert {(i, i) for i in range(pairs)} <= {(i, j) for i, j, _ in got}
    assert len({i for i, *_ in got}) == len(got) == len({j for _, j, _ in got})


def test_mine_bitext_ratio_margin_by_hand() -> None:
    x = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    y = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]], dtype=np.float32)
    # cos: x0.y = (1, .6, 0), x1.y = (0, .8, 1); k = 2
    # fwd means: x0 (1 + .6)/2 = .8, x1 (1 + .8)/2 = .9; bwd means: y0 .5, y1 (.8 + .6)/2 = .7, y2 .5
    # x0: y0 -> 1/((.8+.5)/2) = 1/.65, y1 -> .6/.75 = .8   => y0
    # x1: y2 -> 1/((.9+.5)/2) = 1/.7,  y1 -> .8/.8 = 1     => y2
    # y1's best is x1 (score 1), but x1 is already taken by (x1, y2) when the greedy pass reaches it
    got = mine_bitext(x, y, k=2)
    assert [(i, j) for i, j, _ in got] == [(0, 0), (1, 2)]
    assert [s for *_, s in got] == pytest.approx([1 / 0.65, 1 / 0.7], rel=1e-6)
    assert [(i, j) for i, j, _ in mine_bitext(x, y, k=2, retrieval="bwd")] == [(0, 0), (1, 1), (1, 2)]
    assert [(i, j) for i, j, _ in mine_bitext(x, y, k=2, retrieval="intersect")] == [(0, 0), (1, 2)]


def test_bucc_candidates_dedupes_and_drops_repeated_sentences() -> None:
    rng = np.random.default_rng(5)
    src = _unit(rng, 6)
    trg = src[[2, 0, 1, 3, 4, 5]] + 0.01 * _unit(rng, 6)
    src_texts = ["a", "b", "c", "d", "d", "e"]  # "d" occurs twice: it can never be predicted
    trg_texts = ["C", "A", "B", "D", "D2", "E"]
    src[4] = src[3]  # identical text, identical embedding (as an encoder gives)
    src_ids = [f"de-{i}" for i in range(6)]
    trg_ids = [f"en-{i}" for i in range(6)]
    cands = bucc_candidates(src_ids, src_texts, src, trg_ids, trg_texts, trg, chunk_size=2)
    assert ("de-0", "en-1") in cands and ("de-1", "en-2") in cands and ("de-2", "en-0") in cands
    assert ("de-5", "en-5") in cands
    assert not any(s in ("de-3", "de-4") for s, _ in cands)
    scores = list(cands.values())
    assert scores == sorted(scores, reverse=True)


def test_bucc_candidates_checks_lengths() -> None:
    with pytest.raises(ValueError, match="source: 2 sentences but 3 embeddings"):
        bucc_candidates(["a", "b"], ["x", "y"], np.ones((3, 4)), ["c"], ["z"], np.ones((1, 4)))


# ----------------------------------------------------------------------------------------------
# Threshold and F1
# ----------------------------------------------------------------------------------------------

CANDS = {("s1", "t1"): 0.9, ("s2", "t9"): 0.8, ("s3", "t3"): 0.7, ("s4", "t8"): 0.6}
GOLD = ["s1\tt1", "s3\tt3", "s5\tt5\n"]


def test_bucc_optimize_by_hand() -> None:
    # cut after 1: P 1, R 1/3, F1 .5; after 2: P .5, R 1/3, F1 .4; after 3: P 2/3, R 2/3, F1 .667 (best);
    # after 4: P .5, R 2/3, F1 .571 -> threshold midway between 0.7 and 0.6
    threshold = bucc_optimize(CANDS, GOLD)
    assert threshold == pytest.approx(0.65)
    pred = bucc_extract(CANDS, threshold)
    assert pred == [("s1", "t1"), ("s2", "t9"), ("s3", "t3")]
    assert bucc_f1(GOLD, pred) == pytest.approx({"f1": 200 / 3, "precision": 200 / 3, "recall": 200 / 3})
    assert bucc_optimize(CANDS, [("s1", "t1"), ("s3", "t3"), ("s5", "t5")]) == threshold


def test_bucc_optimize_edge_cases() -> None:
    assert bucc_optimize(CANDS, ["x\ty"]) == 0  # nothing correct
    # best cut keeps every candidate: official code indexes past the end; we keep all
    threshold = bucc_optimize({("a", "b"): 0.9, ("c", "d"): 0.5}, ["a\tb", "c\td", "e\tf"])
    assert threshold == 0.5
    assert bucc_extract({("a", "b"): 0.9, ("c", "d"): 0.5}, threshold) == [("a", "b"), ("c", "d")]


def test_bucc_f1_sets_and_zero() -> None:
    gold = ["de-1\ten-1", "de-2\ten-2", "de-3\ten-3", "de-4\ten-4"]
    pred = ["de-1\ten-1", "de-2\ten-2", "de-2\ten-2", "de-9\ten-9"]  # duplicates count once
    # P 2/3, R 1/2, F1 = 2 * (2/3)(1/2) / (7/6) = 4/7
    assert bucc_f1(gold, pred) == pytest.approx({"f1": 400 / 7, "precision": 200 / 3, "recall": 50.0})
    assert bucc_f1(gold, ["x\ty"]) == {"f1": 0, "precision": 0, "recall": 0}


def test_bucc_real_fixture_layout(data_dir: Path) -> None:
    base = data_dir / "bucc2018/tfds_dummy/fr-en"
    fr = [line.split("\t") for line in (base / "fr-en.sample.fr").read_text(encoding="utf-8").splitlines()]
    en = [line.split("\t") for line in (base / "fr-en.sample.en").read_text(encoding="utf-8").splitlines()]
    gold = (base / "fr-en.sample.gold").read_text(encoding="utf-8").splitlines()
    assert all(len(row) == 2 for row in fr + en)
    # Same embedding for the gold pair's sentences, random for the rest: the pair is mined and scores 100.
    rng = np.random.default_rng(0)
    fr_emb, en_emb = _unit(rng, len(fr)), _unit(rng, len(en))
    fr_row = [i for i, (sid, _) in enumerate(fr) if sid == gold[0].split("\t")[0]][0]
    en_row = [i for i, (sid, _) in enumerate(en) if sid == gold[0].split("\t")[1]][0]
    en_emb[en_row] = fr_emb[fr_row]
    cands = bucc_candidates(
        [i for i, _ in fr], [t for _, t in fr], fr_emb, [i for i, _ in en], [t for _, t in en], en_emb
    )
    pred = bucc_extract(cands, bucc_optimize(cands, gold))
    assert bucc_f1(gold, pred)["recall"] == 100.0
