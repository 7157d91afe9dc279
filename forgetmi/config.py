"""Typed configuration: dataclass defaults < YAML file < ``--key=value`` overrides.

Overrides use dotted paths for nested sections (``--data.image_size=512``) and may also name a
field of a nested section by its bare name when that is unambiguous (``--image_size=512``), which
is the form W&B's ``${args}`` produces; a bare name that is a top-level field means that field. The merged config is saved beside every result.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from forgetmi.errors import ForgetMIError
from forgetmi.utils.atomic import write_text

T = TypeVar("T")


class ConfigError(ForgetMIError):
    """A config file or override names an unknown key or a value of the wrong type."""


# Range checks, run where each section is declared: a bad value is refused when the config is
# read, before torch is imported or any folder is made.
def _finite(key: str, value: float, expected: str) -> None:
    if not math.isfinite(value):
        raise ConfigError(f"{key}: expected {expected}, got {value!r}")


def _positive(key: str, value: float) -> None:
    """A finite number above zero (a learning rate, a size)."""
    _finite(key, value, "a finite number > 0")
    if value <= 0:
        raise ConfigError(f"{key}: expected a finite number > 0, got {value!r}")


def _at_least(key: str, value: float, low: float) -> None:
    _finite(key, value, f"a finite number >= {low:g}")
    if value < low:
        raise ConfigError(f"{key}: expected a number >= {low:g}, got {value!r}")


def _between(key: str, value: float, low: float, high: float, high_open: bool = False) -> None:
    """``value`` in [low, high], or [low, high) when ``high_open``."""
    bounds = f"[{low:g}, {high:g}{')' if high_open else ']'}"
    _finite(key, value, f"a number in {bounds}")
    if value < low or value > high or (high_open and value == high):
        raise ConfigError(f"{key}: expected a number in {bounds}, got {value!r}")


# Frequent keywords of the MIMIC-CXR edema reports (the Forget-MI release's list, without its
# "NUMBER" placeholder). `forgetmi.data.keywords.derive_keywords` finds them for other corpora.
DEFAULT_KEYWORDS: tuple[str, ...] = (
    "atelectasis", "lung", "edema", "cardiomegaly", "silhouette",
    "pneumothorax", "markings", "disease", "chest",
)

# "[UNK]" rather than the release's "[NOISE]": every BERT vocabulary (SciBERT, MiniLM, ...) maps
# "[UNK]" to one special token that carries no meaning, whereas "[NOISE]" is split into the
# ordinary word pieces "[", "noise", "]" and so injects the word "noise" into every report.
# "[MASK]" is avoided because a masked-LM-pretrained encoder treats it as "predict a word here".
DEFAULT_NOISE_TOKEN = "[UNK]"


@dataclass
class Perturbation:
    """Settings of the noisy forget set. Defaults are the paper's (sigma 0.1, text level 0.5).

    ``image_std`` is applied to the cached image, i.e. at ``data.image_size`` after cropping and
    area-downsampling, whereas the release added it at full resolution before cropping to 2048
    px. Averaging k×k pixels divides white noise's std by k, so the release's sigma corresponds
    to about ``sigma · image_size / crop_size`` here (before clipping): 0.1 at 2048 px ≈ 0.0125
    at 256 px. The default 0.1 at a lower resolution is therefore stronger than the release's.
    """

    # Std of the Gaussian added per pixel at the cached resolution (data.image_size, not the
    # release's full resolution): the release's sigma s ≈ s · image_size / crop_size here.
    image_std: float = 0.1
    image_mean: float = 0.0
    text_level: float = 0.5
    keywords: tuple[str, ...] = DEFAULT_KEYWORDS
    noise_token: str = DEFAULT_NOISE_TOKEN
    use_image: bool = True
    use_text: bool = True
    seed: int | None = None        # None = the run's seed, so each seed gets its own noisy copy
    max_masked_keywords: int = 2   # distinct keywords masked per report (every occurrence of each)
    synonym_swaps: int = 1         # distinct words replaced by their synonym (the release uses 1)

    def for_run(self, run_seed: int) -> "Perturbation":
        """These settings with the run's seed filled in where ``seed`` was left unset."""
        return self if self.seed is not None else replace(self, seed=int(run_seed))

    def __post_init__(self):
        words = (str(k).strip().lower() for k in self.keywords)
        self.keywords = tuple(dict.fromkeys(w for w in words if w))  # deduplicated, in order
        _at_least("noise.image_std", self.image_std, 0)
        _finite("noise.image_mean", self.image_mean, "a finite number")
        _between("noise.text_level", self.text_level, 0, 1)
        if not self.noise_token.strip() or len(self.noise_token.split()) != 1:
            raise ConfigError(f"noise.noise_token: expected one non-empty word, got "
                              f"{self.noise_token!r}")
        _at_least("noise.max_masked_keywords", self.max_masked_keywords, 0)
        _at_least("noise.synonym_swaps", self.synonym_swaps, 0)


# The labels' classes: edema grades 0-3 (forgetmi.data.formats.SEVERITIES, checked on read).
EDEMA_GRADES = 4


@dataclass
class ModelConfig:
    num_labels: int = 4
    # Image encoder: a stem then one stage of two BasicBlocks per width, each stage striding 2.
    image_widths: list[int] = field(default_factory=lambda: [8, 16, 32, 64, 128, 192, 192])
    image_pool: int = 2                 # final map pooled to pool x pool -> 192*2*2 = 768-d
    # Text encoder: a BERT folder (None = the packaged all-MiniLM-L6-v2), or "tiny" for a small
    # randomly initialised BERT over the packaged vocabulary (tests, smoke runs).
    text_encoder: str | None = None
    text_dropout: float = 0.1           # before the text head; also inside the tiny BERT
    tiny_text_hidden: int = 32
    tiny_text_layers: int = 2
    fusion_scale_init: float = 0.1      # the learned, clamped residual scale of the gated fusion
    fusion_scale_max: float = 1.0
    # Provenance, recorded with the weights by training and import-checkpoint (not set by hand).
    origin: Literal["forgetmi", "release"] = "forgetmi"  # release: published weights, imported
    image_preprocessing: Literal["forgetmi", "release"] = "forgetmi"  # what the weights learned on
    # A release-origin model only ever saw 2048² crops (its pooling is a fixed 2×2 average);
    # true runs it at other sizes anyway, e.g. tests on small images.
    allow_other_image_size: bool = False

    def __post_init__(self):
        # Every row's label is an edema grade 0-3 (forgetmi.data.formats.SEVERITIES): a head
        # with fewer outputs fails deep in the loss on the first row of a higher grade.
        if isinstance(self.num_labels, int) and self.num_labels < EDEMA_GRADES:
            raise ConfigError(f"model.num_labels: expected {EDEMA_GRADES} or more (one per edema "
                              f"grade 0-{EDEMA_GRADES - 1}), got {self.num_labels!r}")
        if not self.image_widths or any(w < 1 for w in self.image_widths):
            raise ConfigError(f"model.image_widths: expected one or more widths >= 1, got "
                              f"{self.image_widths!r}")
        _at_least("model.image_pool", self.image_pool, 1)

    @property
    def image_dim(self) -> int:
        return self.image_widths[-1] * self.image_pool * self.image_pool


@dataclass
class DataConfig:
    """Where the data lives and how it is decoded. Paths may be relative to ``root``."""

    root: str | None = None            # a dataset folder in the generated layout (fills the paths below)
    split: str = "split.csv"
    reports: str = "all_data.tsv"
    img_dir: str = "images"
    forget_set: str | None = "forget_set_10per.csv"
    # Patients drawn like the forget set and trained on by no model: the unseen side of the
    # forget-vs-unseen attacks (the stand-in writes holdout.csv; `forgetmi make-forget-set`
    # draws one for a real split). None: the TEST fold stands in, drawn differently.
    holdout: str | None = None
    exclude: str | None = None         # CSV (split format) of patients left out of every partition
    # Forget-set CSVs whose patients the validation split never holds, besides forget_set's own.
    # A protocol lists every size's, so validation (and with it the original's training rows:
    # everything outside validation, holdout and TEST) is one set for every size and one
    # original serves them all. Empty: validation comes from the rows outside this run's forget
    # set, holdout and TEST.
    val_avoid: list[str] = field(default_factory=list)
    synonyms: str | None = "Synonyms.csv"
    image_ext: str = "auto"            # auto | .dcm | .jpg | .png | .npy
    image_size: int = 256              # side of the cached image (2048 is the paper's)
    crop_size: int | None = None       # centre crop before resizing; None = image_size
    # Image preprocessing: forgetmi (display orientation, rescale) | release (the published
    # models' raw pixel_array / max). None = what the model in use was trained with
    # (forgetmi for a new model); a mode that contradicts the model is refused.
    preprocessing: Literal["forgetmi", "release"] | None = None
    max_length: int = 320              # tokens per report (the tokenizer is model.text_encoder's)
    # A batch's tokens are cut to its longest report rounded up to a multiple of this (at most
    # max_length): a run then sees a handful of sequence lengths, not one new one per step, which
    # fp16/bf16 attention kernels are built for. 0 or 1: cut to the longest exactly.
    length_bucket: int = 64
    val_fraction: float = 0.1
    cache_dir: str | None = None       # None = <root or split folder>/cache
    workers: int = 1

    def __post_init__(self):
        if self.length_bucket < 0:
            raise ConfigError(f"data.length_bucket: expected 0 or more, got {self.length_bucket}")
        if self.preprocessing not in (None, "forgetmi", "release"):
            raise ConfigError(f"data.preprocessing: expected forgetmi or release, got "
                              f"{self.preprocessing!r}")
        _at_least("data.image_size", self.image_size, 1)
        if self.crop_size is not None and self.crop_size < self.image_size:
            # The crop is area-downsampled to image_size, never enlarged.
            raise ConfigError(f"data.crop_size: expected a size >= data.image_size "
                              f"({self.image_size}) or none, got {self.crop_size!r}")
        # validation is carved as one of round(1 / fraction) patient folds: at least two.
        _between("data.val_fraction", self.val_fraction, 0, 0.5, high_open=True)
        _at_least("data.max_length", self.max_length, 1)
        _at_least("data.workers", self.workers, 1)

    def path(self, name: str) -> Path | None:
        """Resolve one of the path fields against ``root``."""
        value = getattr(self, name)
        return None if value is None else self.resolve(value)

    def resolve(self, value: str) -> Path:
        """A path of this section (a field's, or an entry of ``val_avoid``) against ``root``."""
        value = Path(os.path.expanduser(value))
        if not value.is_absolute() and self.root is not None:
            value = Path(self.root) / value
        return value

    def absolute(self) -> "DataConfig":
        """A copy whose paths name the same files from anywhere: ``root`` absolute (against the
        working directory), and, without a root, every relative path field and ``val_avoid``
        entry too (with a root they stay relative to it). A run saves its data this way, so a
        copied or moved run folder still finds its data."""
        def absolute(value):
            return value if value is None else os.path.abspath(os.path.expanduser(value))
        if self.root is not None:
            return replace(self, root=absolute(self.root))
        return replace(self, **{name: absolute(getattr(self, name)) for name in DATA_PATHS
                                if name != "root"},
                       val_avoid=[absolute(v) for v in self.val_avoid])

    def resolved_cache_dir(self) -> Path:
        if self.cache_dir is not None:
            return self.path("cache_dir")
        base = Path(self.root) if self.root is not None else self.path("split").parent
        return base / "cache"


# DataConfig's path fields: relative ones resolve against ``root`` (or the working directory).
DATA_PATHS = ("root", "split", "reports", "img_dir", "forget_set", "holdout", "exclude",
              "synonyms", "cache_dir")


# What the validation reports each epoch (forgetmi.evaluation.metrics.head_metrics): the names
# train.early_stopping_metric may take, known here so a misspelling is refused before training.
VALIDATION_METRICS: tuple[str, ...] = tuple(
    f"{head}_{metric}" for head in ("image", "text", "joint")
    for metric in ("auc", "f1", "accuracy"))


@dataclass
class TrainConfig:
    """The engine's knobs, shared by training, retraining and unlearning."""

    epochs: int = 10
    batch_size: int = 16               # per process
    eval_batch_size: int = 32
    lr: float = 1e-4
    text_lr: float | None = None       # the pretrained BERT body's rate; None = lr
    weight_decay: float = 0.01
    scheduler: Literal["cosine", "linear", "constant"] = "cosine"  # cosine | linear | constant (the paper's: no warmup, no
                                       # decay; warmup_ratio then does nothing)
    warmup_ratio: float = 0.05         # share of the updates that ramp up (cosine and linear)
    grad_accum: int = 1
    max_grad_norm: float = 1.0         # 0 disables clipping
    precision: str | None = None       # no | bf16 | fp16; None = the launcher's choice
    ranking_weight: float = 1.0
    joint_weight: float = 1.0
    early_stopping_patience: int = 3   # epochs without validation improvement; 0 disables
    early_stopping_metric: str = "joint_auc"
    final_model: Literal["best", "last"] = "best"  # best: the best-validated epoch is the model; last: the
                                       # last epoch's weights (a model trained to convergence)
    checkpoint_every: int = 50         # optimizer steps between "latest" checkpoints
    # Checkpoints (weights, optimizer state) kept: 0 keeps the latest while the run goes and
    # deletes it once the run is finished (its model stays); N keeps the N latest, also after.
    keep_checkpoints: int = 0
    log_every: int = 10                # optimizer steps between logged metrics
    num_workers: int = 0
    # AdamW's fused kernel (one pass over every parameter, CPU or CUDA): a third of a CPU step of
    # the evidence model. Off by default: it rounds differently from the per-tensor loop, and
    # runs made before it (and the tests' small cohorts) are reproduced by the loop's rounding.
    # DeepSpeed's offloaded Adam ignores it.
    fused_optimizer: bool = False
    resume: bool = True                # continue from output_dir/checkpoints/latest if present
    max_steps: int = 0                 # stop after this many optimizer steps (0 = no limit)
    stop_after: int = 0                # crash on purpose after N optimizer steps (resume tests)

    def __post_init__(self):
        # YAML 1.1 reads a bare `precision: no` as False.
        if self.precision in (False, "False", "false", "fp32"):
            self.precision = "no"
        if self.precision not in (None, "no", "fp16", "bf16"):
            raise ConfigError(f"train.precision: expected no, bf16 or fp16, got {self.precision!r}")
        if self.scheduler not in ("cosine", "linear", "constant"):
            raise ConfigError(f"train.scheduler: expected cosine, linear or constant, got "
                              f"{self.scheduler!r}")
        for key in ("epochs", "batch_size", "eval_batch_size", "grad_accum", "checkpoint_every",
                    "log_every"):
            _at_least(f"train.{key}", getattr(self, key), 1)
        for key in ("early_stopping_patience", "num_workers", "max_steps", "stop_after",
                    "weight_decay", "max_grad_norm", "keep_checkpoints"):
            _at_least(f"train.{key}", getattr(self, key), 0)
        _positive("train.lr", self.lr)
        if self.text_lr is not None:
            _positive("train.text_lr", self.text_lr)
        _between("train.warmup_ratio", self.warmup_ratio, 0, 1)
        if self.early_stopping_metric not in VALIDATION_METRICS:
            raise ConfigError(f"train.early_stopping_metric: expected one of "
                              f"{', '.join(VALIDATION_METRICS)}, got "
                              f"{self.early_stopping_metric!r}")
        if self.final_model not in ("best", "last"):
            raise ConfigError(f"train.final_model: expected best or last, got "
                              f"{self.final_model!r}")


@dataclass
class NegGradConfig:
    """NegGrad+ (Kurmanji et al. 2023): β·L(retain) − (1 − β)·L(forget)."""

    retain_weight: float = 0.95          # β; the ascent term gets 1 − β


@dataclass
class ScrubConfig:
    """SCRUB (Kurmanji et al. 2023), with the reference implementation's defaults."""

    temperature: float = 4.0             # kd_T of the distillation KL
    max_epochs: int = 2                  # msteps: epochs that start with a max-pass over forget
    retain_kl_weight: float = 0.001      # alpha: KL(teacher ‖ student) on retain
    retain_ce_weight: float = 0.99       # gamma: the supervised loss on retain
    forget_kl_weight: float = 1.0        # scale of the KL maximised on forget


@dataclass
class LastLayersConfig:
    """CF-k / EU-k (Goel et al. 2022): only the last k layer groups train (EU-k re-initialises
    them first). Group 1 = heads, fusion and projections; group j > 1 = image stage 9 − j and
    the (j − 1)-th BERT layer from the top."""

    k: int = 3


@dataclass
class MultiDeleteConfig:
    """MultiDelete (Cheng & Amiri, ECCV 2024): L_MD + α·L_MKR + β·L_UKR."""

    decoupling_weight: float = 1.0       # forget pairs' joint embedding → that of unrelated pairs
    multimodal_weight: float = 1.0       # α: joint embeddings of retain pairs kept
    unimodal_weight: float = 1.0         # β: image and text embeddings of retain kept


@dataclass
class UnlearnConfig:
    """Which unlearning method runs on which trained model, with each method's settings."""

    method: str = "forgetmi"             # forgetmi | finetune | neggrad+ | scrub | cf-k | eu-k |
                                         # multidelete | random-label
    original: str | None = None          # folder of the trained model (save_pretrained format)
    preset: Literal["equal", "unimodal", "multimodal", "retention", "no-noise"] = "unimodal"
    weights: list[float] | None = None   # w_UU, w_UR, w_MU, w_MR; overrides the preset's
    # One weight at a time (W&B sweep parameters are scalars): each set replaces that term of
    # the preset's (or of weights), before the four are normalised.
    weight_uu: float | None = None
    weight_ur: float | None = None
    weight_mu: float | None = None
    weight_mr: float | None = None
    # pull (the paper) | push (the release's); None = the preset's: push under no-noise, else
    # pull (effective_objective). Saved as None: a config reused with another preset derives it.
    objective: Literal["pull", "push"] | None = None
    retention_cap: float | None = None   # the release's cap: retention ≤ first-epoch mean + this
    retain_batch_size: int | None = None # None = train.batch_size
    freeze_batchnorm: bool = True        # student BatchNorm uses the original's running stats
    neggrad: NegGradConfig = field(default_factory=NegGradConfig)
    scrub: ScrubConfig = field(default_factory=ScrubConfig)
    last_layers: LastLayersConfig = field(default_factory=LastLayersConfig)
    multidelete: MultiDeleteConfig = field(default_factory=MultiDeleteConfig)

    def __post_init__(self):
        if self.retain_batch_size is not None:
            _at_least("unlearn.retain_batch_size", self.retain_batch_size, 1)

    @property
    def effective_objective(self) -> str:
        """``objective``, or when left unset the preset's. Without noise, pulling forget
        embeddings toward the original's embeddings of the very same clean rows is retention;
        the release's no-noise runs maximise UU and MU instead."""
        if self.objective is not None:
            return self.objective
        custom = self.weights is not None or any(
            getattr(self, f"weight_{k}") is not None for k in ("uu", "ur", "mu", "mr"))
        return "push" if self.preset == "no-noise" and not custom else "pull"


@dataclass
class EvaluateConfig:
    """An unlearning run that scores itself when it ends (a sweep's trial): evaluated against
    ``retrained`` into its ``metrics.json``, its score in the W&B run's summary."""

    retrained: str | None = None       # the retrained run of this size and seed; may use {seed},
                                       # {size}, {forget_set}; None = not scored here
    references: list[str] | None = None  # retrained runs of other seeds: the calibrated attack
    bootstrap: int = 1000              # patient-bootstrap resamples of the intervals


@dataclass
class TrackingConfig:
    wandb: Literal["offline", "online", "disabled"] = "offline"
    project: str = "forgetmi"
    run_name: str | None = None        # display name; None = job, seed and output folder
    entity: str | None = None
    group: str | None = None           # W&B group: the sweep or protocol (set by them); None = none


@dataclass
class ExperimentConfig:
    """Top-level config: data, noise, model, engine and tracking sections."""

    seed: int = 0
    output_dir: str = "runs/default"
    data: DataConfig = field(default_factory=DataConfig)
    noise: Perturbation = field(default_factory=Perturbation)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    unlearn: UnlearnConfig = field(default_factory=UnlearnConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def __post_init__(self):
        path = Path(self.output_dir)   # as the jobs write to it
        if os.path.lexists(path) and not path.is_dir():
            raise ConfigError(f"output_dir: {self.output_dir} exists and is not a folder; "
                              "expected a run folder")


def _is_dataclass_type(tp) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _choice(value: Any, choices: tuple, key: str):
    """One of ``choices``, or a one-line error naming the key, the choices and the closest."""
    if value in choices:
        return value
    import difflib
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.4)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise ConfigError(f"{key}: expected one of {' | '.join(map(str, choices))}, got "
                      f"{value!r}{hint}")


def _short(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters (an error line stays one short line)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _coerce(value: Any, tp, key: str):
    """Convert ``value`` (from YAML or a command-line string) to the annotated type ``tp``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "~")):
            if type(None) in args:
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{key}: cannot be None")
    if origin is Literal:
        return _choice(value, args, key)
    if origin in (list, tuple):
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.strip().startswith("[") else \
                [v for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        items = [_coerce(v, args[0] if args else Any, key) for v in value]
        return items if origin is list else tuple(items)
    if tp is Any:
        return value
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping (key: value lines), got "
                              f"{type(value).__name__} {_short(value)}")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        try:
            as_float = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected an integer, got {value!r}") from None
        if not as_float.is_integer():
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return int(as_float)
    if tp is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    if _is_dataclass_type(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return _build(tp, value, prefix=f"{key}.")
    return value


def unknown_keys_message(unknown: list[str], known, prefix: str = "", what: str = "config") -> str:
    """One short line for keys a section does not have: the closest known key when there is
    one, else a few of them (a section of 25 fields would fill the terminal)."""
    import difflib
    names = ", ".join(prefix + u for u in unknown)
    close = difflib.get_close_matches(str(unknown[0]), sorted(known), n=1, cutoff=0.6)
    if close:
        hint = f" (did you mean {prefix}{close[0]}?)"
    elif what == "config":
        hint = "; `forgetmi unlearn --help` lists every key"
    else:
        shown = sorted(known)
        hint = f"; known: {', '.join(shown[:6])}{', ...' if len(shown) > 6 else ''}"
    if len(unknown) > 3:
        names = f"{', '.join(prefix + u for u in unknown[:3])} (and {len(unknown) - 3} more)"
    return f"unknown {what} key(s) {names}{hint}"


def _build(cls: type[T], values: dict, prefix: str = "", what: str = "config") -> T:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(unknown_keys_message(unknown, known, prefix, what))
    kwargs = {name: _coerce(v, hints[name], prefix + name) for name, v in values.items()}
    return cls(**kwargs)


def from_dict(cls: type[T], values: dict, source: str | os.PathLike | None = None,
              what: str = "config") -> T:
    """A typed ``cls`` from a mapping (a YAML file's, say): unknown keys and values of the
    wrong type raise a ConfigError naming ``source`` (the file) and the key."""
    try:
        return _build(cls, values, what=what)
    except ConfigError as err:
        if source is not None:
            raise ConfigError(f"{source}: {err}") from None
        raise


def to_dict(config) -> dict:
    return dataclasses.asdict(config)


def as_overrides(values: dict) -> list[str]:
    """``{"lr": 1e-3, "noise.image_std": 0.3}`` as ``--key=value`` strings (lists as ``[a,b]``)."""
    out = []
    for key, value in values.items():
        if isinstance(value, (list, tuple)):
            value = "[" + ",".join(str(v) for v in value) + "]"
        out.append(f"--{key}={value}")
    return out


def with_overrides(config: T, overrides: list[str]) -> T:
    """A copy of ``config`` with ``--key=value`` overrides applied, checked as load_config's."""
    if not overrides:
        return config
    return _build(type(config), _merge(to_dict(config), parse_overrides(type(config), overrides)))


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _field_paths(cls, prefix=()) -> dict[str, list[tuple[str, ...]]]:
    """Map every leaf field name (and dotted path or suffix) to its full path(s)."""
    paths: dict[str, list[tuple[str, ...]]] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        path = prefix + (f.name,)
        tp = hints[f.name]
        if _is_dataclass_type(tp):
            for k, v in _field_paths(tp, path).items():
                paths.setdefault(k, []).extend(p for p in v if p not in paths.get(k, []))
        else:
            # The bare name, the full dotted path and every dotted suffix (scrub.temperature).
            for key in {".".join(path[i:]) for i in range(len(path))}:
                paths.setdefault(key, []).append(path)
    return paths


def known_keys(cls) -> set[str]:
    """Every key an override may name: bare field names, dotted paths and their suffixes."""
    return set(_field_paths(cls))


def parse_overrides(cls, overrides: list[str], origins: dict[str, str] | None = None) -> dict:
    """Turn ``--a.b=c`` / ``a.b=c`` / ``--a.b c`` strings into a nested dict for ``cls``;
    ``origins`` (when given) gets each full dotted key's ``--key=value`` as typed."""
    paths = _field_paths(cls)
    nested: dict = {}
    items = list(overrides)
    i = 0
    while i < len(items):
        token = items[i]
        i += 1
        body = token[2:] if token.startswith("--") else token
        if "=" in body:
            key, value = body.split("=", 1)
        elif token.startswith("--") and i < len(items) and not items[i].startswith("--"):
            key, value = body, items[i]
            i += 1
        else:
            raise ConfigError(f"override {token!r}: expected --key=value")
        full = _place(nested, paths, key.replace("-", "_"), value)
        if origins is not None:
            origins[full] = f"--{key}={value}"
    return nested


def _place(nested: dict, paths: dict, key: str, value: Any) -> str:
    """Put one ``key=value`` override at its full path in ``nested``; return that path."""
    candidates = paths.get(key)
    if candidates and len(candidates) > 1 and (key,) in candidates:
        candidates = [(key,)]  # a bare name that is also a top-level field means that field
    if not candidates:
        import difflib
        close = difflib.get_close_matches(key, paths, n=3, cutoff=0.75)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ConfigError(f"unknown config key {key!r}; {hint}`forgetmi unlearn --help` lists "
                          "every key")
    if len(candidates) > 1:
        raise ConfigError(f"config key {key!r} is ambiguous; use one of "
                          f"{', '.join('.'.join(p) for p in candidates)}")
    node = nested
    *parents, leaf = candidates[0]
    for part in parents:
        node = node.setdefault(part, {})
    # Kept as text: each field's type decides how to read it (YAML would turn a
    # precision of "no" into False).
    is_none = isinstance(value, str) and value.strip().lower() in ("none", "null", "~")
    node[leaf] = None if is_none else value
    return ".".join(candidates[0])


def _nest_flat_keys(cls, values: dict, source: Path) -> dict:
    """A YAML file's top-level keys in the command line's forms (``epochs``,
    ``train.epochs``, ``scrub.temperature``) moved to their sections, so a file accepts
    every key ``--key=value`` does. A key set both ways is refused: which one wins would be
    a guess."""
    top = {f.name for f in dataclasses.fields(cls)}
    paths = _field_paths(cls)
    flat = {k: v for k, v in values.items() if k not in top and k in paths}
    if not flat:
        return values
    nested: dict = {}
    for key, value in flat.items():
        full = _place(nested, paths, key, value)
        node = values
        for part in full.split("."):
            node = node.get(part) if isinstance(node, dict) else None
            if node is None:
                break
        else:
            raise ConfigError(f"{source}: {key} and {full} are both set; keep one")
    return _merge({k: v for k, v in values.items() if k not in flat}, nested)


def _blame(message: str, path: Path | None, origins: dict[str, str]) -> str:
    """Name where a bad setting came from: the override that set its key, else the file."""
    key = message.split(":", 1)[0]
    if key in origins:
        return f"{message} (from the command line: {origins[key]})"
    given = [token for full, token in origins.items() if full in message]
    if path is None:
        return message + (f" (from the command line: {', '.join(given)})" if given else "")
    return f"{path}: {message}" + (f" (with the command line's {', '.join(given)})"
                                   if given else "")


def read_yaml(path: str | os.PathLike, what: str = "YAML file") -> dict:
    """A YAML mapping, or a ConfigError naming the file and what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: {what} not found")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return loaded


def load_config(cls: type[T] = ExperimentConfig, path: str | os.PathLike | None = None,
                overrides: list[str] | None = None) -> T:
    """Defaults < YAML ``path`` < ``overrides``; unknown keys and bad types raise ConfigError."""
    values: dict = {}
    if path is not None:
        from forgetmi.shipped import locate
        path = locate(path)
        values = _nest_flat_keys(cls, read_yaml(path, "config file"), path)
    origins: dict[str, str] = {}
    if overrides:
        values = _merge(values, parse_overrides(cls, overrides, origins))
    try:
        return _build(cls, values)
    except ConfigError as err:
        raise ConfigError(_blame(str(err), path, origins)) from None


def derived_settings(config) -> dict[str, Any]:
    """Settings a run derives from others when left unset (``unlearn.objective`` from the
    preset), as ``{"unlearn.objective": "push"}``: saved configs keep them unset."""
    unlearn = getattr(config, "unlearn", None)
    if unlearn is None or unlearn.objective is not None or unlearn.method != "forgetmi":
        return {}
    return {"unlearn.objective": unlearn.effective_objective}


def save_config(config, target: str | os.PathLike) -> Path:
    """Write the merged config as YAML (atomically) so every result says how it was made.

    Settings derived from others stay unset (null) in it, so a config reused with, say,
    another preset means what its keys say; what they came to is noted in a comment below,
    which no loader reads."""
    text = yaml.safe_dump(to_dict(config), sort_keys=False)
    derived = derived_settings(config)
    if derived:
        text += ("# derived from the settings above when the run started (left null there):\n"
                 + "".join(f"#   {key}: {value}\n" for key, value in derived.items()))
    return write_text(target, text)


def load_run_config(run: str | os.PathLike, overrides: list[str] | None = None,
                    cls: type[T] = ExperimentConfig) -> T:
    """A run folder's ``config.yaml`` (with ``overrides``), for reading the run from anywhere.

    Runs save absolute data paths; a run saved before that recorded them relative to where it
    was started: when such a path does not resolve from here, the error names the key to set."""
    run = Path(run)
    cfg = load_config(cls, run / "config.yaml", overrides)
    data = cfg.data
    root = data.root
    if root is not None and not os.path.isabs(os.path.expanduser(root)) \
            and not Path(root).is_dir():
        raise ConfigError(f"{run}/config.yaml: data.root {root!r} is relative to where the run "
                          f"was started and is not found from {os.getcwd()}; give "
                          "--data.root=<the dataset folder>")
    # Without a root, the files every job reads (the synonyms are read by noisy copies only).
    for name in ("split", "reports", "img_dir", "forget_set", "holdout", "exclude") \
            if root is None else ():
        value = getattr(data, name)
        if value is not None and not os.path.isabs(os.path.expanduser(value)) \
                and not os.path.exists(value):
            raise ConfigError(f"{run}/config.yaml: data.{name} {value!r} is relative to where "
                              f"the run was started and is not found from {os.getcwd()}; give "
                              f"--data.{name}=<its path>")
    return cfg


def resolve_run_path(template: str, cfg: ExperimentConfig) -> str:
    """Fill ``{seed}``, ``{size}`` (the forget set's percentage, e.g. 10 from
    forget_set_10per.csv) and ``{forget_set}`` (its file stem) in a run path, so one sweep over
    sizes and seeds names each run's own original model (online sweeps cannot template)."""
    import re
    name = Path(cfg.data.forget_set or "").stem
    match = re.search(r"(\d+(?:\.\d+)?)\s*per", name)
    values = {"seed": cfg.seed, "forget_set": name, "size": match.group(1) if match else name}
    try:
        return template.format(**values)
    except (KeyError, IndexError, ValueError) as err:
        raise ConfigError(f"run path {template!r}: unknown placeholder {err}; "
                          "use {seed}, {size} or {forget_set}") from None
