"""The readers of an XTREME submission's files and its label files (``google-research/xtreme:
evaluate.py``'s ``read_label``, ``read_tag`` and ``read_squad``), for :mod:`xlt.score`. A file that
cannot be scored is a :class:`BadFile` whose message is one line naming it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from xlt.tasks.rawio import decode_text
from xlt.tasks.spec import DataError


class BadFile(Exception):
    """A submission or label file that cannot be scored; the message is one line naming the file."""


# --------------------------------------------------------------------------------------------------
# Readers (evaluate.py's read_label / read_tag / read_squad)
# --------------------------------------------------------------------------------------------------


def _read_text(path: Path) -> str:
    """UTF-8 text without a leading byte-order mark (evaluate.py would read a BOM as part of the
    first label and count that line wrong); UTF-16 or other non-UTF-8 bytes are a BadFile naming
    the file and line."""
    try:
        return decode_text(path.read_bytes(), str(path))
    except DataError as err:
        raise BadFile(str(err)) from None


def read_lines(path: Path) -> list[str]:
    """Every line, stripped (blank lines included), as ``read_label``."""
    # split("\n") of the whole text, minus the empty piece after a final newline, is `for line in f`
    text = _read_text(path)
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.strip() for line in lines]


def check_fields(path: Path, lines: list[str], fields: int, layout: str) -> list[str]:
    """``lines`` unchanged when every non-blank one has ``fields`` tab-separated fields; else a BadFile
    naming the file and the first bad line (a stray tab would otherwise make a label that never matches)."""
    for number, line in enumerate(lines, start=1):
        if line and len(line.split("\t")) != fields:
            raise BadFile(
                f"{path}:{number}: {len(line.split(chr(9)))} tab-separated fields, expected {fields} ({layout})"
            )
    return lines


def read_tag_sentences(path: Path) -> tuple[list[list[str]], list[int]]:
    """Sentences of tags split at blank lines, as ``read_tag`` (consecutive blank lines give empty
    sentences), plus the 1-based line number where each sentence starts."""
    sentences: list[list[str]] = []
    starts: list[int] = []
    current: list[str] = []
    start = 1
    for number, raw in enumerate(check_fields(path, read_lines(path), 1, "one tag per line"), start=1):
        line = raw.strip()
        if line:
            if not current:
                start = number
            current.append(line)
        else:
            sentences.append(current)
            starts.append(start if current else number)
            current = []
    if current:
        sentences.append(current)
        starts.append(start)
    return sentences, starts


def read_squad_json(path: Path) -> Any:
    """The JSON content, or its ``data`` list when it has one (``read_squad``)."""
    try:
        content = json.loads(_read_text(path))
    except json.JSONDecodeError as err:
        raise BadFile(f"{path}: not valid JSON ({err})") from err
    if isinstance(content, dict) and "data" in content:
        return content["data"]
    return content
