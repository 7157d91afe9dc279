"""The shadow-model audit (U-LiRA) at small scale on the generated data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from forgetmi.data import formats
from forgetmi.evaluation.ulira import balanced_membership
from forgetmi.jobs.ulira import main as ulira_main
from forgetmi.jobs.train import main as train_main
from forgetmi.jobs.unlearn import main as unlearn_main
from tests.originals import TINY

pytestmark = pytest.mark.slow

COMMON = [*TINY, "--checkpoint_every=10000"]


def test_balanced_membership():
    member = balanced_membership(list(range(7)), 6, np.random.default_rng(0))
    assert (member.sum(axis=1) == 3).all()                 # each patient in half the shadows
    assert set(member.sum(axis=0)) <= {3, 4}               # each shadow holds about half
    with pytest.raises(Exception, match="even"):
        balanced_membership([1, 2], 3, np.random.default_rng(0))


@pytest.fixture(scope="module")
def audited(demo_data, fitted_original, tmp_path_factory):
    """The session's original fitted to its rows (linked as ``original``, read-only) and a no-op
    "unlearning" of it (learning rate 1e-12: nothing moves), so the forget rows are still remembered and the audit
    must say so."""
    root = tmp_path_factory.mktemp("ulira")
    (root / "original").symlink_to(fitted_original.parent, target_is_directory=True)
    assert unlearn_main([f"--data.root={demo_data.root}", *COMMON, f"--output_dir={root / 'noop'}",
                         f"--original={fitted_original}", "--epochs=1", "--lr=1e-12",
                         "--weight_decay=0"]) == 0
    return root


def ulira(root, *extra):
    return ulira_main(["--config", str(root / "noop" / "config.yaml"),
                       "--train-config", str(root / "original" / "config.yaml"),
                       "--target", str(root / "noop" / "model"), "--out", str(root / "shadows"),
                       "--shadows", "6", *extra])


def test_audit_finds_rows_that_were_not_forgotten(demo_data, audited):
    assert ulira(audited, "--only", "2") == 0              # one array task alone
    assert (audited / "shadows" / "shadow-002" / "unlearned" / "model").is_dir()
    assert not (audited / "shadows" / "shadow-000" / "original").exists()
    assert ulira(audited) == 0
    result = json.loads((audited / "shadows" / "ulira.json").read_text())
    forget = formats.read_forget_set(demo_data.forget_sets[10])
    assert result["n_shadows"] == 6 and result["n_rows"] == len(forget)
    assert result["n_patients"] == forget["subject_id"].nunique()
    assert result["log_ratio"]["n_defined"] == len(forget)  # 3 "in" and 3 "out" per row
    # shadows that trained on a row are more confident in its label than those that did not
    assert result["in_minus_out_statistic"] > 0.3, result
    # the target (nothing unlearned) looks trained-on more often than a shadow that never saw
    # the rows: its share of rows with log-ratio > 0 lies above the null reference's
    null = result["null_reference"]
    assert null["unlearned_frac_above_0"] > null["never_seen_frac_above_0"], result
    assert result["log_ratio"]["frac_above_0"] > null["never_seen_frac_above_0"], result
    assert 0.0 <= result["shadow_attack_auc"] <= 1.0
    assert result["shadow_attack_rows"] == 6 * len(forget)
    # each shadow never saw half of the candidate pool and forgot the other half (target's size)
    for s in range(6):
        excluded = formats.read_forget_set(audited / "shadows" / f"shadow-{s:03d}" / "excluded.csv")
        kept = formats.read_forget_set(audited / "shadows" / f"shadow-{s:03d}" / "forget.csv")
        assert set(excluded["subject_id"]).isdisjoint(kept["subject_id"])
        assert len(kept) == len(forget)
    # nothing identifying in the result
    text = (audited / "shadows" / "ulira.json").read_text()
    assert not any(str(v) in text for v in forget["subject_id"].unique())


def test_rerun_skips_finished_shadows(audited, caplog):
    assert ulira(audited) == 0
    assert caplog.text.count("already finished") == 6


def test_odd_number_of_shadows_is_refused(audited, caplog):
    assert ulira(audited, "--shadows", "3") == 2
    assert "even" in caplog.text


def test_shadows_as_tasks_then_scoring(audited, caplog):
    """The executor path: finished shadows are not resubmitted, and the scoring task runs."""
    (audited / "shadows" / "ulira.json").unlink()
    assert ulira(audited, "--executor", "local") == 0
    assert "0 shadow(s) submitted (6 already finished)" in caplog.text
    assert json.loads((audited / "shadows" / "ulira.json").read_text())["n_shadows"] == 6


def _shadow_runs(out):
    """Each shadow's forget patients and rows, and what its unlearning run recorded."""
    runs = []
    for folder in sorted(out.glob("shadow-*")):
        forget = formats.read_forget_set(folder / "forget.csv")
        excluded = formats.read_forget_set(folder / "excluded.csv")
        timing = json.loads((folder / "unlearned" / "timing.json").read_text())
        runs.append({"forget": set(forget["subject_id"]), "forget_rows": len(forget),
                     "excluded": set(excluded["subject_id"]), "timing": timing})
    return runs


def _assert_shadows_like_target(demo_data, target_run, out, n_shadows):
    target = json.loads((target_run / "timing.json").read_text())
    forget = formats.read_forget_set(demo_data.forget_sets[10])
    runs = _shadow_runs(out)
    assert len(runs) == n_shadows
    for run in runs:
        # the target's forget size, in the forget set and in what the unlearning run drew
        assert run["forget_rows"] == len(forget)
        assert run["timing"]["rows"].get("forget", len(forget)) == len(forget)
        # the same number of optimizer updates as the audited run
        assert run["timing"]["updates"] == target["updates"], (run["timing"], target)
    # the candidate pool: the target's forget patients and as many rows again of other patients
    pool = set().union(*(run["forget"] for run in runs))
    assert set(forget["subject_id"]) < pool
    split = formats.read_split(demo_data.split)
    assert split["subject_id"].isin(pool).sum() == 2 * len(forget)
    for patient in pool:
        forgotten = [patient in run["forget"] for run in runs]
        assert sum(forgotten) == n_shadows // 2        # in and out of some shadow forget set
    for run in runs:                                   # "out" means never seen
        assert run["excluded"] == pool - run["forget"]
    result = json.loads((out / "ulira.json").read_text())
    assert result["shadow_runs"]["forget_rows"] == [len(forget)] * n_shadows
    assert result["shadow_runs"]["updates"] == [target["updates"]] * n_shadows
    assert result["target_run"]["updates"] == target["updates"]
    return target, runs


@pytest.fixture(scope="module")
def small_target(demo_data, tmp_path_factory):
    """A one-epoch original and a no-op unlearning of it by a retain-driven method (fine-tuning):
    a cheap target whose run length the shadows repeat."""
    root = tmp_path_factory.mktemp("ulira-like-target")
    data = [f"--data.root={demo_data.root}", *COMMON]
    assert train_main([*data, f"--output_dir={root / 'original'}", "--epochs=1"]) == 0
    assert unlearn_main([*data, f"--output_dir={root / 'noop-finetune'}", "--method=finetune",
                         f"--original={root / 'original' / 'model'}", "--epochs=1", "--lr=1e-12",
                         "--weight_decay=0"]) == 0
    return root


def ulira_of(root, target, out, *extra):
    return ulira_main(["--config", str(root / target / "config.yaml"),
                       "--train-config", str(root / "original" / "config.yaml"),
                       "--target", str(root / target / "model"), "--out", str(root / out),
                       "--shadows", "2", *extra])


def test_shadows_are_unlearned_like_the_target(demo_data, audited, caplog):
    """Shadow forget sets have the target's size and the shadow runs its number of updates;
    every candidate patient is forgotten in some shadows and unseen in the others (the
    audit's own shadows, a forget-driven method: Forget-MI)."""
    if not (audited / "shadows" / "ulira.json").is_file():
        assert ulira(audited) == 0
    _assert_shadows_like_target(demo_data, audited / "noop", audited / "shadows", 6)

    # a shadow whose recorded run differs from the target's is refused, naming both values
    timing = audited / "shadows" / "shadow-001" / "unlearned" / "timing.json"
    record = json.loads(timing.read_text())
    updates = record["updates"]
    timing.write_text(json.dumps(record | {"updates": updates + 1}))
    try:
        assert ulira(audited, "--collect-only") == 2
    finally:
        timing.write_text(json.dumps(record))
    assert (f"shadow 1 was not unlearned like the audited model: updates {updates + 1} "
            f"(target {updates})") in caplog.text


def test_retain_driven_shadows_run_the_target_updates(demo_data, small_target):
    """A method whose epoch is a pass over retain: the shadows retain fewer rows than the target
    (the unseen half of the pool), so they run more epochs and stop at the target's update."""
    assert ulira_of(small_target, "noop-finetune", "shadows-finetune") == 0
    target, runs = _assert_shadows_like_target(demo_data, small_target / "noop-finetune",
                                               small_target / "shadows-finetune", 2)
    assert all(run["timing"]["rows"]["retain"] < target["rows"]["retain"] for run in runs)


def test_shadow_forget_sets_have_the_target_size():
    from forgetmi.evaluation.ulira import shadow_forget_sets
    forget = {"f1": 1, "f2": 4, "f3": 7, "f4": 9}                    # 21 rows
    others = {f"o{i}": n for i, n in enumerate([1, 1, 2, 2, 3, 3, 4, 5, 6, 7, 9, 13])}
    pool, sets = shadow_forget_sets(forget, others, 6, np.random.default_rng(0))
    sizes = forget | others
    assert set(forget) < pool and sum(sizes[p] for p in pool) == 2 * 21
    assert [sum(sizes[p] for p in s) for s in sets] == [21] * 6
    assert all(sum(p in s for s in sets) == 3 for p in pool)        # in half, out of half
    with pytest.raises(Exception, match="exactly 21 rows"):
        shadow_forget_sets(forget, {"o1": 20, "o2": 2}, 2, np.random.default_rng(0))
