"""Chunk F1 with seqeval 0.0.12 semantics (XTREME's UD-POS and PAN-X metric) and token accuracy.

The oracle test compares with seqeval 0.0.12 itself when its sdist is available: download it with
``pip download --no-deps seqeval==0.0.12 -d DIR`` and set ``XLT_SEQEVAL_0012=DIR/seqeval-0.0.12.tar.gz``
(or the extracted folder). Its ``sequence_labeling.py`` only needs numpy, so nothing is installed.
"""

from __future__ import annotations

import os
import random
import tarfile
import types
from pathlib import Path

import pytest
import torch
from torchmetrics.utilities import dim_zero_cat

from xlt.metrics.tagging import (
    ChunkF1,
    chunk_counts,
    chunk_f1,
    decode_tag_ids,
    flatten_with_separators,
    get_chunks,
    seqeval_scores,
    token_accuracy,
)

UPOS = "ADJ ADP ADV AUX CCONJ DET INTJ NOUN NUM PART PRON PROPN PUNCT SCONJ SYM VERB X".split()  # noqa: SIM905
IOB2 = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]
IOBES = ["O"] + [f"{t}-{c}" for t in "BIES" for c in ("PER", "LOC")]


# ----------------------------------------------------------------------------------------------
# Hand-computed cases
# ----------------------------------------------------------------------------------------------


def test_reference_noun_example() -> None:
    # reference.md 7.4: one chunk (NOUN 0-2) in gold, (NOUN 0-1) + (VERB 2) predicted: no match.
    gold, pred = [["NOUN", "NOUN", "NOUN"]], [["NOUN", "NOUN", "VERB"]]
    assert seqeval_scores(gold, pred) == {"f1": 0.0, "precision": 0.0, "recall": 0.0}
    assert token_accuracy(gold, pred) == pytest.approx(200 / 3)


@pytest.mark.filterwarnings("ignore:.*seems not to be NE tag")
def test_cconj_sconj_types_differ_from_seqeval_1x() -> None:
    # 0.0.12: types are CCONJ and SCONJ; SCONJ's first letter S makes it a one-token chunk.
    gold, pred = [["CCONJ", "SCONJ"]], [["SCONJ", "SCONJ"]]
    assert get_chunks(gold[0]) == [("CCONJ", 0, 0), ("SCONJ", 1, 1)]
    assert get_chunks(pred[0]) == [("SCONJ", 0, 0), ("SCONJ", 1, 1)]
    assert seqeval_scores(gold, pred) == {"f1": 50.0, "precision": 50.0, "recall": 50.0}
    # seqeval 1.2.2 (the pinned dependency) types both as CONJ and scores 2/3: the two versions differ.
    seqeval_metrics = pytest.importorskip("seqeval.metrics")
    assert seqeval_metrics.f1_score(gold, pred) == pytest.approx(2 / 3)


def test_upos_first_letters_act_as_iobes_tags() -> None:
    assert get_chunks(["NOUN", "NOUN", "VERB", "VERB"]) == [("NOUN", 0, 1), ("VERB", 2, 3)]
    assert get_chunks(["SYM", "SYM"]) == [("SYM", 0, 0), ("SYM", 1, 1)]  # S: singleton chunks
    assert get_chunks(["INTJ", "INTJ"]) == [("INTJ", 0, 1)]  # I: continues
    assert get_chunks(["PUNCT", "PRON", "PRON"]) == [("PUNCT", 0, 0), ("PRON", 1, 2)]


def test_nine_token_sentence_one_error() -> None:
    gold = ["DET", "ADJ", "NOUN", "VERB", "ADP", "DET", "NOUN", "NOUN", "PUNCT"]
    pred = ["DET", "ADJ", "NOUN", "VERB", "ADP", "DET", "NOUN", "VERB", "PUNCT"]
    # gold chunks: DET ADJ NOUN VERB ADP DET (NOUN 6-7) PUNCT = 8; pred: ... (NOUN 6) (VERB 7) PUNCT = 9
    # correct 7: P = 7/9, R = 7/8, F1 = 2*7/(9+8) = 14/17
    assert chunk_counts([gold], [pred]) == (7, 9, 8)
    assert chunk_f1([gold], [pred]) == pytest.approx(100 * 14 / 17)
    assert token_accuracy([gold], [pred]) == pytest.approx(100 * 8 / 9)


def test_iob2_ner() -> None:
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG", "I-ORG"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["O", "I-ORG", "I-ORG"]]  # I- without B- starts a chunk
    # gold: PER(0-1) LOC(3) ORG; pred: PER(0-1) ORG(3) ORG -> 2 of 3 correct both ways
    assert seqeval_scores(gold, pred) == pytest.approx(
        {"f1": 200 / 3, "precision": 200 / 3, "recall": 200 / 3}
    )
    assert get_chunks(["B-PER", "B-PER", "I-LOC"]) == [("PER", 0, 0), ("PER", 1, 1), ("LOC", 2, 2)]


def test_iobes() -> None:
    assert get_chunks(["B-LOC", "I-LOC", "E-LOC", "S-PER", "O", "E-PER"]) == [
        ("LOC", 0, 2),
        ("PER", 3, 3),
        ("PER", 5, 5),
    ]


def test_sentences_are_separated_by_o() -> None:
    # Flattened as [NOUN, O, NOUN, O]: two chunks, never one spanning the boundary.
    assert flatten_with_separators([["NOUN"], ["NOUN"]]) == ["NOUN", "O", "NOUN", "O"]
    assert chunk_counts([["NOUN"], ["NOUN"]], [["NOUN"], ["NOUN"]]) == (2, 2, 2)
    assert chunk_counts([["B-PER"], ["I-PER"]], [["B-PER", "I-PER"]]) == (0, 1, 2)
    # A flat list is one sentence.
    assert chunk_counts(["B-PER", "I-PER"], ["B-PER", "I-PER"]) == (1, 1, 1)


def test_empty_and_all_o() -> None:
    assert seqeval_scores([["O", "O"]], [["O", "O"]]) == {"f1": 0, "precision": 0, "recall": 0}
    assert seqeval_scores([[]], [[]]) == {"f1": 0, "precision": 0, "recall": 0}
    with pytest.raises(ValueError, match="no tokens"):
        token_accuracy([[]], [[]])
    with pytest.raises(ValueError, match="sentence 0"):
        token_accuracy([["O"]], [["O", "O"]])
    with pytest.raises(ValueError, match="empty tag"):
        get_chunks(["O", ""])


def test_decode_tag_ids_drops_ignored_positions() -> None:
    id2label = ["O", "B-PER", "I-PER"]
    pred = torch.tensor([[0, 1, 2, 2], [1, 0, 0, 0]])
    target = torch.tensor([[-100, 1, -100, 2], [1, 0, -100, -100]])
    assert decode_tag_ids(pred, target, id2label) == (
        [["B-PER", "I-PER"], ["B-PER", "O"]],
        [["B-PER", "I-PER"], ["B-PER", "O"]],
    )


# ----------------------------------------------------------------------------------------------
# Per-sentence counting (the Metric) == seqeval 0.0.12's flattening
# ----------------------------------------------------------------------------------------------


def _random_corpus(rng: random.Random, labels: list[str], n: int) -> tuple[list[list[str]], list[list[str]]]:
    gold, pred = [], []
    for _ in range(n):
        g = [rng.choice(labels) for _ in range(rng.randint(0, 9))]
        gold.append(g)
        pred.append([x if rng.random() < 0.7 else rng.choice(labels) for x in g])
    return gold, pred


@pytest.mark.parametrize(
    "labels", [UPOS, IOB2, IOBES, UPOS + IOB2 + [".", "X-Y-Z"]], ids=["upos", "iob2", "iobes", "mixed"]
)
def test_metric_per_sentence_counts_equal_flattened_scores(labels: list[str]) -> None:
    rng = random.Random(len(labels))
    for _ in range(200):
        gold, pred = _random_corpus(rng, labels, rng.randint(1, 6))
        metric = ChunkF1()
        metric.update(pred, gold)
        got = {k: float(v) for k, v in metric.compute().items()}
        expected = seqeval_scores(gold, pred)
        assert {k: got[k] for k in expected} == expected  # exactly, not approximately
        if any(gold):
            assert got["accuracy"] == pytest.approx(token_accuracy(gold, pred))


def test_metric_merge_and_ddp_duplicates() -> None:
    rng = random.Random(7)
    gold, pred = _random_corpus(rng, IOB2, 40)
    ids = list(range(40))
    whole = ChunkF1()
    whole.update(pred, gold, ids)
    expected = {k: float(v) for k, v in whole.compute().items()}

    left, right = ChunkF1(), ChunkF1()
    left.update(pred[:25], gold[:25], ids[:25])
    right.update(pred[25:], gold[25:], ids[25:])
    left.merge_state(right)
    assert {k: float(v) for k, v in left.compute().items()} == pytest.approx(expected)

    # Simulated DDP: rank 1 got sentence 0 again as DistributedSampler padding.
    other: list[torch.Tensor] = []
    rank0 = ChunkF1(
        dist_sync_fn=lambda t, group=None: [t, other.pop(0)], distributed_available_fn=lambda: True
    )
    rank0.update(pred[:20], gold[:20], ids[:20])
    rank1 = ChunkF1()
    rank1.update(pred[20:] + pred[:1], gold[20:] + gold[:1], ids[20:] + ids[:1])
    other.extend(dim_zero_cat(getattr(rank1, a)) for a in rank0._reductions)
    assert {k: float(v) for k, v in rank0.compute().items()} == pytest.approx(expected)


# ----------------------------------------------------------------------------------------------
# Real UD data, and seqeval 0.0.12 as an oracle when its sdist is available
# ----------------------------------------------------------------------------------------------


def _read_upos(path: Path) -> list[list[str]]:
    sentences, current = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            if current:
                sentences.append(current)
            current = []
        elif not line.startswith("#"):
            cols = line.split("\t")
            if cols[0].isdigit():  # skip multi-word token ranges and empty nodes
                current.append(cols[3])
    if current:
        sentences.append(current)
    return sentences


def _perturb(sentences: list[list[str]], seed: int) -> list[list[str]]:
    rng = random.Random(seed)
    return [[t if rng.random() < 0.9 else rng.choice(UPOS) for t in s] for s in sentences]


def test_real_ud_pos_metric_and_function_agree(data_dir: Path) -> None:
    gold = _read_upos(data_dir / "ud_pos/UD_English-PUD/en_pud-ud-test.conllu")
    assert len(gold) == 1000
    pred = _perturb(gold, 0)
    ids = list(range(len(gold)))
    metric = ChunkF1()
    for start in range(0, len(gold), 64):
        batch = slice(start, start + 64)
        metric.update(pred[batch], gold[batch], ids[batch])
    got = {k: float(v) for k, v in metric.compute().items()}
    expected = seqeval_scores(gold, pred)
    assert {k: got[k] for k in expected} == expected
    assert got["accuracy"] == pytest.approx(token_accuracy(gold, pred))
    assert expected["f1"] < got["accuracy"]  # chunk F1 is harsher than token accuracy


def _load_seqeval_0012() -> types.ModuleType:
    location = os.environ.get("XLT_SEQEVAL_0012")
    if not location:
        pytest.skip(
            "seqeval 0.0.12 oracle not configured: `pip download --no-deps seqeval==0.0.12 -d DIR` and set "
            "XLT_SEQEVAL_0012=DIR/seqeval-0.0.12.tar.gz (or the extracted folder)"
        )
    path = Path(location)
    member = "seqeval-0.0.12/seqeval/metrics/sequence_labeling.py"
    if path.is_file():
        with tarfile.open(path) as tar:
            extracted = tar.extractfile(member)
            assert extracted is not None
            source = extracted.read().decode("utf-8")
    else:
        candidates = [path / member.split("/", 1)[1], path / member, path]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            pytest.skip(f"XLT_SEQEVAL_0012={location} holds no {member}")
        source = found.read_text(encoding="utf-8")
    module = types.ModuleType("seqeval_0_0_12")
    exec(compile(source, member, "exec"), module.__dict__)  # noqa: S102 - a pinned, known file
    return module


def test_against_seqeval_0012_oracle(data_dir: Path) -> None:
    oracle = _load_seqeval_0012()

    def official(gold: list[list[str]], pred: list[list[str]]) -> dict[str, float]:
        return {
            "f1": oracle.f1_score(gold, pred) * 100,
            "precision": oracle.precision_score(gold, pred) * 100,
            "recall": oracle.recall_score(gold, pred) * 100,
        }

    rng = random.Random(3)
    for labels in (UPOS, IOB2, IOBES, UPOS + IOB2 + [".", "E-X", "S-Y"]):
        for _ in range(300):
            gold, pred = _random_corpus(rng, labels, rng.randint(1, 5))
            assert seqeval_scores(gold, pred) == official(gold, pred)
            flat = [t for s in gold for t in s]
            assert get_chunks(flat) == oracle.get_entities(flat)
    for treebank in ("UD_English-PUD/en_pud-ud-test.conllu", "UD_Chinese-GSD/zh_gsd-ud-test.conllu"):
        gold = _read_upos(data_dir / "ud_pos" / treebank)
        pred = _perturb(gold, 1)
        assert seqeval_scores(gold, pred) == official(gold, pred)
