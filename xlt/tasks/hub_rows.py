"""A hub split's rows mapped into a task's examples, and what that read is said in the log: the part
of :func:`xlt.tasks.loading.load_split` that walks a hub dataset row by row (every row that cannot be
read or mapped is one line naming the dataset and the row).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from xlt.tasks.spec import DataError, Example, HubMapper, TaskSpec

log = logging.getLogger("xlt.tasks.loading")  # the loader's log, as before the split

# The loader's label check of one example (file or row named by the path).
LabelCheck = Callable[[TaskSpec, Example, Path], None]


def map_hub_rows(
    spec: TaskSpec, rows: Iterator[Any], mapper: HubMapper, lang: str, origin: str, check: LabelCheck
) -> tuple[list[Example], int, int, int]:
    """(examples, rows dropped by the mapper, rows realigned, rows of other languages); a row that
    cannot be read or mapped is a DataError in one line naming it."""
    examples = []
    dropped = realigned = other_language = 0
    i = -1
    while True:
        try:
            row = next(rows, None)
        except Exception as err:  # a corrupt parquet page, a cast error: one line naming the row
            raise DataError(
                f"{origin} row {i + 1}: could not read ({type(err).__name__}: {one_line(err)})"
            ) from err
        if row is None:
            break
        i += 1
        try:
            ex = mapper(row, lang)
        except DataError as err:  # one line naming dataset, config, split and the row
            raise DataError(f"{origin} row {i}: {one_line(err)}") from None
        except (KeyError, TypeError, ValueError, IndexError) as err:  # a row not shaped as the mapper expects
            raise DataError(
                f"{origin} row {i}: unexpected row ({type(err).__name__}: {one_line(err)})"
            ) from err
        if ex is None:
            dropped += 1
            continue
        if ex.get("_other_language"):
            other_language += 1
            continue
        if ex.pop("_realigned", False):
            realigned += 1
        check(spec, ex, Path(f"{origin} row {i}"))
        examples.append(ex)
    return examples, dropped, realigned, other_language


def log_hub_read(origin: str, lang: str, kept: int, realigned: int, other_language: int) -> None:
    if realigned:
        log.warning(
            "%s: %d rows realigned (the hub stripped the context but kept answer_start; each answer "
            "moved to its nearest occurrence)",
            origin,
            realigned,
        )
    if other_language:
        log.info(
            "%s: kept the %d %s rows; %d rows of other languages filtered out (the config mixes "
            "languages; not dropped data)",
            origin,
            kept,
            lang,
            other_language,
        )


def one_line(err: BaseException) -> str:
    return " ".join(str(err).split())
