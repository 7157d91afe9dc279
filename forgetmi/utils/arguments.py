"""argparse types shared by the commands."""

from __future__ import annotations

import argparse


def number_in(low: float, high: float, closed: bool):
    """An argparse type: a float in (low, high), or [low, high] when ``closed``."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        inside = low <= value <= high if closed else low < value < high
        if not inside:
            bounds = f"[{low:g}, {high:g}]" if closed else f"({low:g}, {high:g})"
            raise argparse.ArgumentTypeError(f"expected a number in {bounds}, got {text!r}")
        return value
    return parse


def parse_or_exit_code(parser: argparse.ArgumentParser, argv: list[str] | None):
    """``(args, None)``, or ``(None, code)`` where argparse would exit (a usage error, --help):
    a command called in-process returns the code, as for bad input, instead of exiting."""
    try:
        return parser.parse_args(argv), None
    except SystemExit as stop:
        return None, stop.code if isinstance(stop.code, int) else int(stop.code is not None)
