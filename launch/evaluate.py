"""Workstation front-end: ``python launch/evaluate.py RUN... [--retrained RUN]`` — metrics,
membership attacks and the gap to the retrained model (one process; writes RUN/metrics.json)."""

from forgetmi.jobs.evaluate import main

if __name__ == "__main__":
    raise SystemExit(main())
