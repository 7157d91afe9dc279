"""The one way a job starts: parse ``--config X --key=value``, run, exit cleanly.

Shared by ``forgetmi train|retrain|unlearn`` and the ``launch/*.py`` front-ends, so every job
handles errors, deliberate test crashes and the distributed exit the same way.
"""

from __future__ import annotations

import errno
import logging
from typing import Callable

logger = logging.getLogger("forgetmi")


def run_job(run: Callable, argv: list[str] | None, prog: str, description: str,
            after: Callable | None = None) -> int:
    """``run(cfg) -> {"accelerator": ...}``; returns 0, 2 on a clear error, 3 on a test crash.
    ``after(cfg) -> code`` runs on the main process once the workers have finished, if the
    job succeeded (an unlearning run scoring itself)."""
    from forgetmi.config import ExperimentConfig, load_config
    from forgetmi.errors import ForgetMIError
    from forgetmi.utils.logs import setup_logging

    from forgetmi.jobs.help import JobParser

    # `--help` lists every config key, and for unlearning the methods and presets.
    parser = JobParser(prog=prog, description=description, job=prog.split()[-1])
    parser.add_argument("--config", help="experiment YAML (configs/experiments/*.yaml)")
    args, overrides = parser.parse_known_args(argv)
    setup_logging()
    try:
        # Checked where it is declared: a bad value is refused before torch is imported or
        # anything is written.
        cfg = load_config(ExperimentConfig, args.config, overrides)
    except ForgetMIError as err:
        logger.error("%s", err)
        return 2

    from forgetmi.engine.distributed import finish
    from forgetmi.engine.loop import SimulatedCrash

    accelerator, code = None, 0
    try:
        accelerator = run(cfg)["accelerator"]
    except SimulatedCrash as err:
        logger.warning("%s", err)
        code = 3
    except ForgetMIError as err:
        logger.error("%s", err)
        code = 2
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        # Every write is write-then-rename: what was complete before is still there.
        logger.error("no space left on the device while writing %s; the last complete "
                     "checkpoint and earlier results are intact: free space and rerun to resume",
                     err.filename or "an output")
        code = 2
    then = (lambda: after(cfg)) if after is not None and code == 0 else None
    return finish(accelerator, code, then)
