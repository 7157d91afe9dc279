"""An experimental protocol as data: forget sizes × seeds × methods, and the jobs it implies.

A protocol file (``configs/experiments/paper.yaml``) names a base experiment config, the
seeds, the forget sets, the settings of the original/retrained models, and the unlearning
methods with their settings. :func:`expand` turns it into jobs with explicit dependencies:

    original[seed], retrained[size, seed]                (independent)
    unlearn[method, size, seed]    after original[seed]
    evaluate[run]                  after its run and retrained[size, seed] (the reference)
    report                         after every evaluate

One original per seed serves every size: every run's validation is carved outside all the
protocol's forget sets (``data.val_avoid``), so the original's training rows (all but
validation, holdout and TEST) are the same whatever the size. It is trained for no size in
particular (``data.forget_set: null``) and scored once per size, on that size's forget rows,
into ``original/s{seed}/eval/{size}/metrics.json``. Every job's config is built (and so
validated) when the protocol is expanded, before anything runs. :func:`run_local` runs the jobs
in order on this machine, skipping those already done; a cluster runs them as dependent arrays.
``methods`` may name a presets file instead (``configs/presets/tuned.yaml``); a protocol without
methods trains and scores the original and retrained models only (the references a tuning sweep
scores against).
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from pathlib import Path

from forgetmi.config import (ConfigError, ExperimentConfig, as_overrides, from_dict, load_config,
                             read_yaml, to_dict)
from forgetmi.errors import exit_on_error
from forgetmi.jobs import JOBS
from forgetmi.jobs import run as run_kind
from forgetmi.utils.run_folder import UNREAD, RunFolder, flatten, setting_differences
from forgetmi.utils.tracking import group_for

logger = logging.getLogger("forgetmi.protocol")


@dataclass
class Protocol:
    experiment: str                                  # base experiment YAML (relative to this file)
    output_dir: str = "runs/protocol"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    forget_sets: dict[str, str] = field(default_factory=dict)   # size label -> forget CSV
    train: dict = field(default_factory=dict)        # overrides for original and retrained models
    unlearn: dict = field(default_factory=dict)      # overrides shared by every method
    methods: dict[str, dict] = field(default_factory=dict)      # run name -> overrides (method=...);
                                                     # in the file, also a presets file's path
    evaluate: dict = field(default_factory=lambda: {"bootstrap": 1000})
    stand_in: dict = field(default_factory=dict)     # generate the stand-in data first (below)
    data: dict = field(default_factory=dict)         # data.* overrides for every run, e.g. the
                                                     # root: one experiment, several stand-ins
    base_dir: str = "."                              # where relative paths resolve (the file's folder)


# ``evaluate`` keys: the options of ``forgetmi evaluate`` a protocol may set (the references
# and output folders are the protocol's), each a positive integer.
EVALUATE = {"bootstrap": "--bootstrap", "batch_size": "--batch-size"}

# ``stand_in`` keys (those of ``forgetmi make-demo-data``) and their defaults.
STAND_IN = {"patients": 120, "image_size": 320, "seed": 0, "test_fraction": None,
            "label_noise": None, "atypical": None, "workers": 1}


@dataclass
class Job:
    name: str                 # e.g. "unlearn/forgetmi-unimodal/10/s0"
    kind: str                 # train | retrain | unlearn | evaluate | report
    stage: int                # 0 models, 1 unlearning, 2 evaluation, 3 report
    argv: list[str]           # what the job's entry point receives
    output_dir: Path
    after: list[str] = field(default_factory=list)

    def done(self) -> bool:
        if self.kind == "report":
            return False  # cheap, and must see every evaluation
        finished = RunFolder(self.output_dir).finished(self.kind)
        if finished and self.kind != "evaluate":
            self._check_settings()
        return finished

    def _check_settings(self) -> None:
        """A finished run is reused only if it ran with this job's settings: one left from a
        protocol whose settings have changed since is refused, never silently reported."""
        import yaml

        saved = RunFolder(self.output_dir).config
        if not saved.is_file():
            return
        now = _validation_rule(flatten(to_dict(load_config(ExperimentConfig, self.argv[1],
                                                            self.argv[2:]))))
        before = _validation_rule(flatten(yaml.safe_load(saved.read_text()) or {}))
        unread = UNREAD.get(self.kind, ())   # settings this job never reads
        differ = setting_differences(
            before, now, same=lambda key: key.startswith(unread) or
            (key == "data.val_avoid" and _same_avoided(before, now)))
        if differ:
            more = "; ..." if len(differ) > 4 else ""
            raise ConfigError(f"{self.output_dir}: finished with other settings than this "
                              f"protocol's ({'; '.join(differ[:4])}{more}); remove it, or "
                              "give the protocol another output_dir")


def _validation_rule(flat: dict) -> dict:
    """``data.val_avoid`` as the forget sets validation avoids besides the run's own (what
    changes its rows), so a run saved before the key existed compares as avoiding none."""
    own = flat.get("data.forget_set")
    flat["data.val_avoid"] = sorted(set(flat.get("data.val_avoid") or []) - {own})
    return flat


def _same_avoided(before: dict, now: dict) -> bool:
    """Whether two runs' validation avoided the same patients (their forget set's and those of
    ``data.val_avoid``), e.g. nested forget sets {6%, 10%} and {10%}: the same rows, so a run of
    a protocol with fewer sizes is reused by one with more. False when a file cannot be read."""
    from forgetmi.config import DataConfig
    from forgetmi.data.formats import read_forget_set
    from forgetmi.errors import DataError

    def patients(flat: dict) -> set:
        data = DataConfig(root=flat.get("data.root"))
        files = [*flat["data.val_avoid"], *filter(None, [flat.get("data.forget_set")])]
        return set().union(*(set(read_forget_set(data.resolve(f))["subject_id"]) for f in files))

    try:
        return patients(before) == patients(now)
    except (DataError, OSError):
        return False


def load_protocol(path: str | Path) -> Protocol:
    from forgetmi.shipped import locate

    path = locate(path)   # its experiment and presets files: beside it
    values = read_yaml(path, "protocol file")
    if "base_dir" in values:
        raise ConfigError(f"{path}: 'base_dir' is not a protocol key: relative paths resolve from "
                          "the protocol file's folder")
    if "experiment" not in values:
        raise ConfigError(f"{path}: 'experiment' (the base experiment YAML) is required")
    if isinstance(values.get("methods"), str):  # a presets file (configs/presets/*.yaml)
        presets = Path(values["methods"])
        presets = presets if presets.is_absolute() else path.parent / presets
        values["methods"] = read_yaml(presets, "presets file")
    for key in ("train", "unlearn", "methods", "forget_sets", "evaluate", "stand_in", "data"):
        if not isinstance(values.get(key, {}), dict):
            raise ConfigError(f"{path}: '{key}' must be a mapping")
    # No methods: the original and retrained models only (the references a sweep tunes against).
    for name, settings in values.get("methods", {}).items():
        if not isinstance(settings, dict) or "method" not in settings:
            raise ConfigError(f"{path}: methods.{name} must be a mapping with a 'method'")
    unknown = sorted(set(values.get("stand_in", {})) - set(STAND_IN))
    if unknown:
        raise ConfigError(f"{path}: unknown stand_in key(s) {', '.join(unknown)}; known: "
                          f"{', '.join(sorted(STAND_IN))}")
    _check_evaluate(values.get("evaluate", {}), path)
    values["forget_sets"] = {str(k): str(v) for k, v in values.get("forget_sets", {}).items()}
    values["base_dir"] = str(path.parent)
    return from_dict(Protocol, values, path, what="protocol")


def _check_evaluate(settings: dict, path: Path) -> None:
    """A protocol's ``evaluate`` block: known keys, each a positive integer."""
    from forgetmi.config import unknown_keys_message

    unknown = sorted(set(settings) - set(EVALUATE))
    if unknown:
        message = unknown_keys_message(unknown, EVALUATE, "evaluate.", "evaluate")
        raise ConfigError(f"{path}: {message}; a protocol's evaluate takes "
                          f"{', '.join(EVALUATE)}")
    for key, value in settings.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{path}: evaluate.{key}: expected a positive integer, got "
                              f"{value!r}")


def _evaluate_arguments(settings: dict) -> list[str]:
    """``forgetmi evaluate``'s options for a protocol's ``evaluate`` block."""
    return [f"{EVALUATE[key]}={value}" for key, value in settings.items()]


def _experiment_path(protocol: Protocol) -> Path:
    experiment = Path(protocol.experiment)
    return experiment if experiment.is_absolute() else Path(protocol.base_dir) / experiment


def _stand_in_plan(protocol: Protocol, extra: list[str] | None = None) -> tuple | None:
    """What :func:`ensure_stand_in` would do: None without ``stand_in``, else ``(root,
    settings)`` to generate, with settings None when the same dataset is already there.
    Refuses, writing nothing, a folder holding other data or a stand-in generated with other
    settings."""
    from forgetmi.synthetic import parameter_differences
    from forgetmi.synthetic.cohort import LABEL_NOISE_SD, TEST_ROW_FRACTION

    if not protocol.stand_in:
        return None
    settings = {**STAND_IN, **protocol.stand_in}
    settings["test_fraction"] = settings["test_fraction"] or TEST_ROW_FRACTION
    settings["label_noise"] = (LABEL_NOISE_SD if settings["label_noise"] is None
                               else settings["label_noise"])
    cfg = load_config(ExperimentConfig, _experiment_path(protocol),
                      [*_data_overrides(protocol), *(extra or [])])
    root = Path(cfg.data.root)
    try:
        wanted = {"n_patients": int(settings["patients"]),
                  "image_size": int(settings["image_size"]), "seed": int(settings["seed"]),
                  "test_fraction": float(settings["test_fraction"]),
                  "label_noise": float(settings["label_noise"]),
                  "atypical": float(settings["atypical"] or 0.0)}
        workers = int(settings["workers"])
    except (TypeError, ValueError) as err:
        raise ConfigError(f"protocol stand_in: expected numbers ({err})") from None
    differ = parameter_differences(root, **wanted)
    if differ == []:
        return root, None
    if differ:
        raise ConfigError(f"{root}: holds a stand-in dataset generated with other settings "
                          f"({', '.join(differ)}); remove it, or set data.root to another folder")
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ConfigError(f"{root}: exists and is not a stand-in dataset (no manifest.json); "
                          "the protocol's stand_in would replace it: set data.root elsewhere")
    return root, {**wanted, "workers": workers}


def ensure_stand_in(protocol: Protocol, extra: list[str] | None = None) -> None:
    """Generate the protocol's stand-in dataset into the experiment's ``data.root``, unless a
    dataset generated with the same settings is already there. Refuses to replace anything else:
    a folder holding other data, or a stand-in generated with other settings."""
    from forgetmi.synthetic import generate_dataset

    plan = _stand_in_plan(protocol, extra)
    if plan is None:
        return
    root, settings = plan
    if settings is None:
        logger.info("stand-in data: reusing %s", root)
        return
    try:
        generate_dataset(root, overwrite=root.exists(), **settings)
    except ValueError as err:
        raise ConfigError(f"protocol stand_in: {err}") from None


def _data_overrides(protocol: Protocol) -> list[str]:
    """The protocol's ``data`` block as overrides; a relative ``root`` resolves like the
    experiment's own (from where the command runs), so the protocol file reads the same."""
    return as_overrides({f"data.{key}": value for key, value in protocol.data.items()})


# The data files every training or unlearning job reads (DataConfig fields; None: not used).
DATA_FILES = ("split", "reports", "forget_set", "holdout", "exclude")


def check_protocol(protocol: Protocol, jobs: list[Job], source: str | Path,
                   extra: list[str] | None = None) -> None:
    """Everything a run of the protocol would refuse, refused now, writing nothing: unknown
    methods, data files missing under ``data.root`` (unless the stand-in is still to be
    generated there), the stand-in's settings, and finished runs of other settings."""
    from forgetmi.unlearning import METHODS

    for name, settings in protocol.methods.items():
        method = str(settings["method"])
        if method not in METHODS:
            import difflib
            close = difflib.get_close_matches(method, sorted(METHODS), n=1, cutoff=0.5)
            hint = f"did you mean {close[0]}?" if close else f"known: {', '.join(sorted(METHODS))}"
            raise ConfigError(f"{source}: methods.{name}: unknown method {method!r} ({hint})")
    plan = _stand_in_plan(protocol, extra)
    if plan is None or plan[1] is None:  # the data is there, not still to be generated
        _check_data_files(jobs, source)
    for job in jobs:
        job.done()  # a finished run of other settings is refused, not reused


def _check_data_files(jobs: list[Job], source: str | Path) -> None:
    """The first data file a job would not find, with how many jobs read it."""
    missing: dict[tuple[str, Path], list[str]] = {}
    for job in jobs:
        if job.kind not in ("train", "retrain", "unlearn"):
            continue
        data = load_config(ExperimentConfig, job.argv[1], job.argv[2:]).data
        paths = [(f"data.{key}", data.path(key)) for key in DATA_FILES]
        paths += [("data.val_avoid", data.resolve(p)) for p in data.val_avoid]
        for key, path in paths:
            if path is not None and not path.is_file():
                missing.setdefault((key, path), []).append(job.name)
    if missing:
        (key, path), names = next(iter(missing.items()))
        raise ConfigError(f"{path}: file not found ({key} of {len(names)} job(s), first "
                          f"{names[0]}); fix the protocol's forget_sets or the experiment's "
                          f"data.root, or pass --data.root=DIR")


def expand(protocol: Protocol, extra: list[str] | None = None) -> list[Job]:
    """Every job of the protocol, in dependency order; ``extra`` overrides apply to all runs."""
    experiment = _experiment_path(protocol)
    root = Path(protocol.output_dir)
    extra = [*_data_overrides(protocol), *(extra or [])]
    # Every run of the protocol is one W&B group, unless the protocol's settings say otherwise.
    group = f"--tracking.group={group_for('protocol', root)}"
    sizes = protocol.forget_sets or {"default": None}
    jobs: list[Job] = []
    models, evaluations = [], []

    def add(name, kind, stage, overrides, output_dir, after=()):
        argv = ["--config", str(experiment), group, *as_overrides(overrides), *extra,
                f"--output_dir={output_dir}"]
        if kind in ("train", "retrain", "unlearn"):
            try:  # validate now, not hours later on a cluster
                load_config(ExperimentConfig, argv[1], argv[2:])
            except ConfigError as err:
                raise ConfigError(f"protocol job {name}: {err}") from None
        jobs.append(Job(name, kind, stage, argv, Path(output_dir), list(after)))

    # Validation is carved outside every forget set the protocol names (data.val_avoid), so
    # the original's training rows are one set for all sizes: one original per seed serves them.
    listed = list(protocol.forget_sets.values())
    shared = {"val_avoid": listed} if listed else {}
    for seed in protocol.seeds:
        # Trained for no size in particular: every row but validation, holdout and TEST.
        untied = {"forget_set": None} if listed else {}
        add(f"original/s{seed}", "train", 0, {"seed": seed, **shared, **untied, **protocol.train},
            root / "original" / f"s{seed}")
        models.append(f"original/s{seed}")
    for size, forget in sizes.items():
        for seed in protocol.seeds:
            common = {"seed": seed, **shared, **({"forget_set": forget} if forget else {})}
            name = f"retrained/{size}/s{seed}"
            add(name, "retrain", 0, {**common, **protocol.train},
                root / "retrained" / size / f"s{seed}")
            models.append(name)
            original = root / "original" / f"s{seed}"
            for run, settings in protocol.methods.items():
                name = f"unlearn/{run}/{size}/s{seed}"
                add(name, "unlearn", 1,
                    {**common, **protocol.unlearn, **settings, "original": original / "model"},
                    root / run / size / f"s{seed}", after=[f"original/s{seed}"])
        # Every run of a size is scored against the retrained model of its seed, and its
        # calibrated attack against the retrained models of the other seeds; the shared original
        # is scored at each size, on that size's forget rows, into its own folder.
        peers = {seed: f"retrained/{size}/s{seed}" for seed in protocol.seeds}
        references = [str(root / name) for name in peers.values()]
        for seed in protocol.seeds:
            retrained = peers[seed]
            original = root / "original" / f"s{seed}"
            # (evaluation's name, model job, run folder, metrics folder, data overrides)
            scored_at = as_overrides({"forget_set": forget}) if forget else []
            runs = [(f"original/{size}/s{seed}", f"original/s{seed}", original,
                     original / "eval" / size, scored_at)]
            runs += [(j.name, j.name, j.output_dir, j.output_dir, []) for j in jobs
                     if j.stage < 2 and j.name.endswith(f"/{size}/s{seed}")]
            for label, model_job, run_dir, out, data in runs:
                name = f"evaluate/{label}"
                reference = [] if model_job == retrained else [
                    "--retrained", str(root / "retrained" / size / f"s{seed}")]
                calibration = ["--references", *references] if len(references) > 1 else []
                where = ["--out", str(out)] if out != run_dir else []
                jobs.append(Job(name, "evaluate", 2,
                                [str(run_dir), *reference, *calibration, *where, *data,
                                 *_evaluate_arguments(protocol.evaluate)],
                                out, after=sorted({model_job, *peers.values()})))
                evaluations.append(name)
    jobs.append(Job("report", "report", 3, [str(root), "--out", str(root / "report")],
                    root / "report", after=evaluations))
    logger.info("protocol: %d sizes × %d seeds × %d methods -> %d jobs", len(sizes),
                len(protocol.seeds), len(protocol.methods), len(jobs))
    return jobs


def run_local(jobs: list[Job]) -> int:
    """Run every job in dependency order in this process; stop at the first failure."""
    finished: set[str] = set()
    for job in jobs:
        missing = [a for a in job.after if a not in finished]
        if missing:
            raise RuntimeError(f"{job.name} listed before its dependencies {missing}")
        if job.done():
            logger.info("%s: already done", job.name)
        else:
            logger.info("%s: running", job.name)
            code = run_kind(job.kind, job.argv)
            if code != 0:
                logger.error("%s failed (exit %d); later jobs not run", job.name, code)
                return code
        finished.add(job.name)
    return 0


def submit_protocol(protocol_file: str | Path, hpc, extra: list[str]) -> dict:
    """The protocol's stages as dependent arrays: each held by Slurm until the one before has
    succeeded (``afterok``); jobs already done are left out. Writes ``pipeline.json``. Run here
    (``local``), a stage starts when the one before has ended, and one with a failed task stops
    the protocol there, after the manifest records every task's log."""
    from forgetmi.hpc.executor import require_executor, submit_array
    from forgetmi.hpc.local import failures, raise_failures
    from forgetmi.hpc.submit import array_ids, record_jobs, single_process
    from forgetmi.hpc.tasks import Task
    from forgetmi.utils.atomic import write_json

    require_executor(hpc)
    protocol = load_protocol(protocol_file)
    jobs = expand(protocol, extra)
    out = Path(protocol.output_dir)
    entries, previous_ids, failed, total = [], [], [], 0
    for stage in sorted({j.stage for j in jobs}):
        staged = [(j, j.done()) for j in jobs if j.stage == stage]   # each run's folder read once
        tasks = [Task(j.name, JOBS[j.kind].target, j.argv, str(j.output_dir),
                      hpc.accelerate_config if j.stage < 2 else None)
                 for j, done in staged if not done]
        stage_hpc = hpc if stage < 2 else single_process(hpc)
        submitted = submit_array(stage_hpc, tasks, out / "slurm", f"{Path(protocol_file).stem}-"
                                 f"stage{stage}", after=previous_ids or None)
        stage_entries = [{"name": j.name, "kind": j.kind, "output_dir": str(j.output_dir),
                          "stage": stage, "job_id": None, "log": None,
                          "state": "done" if done else None}
                         for j, done in staged]
        record_jobs(stage_hpc, stage_entries, tasks, submitted)
        entries += stage_entries
        previous_ids = array_ids(hpc, submitted) or previous_ids
        failed, total = failures(submitted), len(tasks)
        if failed:  # as afterok would: the stages after a failed task do not start
            break
    manifest = {"kind": "pipeline", "protocol": str(Path(protocol_file).resolve()),
                "executor": hpc.executor, "tasks": entries}
    write_json(out / "pipeline.json", manifest)
    raise_failures(failed, total)
    return manifest


@exit_on_error
def main(argv: list[str] | None = None) -> int:
    """``forgetmi protocol FILE [--dry-run] [--executor slurm|local|debug [--jobs N] ...]
    [--key=value ...]``; without ``--executor`` the jobs run in this process, in order."""
    from forgetmi.errors import ForgetMIError
    from forgetmi.hpc.executor import require_executor
    from forgetmi.hpc.submit import add_hpc_arguments, hpc_from_args, require_executor_flag

    parser = argparse.ArgumentParser(prog="forgetmi protocol", description=__doc__.splitlines()[0])
    parser.add_argument("file", help="protocol YAML (configs/experiments/paper.yaml)")
    parser.add_argument("--dry-run", action="store_true", help="list the jobs, run nothing")
    add_hpc_arguments(parser)
    args, extra = parser.parse_known_args(argv)
    if args.jobs is not None and not args.executor:
        raise ForgetMIError("--jobs N runs tasks side by side with --executor local; add it "
                            "(without --executor the jobs run one by one in this process)")
    require_executor_flag(args)
    hpc = hpc_from_args(args) if args.executor else None
    if hpc is not None:
        require_executor(hpc)  # before the stand-in data or any run folder is made
    protocol = load_protocol(args.file)
    jobs = expand(protocol, extra)
    # What a run would refuse, refused before anything is listed, generated or submitted.
    check_protocol(protocol, jobs, args.file, extra)
    if args.dry_run:
        for job in jobs:
            after = (", ".join(job.after) if len(job.after) <= 3
                     else f"{len(job.after)} jobs") or "—"
            logger.info("%-48s %-8s after %s", job.name, job.kind, after)
        return 0
    ensure_stand_in(protocol, extra)  # once, here, before any job or task starts
    if hpc is not None:  # dependent arrays (slurm) or child processes
        manifest = submit_protocol(args.file, hpc, extra)
        logger.info("%d job(s) in %s; `forgetmi status` on the protocol's output folder shows "
                    "them", len(manifest["tasks"]), manifest["protocol"])
        return 0
    return run_local(jobs)
