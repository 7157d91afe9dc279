"""Unlearning methods: each an :class:`Unlearner` on the shared engine, behind one registry."""

from forgetmi.unlearning.base import METHODS, Unlearner, build_objective, method_class, register

# Importing a method module registers it.
from forgetmi.unlearning import forgetmi_method, multidelete, neggrad, retain_finetune, scrub  # noqa: E402,F401,I001

__all__ = ["METHODS", "Unlearner", "build_objective", "method_class", "register"]
