"""The registry of unlearning methods.

A method is a factory ``(cfg, data, original, accelerator) -> Objective``: it declares the data
it draws (streams) and its loss; the shared engine does everything else.
"""

from __future__ import annotations

from typing import Callable

from forgetmi.errors import ForgetMIError

METHODS: dict[str, Callable] = {}


def register(name: str):
    def wrap(factory):
        METHODS[name] = factory
        return factory
    return wrap


def build_objective(name: str, *args, **kwargs):
    if name not in METHODS:
        raise ForgetMIError(f"unknown unlearning method {name!r}; "
                            f"available: {', '.join(sorted(METHODS))}")
    return METHODS[name](*args, **kwargs)
