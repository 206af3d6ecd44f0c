"""The selection subset: which English dev examples a stage selects its checkpoint on.

jiant's X-STILTs recipe validates on ``eval_subset_num`` (500) dev examples. Taking the *first* 500
is not a sample: XNLI's English dev is ordered by genre, and its first 500 are 249 face-to-face,
249 telephone and 2 OUP, 2 of its 10 genres. So the subset is drawn at random with the run's seed,
stratified by genre where the examples carry one (XNLI), else by label (classification), else by
answerability (SQuAD v2.0), else drawn plainly; each stratum gets its share by largest remainder,
and the drawn examples keep their file order. The draw is a function of (seed, task/split, the
examples): the same run draws the same subset after a relaunch, and ``state.json`` records it
(size, strata, the loaded set's fingerprint, and a BLAKE2b digest of the drawn ids, or of their
texts where examples have no id: ``digest_of``).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from typing import Any

from xlt.audit.keys import text_keys
from xlt.tasks.loading import Loaded
from xlt.tasks.spec import Example

STRATA = ("genre", "label", "is_impossible")  # the first an example carries is its stratum


def stratum_key(examples: list[Example]) -> str | None:
    for key in STRATA:
        if examples and all(isinstance(ex.get(key), (str, int, bool)) for ex in examples):
            return key
    return None


def example_text_key(ex: Example) -> str:
    """An example without an id (NLI, tagging), named by its text: the contamination audit's text key
    (its normalised fields, xlt.audit.keys.text_keys), or for a text too short to have one, the digest of
    the example itself. Never its position, which says nothing about which example was drawn."""
    keys = text_keys(ex)
    if keys:
        return keys[0].hex()
    whole = json.dumps(ex, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.blake2b(whole.encode("utf-8"), digest_size=8).hexdigest()


def selection_indices(examples: list[Example], n: int, seed: int, name: str) -> list[int]:
    """The positions of the ``n`` examples :func:`draw_selection` draws, in file order; the rest of
    the set is the held-out part (xlt/evaluation/analysis_dev.py)."""
    key = stratum_key(examples)
    if n >= len(examples):
        return list(range(len(examples)))
    rng = random.Random(f"xlt-selection:{seed}:{name}")
    groups: dict[Any, list[int]] = {}
    for i, ex in enumerate(examples):
        groups.setdefault(ex.get(key) if key else None, []).append(i)
    shares = {g: n * len(idx) / len(examples) for g, idx in groups.items()}
    counts = {g: int(s) for g, s in shares.items()}
    left = n - sum(counts.values())
    for g in sorted(groups, key=lambda g: (-(shares[g] - counts[g]), str(g)))[:left]:
        counts[g] += 1
    return sorted(
        i for g, idx in sorted(groups.items(), key=lambda kv: str(kv[0])) for i in rng.sample(idx, counts[g])
    )


def draw_selection(loaded: Loaded, n: int, seed: int, name: str) -> tuple[Loaded, dict[str, Any]]:
    """``n`` examples of ``loaded`` drawn as the module docstring says, and the record of the draw."""
    examples = loaded.examples
    key = stratum_key(examples)
    record: dict[str, Any] = {"set": name, "seed": seed, "of": len(examples), "stratified_by": key}
    chosen = selection_indices(examples, n, seed, name)
    with_ids = all(examples[i].get("id") not in (None, "") for i in chosen)
    ids = [str(examples[i]["id"]) if with_ids else example_text_key(examples[i]) for i in chosen]
    digest = hashlib.blake2b("\n".join(ids).encode(), digest_size=8).hexdigest()
    record.update(
        {
            "n": len(chosen),
            "ids_blake2b": digest,
            "digest_of": "ids" if with_ids else "texts",
            "loaded_fingerprint": loaded.fingerprint,
            "strata": dict(sorted(Counter(str(examples[i].get(key)) for i in chosen).items())) if key else {},
        }
    )
    drawn = Loaded(
        [examples[i] for i in chosen],
        loaded.origin,
        loaded.dropped,
        f"{loaded.fingerprint}|drawn:{seed}:{n}:{digest}",
    )
    return drawn, record
