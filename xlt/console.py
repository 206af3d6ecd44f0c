"""A quiet terminal: one line per stage start and end, the progress bar and the results table.

Everything else a run says (Lightning's GPU/TPU lines, tips, model summary and "fit stopped" lines,
the seed, library deprecation warnings, the contamination audit's table, each skipped language) still
goes to the run's log file (Hydra's ``<run_dir>/train.log``), not to the terminal. With
``hydra.verbose=true`` (root logger at DEBUG) the terminal shows everything again.

:func:`quiet_terminal` puts a filter on the root logger's terminal handlers (stream handlers that are
not file handlers), routes Python warnings into logging (so they reach the file, not the terminal),
and turns off the ``datasets`` progress bars (tokenising, "Saving the dataset") and transformers'
"Loading weights" bar, which write to the terminal directly.
"""

from __future__ import annotations

import logging

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
    return [h for h in logger.handlers
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]  # fmt: skip


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
