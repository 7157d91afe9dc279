"""What a model was trained with, and making a job's data settings agree with it.

A model folder records where its weights come from (``origin``), the image preprocessing they
learned on and their tokenizer (:class:`~forgetmi.config.ModelConfig`). Evaluating or
unlearning a model must feed it exactly that, so :func:`align_with_model` reads the record and
sets ``data.preprocessing`` and ``model.text_encoder`` from it; a config that contradicts the
record is refused rather than silently scoring the model on inputs it never saw.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import replace
from pathlib import Path

from transformers import BertConfig

from forgetmi.errors import ForgetMIError
from forgetmi.config import ConfigError, ModelConfig
from forgetmi.models.joint import RELEASE_IMAGE_SIZE

logger = logging.getLogger("forgetmi.models")


class ProvenanceError(ForgetMIError):
    """A model and the data or tokenizer it is given do not belong together."""


def read_model_record(directory: str | os.PathLike) -> tuple[ModelConfig, BertConfig]:
    """The model and BERT configs of a saved model folder, without loading its weights."""
    from forgetmi.models.joint import CONFIG_NAME, release_folder_advice

    advice = release_folder_advice(directory)
    if advice:
        raise ProvenanceError(advice)
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise ForgetMIError(f"{directory}: no {CONFIG_NAME}; expected a model folder written by "
                            "forgetmi (training, unlearning or import-checkpoint)")
    try:
        meta = json.loads(path.read_text())
        return ModelConfig(**meta["forgetmi_model"]), BertConfig(**meta["bert"])
    except (ValueError, KeyError, TypeError) as err:
        raise ForgetMIError(f"{path}: not a forgetmi model config ({err})") from None
    except ConfigError as err:  # a value no model of this package can have
        raise ProvenanceError(f"{path}: {err}") from None


def weights_layout(directory: str | os.PathLike) -> dict:
    """The label count and image stage widths the saved weights have, read off the tensors'
    shapes in the file's header (no tensor is loaded): ``{"num_labels": .., "image_widths":
    [..]}``, each absent when the file lacks the tensor that shows it."""
    from safetensors import safe_open

    from forgetmi.models.joint import WEIGHTS_NAME

    path = Path(directory) / WEIGHTS_NAME
    try:
        with safe_open(str(path), framework="pt") as weights:
            shapes = {k: tuple(weights.get_slice(k).get_shape()) for k in weights.keys()}
    except Exception as err:  # safetensors raises its own error types for damaged files
        reason = str(err).splitlines()[0][:80] if str(err) else type(err).__name__
        raise ForgetMIError(f"{path}: unreadable or truncated weights ({reason})") from None
    layout: dict = {}
    widths = []
    while (shape := shapes.get(f"img_model.layer{len(widths) + 1}.0.conv1.weight")):
        widths.append(shape[0])
    if widths:
        layout["image_widths"] = widths
    for head in ("joint_head.weight", "img_model.fc1.weight", "text_model.classifier.weight"):
        if head in shapes:
            layout["num_labels"] = shapes[head][0]
            break
    return layout


def check_model_layout(cfg, model_dir: str | os.PathLike, record: ModelConfig) -> None:
    """Refuse, before any step, a model folder whose config.json and weights disagree, and a
    model with another number of labels than the config's (``model.num_labels``): the heads
    would meet labels they have no output for."""
    found = weights_layout(model_dir)
    for key in ("num_labels", "image_widths"):
        recorded = getattr(record, key)
        if key in found and found[key] != recorded:
            raise ProvenanceError(f"{model_dir}: config.json says {key} {recorded} but the "
                                  f"weights have {found[key]}; the two come from different "
                                  "models: restore the config.json saved with these weights")
    if record.num_labels != cfg.model.num_labels:
        raise ProvenanceError(f"{model_dir}: the model has {record.num_labels} labels but "
                              f"model.num_labels is {cfg.model.num_labels}; use a model trained "
                              f"with {cfg.model.num_labels} labels, or set "
                              f"--model.num_labels={record.num_labels} if that is what you meant")


def _follow_architecture(cfg, record: ModelConfig, model_dir):
    """``cfg.model`` with the model's image widths and pool: the architecture is the saved
    model's, so the saved config tells the truth. A config that names other widths than the
    default (so meant them) and other than the model's is refused."""
    default = ModelConfig()
    for key in ("image_widths", "image_pool"):
        given, recorded = getattr(cfg.model, key), getattr(record, key)
        if given != recorded and given != getattr(default, key):
            raise ProvenanceError(f"{model_dir}: the model has {key} {recorded} but the config "
                                  f"gives {given}; drop --model.{key} (a saved model's "
                                  "architecture is its own)")
    return replace(cfg, model=replace(cfg.model, image_widths=list(record.image_widths),
                                      image_pool=record.image_pool))


def tokenizer_folder(text_encoder: str | None) -> Path:
    """The folder whose tokenizer goes with ``model.text_encoder`` (None/tiny: packaged MiniLM)."""
    from forgetmi.data.text import default_text_encoder_path

    if text_encoder in (None, "", "tiny"):
        return default_text_encoder_path()
    return Path(os.path.expanduser(text_encoder))


def check_tokenizer_vocab(text_encoder: str | None, rows: int, source) -> int:
    """Refuse a tokenizer whose vocabulary does not match the ``rows`` of the word embeddings.

    Token ids index the embedding table: another vocabulary of another size cannot be the one
    the weights learned, and feeding it would silently produce nonsense. Returns the size.
    """
    from forgetmi.data.text import load_tokenizer

    folder = tokenizer_folder(text_encoder)
    size = len(load_tokenizer(folder))
    if size != rows:
        what = "the packaged MiniLM tokenizer" if text_encoder in (None, "", "tiny") \
            else f"the tokenizer at {folder}"
        raise ProvenanceError(f"{source}: {what} has {size} tokens but the checkpoint's word "
                              f"embeddings have {rows} rows; give the tokenizer the weights were "
                              "trained with, e.g. --text-encoder=/path/to/scibert")
    return size


def _same_tokenizer(a: str | None, b: str | None) -> bool:
    from forgetmi.data.text import tokenizer_fingerprint

    if a == b or {a, b} <= {None, "", "tiny"}:
        return True
    return tokenizer_fingerprint(tokenizer_folder(a)) == tokenizer_fingerprint(tokenizer_folder(b))


def _choose_tokenizer(recorded: str | None, given: str | None, source) -> str | None:
    """The model's own tokenizer; ``given`` only to relocate one whose folder has moved."""
    moved = recorded not in (None, "", "tiny") and \
        not (tokenizer_folder(recorded) / "vocab.txt").is_file()
    if moved:
        if given in (None, ""):
            raise ProvenanceError(f"{source}: the model's tokenizer folder {recorded} is not "
                                  "here; give its new place with --text_encoder=PATH")
        return given
    if given not in (None, "") and not _same_tokenizer(recorded, given):
        raise ProvenanceError(f"{source}: model.text_encoder={given} is not the tokenizer the "
                              f"model was trained with ({recorded or 'the packaged MiniLM'}); "
                              "drop the setting")
    return recorded


def _check_release_size(cfg, record: ModelConfig, source) -> None:
    crop = cfg.data.crop_size or cfg.data.image_size
    if (cfg.data.image_size, crop) == (RELEASE_IMAGE_SIZE, RELEASE_IMAGE_SIZE):
        return
    message = (f"{source}: a model imported from the release saw only 2048² crops (its fixed "
               f"2×2 average pool reads the 4×4 map of a 2048² input); data.image_size="
               f"{cfg.data.image_size} with crop {crop} computes embeddings the release never did")
    if not (cfg.model.allow_other_image_size or record.allow_other_image_size):
        raise ProvenanceError(f"{message}; set --data.image_size=2048 --data.crop_size=2048, or "
                              "--allow_other_image_size=true to run it anyway (tests on small "
                              "images)")
    logger.warning("%s (allowed by allow_other_image_size)", message)


def align_with_model(cfg, model_dir: str | os.PathLike):
    """``cfg`` (an ExperimentConfig) with the data settings the model in ``model_dir`` needs.

    ``data.preprocessing`` becomes the model's (None follows it; the other mode is refused),
    ``model.text_encoder`` the model's tokenizer (checked against its embeddings), the image
    widths the model's (:func:`_follow_architecture`), its label count must be the config's
    (:func:`check_model_layout`), and a release-origin model is refused at sizes other than
    2048² unless allowed.
    """
    record, bert = read_model_record(model_dir)
    check_model_layout(cfg, model_dir, record)
    cfg = _follow_architecture(cfg, record, model_dir)
    wanted = record.image_preprocessing
    if cfg.data.preprocessing not in (None, wanted):
        raise ProvenanceError(f"{model_dir}: the model was trained on {wanted} image "
                              f"preprocessing but data.preprocessing={cfg.data.preprocessing}; "
                              f"drop the setting or set --data.preprocessing={wanted}")
    tokenizer = _choose_tokenizer(record.text_encoder, cfg.model.text_encoder, model_dir)
    check_tokenizer_vocab(tokenizer, bert.vocab_size, model_dir)
    if record.origin == "release":
        _check_release_size(cfg, record, model_dir)
    if wanted != "forgetmi":
        logger.info("%s was trained on %s image preprocessing; using it", model_dir, wanted)
    return replace(cfg, data=replace(cfg.data, preprocessing=wanted),
                   model=replace(cfg.model, text_encoder=tokenizer))


def for_new_model(cfg):
    """``cfg`` for training a new model: the preprocessing it uses is recorded with it."""
    mode = cfg.data.preprocessing or "forgetmi"
    return replace(cfg, data=replace(cfg.data, preprocessing=mode),
                   model=replace(cfg.model, origin="forgetmi", image_preprocessing=mode))


# The settings that decide an original's training rows (with the seed, which carves validation).
ROW_SETTINGS = ("split", "forget_set", "holdout", "exclude")


def row_settings(cfg) -> dict:
    """What decides the original's training rows under ``cfg``, paths resolved."""
    data = cfg.data
    values = {key: None if data.path(key) is None else str(data.path(key).resolve())
              for key in ROW_SETTINGS}
    values["val_avoid"] = sorted(str(data.resolve(p).resolve()) for p in data.val_avoid)
    values["val_fraction"], values["seed"] = data.val_fraction, cfg.seed
    return values


def check_original_rows(recorded, cfg, source) -> None:
    """Refuse ``cfg`` when it names another forget set (or validation rule) than the original
    trained under ``recorded`` (its saved config) and that original did not train on the rows
    ``cfg``'s data gives an original, e.g. a forget set its validation did not avoid: one
    original serves every forget set its ``data.val_avoid`` listed."""
    from forgetmi.data.prepare import original_rows

    before, now = row_settings(recorded), row_settings(cfg)
    if all(before[key] == now[key] for key in ("forget_set", "val_avoid")):
        return  # the original made for this forget set (as before data.val_avoid existed)
    differ = "; ".join(f"{'' if key == 'seed' else 'data.'}{key} {before[key]} -> {now[key]}"
                       for key in before if before[key] != now[key])
    theirs, mine = original_rows(recorded.data, recorded.seed), original_rows(cfg.data, cfg.seed)
    if theirs.equals(mine):
        logger.info("%s: trained with other data settings (%s) on the same rows", source, differ)
        return
    raise ProvenanceError(f"{source}: the original trained on other rows than this run's data "
                          f"gives it ({len(theirs.symmetric_difference(mine))} row(s) differ; "
                          f"{differ}); use the original trained for these settings, or train "
                          "one whose data.val_avoid lists every forget set it serves")


def align_partitions(cfg, model_dir: str | os.PathLike, check_rows: bool = True):
    """``cfg`` with the validation rule of the original in ``model_dir`` (its run's
    ``config.yaml``: ``data.val_avoid`` when ``cfg`` names none), after checking that the
    original trained on the rows ``cfg`` gives it (:func:`check_original_rows`; ``check_rows``
    false for a patient's request, which forgets rows the model trained on whatever forget set
    it was made for). A bare model folder (an imported checkpoint) records no rows and is
    taken as it is."""
    from forgetmi.config import load_run_config

    model_dir = Path(model_dir)
    saved = model_dir.parent / "config.yaml"
    if model_dir.name != "model" or not saved.is_file():
        return cfg
    recorded = load_run_config(model_dir.parent)   # its data, found from here
    if recorded.data.val_avoid and not cfg.data.val_avoid:
        same_root = (recorded.data.root is not None and cfg.data.root is not None
                     and os.path.abspath(recorded.data.root) == os.path.abspath(cfg.data.root))
        avoid = [p if same_root else os.path.abspath(recorded.data.resolve(p))
                 for p in recorded.data.val_avoid]
        cfg = replace(cfg, data=replace(cfg.data, val_avoid=avoid))
        logger.info("validation avoids the original's forget sets (data.val_avoid: %s)",
                    ", ".join(avoid))
    if check_rows:
        check_original_rows(recorded, cfg, model_dir)
    return cfg
