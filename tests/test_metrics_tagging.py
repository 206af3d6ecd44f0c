"""Chunk F1 with seqeval 0.0.12 semantics (XTREME's UD-POS and PAN-X metric) and token accuracy.

The functions and :class:`WordTagScore` (the metric runs evaluate with) are checked against each
other; the oracle test compares both with seqeval 0.0.12 itself when its sdist is available: download it with
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
    IGNORE,
    WordTagScore,
    chunk_counts,
    chunk_f1,
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


# ----------------------------------------------------------------------------------------------
# WordTagScore (the metric runs evaluate with) == the functions above
# ----------------------------------------------------------------------------------------------

SCORES = ("f1", "precision", "recall", "acc")


def _random_corpus(rng: random.Random, labels: list[str], n: int) -> tuple[list[list[str]], list[list[str]]]:
    gold, pred = [], []
    for _ in range(n):
        g = [rng.choice(labels) for _ in range(rng.randint(0, 9))]
        gold.append(g)
        pred.append([x if rng.random() < 0.7 else rng.choice(labels) for x in g])
    return gold, pred


def _batches(
    gold: list[list[str]], pred: list[list[str]], names: list[str], ids: list[int], batch_size: int
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(preds, example_idx, word_index) batches as the tagging head passes them: one window per
    sentence, a padded tail and a non-first sub-word (IGNORE) after every word."""
    batches = []
    for start in range(0, len(ids), batch_size):
        rows = ids[start : start + batch_size]
        width = 2 * max([len(gold[i]) for i in rows] + [1]) + 1
        preds = torch.zeros(len(rows), width, dtype=torch.long)
        words = torch.full((len(rows), width), IGNORE, dtype=torch.long)
        for r, i in enumerate(rows):
            for w, label in enumerate(pred[i]):
                preds[r, 2 * w + 1] = names.index(label)
                words[r, 2 * w + 1] = w
        batches.append((preds, torch.tensor(rows), words))
    return batches


def _metrics(gold: list[list[str]], names: list[str], **kwargs: object) -> dict[str, WordTagScore]:
    gold_ids = [[names.index(t) for t in g] for g in gold]
    return {score: WordTagScore(score, gold_ids, names, **kwargs) for score in SCORES}


def _word_scores(gold: list[list[str]], pred: list[list[str]], batch_size: int = 64) -> dict[str, float]:
    names = sorted({t for s in gold + pred for t in s})
    metrics = _metrics(gold, names)
    for batch in _batches(gold, pred, names, list(range(len(gold))), batch_size):
        for metric in metrics.values():
            metric.update(*batch)
    return {score: float(metric.compute()) for score, metric in metrics.items()}


@pytest.mark.parametrize(
    "labels", [UPOS, IOB2, IOBES, UPOS + IOB2 + [".", "X-Y-Z"]], ids=["upos", "iob2", "iobes", "mixed"]
)
def test_word_metric_equals_the_flattened_scores(labels: list[str]) -> None:
    rng = random.Random(len(labels))
    for _ in range(200):
        gold, pred = _random_corpus(rng, labels, rng.randint(1, 6))
        if not any(gold):
            continue  # no word to score: the metric reports NaN
        got = _word_scores(gold, pred, batch_size=rng.randint(1, 4))
        expected = seqeval_scores(gold, pred)
        assert {k: got[k] for k in expected} == expected  # exactly, not approximately
        assert got["acc"] == token_accuracy(gold, pred)


def test_word_metric_merge_and_ddp_duplicates() -> None:
    rng = random.Random(7)
    gold, pred = _random_corpus(rng, IOB2, 40)
    ids = list(range(40))
    expected = _word_scores(gold, pred)

    left, right = _metrics(gold, IOB2), _metrics(gold, IOB2)
    for part, metrics in ((ids[:25], left), (ids[25:], right)):
        for batch in _batches(gold, pred, IOB2, part, 8):
            for metric in metrics.values():
                metric.update(*batch)
    for score in SCORES:
        left[score].merge_state(right[score])
    assert {k: float(m.compute()) for k, m in left.items()} == pytest.approx(expected)

    # Simulated DDP: rank 1 got sentence 0 again as DistributedSampler padding.
    for score in SCORES:
        other: list[torch.Tensor] = []
        names, gold_ids = IOB2, [[IOB2.index(t) for t in g] for g in gold]
        rank0 = WordTagScore(score, gold_ids, names, dist_sync_fn=lambda t, group=None, o=other: [t, o.pop(0)],
                             distributed_available_fn=lambda: True)  # fmt: skip
        rank1 = WordTagScore(score, gold_ids, names)
        for batch in _batches(gold, pred, IOB2, ids[:20], 8):
            rank0.update(*batch)
        for batch in _batches(gold, pred, IOB2, ids[20:] + ids[:1], 8):
            rank1.update(*batch)
        other.extend(dim_zero_cat(getattr(rank1, a)) for a in rank0._reductions)
        assert float(rank0.compute()) == pytest.approx(expected[score])
        assert not other


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
    got = _word_scores(gold, pred)
    expected = seqeval_scores(gold, pred)
    assert {k: got[k] for k in expected} == expected
    assert got["acc"] == pytest.approx(token_accuracy(gold, pred))
    assert expected["f1"] < got["acc"]  # chunk F1 is harsher than token accuracy


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
        # ... and through the metric class a run evaluates with (windows, DDP-safe states).
        got = _word_scores(gold, pred)
        assert {k: got[k] for k in ("f1", "precision", "recall")} == official(gold, pred)
