"""A quiet terminal: one line per stage start and end, the progress bar and the results table.

Everything else a run says (Lightning's GPU/TPU lines, tips, model summary and "fit stopped" lines,
the seed, library deprecation warnings, the contamination audit's table, each skipped language) still
goes to the run's log file (Hydra's ``<run_dir>/train.log``), not to the terminal. With
``hydra.verbose=true`` (root logger at DEBUG) the terminal shows everything again.

:func:`quiet_terminal` puts a filter on the root logger's terminal handlers (stream handlers that are
not file handlers), routes Python warnings into logging (so they reach the file, not the terminal),
and turns off the ``datasets`` progress bars (tokenising, "Saving the dataset") and transformers'
"Loading weights" bar, which write to the terminal directly.

:func:`cli_parser` is the argument parser every CLI starts from (its examples after the options), and
:func:`text_table` renders every table a tool prints (tabulate: markdown pipes or plain columns).

:func:`run_cli` is what every CLI's ``main`` runs its body in: any exception reaching it becomes one
line on stderr naming the file, line, field or option, with exit status 2 (a traceback only with
``XLT_DEBUG=1`` or ``--debug``); Hydra's own errors too, with the valid choices.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

# Loggers whose INFO lines belong in the log file only (their warnings and errors still show).
FILE_ONLY_LOGGERS = (
    "pytorch_lightning",
    "lightning_fabric",
    "lightning",
    "datasets",
    "transformers",
    "torch",
)
# A record with this attribute set (``log.info(..., extra={FILE_ONLY: True})``) stays out of the terminal.
FILE_ONLY = "xlt_file_only"
# Warnings that say nothing a user can act on; written to the log file only.
NOISE = ("isinstance(treespec, LeafSpec)` is deprecated",)


class TerminalFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, FILE_ONLY, False):
            return False
        if record.name == "py.warnings":
            # Lightning's warnings are about settings xlt makes (logging interval, batch transfer hooks).
            message = record.getMessage()
            return not any(n in message for n in (*NOISE, "/pytorch_lightning/", "/lightning_fabric/"))
        if record.levelno >= logging.WARNING:
            return True
        return not any(record.name == n or record.name.startswith(n + ".") for n in FILE_ONLY_LOGGERS)


def _terminal_handlers(logger: logging.Logger) -> list[logging.Handler]:
    return [
        h
        for h in logger.handlers
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
    ]


def quiet_terminal() -> None:
    """Install the terminal filter (idempotent); a no-op when the root logger is at DEBUG."""
    root = logging.getLogger()
    if root.getEffectiveLevel() <= logging.DEBUG:
        return
    logging.captureWarnings(True)
    for handler in _terminal_handlers(root):
        if not any(isinstance(f, TerminalFilter) for f in handler.filters):
            handler.addFilter(TerminalFilter())
    try:
        import datasets
        import transformers

        datasets.disable_progress_bars()
        transformers.utils.logging.disable_progress_bar()  # "Loading weights" per model load
    except ImportError:  # pragma: no cover - both are dependencies
        pass


def file_only(**extra: object) -> dict[str, object]:
    """``extra=`` for a log call whose line belongs in the log file only."""
    return {FILE_ONLY: True, **extra}


# -- errors: one line on stderr, exit status 2, for every CLI's main --------------------------------

DEBUG_ENV = "XLT_DEBUG"  # XLT_DEBUG=1 (or --debug where a CLI takes it): let the traceback through
EXIT_BAD_INPUT = 2
_MAX_LINE = 1200


def debug_requested(argv: list[str] | None = None) -> bool:
    """Whether the user asked for tracebacks: ``XLT_DEBUG`` set (not 0) or ``--debug`` in ``argv``."""
    return os.environ.get(DEBUG_ENV, "").strip() not in ("", "0") or "--debug" in (argv or [])


def _hydra_line(err: BaseException) -> str | None:
    """Hydra's own errors (unknown option of a group, a key without its ``+``, bad override syntax)
    in one line, with the valid choices where Hydra lists them; None for other errors."""
    try:
        from hydra.errors import HydraException, MissingConfigException, OverrideParseException
    except ImportError:  # pragma: no cover - a dependency
        return None
    if not isinstance(err, HydraException):
        return None
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    # Drop Hydra's "Config search path" listing; gather "Available options in 'g':" and its entries.
    lines = lines[: next((i for i, ln in enumerate(lines) if ln.startswith("Config search path")), None)]
    text, options = [], []
    for ln in lines:
        if ln.startswith("Available options in"):
            text.append(ln.rstrip(":").replace("Available options", "valid choices") + ":")
        elif text and text[-1].endswith(":") and "valid choices" in text[-1] and " " not in ln:
            options.append(ln)
        else:
            if options:
                text[-1] += " " + ", ".join(options)
                options = []
            text.append(ln)
    if options:
        text[-1] += " " + ", ".join(options)
    message = " ".join(text).replace("' valid choices", "'; valid choices")
    message = re.sub(r" See https://hydra\.cc/\S+ for details", "", message)
    if isinstance(err, OverrideParseException):
        message = f"{getattr(err, 'override', '') or 'override'}: bad override syntax ({message})"
    unknown = re.match(r"Could not override '([^']+)'\. To append to your config use \+", message)
    if unknown:
        message = (
            f"{unknown.group(1)}: no such config key (check its spelling; `python -m xlt.train --cfg job` "
            "prints every key)"
        )
    elif isinstance(err, MissingConfigException) and "valid choices" not in message and err.options:
        message += f"; valid choices: {', '.join(err.options)}"
    if "No match in the defaults list" in message or "Could not append to config" in message:
        message += " (add a key that is not in the defaults list with '+', e.g. +target=xnli)"
    return message


def error_line(err: BaseException) -> str:
    """``err`` as one line naming what it is about: the file of an OSError, Hydra's choices, the type
    of an error that is not a bad-input error of xlt's own (ValueError and its kin keep their text)."""
    hydra = _hydra_line(err)
    if hydra is not None:
        text = hydra
    elif isinstance(err, OSError) and err.filename is not None:
        other = f" -> {err.filename2}" if err.filename2 is not None else ""
        text = f"{err.filename}{other}: {err.strerror or type(err).__name__}"
    elif isinstance(err, ValueError) and str(err):
        text = str(err)
    else:
        text = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
        text += f" (unexpected; {DEBUG_ENV}=1 shows the traceback)"
    text = " ".join(text.split())
    return text if len(text) <= _MAX_LINE else text[: _MAX_LINE - 3] + "..."


def report_error(err: BaseException, prefix: str = "error: ") -> int:
    """Print ``err`` as one line on stderr; return the exit status (2)."""
    print(prefix + error_line(err), file=sys.stderr, flush=True)
    return EXIT_BAD_INPUT


def run_cli(body: Callable[[], int | None], prefix: str = "error: ", argv: list[str] | None = None) -> int:
    """Call a CLI's ``body``; any exception becomes one line on stderr and exit status 2 (a
    traceback only with ``XLT_DEBUG=1`` or ``--debug``). SystemExit (argparse's usage errors, a
    deliberate status) passes; Ctrl-C is one line and 130."""
    try:
        return body() or 0
    except KeyboardInterrupt:
        print(prefix + "interrupted", file=sys.stderr, flush=True)
        return 130
    except Exception as err:
        if debug_requested(argv):
            raise
        return report_error(err, prefix)


def check_out_dir(out: Path, option: str = "--out") -> None:
    """``out`` can be made a directory (an output option): not an existing file, not under one."""
    for parent in (out, *out.parents):
        if parent.exists() and not parent.is_dir():
            what = "is a file" if parent == out else f"is under {parent}, which is a file"
            raise ValueError(f"{option} {out}: {what}; expected a directory")


# -- the parser every CLI starts from, and every printed table ---------------------------------------


def cli_parser(prog: str, doc: str | None, examples: Iterable[str]) -> argparse.ArgumentParser:
    """An argument parser named ``prog`` with ``doc`` as its description and ``examples`` (one command
    a line, comments aligned as written) printed after the options by ``--help``."""
    lines = "\n".join(f"  {line}" for line in examples)
    return argparse.ArgumentParser(
        prog=prog,
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"examples:\n{lines}",
    )


RULE = object()  # a row of text_table's rows that is a rule (plain style): the aggregates below it


def text_table(
    header: Sequence[str],
    rows: Iterable[Sequence[object] | object],
    style: str = "markdown",
    align: Sequence[str] | None = None,
    indent: str = "",
) -> str:
    """``rows`` under ``header`` as text: ``style="markdown"`` is a GitHub table (``|`` between
    cells, a ``|---|`` rule; a ``|`` inside a cell is escaped), ``"plain"`` columns two spaces apart
    under a dashed rule (a row that is :data:`RULE` draws the rule again). Cells are shown as given
    (``str()``; numbers are formatted by the caller, tabulate does not reparse them); ``align`` is
    ``"left"``/``"right"``/``"center"`` per column (default: all left). Every line starts with
    ``indent``."""
    import tabulate as tabulate_module
    from tabulate import SEPARATING_LINE, tabulate

    markdown = style == "markdown"
    if style not in ("markdown", "plain"):
        raise ValueError(f"text_table style {style!r}: expected 'markdown' or 'plain'")

    def cell(value: object) -> str:
        text = "" if value is None else str(value)
        return text.replace("|", "\\|") if markdown else text

    body = [
        SEPARATING_LINE if row is RULE else [cell(c) for c in row]  # type: ignore[union-attr]
        for row in rows
        if not (markdown and row is RULE)  # a markdown table has one rule, under its header
    ]
    padding, tabulate_module.MIN_PADDING = tabulate_module.MIN_PADDING, 0  # a header as wide as its text
    try:
        text = tabulate(
            body,
            headers=[cell(h) for h in header],
            tablefmt="pipe" if markdown else "simple",
            disable_numparse=True,
            colalign=tuple(align) if align else ("left",) * len(header),
        )
    finally:
        tabulate_module.MIN_PADDING = padding
    return "\n".join(indent + line.rstrip() for line in text.splitlines())
