"""The interface every unlearning method implements, and the registry that names them.

A method is an :class:`Unlearner`: an engine objective that declares the data it draws
(streams over the forget set, its noisy copy, the retain set) and its loss. The engine supplies
Accelerate/DeepSpeed, precision, accumulation, clipping, checkpoint/resume and logging. A
method that needs the original model as a frozen teacher says so (``uses_original``); the
teacher stays in eval mode, outside the engine's prepare(), so it works beside a
DeepSpeed-wrapped student.
"""

from __future__ import annotations

import torch

from forgetmi.engine.objective import Objective, Stream
from forgetmi.errors import ForgetMIError
from forgetmi.losses.supervised import supervised_loss

METHODS: dict[str, type["Unlearner"]] = {}
# The outputs of a method whose losses compare embeddings only (Objective.reads).
EMBEDDINGS = frozenset({"image_embedding", "text_embedding", "joint_embedding"})


def register(name: str):
    def wrap(cls):
        cls.name = name
        METHODS[name] = cls
        return cls
    return wrap


def method_class(name: str) -> type["Unlearner"]:
    if name not in METHODS:
        raise ForgetMIError(f"unlearn.method: unknown method {name!r}; "
                            f"available: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def build_objective(name: str, cfg, datasets: dict, original=None, noisy_forget=None):
    return method_class(name)(cfg, datasets, original=original, noisy_forget=noisy_forget)


def forward(model, rows: dict):
    return model(rows["image"], rows["input_ids"], rows["attention_mask"])


class Unlearner(Objective):
    """Shared state of the methods: the partitions, batch sizes and the frozen original."""

    name = "base"
    uses_original = False       # needs the trained model as a frozen teacher
    uses_noisy_forget = False   # draws the perturbed copy of the forget set
    settings: tuple[str, ...] = ()   # the unlearn.* fields it reads (listed by --help)

    def __init__(self, cfg, datasets: dict, original=None, noisy_forget=None):
        for part in ("forget", "retain"):
            if part not in datasets:
                raise ForgetMIError(f"the {part} set selects no rows; {self.name} needs both "
                                    "forget and retain rows")
        if self.uses_original and original is None:
            raise ForgetMIError(f"{self.name} needs the original model as a teacher")
        self.cfg = cfg
        self.forget, self.retain = datasets["forget"], datasets["retain"]
        self.noisy_forget = noisy_forget
        self.original = original if self.uses_original else None
        self.batch_size = cfg.train.batch_size
        self.retain_batch_size = cfg.unlearn.retain_batch_size or cfg.train.batch_size
        self.freeze_batchnorm = cfg.unlearn.freeze_batchnorm

    # -- engine hooks ------------------------------------------------------------------------
    def setup(self, accelerator) -> None:
        if self.original is not None:
            self.original = self.original.to(accelerator.device).eval().requires_grad_(False)

    def train_mode(self, model) -> None:
        """Training mode, with BatchNorm on running statistics where it should not move.

        The original model embeds in eval mode; a student whose BatchNorm normalised with batch
        statistics would start far from it for that reason alone, and the unlearning budget
        would go into undoing the mode difference. Frozen layers keep their statistics too.
        """
        model.train()
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                frozen = not any(p.requires_grad for p in module.parameters())
                if self.freeze_batchnorm or frozen:
                    module.eval()

    # -- helpers for the methods ---------------------------------------------------------------
    def forget_stream(self, primary: bool = True) -> Stream:
        return Stream("forget", self.forget, self.batch_size, primary=primary)

    def retain_stream(self, primary: bool = False) -> Stream:
        return Stream("retain", self.retain, self.retain_batch_size, primary=primary)

    def teacher(self, rows: dict):
        with torch.no_grad():
            return forward(self.original, rows)

    def supervised(self, output, rows: dict, prefix: str):
        """The training loss (CE of the three heads + ranking) on labelled rows."""
        train = self.cfg.train
        loss, terms = supervised_loss(output, rows["label"], rows["study_id"],
                                      train.ranking_weight, train.joint_weight)
        return loss, {f"{prefix}_{k}": v for k, v in terms.items()}
