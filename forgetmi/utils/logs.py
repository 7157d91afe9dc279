"""Logging setup: one ``forgetmi`` logger; only the main process talks; dependencies stay quiet
unless ``-v``; a line repeated within a few lines prints once."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections import OrderedDict

LOGGER_NAME = "forgetmi"
# How many recent lines a repeat is looked for among: a demo or a forget request loads the same
# data between a few lines of other news, dozens of times.
RECENT_LINES = 32


def is_main_process() -> bool:
    """True on rank 0 (or when not distributed); read from the launcher's environment."""
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0"))) == 0


class CollapsingHandler(logging.StreamHandler):
    """A stream handler that drops an info line identical to one of the last ``RECENT_LINES``
    from the same logger, and says how many it dropped before the next line it prints.

    Warnings and errors always print; ``-v`` (debug) prints every line."""

    def __init__(self, stream=None, recent: int = RECENT_LINES):
        super().__init__(stream)
        self.recent: OrderedDict[tuple[str, str], None] = OrderedDict()
        self.limit = recent
        self.dropped: dict[tuple[str, str], int] = {}
        self.collapse = True

    def emit(self, record: logging.LogRecord) -> None:
        key = (record.name, record.getMessage())
        if self.collapse and record.levelno < logging.WARNING and key in self.recent:
            self.dropped[key] = self.dropped.get(key, 0) + 1
            return
        self._report_dropped()
        self.recent[key] = None
        self.recent.move_to_end(key)
        while len(self.recent) > self.limit:
            self.recent.popitem(last=False)
        super().emit(record)

    def _report_dropped(self) -> None:
        for (name, message), count in self.dropped.items():
            shown = message if len(message) <= 60 else message[:57] + "..."
            note = logging.LogRecord(name, logging.INFO, __file__, 0,
                                     "(%r repeated %d more time(s); -v shows every line)",
                                     (shown, count), None)
            super().emit(note)
        self.dropped = {}

    def close(self) -> None:
        try:
            self._report_dropped()
        finally:
            super().close()


def _handler(logger: logging.Logger) -> CollapsingHandler | None:
    return next((h for h in logger.handlers if getattr(h, "_forgetmi", False)), None)


def setup_logging(verbosity: int | None = None) -> logging.Logger:
    """Configure the ``forgetmi`` logger for a command-line run.

    verbosity: -1 warnings only, 0 info, 1+ debug; None keeps what an earlier call set (the
    command line's -q/-v reach the job that calls this again), else info. Non-main ranks log
    warnings and errors only.
    """
    logger = logging.getLogger(LOGGER_NAME)
    handler = _handler(logger)
    if verbosity is None:
        if handler is not None:
            return logger
        verbosity = 0
    level = logging.DEBUG if verbosity > 0 else logging.INFO if verbosity == 0 else logging.WARNING
    if not is_main_process():
        level = logging.WARNING
    logger.setLevel(level)
    if handler is None:
        handler = CollapsingHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s",
                                               datefmt="%H:%M:%S"))
        handler._forgetmi = True
        logger.addHandler(handler)
    handler.collapse = verbosity < 1
    hide_dependency_warnings(verbosity)
    return logger


class _BelowError(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


_QUIET_DEPENDENCY = _BelowError()
# Loggers of dependencies that print with their own handlers and format (DeepSpeed announces
# "Setting accelerator to CPU" on every launch on a CPU).
DEPENDENCY_LOGGERS = ("DeepSpeed",)
# Loggers whose children log through them (accelerate's notices on every launch): a level
# on the parent quiets them all.
DEPENDENCY_PARENTS = ("accelerate", "transformers")
_SET_ENV: list[str] = []


def hide_dependency_warnings(verbosity: int) -> None:
    """Warnings raised inside dependencies (pydantic's about W&B's ``sweeps``, say) and their
    own loggers' notices tell a user nothing they can act on; ``-v`` shows them. forgetmi's own
    warnings always show, and a dependency's errors too."""
    quiet = verbosity < 1
    for name in DEPENDENCY_LOGGERS:
        # A filter, not a level: DeepSpeed sets its logger's level when it is imported.
        dependency = logging.getLogger(name)
        dependency.removeFilter(_QUIET_DEPENDENCY)
        if quiet:
            dependency.addFilter(_QUIET_DEPENDENCY)
    for name in DEPENDENCY_PARENTS:
        logging.getLogger(name).setLevel(logging.ERROR if quiet else logging.NOTSET)
    # transformers sets its level from this when it is imported (and so do the processes
    # a launcher starts).
    if quiet and "TRANSFORMERS_VERBOSITY" not in os.environ:
        os.environ["TRANSFORMERS_VERBOSITY"] = "error"
        _SET_ENV.append("TRANSFORMERS_VERBOSITY")
    elif not quiet:
        while _SET_ENV:
            os.environ.pop(_SET_ENV.pop(), None)
    if quiet:
        warnings.filterwarnings("ignore", module=r"(?!forgetmi(\.|$))")
