"""Record iterators shared by the readers of the original file formats: each record comes with
``where`` ("path:line"), so every DataError names the file and the record.

Every reader opens its file through :func:`open_text`: UTF-8 with a leading byte-order mark
stripped (spreadsheets and Windows editors write one), and a file that is not UTF-8 text (UTF-16,
a compressed or binary file) refused in one line naming the file and the line of the first bad byte.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from xlt.tasks.spec import DataError

_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


def decode_text(data: bytes, where: str) -> str:
    """``data`` as UTF-8 text without a leading BOM; a DataError naming ``where`` and the line of the
    first byte that is not UTF-8 text (a UTF-16 file, a NUL byte, an invalid sequence)."""
    if data.startswith(_UTF16_BOMS) or data.startswith(codecs.BOM_UTF32_LE):
        raise DataError(f"{where}: UTF-16/32 text (a spreadsheet export?); expected UTF-8, save it as UTF-8")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise DataError(
            f"{where}:{line}: not UTF-8 text ({err.reason} at byte {err.start}); expected a UTF-8 file"
        ) from None
    nul = text.find("\x00")
    if nul >= 0:
        line = text.count("\n", 0, nul) + 1
        raise DataError(
            f"{where}:{line}: NUL byte (UTF-16 without a byte-order mark, or a binary file?); "
            "expected UTF-8 text"
        )
    return text


def read_text(path: Path) -> str:
    """The file's text (see :func:`decode_text`), universal newlines (``\\r\\n`` and ``\\r`` read as ``\\n``)."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror})") from None
    text = decode_text(data, str(path))
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


def open_text(path: Path, newline: str | None = None) -> io.StringIO:
    """A text stream over the checked file (what ``open(path, encoding="utf-8", newline=newline)`` gives
    for a clean UTF-8 file, minus a leading BOM)."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror})") from None
    return io.StringIO(decode_text(data, str(path)), newline=newline)


def text_lines(path: Path) -> list[str]:
    """The file's lines without their line ends (a final newline does not add an empty line).

    Unlike ``str.splitlines`` only ``\\n``, ``\\r\\n`` and ``\\r`` end a line: a U+2028 or U+0085 inside a
    sentence stays in it, so line-aligned files stay aligned."""
    lines = read_text(path).split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def delimited_rows(path: Path, delimiter: str, quoting: int) -> Iterator[tuple[str, list[str]]]:
    """(where, fields) of every non-blank row of a delimited file, numbered by the line it starts on
    (``quoting``: ``csv.QUOTE_NONE`` for TSV whose text holds bare quotes, ``csv.QUOTE_MINIMAL`` for CSV)."""
    dialect = "excel" if quoting == csv.QUOTE_MINIMAL else "excel-tab"
    reader = csv.reader(
        open_text(path, newline=""),
        dialect,
        delimiter=delimiter,
        strict=True,
        quoting=csv.QUOTE_NONE if quoting == csv.QUOTE_NONE else csv.QUOTE_MINIMAL,
    )
    lineno = 1
    try:
        for row in reader:
            if row:
                yield f"{path}:{lineno}", row
            lineno = reader.line_num + 1
    except csv.Error as err:
        raise DataError(f"{path}:{reader.line_num}: {err}") from None


def header_records(
    path: Path, delimiter: str, quoting: int, required: tuple[str, ...] = ()
) -> Iterator[tuple[str, dict[str, str]]]:
    """Header-keyed rows; every row must have exactly the header's number of fields (a tab inside a
    sentence would otherwise shift the fields after it, or a short row leave some unset), and the
    header must hold the ``required`` columns."""
    rows = delimited_rows(path, delimiter, quoting)
    first = next(rows, None)
    if first is None:
        raise DataError(f"{path}: empty file (expected a header line)")
    header = [name.strip() for name in first[1]]
    missing = [name for name in required if name not in header]
    if missing:
        raise DataError(f"{path}:1: header lacks {missing} (has {header})")
    sep = "tab" if delimiter == "\t" else "comma"
    for where, fields in rows:
        if len(fields) != len(header):
            raise DataError(
                f"{where}: {len(fields)} {sep}-separated fields, expected {len(header)} as in the header "
                f"({', '.join(header)})"
            )
        yield where, dict(zip(header, fields, strict=True))


def jsonl_records(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Non-blank lines of a JSON-lines file, each a JSON object."""
    for lineno, line in enumerate(text_lines(path), 1):
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


def tsv_records(path: Path, required: tuple[str, ...] = ()) -> Iterator[tuple[str, dict[str, str]]]:
    """Header-keyed rows of a tab-separated file whose text may contain bare quotes (no quoting)."""
    return header_records(path, "\t", csv.QUOTE_NONE, required)


def csv_records(path: Path, required: tuple[str, ...] = ()) -> Iterator[tuple[str, dict[str, str]]]:
    """Header-keyed rows of a comma-separated file with standard quoting."""
    return header_records(path, ",", csv.QUOTE_MINIMAL, required)


def require(row: Mapping[str, Any], name: str, where: str) -> Any:
    """``row[name]``, or a DataError naming the record and the missing field."""
    if name not in row or row[name] is None:
        raise DataError(f"{where}: missing field {name!r}")
    return row[name]


def words(text: str) -> tuple[str, ...]:
    """A table of names written as text (the formatter leaves it readable): ``"ADJ ADP ADV"``."""
    return tuple(text.split())


def pairs(text: str) -> dict[str, str]:
    """A table of ``key:value`` pairs written as text, in order: ``"af:Afrikaans ar:Arabic"``."""
    return dict(item.split(":", 1) for item in text.split())
