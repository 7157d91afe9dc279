"""The public Forget-MI release's sweep names, translated to forgetmi's config keys.

The release's W&B sweep (``program: training/forgetmi_partial.py``) names its settings after its
own argparse flags. A sweep written with them runs unchanged: each run's parameters are
translated here before the config is built, and every release key is either mapped to a
forgetmi key or reported once as ignored, with the reason. The core config knows only
forgetmi's own names; ``forgetmi convert-sweep`` writes the translated file for good.
"""

from __future__ import annotations

import logging
import re
from pathlib import PurePosixPath

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
# use_noise=false: the release feeds the clean forget set and negates UU and MU (maximised).
NOISE = "use_noise"
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
COMMAND_ONLY = "named only by the sweep's command, never set by its parameters"
# The release's ReduceLROnPlateau was never stepped, so its rate stayed constant.
SCHEDULERS = {"reducelronplateau": "constant", "constant": "constant", "linear": "linear",
              "cosine": "cosine"}


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
    if key == "scheduler":
        if str(value).lower() not in SCHEDULERS:
            raise ConfigError(f"scheduler: expected one of ReduceLROnPlateau, "
                              f"{', '.join(sorted(set(SCHEDULERS.values())))}, got {value!r}")
        return SCHEDULERS[str(value).lower()]
    return value


def noise_settings(use_noise) -> dict:
    """The forgetmi keys the release's use_noise stands for."""
    on = _bool(NOISE, use_noise)
    return {"noise.use_image": on, "noise.use_text": on,
            "unlearn.objective": "pull" if on else "push"}


def translate(params: dict, release_program: bool) -> tuple[dict, dict[str, str], str | None]:
    """One run's concrete parameters in forgetmi's names: ``(params, ignored, retrained)``.

    Under a forgetmi program only names forgetmi does not know (alpha, use_noise, ...) are
    translated; ``scheduler`` or ``output_dir`` keep forgetmi's meaning there.
    """
    from forgetmi.config import ExperimentConfig, known_keys

    own = known_keys(ExperimentConfig)
    out: dict = {}
    ignored: dict[str, str] = {}
    retrained = None
    weights: dict[int, float] = {}
    for key, value in params.items():
        if not release_program and key in own:
            out[key] = value
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


def for_launch(program: str, argv: list[str]) -> tuple[str, list[str]]:
    """A ``wandb agent`` command line in forgetmi's terms: the release's program becomes
    ``launch/unlearn.py`` and release names become forgetmi keys (others pass untouched)."""
    from forgetmi.config import ExperimentConfig, known_keys

    is_release = is_release_program(program)
    params, rest = args_to_params(argv)
    own = known_keys(ExperimentConfig)
    if not is_release and not any(is_release_key(k) and k not in own for k in params):
        return program, list(argv)
    translated, ignored, retrained = translate(params, is_release)
    if is_release:   # its bare flags (--do_train, --overwrite_output_dir) mean nothing here
        ignored.update({r[2:]: IGNORED.get(r[2:], COMMAND_ONLY) for r in rest
                        if r.startswith("--")})
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
