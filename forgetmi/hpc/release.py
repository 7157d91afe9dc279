"""The public Forget-MI release's sweep names, translated to forgetmi's config keys.

The release's W&B sweep (``program: training/forgetmi_partial.py``) names its settings after its
own argparse flags. A sweep written with them runs unchanged: each run's parameters are
translated here before the config is built, and every release key is either mapped to a
forgetmi key or reported once as ignored, with the reason. A setting forgetmi cannot honour is
refused in one line rather than replaced by something else. The core config knows only
forgetmi's own names; ``forgetmi convert-sweep`` writes the translated file for good.

The release's program read its settings from ``wandb.config``, never from its command line
(whose ``--key=${key}`` items ``wandb agent`` leaves unfilled): under an agent its run's
parameters are read from the file W&B writes for the run (``WANDB_SWEEP_PARAM_PATH``), so the
file gives the same runs offline, under ``wandb agent`` and converted. What the program always
did, whatever its parameters (2048² crops, a perturbed noisy copy, the retention hinge, every
retain row used), is set for each of its runs (:data:`RELEASE_SETTINGS`).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path, PurePosixPath

from forgetmi.config import ConfigError

logger = logging.getLogger("forgetmi.hpc")

# The release's unlearning script under the names its sweep files have used for it.
RELEASE_PROGRAMS = ("forgetmi_partial.py", "forgetme_partial.py")

# Release key -> forgetmi key (dotted, so it is never ambiguous).
RENAMES = {
    "base_model_path": "unlearn.original",
    "original_model_path": "unlearn.original",
    "forget_set_path": "data.forget_set",
    "data_split_path": "data.split",
    "img_data_dir": "data.img_dir",
    "text_data_dir": "data.reports",
    "synonyms_dir": "data.synonyms",
    "max_seq_length": "data.max_length",
    "validation_ratio": "data.val_fraction",
    "bert_pretrained_dir": "model.text_encoder",
    "random_seed": "seed",
    "noise_mean": "noise.image_mean",
    "noise_std": "noise.image_std",
    "text_noise": "noise.text_level",
    "text_noise_level": "noise.text_level",
    "unlearn_epochs": "train.epochs",
    "unlearn_batch_size": "train.batch_size",
    "eval_batch_size": "train.eval_batch_size",
    "learning_rate": "train.lr",
    "weight_decay": "train.weight_decay",
    "scheduler": "train.scheduler",
    "warmup_proportion": "train.warmup_ratio",
    "num_cpu_workers": "train.num_workers",
    "logging_steps": "train.log_every",
    "project": "tracking.project",
    "entity": "tracking.entity",
}
# alpha/beta/theta/gamma weight UR/UU/MU/MR (SPEC §4): their index in unlearn.weights
# (UU, UR, MU, MR).
WEIGHTS = {"beta": 0, "alpha": 1, "theta": 2, "gamma": 3}
# use_noise only chooses the sign of UU and MU (false: negated, maximised); the release perturbs
# its noisy copy (image sigma, text noise) either way.
NOISE = "use_noise"
# What the release's program did whatever its parameters: set for each of its runs, before its
# translated parameters (which never name these keys, save validation_ratio: the same 0).
RELEASE_SETTINGS = {
    # RandomTranslateCrop(2048) with its shift disabled: pad 4 px, centre-crop 2048², no resize.
    "data.image_size": 2048,
    "data.crop_size": 2048,
    # Its validation rows were carved, then folded back into retain, and never used.
    "data.val_fraction": 0.0,
    # The noisy copy is always perturbed (use_noise flips a sign, nothing else).
    "noise.use_image": True,
    "noise.use_text": True,
    # Its hinge, always on: each retention loss capped after epoch 0 at its epoch-0 value + 1.
    "unlearn.retention_cap": 1.0,
}
# Not the evaluation's input but its reference: each run scores itself against it
# (evaluate.retrained), as the sweep's --retrained would.
RETRAINED = "retrained_model_path"

IGNORED = {
    "do_train": "forgetmi unlearn always trains",
    "do_eval": "evaluation is its own step (forgetmi evaluate, or forgetmi sweep --retrained)",
    "overwrite_output_dir": "runs resume from their checkpoint instead",
    "output_dir": "each sweep run gets its own folder",
    "output_channel_encoding": "the heads are always multiclass",
    "random_point_ratio": "forget sets are patient-level files (forget_set_path)",
    "random_model_path": "the release's random-model baseline is not part of unlearning",
    "reprocess_input_data": "the caches rebuild when their inputs change",
    "bert_pool_last_hidden": "the text encoder pools as the trained model does",
    "bert_pool_use_img": "the text encoder pools as the trained model does",
    "bert_pool_img_lowerlevel": "the text encoder pools as the trained model does",
    "id": "run names come from the sweep",
    "use_text_data_dir": "text_data_dir is always used",
    "use_data_split_path": "data_split_path is always used",
    "training_mode": "training is supervised",
    "semisupervised_training_data": "training is supervised",
    "use_masked_txt": "reports are perturbed by the noise settings only",
    "use_all_data": "the partitions come from the split and the forget set",
    "use_pretrained_checkpoint": "the model is base_model_path",
    "print_predictions": "predictions are scored by forgetmi evaluate",
    "print_embeddings": "not recorded",
    "save_epochs": "checkpoints are saved every train.checkpoint_every steps",
}
# Release settings forgetmi honours at one value only: any other is refused, not run otherwise.
HONOURED_ONLY = {
    "output_channel_encoding": ("multiclass", "forgetmi's heads score the 4 grades as classes"),
    "bert_pool_last_hidden": (False, "the text embedding is BERT's pooled [CLS] output"),
    "bert_pool_use_img": (False, "the text embedding is BERT's pooled [CLS] output"),
    "bert_pool_img_lowerlevel": (False, "the text embedding is BERT's pooled [CLS] output"),
}
# What changed in meaning on the way, per release key (the comments convert-sweep writes).
SCHEDULE = ("the release stepped AdamW once per epoch on the gradients summed over the epoch's "
            "batches and not at all in epoch 0 (unlearn_epochs 30 = 29 updates), with no "
            "clipping (its clip never ran) and BatchNorm in train mode in both models; forgetmi "
            "steps every train.grad_accum batches (1), clips at train.max_grad_norm and keeps "
            "BatchNorm frozen, so the same rate moves the weights about as many times further "
            "per epoch as an epoch has batches: a different schedule, retune it")
NOTES = {
    "base_model_path": "a forgetmi model folder: convert the release's (config.json + "
                       "pytorch_model.bin) once with `forgetmi import-checkpoint SRC DST` and "
                       "give DST",
    "original_model_path": "as base_model_path",
    "learning_rate": SCHEDULE,
    "unlearn_epochs": "one pass over the forget set in both (the release's zip stopped there "
                      "too); the release's first epoch made no update (see learning_rate)",
    "unlearn_batch_size": "per process here; the retain stream draws batches of the same size",
    "scheduler": "the release's ReduceLROnPlateau was never stepped: a constant rate",
    "warmup_proportion": "no effect under a constant rate, as in the release (it had no warm-up)",
    "validation_ratio": "0: the release carved a validation split, folded it back into retain "
                        "and never used it; every retain row is used, no epoch is validated and "
                        "the model is the last epoch's",
    NOISE: "true: pull, false: push (UU and MU maximised); the noisy copy is perturbed either "
           "way (noise_mean, noise_std, text_noise_level apply), as in the release",
    "noise_std": "the same sigma: images are 2048² crops here too (data.image_size), the noise "
                 "added after the crop instead of before",
    "text_noise_level": "the same level; the noisy reports are drawn per run seed (the release "
                        "drew them once, unseeded, into its feature cache)",
    "alpha, beta, theta, gamma": "normalised to sum 1 (the release also rounded each to 2 "
                                 "decimals: 1,1,2,2 gave .17/.33 there, 1/6 and 1/3 here)",
    RETRAINED: "each run scores itself against it when it ends (the release compared the "
               "unlearned model with it inside every epoch)",
}
# Why each of RELEASE_SETTINGS is set (the converted file's comments).
SETTING_NOTES = {
    "data.image_size": "the release's 2048² crops (pad 4 px, centre-crop, no resize)",
    "data.crop_size": "the release's 2048² crops (pad 4 px, centre-crop, no resize)",
    "data.val_fraction": "every retain row used, as the release did (see validation_ratio)",
    "noise.use_image": "the release always perturbed the noisy copy",
    "noise.use_text": "the release always perturbed the noisy copy",
    "unlearn.retention_cap": "the release's hinge, always on: after epoch 0 each retention loss "
                             "is capped at its epoch-0 value + 1 (the last batch's there, the "
                             "epoch mean here)",
}
COMMAND_ONLY = "named only by the sweep's command, never set by its parameters"
# The release's ReduceLROnPlateau was never stepped, so its rate stayed constant.
SCHEDULERS = {"reducelronplateau": "constant", "constant": "constant", "linear": "linear",
              "cosine": "cosine"}


def runs_each_combination_once(config: dict) -> bool:
    """Whether a sweep is the release's kind of file: ``random`` over finite values without
    ``run_cap`` (an agent drew from it until stopped). Offline it runs each combination once,
    as a grid, and convert-sweep writes it as one."""
    parameters = config.get("parameters") or {}
    return config.get("method") == "random" and not config.get("run_cap") and all(
        isinstance(p, dict) and ("value" in p or "values" in p) for p in parameters.values())


def is_release_program(program: str) -> bool:
    return PurePosixPath(str(program)).name in RELEASE_PROGRAMS


def is_release_key(key: str) -> bool:
    return key in RENAMES or key in WEIGHTS or key in (NOISE, RETRAINED) or key in IGNORED


def _bool(key: str, value) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ConfigError(f"{key}: expected true/false, got {value!r}")


def convert_value(key: str, value):
    """A release value as forgetmi reads it (same value where the meaning is the same)."""
    if key == "text_data_dir" and value is not None and not str(value).endswith((".tsv", ".csv")):
        return str(PurePosixPath(str(value)) / "all_data.tsv")   # the folder holds all_data.tsv
    if key == "validation_ratio":
        return 0.0   # the release folded its validation rows back into retain (RELEASE_SETTINGS)
    if key == "scheduler":
        if str(value).lower() not in SCHEDULERS:
            raise ConfigError(f"scheduler: expected one of ReduceLROnPlateau, "
                              f"{', '.join(sorted(set(SCHEDULERS.values())))}, got {value!r}")
        return SCHEDULERS[str(value).lower()]
    return value


def objective(use_noise) -> str:
    """The release's use_noise as forgetmi's objective: true pulls UU and MU, false pushes."""
    return "pull" if _bool(NOISE, use_noise) else "push"


def noise_settings(use_noise) -> dict:
    """The forgetmi keys the release's use_noise stands for: the sign of UU and MU, with the
    noisy copy perturbed either way (noise_mean, noise_std and text_noise_level apply)."""
    return {"noise.use_image": True, "noise.use_text": True,
            "unlearn.objective": objective(use_noise)}


def check_honoured(key: str, value) -> None:
    """Refuse a value of a :data:`HONOURED_ONLY` key that forgetmi cannot run as the release did."""
    wanted, why = HONOURED_ONLY[key]
    same = _bool(key, value) == wanted if isinstance(wanted, bool) else \
        str(value).strip().lower() == wanted
    if not same:
        raise ConfigError(f"{key}: {value!r} cannot be honoured ({why}); remove the key or set "
                          f"it to {str(wanted).lower()}")


def translate(params: dict, release_program: bool) -> tuple[dict, dict[str, str], str | None]:
    """One run's concrete parameters in forgetmi's names: ``(params, ignored, retrained)``.

    Under a forgetmi program only names forgetmi does not know (alpha, use_noise, ...) are
    translated; ``scheduler`` or ``output_dir`` keep forgetmi's meaning there.
    """
    from forgetmi.config import ExperimentConfig, known_keys

    own = known_keys(ExperimentConfig)
    out: dict = dict(RELEASE_SETTINGS) if release_program else {}
    ignored: dict[str, str] = {}
    retrained = None
    weights: dict[int, float] = {}
    for key, value in params.items():
        if not release_program and key in own:
            out[key] = value
        elif key in HONOURED_ONLY:
            check_honoured(key, value)
            ignored[key] = IGNORED[key]
        elif key in WEIGHTS:
            weights[WEIGHTS[key]] = value
        elif key == NOISE:
            out.update(noise_settings(value))
        elif key == RETRAINED:
            retrained = None if value is None else str(value)
            if retrained is not None:   # each run scores itself against it when it ends
                out["evaluate.retrained"] = retrained
        elif key in RENAMES:
            out[RENAMES[key]] = convert_value(key, value)
        elif key in IGNORED:
            ignored[key] = IGNORED[key]
        else:
            out[key] = value   # forgetmi's own name, or an error the config names
    if weights:
        missing = sorted(k for k, i in WEIGHTS.items() if i not in weights)
        if missing:
            raise ConfigError(f"{', '.join(missing)}: the release's loss weights come as a set "
                              "(alpha, beta, theta, gamma); give all four")
        out["unlearn.weights"] = [weights[i] for i in range(4)]
    return out, ignored, retrained


def command_references(command: list) -> set[str]:
    """Keys a sweep's command names as ``${key}`` (W&B macros such as ${args} excluded)."""
    macros = {"env", "interpreter", "program", "args", "args_no_hyphens", "args_json",
              "args_json_file", "args_no_boolean_flags"}
    names = set()
    for item in command or []:
        for name in re.findall(r"\$\{([^}:]+)\}", str(item)):
            if name not in macros:
                names.add(name)
    return names


def command_flags(command: list) -> set[str]:
    """Bare ``--flag`` items of a command (the release's --do_train, --overwrite_output_dir)."""
    return {str(c)[2:] for c in command or [] if str(c).startswith("--") and "=" not in str(c)}


def unused_command_keys(config: dict) -> dict[str, str]:
    """What the command names that no parameter sets: reported, never an error."""
    parameters = config.get("parameters") or {}
    names = (command_references(config.get("command")) | command_flags(config.get("command")))
    return {n: IGNORED.get(n, COMMAND_ONLY) for n in sorted(names - set(parameters))}


def log_ignored(path, ignored: dict[str, str]) -> None:
    """One line for the whole sweep: what was dropped and why."""
    if ignored:
        logger.info("%s: release keys ignored: %s", path,
                    "; ".join(f"{k} ({why})" for k, why in sorted(ignored.items())))


def args_to_params(argv: list[str]) -> tuple[dict, list[str]]:
    """``--key=value`` items as a dict (last wins), and the items that are not of that form."""
    params, rest = {}, []
    for item in argv:
        if item.startswith("--") and "=" in item:
            key, value = item[2:].split("=", 1)
            params[key.replace("-", "_")] = value
        else:
            rest.append(item)
    return params, rest


# Where `wandb agent` writes a run's parameters for the program it starts (wandb.config reads
# them from there).
AGENT_PARAMETERS = "WANDB_SWEEP_PARAM_PATH"


def agent_parameters(environ=None) -> dict:
    """The run's parameters as ``wandb agent`` wrote them for the program it starts (the file
    named by ``WANDB_SWEEP_PARAM_PATH``: ``key: {value: v}``); empty when not under an agent."""
    import yaml

    environ = os.environ if environ is None else environ
    name = environ.get(AGENT_PARAMETERS)
    if not name:
        return {}
    path = Path(name)
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"{AGENT_PARAMETERS}={path}: unreadable ({type(err).__name__}); it holds "
                          "the run's parameters, which the release read from wandb.config") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{AGENT_PARAMETERS}={path}: expected the run's parameters as a mapping")
    return {key: spec["value"] if isinstance(spec, dict) and "value" in spec else spec
            for key, spec in values.items()
            if key != "wandb_version" and not str(key).startswith("_")}


def for_launch(program: str, argv: list[str], environ=None) -> tuple[str, list[str]]:
    """A ``wandb agent`` command line in forgetmi's terms: the release's program becomes
    ``launch/unlearn.py`` and release names become forgetmi keys (others pass untouched).

    The release's program took its settings from ``wandb.config``: its run's parameters come
    from the agent's file for the run, over its command line, whose ``--key=${key}`` items the
    agent leaves unfilled (W&B fills only an item that is a macro as a whole)."""
    from forgetmi.config import ExperimentConfig, known_keys

    is_release = is_release_program(program)
    params, rest = args_to_params(argv)
    own = known_keys(ExperimentConfig)
    if not is_release and not any(is_release_key(k) and k not in own for k in params):
        return program, list(argv)
    unfilled = set()
    if is_release:
        unfilled = {k for k, v in params.items() if "${" in str(v)}
        params = {k: v for k, v in params.items() if k not in unfilled}
        run = agent_parameters(environ)
        unknown = sorted(k for k in unfilled if k not in IGNORED)
        if unknown and not run:
            raise ConfigError(f"--{unknown[0]}=${{{unknown[0]}}}: a macro no agent filled, and no "
                              f"run parameters to read it from ({AGENT_PARAMETERS} is unset); run "
                              "the release's file with `wandb agent` or `forgetmi sweep`")
        if run:
            logger.info("%s: the run's %d parameter(s) read from %s, as the release read them "
                        "(wandb.config)", program, len(run), AGENT_PARAMETERS)
        params.update(run)
    translated, ignored, retrained = translate(params, is_release)
    if is_release:   # its bare flags (--do_train, --overwrite_output_dir) mean nothing here,
        # nor do the command's macros that no parameter fills (${random_model_path})
        named = [r[2:] for r in rest if r.startswith("--")] + sorted(unfilled - set(params))
        ignored.update({name: IGNORED.get(name, COMMAND_ONLY) for name in named})
        rest = []
    log_ignored(program, ignored)
    if retrained:
        logger.info("retrained_model_path %s: each run scores itself against it "
                    "(evaluate.retrained)", retrained)
    return ("launch/unlearn.py" if is_release else program,
            [*rest, *(f"--{k}={_text(v)}" for k, v in translated.items())])


def _text(value) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(str(v) for v in value) + "]"
    return str(value)
