"""SCRUB's schedule, row by row: each of the first ``max_epochs`` epochs opens with one ascent
pass over the forget set (every row exactly once), then a full pass over the retain set."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from forgetmi.jobs.unlearn import main as unlearn_main
from forgetmi.unlearning.scrub import Scrub
from tests.originals import TINY


@pytest.fixture(scope="module")
def original(small_original):
    return small_original


def test_each_max_epoch_ascends_once_on_every_forget_row(demo_data, original, tmp_path,
                                                         monkeypatch):
    seen = []            # (epoch, phase, streams drawn, row ids the loss used)
    rows = {}
    real_at_step, real_loss = Scrub.at_step, Scrub.compute_loss

    def at_step(self, epoch, micro):
        self.seen_epoch = epoch
        real_at_step(self, epoch, micro)

    def compute_loss(self, model, batch):
        rows.update(forget=set(self.forget.positions.tolist()),
                    retain=set(self.retain.positions.tolist()))
        used = batch["forget" if self.phase == "max" else "retain"]["index"].tolist()
        seen.append((self.seen_epoch, self.phase, frozenset(batch), used))
        return real_loss(self, model, batch)

    monkeypatch.setattr(Scrub, "at_step", at_step)
    monkeypatch.setattr(Scrub, "compute_loss", compute_loss)
    # batch 6: the forget set (22 rows) is not a multiple of it
    assert unlearn_main([f"--data.root={demo_data.root}", f"--output_dir={tmp_path / 'run'}",
                         f"--original={original}", *TINY, "--batch_size=6", "--method=scrub",
                         "--retain_batch_size=32", "--epochs=2", "--scrub.max_epochs=2",
                         "--lr=1e-4"]) == 0
    assert len(rows["forget"]) % 6 != 0
    for epoch in range(2):
        steps = [s for s in seen if s[0] == epoch]
        ascended = Counter(i for _, phase, _, used in steps if phase == "max" for i in used)
        assert ascended == Counter(rows["forget"]), epoch   # every row, exactly once
        # max-steps draw no retain batch; the min-steps still cover the whole retain set
        assert all(drawn == {"forget"} for _, phase, drawn, _ in steps if phase == "max")
        assert {i for _, phase, _, used in steps if phase == "min" for i in used} == \
            rows["retain"], epoch
    # the run records its phases (what a U-LiRA shadow of it must match)
    timing = json.loads((tmp_path / "run" / "timing.json").read_text())
    assert timing["phases"] == {"lead_steps": sum(s[1] == "max" for s in seen),
                                "other_steps": sum(s[1] == "min" for s in seen)}


def test_ulira_shadows_of_a_scrub_target_take_its_max_steps_only():
    """A shadow's smaller retain set makes it run more epochs to reach the target's updates;
    SCRUB opens each of its first max_epochs epochs with a max-pass, so the shadow is held to
    the max epochs the target ran (1 here, not 2)."""
    from forgetmi.config import ExperimentConfig, load_config
    from forgetmi.evaluation.ulira import _like_target_phases

    cfg = load_config(ExperimentConfig, None, ["--method=scrub", "--scrub.max_epochs=2",
                                               "--epochs=1"])
    shadow = _like_target_phases(cfg.unlearn, cfg.train.epochs)
    assert shadow.scrub.max_epochs == 1 and cfg.unlearn.scrub.max_epochs == 2
    other = load_config(ExperimentConfig, None, ["--method=neggrad+", "--epochs=1"])
    assert _like_target_phases(other.unlearn, 1) == other.unlearn


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("n,batch_size,multiple", [(22, 6, 1), (22, 4, 4), (193, 8, 1),
                                                    (201, 8, 4), (5, 8, 1)])
def test_a_pass_takes_every_row_once_and_leaves_no_rank_idle(n, batch_size, multiple, world):
    from forgetmi.engine.sampling import BatchPlan
    plans = [BatchPlan(n, batch_size, world, rank, 0, "forget") for rank in range(world)]
    steps = plans[0].steps_per_epoch(multiple)
    if n < steps * world:
        with pytest.raises(ValueError, match="without repeating rows"):
            plans[0].once(0, steps)
        return
    ranks = [plan.once(1, steps) for plan in plans]
    assert Counter(i for batches in ranks for b in batches for i in b) == Counter(range(n))
    assert all(len(batches) == steps and all(0 < len(b) <= batch_size for b in batches)
               for batches in ranks)
    assert plans[-1].once(1, steps, start=2) == ranks[-1][2:]   # a resumed pass goes on alike


def test_scrub_resumed_inside_the_max_pass_matches_a_straight_run(demo_data, original, tmp_path):
    from safetensors.torch import load_file
    args = [f"--data.root={demo_data.root}", f"--original={original}", *TINY,
            "--batch_size=6", "--retain_batch_size=32", "--method=scrub", "--epochs=1",
            "--scrub.max_epochs=1", "--lr=1e-4", "--checkpoint_every=2"]
    assert unlearn_main([*args, f"--output_dir={tmp_path / 'straight'}"]) == 0
    # 4 max-steps (22 rows, 6 a step): checkpoint at 2, stop after 3, resume at step 2
    assert unlearn_main([*args, f"--output_dir={tmp_path / 'resumed'}", "--stop_after=3"]) == 3
    assert unlearn_main([*args, f"--output_dir={tmp_path / 'resumed'}"]) == 0
    a, b = (load_file(str(tmp_path / run / "model" / "model.safetensors"))
            for run in ("straight", "resumed"))
    assert max(float((a[k].float() - b[k].float()).abs().max()) for k in a) <= 1e-6
