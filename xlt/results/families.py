"""What differs between model families by construction, printed wherever the analysis compares
families: a gap difference between an encoder and a decoder is not only a size or training effect.

One table, keyed by the ``family`` of conf/model/*.yaml."""

from __future__ import annotations

from collections.abc import Iterable

# family -> (architecture and attention, pretraining language coverage as its authors state it)
FAMILY_FACTS: dict[str, tuple[str, str]] = {
    "xlmr": (
        "encoder, bidirectional attention: every token sees the whole input",
        "CC-100, 100 languages (Conneau et al. 2020): all 40 XTREME languages",
    ),
    "e5": (
        "encoder (XLM-R architecture), bidirectional attention; contrastively trained on mean pooling",
        "initialised from XLM-R (100 languages); its contrastive data are mostly English",
    ),
    "qwen2.5": (
        "decoder, causal attention: in tagging and span QA a token sees only its left context; "
        "classification reads the last token",
        "29+ languages claimed (Qwen2.5 model card), against XTREME's 40: some test languages "
        "are outside its stated coverage",
    ),
}


def construction_notes(families: Iterable[str]) -> list[str]:
    """One line per family compared (two or more), and one for any family without facts here."""
    present = sorted({f for f in families if f})
    if len(present) < 2:
        return []
    lines = [f"Families compared ({', '.join(present)}) differ by construction, not only in size:"]
    for family in present:
        arch, langs = FAMILY_FACTS.get(family, ("unknown architecture", "unknown language coverage"))
        lines.append(f"  {family}: {arch}; {langs}")
    return lines
