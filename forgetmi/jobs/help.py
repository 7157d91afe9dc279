"""``--help`` for the jobs: every config key with its type, default and one line of help.

Generated from the typed configs themselves, so it cannot drift from them: the key, type and
default come from the dataclass fields, the help from the comment written beside each field
(or the comment block just above it), the unlearning methods from the registry with the config
sections they read, and the Forget-MI presets from ``PRESETS``.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import types
import typing
from functools import lru_cache

_FIELD = re.compile(r"^    (\w+)\s*:[^#]*?(?:#\s*(.*))?$")
_COMMENT = re.compile(r"^\s*#\s?(.*)$")


@lru_cache(maxsize=None)
def field_help(cls) -> dict[str, str]:
    """``{field: help}`` from the comments of the dataclass's source."""
    names = {f.name for f in dataclasses.fields(cls)}
    try:
        lines = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):
        return {}
    helps: dict[str, str] = {}
    above: list[str] = []
    current, column = None, -1
    for line in lines:
        comment = _COMMENT.match(line)
        if comment:
            # Aligned under a field's trailing comment, a comment line continues it; otherwise
            # it opens the block that describes the field below.
            if current is not None and line.index("#") == column:
                helps[current] += " " + comment.group(1).strip()
            else:
                current = None
                above.append(comment.group(1).strip())
            continue
        match = _FIELD.match(line)
        if match and match.group(1) in names:
            trailing = (match.group(2) or "").strip()
            helps[match.group(1)] = trailing or " ".join(above)
            current, column = (match.group(1), line.rindex("#")) if trailing else (None, -1)
            above = []
            continue
        current, above = None, []
    return helps


def _summary(cls) -> str:
    """The first paragraph of a class's own docstring (not dataclass's generated signature)."""
    doc = inspect.cleandoc(cls.__dict__.get("__doc__") or "")
    if doc.startswith(f"{cls.__name__}("):
        return ""
    return " ".join(doc.split("\n\n")[0].split())


def _type_name(tp) -> str:
    """``int``, ``float | None``, ``pull|push | None``: a type as a user types values."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) is typing.Literal:
        return "|".join(map(str, args))
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if tp is type(None):
        return "None"
    text = getattr(tp, "__name__", None) if not args else None
    return text or str(tp).replace("typing.", "").replace("NoneType", "None")


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def config_lines(cls, prefix: str = "", skip: tuple[str, ...] = ()) -> list[str]:
    """One line per leaf field: ``--dotted.key  type = default  help``, by section."""
    hints = typing.get_type_hints(cls)
    helps = field_help(cls)
    lines: list[str] = []
    nested = []
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        tp = hints[f.name]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            nested.append((f.name, tp))
            continue
        key = f"--{prefix}{f.name}"
        spec = f"{_type_name(tp)} = {_default(f)!r}"
        lines.append(f"  {key:<34} {spec:<28} {helps.get(f.name, '')}".rstrip())
    for name, tp in nested:
        lines += ["", f"{prefix}{name}: {_summary(tp)}".rstrip(": ")]
        lines += config_lines(tp, f"{prefix}{name}.")
    return lines


def methods_lines() -> list[str]:
    from forgetmi.config import UnlearnConfig
    from forgetmi.unlearning import METHODS

    sections = {f.name: f for f in dataclasses.fields(UnlearnConfig)}
    lines = []
    for name, cls in sorted(METHODS.items()):
        settings = ", ".join(f"unlearn.{s}" for s in cls.settings if s in sections) or "none"
        lines.append(f"  {name:<14} its settings: {settings}")
    return lines


def presets_lines() -> list[str]:
    from forgetmi.losses.forgetmi import PRESETS

    lines = []
    for name, w in PRESETS.items():
        note = "  no perturbation; UU and MU pushed (objective push)" if name == "no-noise" else ""
        lines.append(f"  {name:<12} w_UU {w.uu:.2f}  w_UR {w.ur:.2f}  w_MU {w.mu:.2f}  "
                     f"w_MR {w.mr:.2f}{note}")
    return lines


def job_help(job: str) -> str:
    """The epilog of ``forgetmi train|retrain|unlearn --help``."""
    from forgetmi.config import ExperimentConfig

    unlearning = job == "unlearn"
    lines = ["config keys (--key=value; a bare field name works when unambiguous, e.g. "
             "--image_size=512):"]
    lines += config_lines(ExperimentConfig, skip=() if unlearning else ("unlearn",))
    if unlearning:
        lines += ["", "unlearning methods (--method=NAME):", *methods_lines(),
                  "", "Forget-MI presets (--preset=NAME; --weights=[UU,UR,MU,MR] overrides):",
                  *presets_lines()]
    return "\n".join(lines)


class JobParser(argparse.ArgumentParser):
    """An argument parser whose ``--help`` ends with :func:`job_help` (built only when asked,
    so ordinary commands do not import the methods)."""

    def __init__(self, *args, job: str | None = None, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)
        self.job = job

    def format_help(self) -> str:
        text = super().format_help()
        return f"{text}\n{job_help(self.job)}\n" if self.job else text
