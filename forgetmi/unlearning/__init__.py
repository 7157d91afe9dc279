"""Unlearning methods: each an engine Objective behind one registry."""

from forgetmi.unlearning.base import METHODS, build_objective, register

__all__ = ["METHODS", "build_objective", "register"]

# Importing a method module registers it.
from forgetmi.unlearning import forgetmi_method  # noqa: E402,F401
