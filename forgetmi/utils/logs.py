"""Logging setup: one ``forgetmi`` logger; only the main process talks."""

from __future__ import annotations

import logging
import os
import sys

LOGGER_NAME = "forgetmi"


def is_main_process() -> bool:
    """True on rank 0 (or when not distributed); read from the launcher's environment."""
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0"))) == 0


def setup_logging(verbosity: int = 0) -> logging.Logger:
    """Configure the ``forgetmi`` logger for a command-line run.

    verbosity: -1 warnings only, 0 info, 1+ debug. Non-main ranks log warnings and errors only.
    """
    logger = logging.getLogger(LOGGER_NAME)
    level = logging.DEBUG if verbosity > 0 else logging.INFO if verbosity == 0 else logging.WARNING
    if not is_main_process():
        level = logging.WARNING
    logger.setLevel(level)
    if not any(getattr(h, "_forgetmi", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s",
                                               datefmt="%H:%M:%S"))
        handler._forgetmi = True
        logger.addHandler(handler)
    return logger
