"""BUCC 2018 mining for one language pair: embed both sides, score margin candidates, tune the
F1-optimal threshold on the dev gold and apply it, frozen, to test (XTREME/jiant protocol).

The encoder enters only through ``embed`` (texts -> float32 matrix), so the protocol is testable
without a model. Mining itself is :mod:`xlt.metrics.retrieval` (dedupe, ratio margin, k-NN in chunks).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import torch

from xlt.metrics.retrieval import DEFAULT_CHUNK, bucc_candidates, bucc_extract, bucc_f1, bucc_optimize
from xlt.tasks.loading import MissingDataError, load_split
from xlt.tasks.spec import DataError, Example, TaskSpec

# XTREME's mine_bitext settings for BUCC: 4 neighbours, ratio margin, "max" retrieval.
K: Final = 4
MARGIN: Final[Literal["ratio"]] = "ratio"

Embed = Callable[[Sequence[str]], torch.Tensor]


@dataclass(frozen=True)
class Corpus:
    """One split of one language pair: source (non-English) and English sentences with their ids."""

    split: str
    origin: str
    src_ids: list[str]
    src_texts: list[str]
    trg_ids: list[str]
    trg_texts: list[str]
    gold: list[tuple[str, str]] | None  # None: gold withheld (XTREME's test split)

    @classmethod
    def from_examples(cls, split: str, origin: str, examples: Sequence[Example]) -> Corpus:
        if len(examples) != 1:
            raise DataError(f"{origin}: {len(examples)} BUCC corpora for one split and language, expected 1")
        ex = examples[0]
        gold = [tuple(p) for p in ex["gold"]] if ex["gold"] is not None else None
        return cls(
            split,
            origin,
            list(ex["src_ids"]),
            list(ex["src_texts"]),
            list(ex["trg_ids"]),
            list(ex["trg_texts"]),
            gold,
        )  # type: ignore[arg-type]


@dataclass(frozen=True)
class MiningResult:
    split: str  # the split whose pairs were extracted (and scored when it has gold)
    tuned_on: str  # the split whose gold fixed the threshold
    threshold: float
    pairs: list[tuple[str, str]]  # extracted (src_id, en_id), in decreasing score order
    scores: dict[str, float] | None  # f1/precision/recall in percent; None without gold
    n_gold: int | None


def candidates(
    corpus: Corpus, embed: Embed, device: torch.device | str | None = None, chunk_size: int = DEFAULT_CHUNK
) -> dict[tuple[str, str], float]:
    """Scored candidate pairs of a corpus (deduplicated sentences, ratio margin, k=4, "max")."""
    return bucc_candidates(
        corpus.src_ids,
        corpus.src_texts,
        embed(corpus.src_texts),
        corpus.trg_ids,
        corpus.trg_texts,
        embed(corpus.trg_texts),
        k=K,
        margin=MARGIN,
        retrieval="max",
        chunk_size=chunk_size,
        device=device,
    )


def mine(
    dev: Corpus | None,
    test: Corpus | None,
    embed: Embed,
    device: torch.device | str | None = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> MiningResult:
    """Tune the threshold on ``dev``'s gold and extract ``test``'s pairs with it.

    When only one split is there (or only one has gold to tune on) the threshold is tuned on that
    split and ``tuned_on`` says so: a score on the split the threshold was tuned on is optimistic.
    """
    tune = dev if dev is not None and dev.gold else test if test is not None and test.gold else None
    scored = test if test is not None else dev
    if tune is None or scored is None:
        have = ", ".join(c.split for c in (dev, test) if c is not None) or "none"
        raise DataError(f"no split with gold pairs to tune the threshold on (splits present: {have})")
    tune_candidates = candidates(tune, embed, device, chunk_size)
    assert tune.gold is not None
    threshold = bucc_optimize(tune_candidates, tune.gold)
    scored_candidates = tune_candidates if scored is tune else candidates(scored, embed, device, chunk_size)
    pairs = bucc_extract(scored_candidates, threshold)
    scores = bucc_f1(scored.gold, pairs) if scored.gold is not None else None
    return MiningResult(
        scored.split,
        tune.split,
        threshold,
        pairs,
        scores,
        len(scored.gold) if scored.gold is not None else None,
    )


def evaluate_languages(
    spec: TaskSpec,
    languages: Sequence[str],
    source: str,
    data_dir: Path | None,
    embed: Embed,
    device: torch.device | str | None = None,
) -> tuple[list[tuple[str, MiningResult]], list[str]]:
    """:func:`mine` for each language with its dev and test corpora; returns the results and one
    line per language without data (or scored on the split its threshold was tuned on)."""
    results: list[tuple[str, MiningResult]] = []
    skipped: list[str] = []
    for lang in languages:
        corpora: dict[str, Corpus | None] = {}
        missing: list[str] = []
        for split in (spec.dev_split, spec.test_split):
            try:
                loaded = load_split(spec, split, lang, source, data_dir)
            except MissingDataError as err:
                corpora[split] = None
                missing.append(str(err))
                continue
            corpora[split] = Corpus.from_examples(split, loaded.origin, loaded.examples)
        dev, test = corpora[spec.dev_split], corpora[spec.test_split]
        if dev is None and test is None:
            skipped.append(missing[0])
            continue
        result = mine(dev, test, embed, device)
        if result.tuned_on == result.split:
            where = missing[0] if missing else f"{spec.name}/{lang}"
            skipped.append(f"{where}; threshold tuned and scored on {result.split} alone")
        results.append((lang, result))
    return results, skipped
