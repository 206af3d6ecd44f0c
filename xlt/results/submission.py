"""Predictions in XTREME's submission layout, as ``google-research/xtreme: evaluate.py`` (and
``python -m xlt.score``) read them: ``<root>/<task>/{split}-{lang}.tsv``, ``.json`` for QA.

- ``labels`` (XNLI, PAWS-X): one label per line, in the test file's order;
- ``tags`` (UD-POS, PAN-X): one tag per line per word, a blank line after each sentence;
- ``qa`` (XQuAD, MLQA, TyDiQA): a JSON object ``{"question id": "answer text"}``;
- ``index`` (Tatoeba): per English query line, the index of the retrieved non-English sentence;
- ``pairs`` (BUCC): one ``src_id<TAB>en_id`` pair per line.

Files are written whole (temporary file + rename): a reader never sees half a file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from xlt.results.rows import atomic_write_text
from xlt.tasks.spec import FORMAT_SUFFIX

# Each task's format is TaskSpec.prediction_format (xlt/tasks/spec.py: HEAD_KINDS, RETRIEVAL_KINDS, FORMAT_SUFFIX).
FORMATS = tuple(FORMAT_SUFFIX)


def submission_path(root: Path, task: str, split: str, lang: str, fmt: str) -> Path:
    return Path(root) / task / f"{split}-{lang}.{FORMAT_SUFFIX[fmt]}"


def render(fmt: str, predictions: Sequence[Any] | Mapping[str, str]) -> str:
    """The file content for ``predictions`` (a list in file order; for ``qa`` an id -> answer map)."""
    if fmt == "qa":
        return json.dumps(dict(predictions), ensure_ascii=False, indent=0) + "\n"  # type: ignore[call-overload]
    if fmt == "tags":
        return "".join("".join(f"{tag}\n" for tag in sentence) + "\n" for sentence in predictions)
    if fmt == "pairs":
        return "".join(f"{pair[0]}\t{pair[1]}\n" for pair in predictions)
    if fmt in ("labels", "index"):
        return "".join(f"{p}\n" for p in predictions)
    raise ValueError(f"unknown prediction format {fmt!r}; valid: {', '.join(FORMATS)}")


def write_predictions(
    root: Path, task: str, split: str, lang: str, fmt: str, predictions: Sequence[Any] | Mapping[str, str]
) -> Path:
    """Write one language's predictions atomically; returns the file's path."""
    content = render(fmt, predictions)  # an unknown format stops here, before a path is made
    path = submission_path(root, task, split, lang, fmt)
    atomic_write_text(path, content)
    return path
