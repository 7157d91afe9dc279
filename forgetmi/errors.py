"""Exceptions that carry enough context to fix the input without a traceback."""

from __future__ import annotations

from os import PathLike


class ForgetMIError(Exception):
    """Base class: the CLI prints these as one line and exits non-zero."""


class DataError(ForgetMIError):
    """Bad input data: names the file, row and field, and what was expected.

    ``row`` is the 1-based line number in the file (the header is line 1), so a user can
    jump straight to it in an editor.
    """

    def __init__(self, message: str, path: str | PathLike | None = None,
                 row: int | None = None, field: str | None = None):
        self.path = None if path is None else str(path)
        self.row = row
        self.field = field
        self.reason = message
        where = []
        if self.path is not None:
            where.append(self.path)
        if row is not None:
            where.append(f"line {row}")
        if field is not None:
            where.append(f"field '{field}'")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


class LeakageError(ForgetMIError):
    """A partition audit found a forget patient (or another overlap) where it must not be."""


class CacheError(ForgetMIError):
    """A cache is missing, incomplete, or was built for other data or settings."""


class SettingError(ForgetMIError, ValueError):
    """An argument outside its range (the stand-in generator's patients, say): one line from
    the command line, a ValueError to library callers that check arguments."""


class OutputError(ForgetMIError):
    """An output's path holds something this command did not write and may not replace."""


def exit_on_error(main):
    """Wrap a command's ``main(argv) -> int``: a :class:`ForgetMIError` is logged as one line
    (it already names what to fix) and the command exits with 2; anything else is a bug and
    keeps its traceback."""
    import functools
    import logging

    @functools.wraps(main)
    def wrapped(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except ForgetMIError as err:
            logging.getLogger("forgetmi").error("%s", err)
            return 2
    return wrapped
