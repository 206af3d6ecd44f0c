"""Record iterators shared by the readers of the original file formats: each record comes with
``where`` ("path:line"), so every DataError names the file and the record."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from xlt.tasks.spec import DataError


def jsonl_records(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Non-blank lines of a JSON-lines file, each a JSON object."""
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{where}: not a JSON object ({err.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{where}: not a JSON object")
            yield where, row


def tsv_records(path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """Header-keyed rows of a tab-separated file whose text may contain bare quotes (no quoting)."""
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        for lineno, row in enumerate(reader, 2):
            yield f"{path}:{lineno}", row


def csv_records(path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """Header-keyed rows of a comma-separated file with standard quoting."""
    with open(path, encoding="utf-8", newline="") as fh:
        for lineno, row in enumerate(csv.DictReader(fh), 2):
            yield f"{path}:{lineno}", row


def require(row: Mapping[str, Any], name: str, where: str) -> Any:
    """``row[name]``, or a DataError naming the record and the missing field."""
    if name not in row or row[name] is None:
        raise DataError(f"{where}: missing field {name!r}")
    return row[name]
