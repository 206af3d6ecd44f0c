"""The cross-lingual transfer gap: English minus the mean over the other languages.

XTREME (Hu et al., 2020, section 4.3) defines the gap as the English test score minus the average
score over all other languages. We report it absolute and relative, ``1 - mean_non_en / en``,
because absolute gaps shrink mechanically as scores approach the ceiling.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

ENGLISH = "en"


@dataclass(frozen=True)
class Gap:
    """English score, mean over the other languages, and the gap between them."""

    en: float
    avg_non_en: float
    gap: float
    rel_gap: float
    n_non_en: int


def mean(values: list[float]) -> float:
    """Plain arithmetic mean; NaN for an empty list."""
    return sum(values) / len(values) if values else math.nan


def compute_gap(scores: Mapping[str, float], english: str = ENGLISH) -> Gap | None:
    """Gap for one metric from per-language scores; None when English or every other language is missing.

    ``rel_gap`` is NaN when the English score is 0 (the ratio is undefined).
    """
    if english not in scores:
        return None
    others = [v for lang, v in scores.items() if lang != english]
    if not others:
        return None
    en = float(scores[english])
    avg = mean([float(v) for v in others])
    rel = 1.0 - avg / en if en != 0 else math.nan
    return Gap(en=en, avg_non_en=avg, gap=en - avg, rel_gap=rel, n_non_en=len(others))
