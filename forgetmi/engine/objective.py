"""What a method gives the engine: its streams of data (:class:`Stream`) and its loss
(:class:`Objective`), and the supervised objective that trains the original model."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from forgetmi.losses.supervised import supervised_loss


@dataclass
class Stream:
    """One source of batches. The primary stream defines the epoch; others cycle alongside."""

    name: str
    dataset: Dataset
    batch_size: int
    primary: bool = False
    shuffle: bool = True
    follows: str | None = None   # draw exactly the batches of that stream (a paired copy)
    # A lead stream: each of the first lead_epochs epochs opens with one pass over it (every
    # row once), drawn alone; the other streams wait and then make their own whole epoch.
    lead_epochs: int = 0


class Objective(ABC):
    """What a method supplies: its streams and its loss."""

    name = "objective"
    # The model outputs (ModelOutput fields) the loss reads; None = all of them. Parameters that
    # reach none of these are frozen for the run (see engine/trainable.py).
    reads: frozenset[str] | None = None
    # Micro-steps of one pass over each stream, by stream name (a method may schedule phases
    # with them); set by the engine through plan() once the batch plans are known.
    steps_per_pass: dict[str, int]

    @abstractmethod
    def streams(self) -> list[Stream]:
        """The data this method draws: exactly one primary stream, others cycle alongside."""

    def plan(self, steps_per_pass: dict[str, int]) -> None:
        """Told the micro-steps of one pass over each stream; called once by the engine,
        before :meth:`prepare_model`. Stores them as :attr:`steps_per_pass`."""
        self.steps_per_pass = steps_per_pass

    def prepare_model(self, model) -> None:
        """Change the trained model before its optimizer is built (freeze or re-initialise
        layers); called once, identically on every rank."""

    def setup(self, accelerator) -> None:
        """Place auxiliary (frozen) models on the device; called once before training."""

    def at_step(self, epoch: int, micro: int) -> None:
        """Told the position of the coming micro-step (methods that alternate phases)."""

    def end_epoch(self, epoch: int, means: dict[str, float]) -> None:
        """Told each finished epoch's mean loss terms (the same on every rank)."""

    def state_dict(self) -> dict:
        """JSON-serialisable state kept in the checkpoint so a resumed run continues alike."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""

    def train_mode(self, model) -> None:
        """Put the trained model in training mode (a method may keep parts in eval mode)."""
        model.train()

    @abstractmethod
    def compute_loss(self, model, batch: dict[str, dict]) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss on one step's batches (one per stream) and its terms for logging."""


class SupervisedObjective(Objective):
    """The original model's loss on one stream of labelled rows."""

    name = "supervised"

    def __init__(self, dataset, batch_size: int, ranking_weight: float, joint_weight: float):
        self.dataset, self.batch_size = dataset, batch_size
        self.ranking_weight, self.joint_weight = ranking_weight, joint_weight

    def streams(self) -> list[Stream]:
        return [Stream("train", self.dataset, self.batch_size, primary=True)]

    def compute_loss(self, model, batch):
        rows = batch["train"]
        out = model(rows["image"], rows["input_ids"], rows["attention_mask"])
        return supervised_loss(out, rows["label"], rows["study_id"], self.ranking_weight,
                               self.joint_weight)
