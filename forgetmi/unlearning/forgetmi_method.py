"""Forget-MI (SPEC §4).

Streams: the forget set (primary: one epoch = one pass over it), its noisy copy drawing the very
same batches, and the retain set cycling over all of its rows across steps. The original model
is the frozen reference of all four losses.
"""

from __future__ import annotations

from forgetmi.engine.objective import Stream
from forgetmi.errors import ForgetMIError
from forgetmi.losses.forgetmi import OBJECTIVES, PRESETS, LossWeights, forgetmi_loss
from forgetmi.unlearning.base import EMBEDDINGS, Unlearner, forward, register

WEIGHT_KEYS = ("uu", "ur", "mu", "mr")


def resolve_weights(preset: str, weights: list[float] | None,
                    single: dict[str, float | None] | None = None) -> LossWeights:
    """The preset's weights, or ``weights``, with each term ``single`` sets (``uu``: 0.5)
    replaced."""
    chosen = _base_weights(preset, weights)
    single = {k: v for k, v in (single or {}).items() if v is not None}
    if single:
        from dataclasses import replace
        chosen = replace(chosen, **single)
        try:
            chosen.normalised()
        except ValueError as err:
            raise ForgetMIError(f"unlearn.weight_{{uu,ur,mu,mr}}: {err}") from None
    return chosen


def _base_weights(preset: str, weights: list[float] | None) -> LossWeights:
    if weights is not None:
        if len(weights) != 4:
            raise ForgetMIError(f"unlearn.weights: expected 4 numbers (UU, UR, MU, MR), got {weights}")
        chosen = LossWeights(*weights)
        try:
            chosen.normalised()
        except ValueError as err:
            raise ForgetMIError(f"unlearn.weights: {err}") from None
        return chosen
    if preset not in PRESETS:
        raise ForgetMIError(f"unlearn.preset: expected one of {', '.join(PRESETS)}, got {preset!r}")
    return PRESETS[preset]


@register("forgetmi")
class ForgetMI(Unlearner):
    uses_original = True
    uses_noisy_forget = True
    settings = ("preset", "weights", *(f"weight_{k}" for k in ("uu", "ur", "mu", "mr")),
                "objective", "retention_cap")
    reads = EMBEDDINGS   # the heads are untouched

    def __init__(self, cfg, datasets, original=None, noisy_forget=None):
        super().__init__(cfg, datasets, original, noisy_forget)
        u = cfg.unlearn
        if noisy_forget is None:
            raise ForgetMIError("forgetmi needs the noisy copy of the forget set")
        if u.effective_objective not in OBJECTIVES:
            raise ForgetMIError(f"unlearn.objective: expected one of {', '.join(OBJECTIVES)}, "
                                f"got {u.effective_objective!r}")
        self.weights = resolve_weights(u.preset, u.weights,
                                       {k: getattr(u, f"weight_{k}") for k in WEIGHT_KEYS})
        self.objective = u.effective_objective
        self.cap_margin = u.retention_cap
        self.caps: dict[str, float] | None = None   # set after the first epoch when capping

    def streams(self) -> list[Stream]:
        return [self.forget_stream(),
                Stream("noisy_forget", self.noisy_forget, self.batch_size, follows="forget"),
                self.retain_stream()]

    def end_epoch(self, epoch: int, means: dict[str, float]) -> None:
        # The release caps each retention loss, after the first epoch, at its first-epoch
        # mean + 1 (a margin here); kept in the checkpoint so a resumed run caps alike.
        if self.cap_margin is not None and self.caps is None:
            self.caps = {k: means[k] + self.cap_margin for k in ("ur", "mr")}

    def state_dict(self) -> dict:
        return {"caps": self.caps}

    def load_state_dict(self, state: dict) -> None:
        self.caps = state.get("caps")

    def compute_loss(self, model, batch):
        forget, noisy, retain = batch["forget"], batch["noisy_forget"], batch["retain"]
        og_noisy, og_retain = self.teacher(noisy), self.teacher(retain)
        return forgetmi_loss(forward(model, forget), og_noisy, forward(model, retain), og_retain,
                             self.weights, self.objective, self.caps)
