"""The engine's loop state (:class:`LoopState`): where a run is, what it has measured, and
how it is written to and read back from the checkpoint's ``trainer_state.json``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Iterable

from forgetmi.engine.checkpoint import CheckpointError


@dataclass
class LoopState:
    """Everything :meth:`Engine.fit <forgetmi.engine.loop.Engine.fit>` carries from one
    micro-step to the next and across a resume. Field names are the checkpoint's JSON keys."""

    epoch: int = 0               # the epoch in progress (= epochs finished)
    step: int = 0                # micro-steps of that epoch already done
    updates: int = 0             # optimizer updates so far (the step the tracker logs at)
    best: float | None = None    # best validation score so far (None: not validated yet)
    best_epoch: int | None = None  # the epoch that scored it
    bad_epochs: int = 0          # validated epochs since the best without improving on it
    done: bool = False           # the final model is written: a resume has nothing to do
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    # What a checkpoint must agree on to be resumed (Engine._fingerprint); None in old ones.
    fingerprint: dict | None = None
    # The run's training settings (run_folder.training_settings), whose hash the fingerprint
    # holds: a resume with others names the keys that differ. None in old checkpoints.
    settings: dict | None = None
    # This rank's sums and counts of each loss term over the epoch so far: a resumed epoch
    # still averages whole (checkpoint.PER_RANK keeps every rank's).
    epoch_sums: dict[str, float] = field(default_factory=dict)
    epoch_counts: dict[str, int] = field(default_factory=dict)
    skipped_updates: int = 0     # updates fp16's loss scaler skipped (gradient overflow)
    # Micro-steps drawn from the lead stream (SCRUB's max-steps) and from the others: the
    # phases a U-LiRA shadow must match, not only their total.
    lead_steps: int = 0
    other_steps: int = 0

    def to_dict(self) -> dict:
        """The JSON-serialisable form kept in the checkpoint (a copy)."""
        return asdict(self)

    @classmethod
    def check_keys(cls, keys: Iterable[str], source: str | Path) -> None:
        """Refuse entries this engine does not know (``source`` names the checkpoint).

        Rejected rather than dropped: they come from other code, whose run this one could not
        be sure to continue alike; silently ignoring them would hide that."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(keys) - known)
        if unknown:
            raise CheckpointError(
                f"{source}: unknown trainer state entr{'y' if len(unknown) == 1 else 'ies'} "
                f"{', '.join(unknown)} (written by another version of forgetmi?); resume it "
                "with that version, or start afresh in another output_dir or with --resume=false")

    @classmethod
    def from_dict(cls, saved: dict, source: str | Path) -> LoopState:
        """The state :meth:`to_dict` wrote. Entries missing take their defaults: checkpoints of
        earlier versions lack those created during the loop (``epoch_sums``, ``epoch_counts``,
        ``skipped_updates``); unknown ones are refused (:meth:`check_keys`)."""
        cls.check_keys(saved, source)
        return cls(**saved)
