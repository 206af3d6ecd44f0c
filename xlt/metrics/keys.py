"""The one format of an evaluation's keys: ``{split}/{task}/{language}`` names an evaluated set
(``dev/xnli/en``), ``{split}/{task}/{language}/{metric}`` one of its scores (``test/xnli/de/acc``),
the split first, as W&B groups panels by prefix. The module logs these keys, checkpoint selection
monitors them, the result rows and the W&B loader read them back: all through these functions.
"""

from __future__ import annotations

SEP = "/"
SELECTION = "selection"  # the metric name of a mixture's selection score (mean of its members')


def set_key(split: str, task: str, language: str) -> str:
    """The key of one evaluated set: ``dev/xnli/en``."""
    return SEP.join((split, task, language))


def score_key(set_key_: str, metric: str) -> str:
    """The key of one score of an evaluated set: ``dev/xnli/en`` + ``acc`` -> ``dev/xnli/en/acc``."""
    return f"{set_key_}{SEP}{metric}"


def metric_key(split: str, task: str, language: str, metric: str) -> str:
    """``{split}/{task}/{language}/{metric}``: ``test/xnli/de/acc``."""
    return score_key(set_key(split, task, language), metric)


def parse_set_key(key: str) -> tuple[str, str, str]:
    """``dev/xnli/en`` -> ``("dev", "xnli", "en")``."""
    split, task, language = key.split(SEP)
    return split, task, language


def parse_metric_key(key: str) -> tuple[str, str, str, str] | None:
    """``test/xnli/de/acc`` -> its four parts; None for a key of another shape."""
    parts = key.split(SEP)
    if len(parts) != 4:
        return None
    split, task, language, metric = parts
    return split, task, language, metric
