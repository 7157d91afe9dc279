"""Sweeps in W&B's own format, expanded offline.

The same YAML (``method: grid|random|bayes``, ``metric``, ``parameters``, ``command``) works with
``wandb sweep`` online and here, where W&B's own ``sweeps`` engine proposes the runs without a
server. Each proposal becomes a run folder with a deterministic name and the ``--key=value``
arguments W&B's ``${args}`` would give. The public release's sweep file runs unchanged: its
program (``training/forgetmi_partial.py``) is the unlearning job and its parameter names are
translated run by run (:mod:`forgetmi.hpc.release`). ``bayes`` needs finished runs' metric
values: they are read back from the runs (the evaluation's ``score`` and figures in
``metrics.json``, else the last value in the training log, ``train_log.jsonl``) and fed to
the engine on each call.
The release's own file is a ``random`` sweep over finite values without a count: it runs each
combination once (other random sweeps need ``--count`` or ``run_cap``).

Seeds and forget sets are replicates, not settings to optimise: ``seed`` and ``forget_set``
given as ``values`` are crossed with every proposal (a trial runs at each seed and size; for a
grid, the same runs), and a random or bayes engine learns from the trial's mean over them. A sweep
of ``count`` trials runs ``count`` × seeds × sizes runs. (Under ``wandb agent`` W&B's own server
proposes them like any parameter: give each one ``value`` in an online file.)
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import statistics
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from forgetmi.config import ConfigError, as_overrides, read_yaml
from forgetmi.hpc import release
from forgetmi.utils.run_folder import RunFolder

logger = logging.getLogger("forgetmi.hpc")

PROGRAMS = {"launch/unlearn.py": "unlearn", "launch/train.py": "train",
            "launch/evaluate.py": "evaluate"}
# Parameters a random or bayes sweep crosses with each proposal instead of proposing them.
REPLICATES = ("seed", "forget_set")


@dataclass
class Sweep:
    path: Path
    config: dict                  # the YAML as W&B reads it
    kind: str = "unlearn"         # the job each run is: from `program`
    fixed: list[str] = field(default_factory=list)   # arguments the command line fixes
    release: bool = False         # the release's program: its parameter names throughout


@dataclass
class SweepRun:
    run_id: str
    params: dict
    argv: list[str]
    output_dir: Path
    config: object = None      # its ExperimentConfig (train / unlearn runs)
    retrained: str | None = None   # the release's retrained_model_path: the evaluation reference
    trial: str | None = None       # the proposal it replicates (its id without seed and size)


# What W&B's sweep schema allows (its config/schema.json, plus the server's run_cap): each
# parameter's keys, and the keys each distribution needs.
SWEEP_KEYS = ("program", "method", "metric", "parameters", "command", "early_terminate", "name",
              "description", "project", "entity", "run_cap", "controller", "kind", "apiVersion")
METRIC_KEYS = ("name", "goal", "target", "impute", "impute_while_running")
PARAMETER_KEYS = ("value", "values", "distribution", "min", "max", "mu", "sigma", "q", "a", "b",
                  "probabilities", "parameters")
DISTRIBUTIONS = {
    "constant": ("value",), "categorical": ("values",),
    "categorical_w_probabilities": ("values", "probabilities"),
    "int_uniform": ("min", "max"), "uniform": ("min", "max"), "q_uniform": ("min", "max"),
    "log_uniform": ("min", "max"), "log_uniform_values": ("min", "max"),
    "q_log_uniform": ("min", "max"), "q_log_uniform_values": ("min", "max"),
    "inv_log_uniform": ("min", "max"), "inv_log_uniform_values": ("min", "max"),
    "normal": (), "q_normal": (), "log_normal": (), "q_log_normal": (), "beta": (), "q_beta": (),
}


def _did_you_mean(value, choices) -> str:
    import difflib
    close = difflib.get_close_matches(str(value), list(choices), n=1, cutoff=0.5)
    return f" (did you mean {close[0]}?)" if close else ""


def _refuse_unknown(where: str, what: str, given, allowed) -> None:
    """The first key of ``given`` not in ``allowed``, refused with the closest allowed one."""
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ConfigError(f"{where}: unknown {what} {unknown[0]!r}"
                          f"{_did_you_mean(unknown[0], allowed)}")


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_parameter(name: str, spec, method: str) -> None:
    """One parameter block as W&B's engine would take it, or a one-line ConfigError (without
    the file, which the caller adds) naming the parameter and what to write instead."""
    key = f"parameters.{name}"
    if not isinstance(spec, dict):
        raise ConfigError(f"{key}: expected a mapping (value: X, values: [..], or distribution "
                          f"with min/max), got {spec!r:.60}")
    _refuse_unknown(key, "key", spec, PARAMETER_KEYS)
    if "parameters" in spec:
        raise ConfigError(f"{key}: nested parameters are not supported; name each setting with "
                          f"dots instead ({name}.KEY: {{value: ..}})")
    distribution = spec.get("distribution")
    if distribution is not None and distribution not in DISTRIBUTIONS:
        raise ConfigError(f"{key}: unknown distribution {distribution!r}"
                          f"{_did_you_mean(distribution, DISTRIBUTIONS)}")
    if not ({"value", "values", "min", "max"} & set(spec)) and distribution is None:
        raise ConfigError(f"{key}: give value, values, or a distribution with min and max")
    for needed in DISTRIBUTIONS.get(distribution, ()):
        if needed not in spec:
            raise ConfigError(f"{key}: distribution {distribution} needs {needed}")
    if "values" in spec:
        values = spec["values"]
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{key}: values must be a non-empty list, got {values!r:.60}")
        if "probabilities" in spec:
            weights = spec["probabilities"]
            if not isinstance(weights, list) or len(weights) != len(values) or \
                    not all(_number(w) and w >= 0 for w in weights) or \
                    not math.isclose(sum(weights), 1.0, abs_tol=1e-6):
                raise ConfigError(f"{key}: probabilities must be {len(values)} numbers >= 0 "
                                  f"summing to 1, one per value, got {weights!r:.60}")
    if ("min" in spec) != ("max" in spec):
        raise ConfigError(f"{key}: give both min and max")
    if "min" in spec:
        low, high = spec["min"], spec["max"]
        if not (_number(low) and _number(high)):
            raise ConfigError(f"{key}: min and max must be numbers, got {low!r:.30} and "
                              f"{high!r:.30}")
        if low > high:
            raise ConfigError(f"{key}: min {low} is above max {high}; swap them")
        if distribution == "int_uniform" and not (isinstance(low, int) and isinstance(high, int)):
            raise ConfigError(f"{key}: int_uniform takes integer min and max, got {low} and "
                              f"{high}")
        if distribution in ("log_uniform_values", "q_log_uniform_values",
                            "inv_log_uniform_values") and low <= 0:
            raise ConfigError(f"{key}: {distribution} takes min > 0 (the values themselves), "
                              f"got {low}")
    for scale in ("sigma", "q"):
        if scale in spec and not (_number(spec[scale]) and spec[scale] > 0):
            raise ConfigError(f"{key}: {scale} must be a number > 0, got {spec[scale]!r:.30}")
    if method == "grid" and not ({"value", "values"} & set(spec)):
        raise ConfigError(f"{key}: a grid sweep takes value or values, not a distribution; "
                          "use method: random or bayes, or list the values")


def check_sweep(path: Path, config: dict) -> None:
    """A sweep file checked before W&B's engine sees it: every error one line naming the file
    and the key (the engine's own would be a traceback, or a run that never comes)."""
    _refuse_unknown(str(path), "sweep key", config, SWEEP_KEYS)
    if "parameters" not in config or "method" not in config:
        raise ConfigError(f"{path}: a sweep needs 'method' and 'parameters'")
    method = config["method"]
    if method not in ("grid", "random", "bayes"):
        raise ConfigError(f"{path}: method must be grid, random or bayes, got {method!r}"
                          f"{_did_you_mean(method, ('grid', 'random', 'bayes'))}")
    metric = config.get("metric")
    if metric is not None:
        if not isinstance(metric, dict) or not metric.get("name"):
            raise ConfigError(f"{path}: metric must be a mapping with a name (metric: {{name: "
                              f"score, goal: maximize}}), got {metric!r:.60}")
        _refuse_unknown(str(path), "metric key", metric, METRIC_KEYS)
        if metric.get("goal", "minimize") not in ("minimize", "maximize"):
            goals = ("minimize", "maximize")
            raise ConfigError(f"{path}: metric.goal must be minimize or maximize, got "
                              f"{metric['goal']!r}{_did_you_mean(metric['goal'], goals)}")
    if method == "bayes" and not (metric or {}).get("name"):
        raise ConfigError(f"{path}: a bayes sweep needs metric.name")
    if "run_cap" in config:
        cap = config["run_cap"]
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
            raise ConfigError(f"{path}: run_cap must be a whole number of runs >= 1, got "
                              f"{cap!r:.30}")
    parameters = config["parameters"]
    if not isinstance(parameters, dict) or not parameters:
        raise ConfigError(f"{path}: parameters must be a mapping of one or more parameters")
    for name, spec in parameters.items():
        try:
            check_parameter(str(name), spec, method)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None
    command = config.get("command")
    if command is not None and not isinstance(command, list):
        raise ConfigError(f"{path}: command must be a list (one item a line), got "
                          f"{command!r:.60}")


def load_sweep(path: str | Path) -> Sweep:
    from forgetmi.shipped import locate

    path = locate(path)
    config = read_yaml(path, "sweep file")
    check_sweep(path, config)
    program = str(config.get("program", "launch/unlearn.py"))
    is_release = release.is_release_program(program)
    if not is_release and program not in PROGRAMS:
        raise ConfigError(f"{path}: program must be one of {', '.join(PROGRAMS)} or the "
                          f"release's training/forgetmi_partial.py, got {program!r}")
    fixed = _fixed_arguments(config.get("command") or [])
    if is_release:
        params, _ = release.args_to_params(fixed)
        translated, _, _ = release.translate(params, release_program=True)
        fixed = run_arguments(translated)
    return Sweep(path, config, "unlearn" if is_release else PROGRAMS[program], fixed, is_release)


def _fixed_arguments(command: list) -> list[str]:
    """``--key=value`` items written into the sweep's command (beside ``${args}``); items
    naming a parameter (``--lr=${lr}``) are W&B's to fill, and come with the run's arguments."""
    return [c for c in command if isinstance(c, str) and c.startswith("--") and "=" in c
            and "${" not in c]


def _value(raw):
    return raw.get("value") if isinstance(raw, dict) else raw


def run_arguments(params: dict) -> list[str]:
    """``--key=value`` as W&B's ``${args}`` writes them (lists as YAML-style ``[a,b]``)."""
    return as_overrides({key: _value(raw) for key, raw in params.items()})


def run_id(params: dict) -> str:
    """Deterministic: the same parameters always name the same folder (idempotent sweeps)."""
    blob = json.dumps({k: _value(v) for k, v in sorted(params.items())}, sort_keys=True,
                      default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def replicate_keys(sweep: Sweep) -> list[str]:
    """The replicate parameters crossed with every proposal (those given as ``values``), when
    something else is left to propose: for a grid the same runs, grouped into trials."""
    params = sweep.config["parameters"]
    keys = [k for k in REPLICATES if isinstance(params.get(k), dict) and "values" in params[k]]
    return keys if set(params) - set(keys) else []


def trial_id(params: dict, replicates: list[str]) -> str:
    """The id of the proposal a run replicates: its parameters without seed and size."""
    return run_id({k: v for k, v in params.items() if k not in replicates})


def metric_value(folder: Path, metric: str) -> float | None:
    """A finished run's value of ``metric``: from its evaluation (``metrics.json``: ``score``,
    ``eval/...``), else the last logged value (the training log); None if neither has it."""
    from forgetmi.evaluation.score import summary_figures

    if (folder / "metrics.json").is_file():
        try:
            figures = summary_figures(json.loads((folder / "metrics.json").read_text()))
        except (OSError, ValueError):
            figures = {}
        if figures.get(metric) is not None:
            return float(figures[metric])
    value = None
    for record in RunFolder(folder).train_records():
        if record.get(metric) is not None:
            value = float(record[metric])
    return value


def _finished(out: Path, metric: str | None, kind: str, replicates: list[str],
              n_replicates: int):
    """The sweep's trials already in its folder, with their metric (the mean over the trial's
    replicates once each has it), as the engine's history."""
    import sweeps
    trials: dict[str, dict] = {}
    for params_file in sorted(out.glob("runs/*/sweep_params.json")):
        params = json.loads(params_file.read_text())
        folder = params_file.parent
        key = trial_id(params, replicates)
        trial = trials.setdefault(key, {"config": {k: v for k, v in params.items()
                                                   if k not in replicates},
                                        "values": [], "done": 0, "name": folder.name})
        if RunFolder(folder).finished(kind):
            trial["done"] += 1
            value = metric_value(folder, metric) if metric else None
            if value is not None and math.isfinite(value):
                trial["values"].append(value)
    runs = []
    for key, trial in trials.items():
        complete = trial["done"] >= n_replicates
        scored = complete and metric and len(trial["values"]) >= n_replicates
        history = [{metric: statistics.mean(trial["values"])}] if scored else []
        # W&B's model takes its aliases only (under pydantic 2 a field name is dropped
        # silently, and the engine would see no metric at all).
        runs.append(sweeps.SweepRun(
            name=key, config={k: {"value": _value(v)} for k, v in trial["config"].items()},
            state=sweeps.RunState.finished if complete else sweeps.RunState.running,
            sampledHistory=history, summaryMetrics=history[-1] if history else {}))
    return runs


def expand(sweep: Sweep, out: str | Path, count: int | None = None,
           extra: list[str] | None = None, proposal_seed: int | None = None,
           defaults: list[str] | None = None) -> list[SweepRun]:
    """The sweep's runs: every grid point, or ``count`` new random/bayes trials beyond those
    already in ``out`` (each at every replicate), after the trials there that have not finished
    (``count=0``: only those); without ``count``, the file's ``run_cap`` is the number of trials
    in all, those already in ``out`` included. ``proposal_seed`` makes the proposals reproducible: the same seed
    proposes the same runs (one sweep run once per training seed, say). Each run's config is
    built now, so a bad parameter fails before anything is submitted. ``defaults`` start every
    run's arguments (the sweep's W&B group): the file's and ``extra`` win over them."""
    import random

    import numpy as np
    import sweeps

    from forgetmi.config import ExperimentConfig, load_config

    out = Path(out)
    method = sweep.config["method"]
    engine_config = {k: v for k, v in sweep.config.items() if k not in ("command", "program")}
    replicates = replicate_keys(sweep)
    crossed = [dict(zip(replicates, combo)) for combo in itertools.product(
        *(sweep.config["parameters"][k]["values"] for k in replicates))]
    if replicates:  # the engine proposes the rest; each proposal runs at every seed and size
        engine_config["parameters"] = {k: v for k, v in engine_config["parameters"].items()
                                       if k not in replicates}
    capped = False
    if method != "grid" and count is None:
        count = sweep.config.get("run_cap")
        capped = bool(count)
        if not count and sweep.release and release.runs_each_combination_once(sweep.config):
            # The release's file is random over finite values with no cap (an agent ran until
            # stopped): run each combination once (convert-sweep writes it as a grid).
            logger.info("%s: the release's random sweep over finite values, without a count: "
                        "each combination runs once", sweep.path.name)
            method, engine_config = "grid", {**engine_config, "method": "grid"}
        elif count is None:
            raise ConfigError(f"{sweep.path}: a {method} sweep needs --count N (or run_cap)")
    if count is not None and count < 0:
        raise ConfigError(f"--count: expected the number of new trials (0 or more), got {count}")
    metric = (sweep.config.get("metric") or {}).get("name")
    history = (_finished(out, metric, sweep.kind, replicates, len(crossed))
               if method != "grid" else [])
    if capped:
        # run_cap caps the sweep's trials in all (as W&B's caps its runs), not the new ones of
        # one call: a rerun of a finished sweep proposes nothing, an interrupted one the rest
        logger.info("%s: run_cap %d, %d trial(s) already in %s", sweep.path.name, count,
                    len(history), out)
        count = max(0, count - len(history))
    proposals, seen, attempts = [], {run_id(h.config) for h in history}, 0
    # W&B's engine draws from the global generators: a proposal seed seeds them for this call
    # only, and the caller's state comes back after.
    states = (random.getstate(), np.random.get_state()) if proposal_seed is not None else None
    if proposal_seed is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sweeps.next_run(engine_config, [])  # its first call's imports draw from the generator
        random.seed(proposal_seed)
        np.random.seed(proposal_seed)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            while count is None or len(proposals) < count:
                if count == 0:
                    break
                proposal = sweeps.next_run(engine_config, history + proposals)
                if proposal is None:
                    break
                attempts += 1
                key = run_id(proposal.config)
                if key in seen:  # a repeat names the same folder: it would run once, not twice
                    if count is not None and attempts >= 100 * count:
                        logger.warning("%s: only %d distinct run(s) in %d proposals",
                                       sweep.path.name, len(proposals), attempts)
                        break
                    continue
                seen.add(key)
                proposal.state = sweeps.RunState.running
                proposal.name = f"p{len(proposals)}"
                proposals.append(proposal)
    finally:
        if states is not None:
            random.setstate(states[0])
            np.random.set_state(states[1])
    runs = []
    ignored = release.unused_command_keys(sweep.config) if sweep.release else {}
    # Trials already in the folder but not finished on every replicate are planned again (a
    # resubmission finishes them; their finished runs are skipped), then the new proposals.
    unfinished = [h for h in history if h.state != sweeps.RunState.finished]
    if unfinished:
        logger.info("%s: %d unfinished trial(s) already in %s planned again", sweep.path.name,
                    len(unfinished), out)
    planned = [({**{k: _value(v) for k, v in proposal.config.items()}, **replica},
                trial_id({k: _value(v) for k, v in proposal.config.items()}, replicates))
               for proposal in unfinished + proposals for replica in crossed]
    for params, trial in planned:
        try:
            translated, dropped, retrained = release.translate(params, sweep.release)
        except ConfigError as err:
            raise ConfigError(f"{sweep.path}: {err}") from None
        ignored.update(dropped)
        rid = run_id(translated)
        folder = out / "runs" / rid
        # The release's retrained_model_path is translated to evaluate.retrained (--retrained,
        # in extra, wins).
        argv = [*(defaults or []), *sweep.fixed, *run_arguments(translated), *(extra or []),
                f"--output_dir={folder}"]
        config = None
        if sweep.kind in ("train", "unlearn"):
            config_file = _config_argument(argv)
            try:
                config = load_config(ExperimentConfig, config_file,
                                     [a for a in argv if not a.startswith("--config=")])
            except ConfigError as err:
                # The key and its allowed values are in err; the run is named, not dumped.
                raise ConfigError(f"{sweep.path}: run {rid}: {err}") from None
        runs.append(SweepRun(rid, params, argv, folder, config, retrained, trial))
    release.log_ignored(sweep.path.name, ignored)
    logger.info("sweep %s (%s): %d run(s)%s", sweep.path.name, method, len(runs),
                f" ({len(unfinished) + len(proposals)} trial(s) × {len(crossed)} of "
                f"{', '.join(replicates)})"
                if replicates else "")
    return runs


def _config_argument(argv: list[str]) -> str | None:
    values = [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]
    return values[-1] if values else None
