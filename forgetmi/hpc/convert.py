"""``forgetmi convert-sweep RELEASE.yaml OUT.yaml``: the release's sweep in forgetmi's names.

The converted file runs ``launch/unlearn.py`` with forgetmi's own keys and proposes the same
runs as the original (``forgetmi sweep`` on either, or ``wandb agent``, builds the same configs):
it also sets what the release's program always did (:data:`~forgetmi.hpc.release.RELEASE_SETTINGS`),
and the release's ``random`` file over finite values becomes the grid it runs as offline. Its
comments say which release key became which forgetmi key and what changed in meaning, which
keys were dropped and why.
"""

from __future__ import annotations

import itertools
import logging
import os
import textwrap
from pathlib import Path

import yaml

from forgetmi.config import ConfigError, read_yaml
from forgetmi.errors import OutputError
from forgetmi.hpc import release
from forgetmi.utils.atomic import write_text

logger = logging.getLogger("forgetmi.hpc")

# The first words of every converted file: what tells a file convert-sweep wrote from a user's.
HEADER = "# Converted by `forgetmi convert-sweep`"

COMMAND = ["${env}", "${interpreter}", "-m", "forgetmi.hpc.node_launch", "${program}", "${args}"]


def _values(key: str, spec) -> list | None:
    """The finite values of a parameter spec (None for a distribution)."""
    if not isinstance(spec, dict):
        return [spec]
    if "value" in spec:
        return [spec["value"]]
    if "values" in spec:
        return list(spec["values"])
    return None


def _distinct(values: list) -> list:
    """``values`` without repeats, in order (validation_ratio's all become 0)."""
    out = []
    for value in values:
        if value not in out:
            out.append(value)
    return out


def _spec(values: list) -> dict:
    return {"value": values[0]} if len(values) == 1 else {"values": values}


def _weights(specs: dict) -> dict:
    """alpha/beta/theta/gamma as one unlearn.weights parameter (every combination)."""
    missing = sorted(set(release.WEIGHTS) - set(specs))
    if missing:
        raise ConfigError(f"{', '.join(missing)}: the release's loss weights come as a set "
                          "(alpha, beta, theta, gamma); give all four")
    by_index = {}
    for key, spec in specs.items():
        values = _values(key, spec)
        if values is None:
            raise ConfigError(f"{key}: a distribution cannot be written as the list "
                              "unlearn.weights; give value or values")
        by_index[release.WEIGHTS[key]] = values
    combos = [list(c) for c in itertools.product(*(by_index[i] for i in range(4)))]
    return _spec(combos)


def convert(config: dict) -> tuple[dict, dict[str, str], dict[str, str]]:
    """``(forgetmi sweep, {release key: forgetmi key}, {dropped key: why})``."""
    is_release = release.is_release_program(config.get("program", ""))
    settings = release.RELEASE_SETTINGS if is_release else {}
    parameters: dict = {key: {"value": value} for key, value in settings.items()}
    mapped: dict[str, str] = {}
    dropped = release.unused_command_keys(config)
    weights = {}
    for key, spec in (config.get("parameters") or {}).items():
        if key in release.WEIGHTS:
            weights[key] = spec
        elif key == release.NOISE:
            values = _values(key, spec)
            if values is None:
                raise ConfigError(f"{key}: give value or values (true or false)")
            parameters["unlearn.objective"] = _spec([release.objective(v) for v in values])
            for target in ("noise.use_image", "noise.use_text"):   # perturbed either way
                parameters.setdefault(target, {"value": True})
            mapped[key] = "unlearn.objective"
        elif key == release.RETRAINED:   # the reference each run scores itself against
            parameters["evaluate.retrained"] = spec
            mapped[key] = "evaluate.retrained"
        elif key in release.RENAMES:
            target = release.RENAMES[key]
            values = _values(key, spec)
            if values is None:
                if key in ("text_data_dir", "scheduler", "validation_ratio"):
                    raise ConfigError(f"{key}: give value or values (its values are rewritten)")
                parameters[target] = spec
            else:
                parameters[target] = _spec(_distinct(
                    [release.convert_value(key, v) for v in values]))
            mapped[key] = target
        elif key in release.IGNORED:
            for value in (_values(key, spec) or []) if key in release.HONOURED_ONLY else []:
                release.check_honoured(key, value)
            dropped[key] = release.IGNORED[key]
        else:
            parameters[key] = spec
    if weights:
        parameters["unlearn.weights"] = _weights(weights)
        mapped["alpha, beta, theta, gamma"] = \
            "unlearn.weights [w_UU = beta, w_UR = alpha, w_MU = theta, w_MR = gamma]"
    head = {k: v for k, v in config.items() if k not in ("program", "parameters", "command")}
    if is_release and release.runs_each_combination_once(config):
        head["method"] = "grid"
    converted = {"program": "launch/unlearn.py", **head, "parameters": parameters,
                 "command": COMMAND}
    return converted, mapped, dropped


def _yaml(key: str, value) -> str:
    """``key: value`` on one line (collections in flow style)."""
    if isinstance(value, (dict, list)):
        return f"{key}: " + yaml.safe_dump(value, default_flow_style=True, width=10_000,
                                           sort_keys=False).strip()
    return yaml.safe_dump({key: value}, default_flow_style=False, sort_keys=False).strip()


def _comment(text: str, indent: str = "#   ", more: str = "#       ") -> list[str]:
    return textwrap.wrap(text, width=100, initial_indent=indent, subsequent_indent=more,
                         break_on_hyphens=False)


def render(source: Path, converted: dict, mapped: dict[str, str], dropped: dict[str, str],
           original_method: str | None = None) -> str:
    """The converted sweep as commented YAML."""
    lines = [f"{HEADER} from {source.name} (the Forget-MI release's",
             "# sweep), with forgetmi's own key names. Release key -> forgetmi key, and what",
             "# changed in meaning:"]
    for key, target in mapped.items():
        note = release.NOTES.get(key)
        lines += _comment(f"{key} -> {target}" + (f": {note}" if note else ""))
    settings = {k: v for k, v in release.RELEASE_SETTINGS.items()
                if k in converted["parameters"]}
    if settings:
        lines.append("# Set for every run, as the release's program always did (no key of its "
                     "own):")
    for key, value in settings.items():
        lines += _comment(f"{key} = {_flow(value)}: {release.SETTING_NOTES[key]}")
    if dropped:
        lines.append("# Dropped (no forgetmi setting does what they did):")
        lines += [f"#   {k}: {why}" for k, why in sorted(dropped.items())]
    origin = {target: key for key, target in mapped.items()}
    origin["unlearn.weights"] = "alpha, beta, theta, gamma"
    for key in settings:
        origin.setdefault(key, "the release's program")
    for key, spec in converted.items():
        if key == "parameters":
            lines.append("parameters:")
            for name, value in spec.items():
                text = _yaml(name, value)
                note = origin.get(name)
                lines.append(f"  {text}" + (f"   # from {note}" if note else ""))
        elif key == "method" and original_method not in (None, spec):
            lines += _comment(f"the release's {original_method} over finite values without "
                              "run_cap: each combination once, as forgetmi sweep runs the "
                              "release's file (an agent drew from it until stopped)", "# ", "# ")
            lines.append(_yaml(key, spec))
        else:
            lines.append(_yaml(key, spec))
    return "\n".join(lines) + "\n"


def _flow(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...").strip()


def _written_here(path: Path) -> bool:
    """Whether ``path`` is a file an earlier convert-sweep wrote."""
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read(len(HEADER)) == HEADER
    except (OSError, UnicodeDecodeError):
        return False


def check_target(target: Path, overwrite: bool) -> None:
    """Refuse, before anything is written, a ``target`` that is not free: ``overwrite``
    replaces only a file an earlier convert-sweep wrote."""
    if target.is_dir():
        raise OutputError(f"{target}: is a folder; expected the path of the sweep file to write")
    if not os.path.lexists(target):
        return
    if not overwrite:
        raise OutputError(f"{target}: exists; refusing to replace it (choose another path"
                          f"{', or pass --overwrite' if _written_here(target) else ''})")
    if not _written_here(target):
        raise OutputError(f"{target}: --overwrite replaces only a file convert-sweep wrote, and "
                          "this is not one; choose another path")


def convert_file(source: str | Path, target: str | Path, overwrite: bool = False) -> Path:
    source, target = Path(source), Path(target)
    check_target(target, overwrite)
    config = read_yaml(source, "sweep file")
    try:
        converted, mapped, dropped = convert(config)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None
    path = write_text(target, render(source, converted, mapped, dropped, config.get("method")))
    logger.info("%s -> %s: %d key(s) renamed, %d dropped", source, path, len(mapped),
                len(dropped))
    return path
