"""Verdicts against retraining: TOST with known answers, its error rate, margins, Holm, and the
report's use of them (a collapsed model is never ranked closest)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from forgetmi.evaluation.verdicts import (Margins, decide, holm, margin_from_spread,
                                          margins_from_retrained, parse_margins, tost)
from forgetmi.jobs.report import main as report_main
from tests.test_report import metrics_doc, write_run

MARGINS = Margins(attack=0.05, test=0.02, source="test")


def _one(diffs, ses, margin=0.05):
    result = decide({"m": {"attack": (list(diffs), list(ses)),
                           "test": ([0.0] * len(diffs), [0.001] * len(diffs))}},
                    Margins(margin, 0.02, "test"))
    return result["m"]["figures"]["attack"]["outcome"]


def test_tost_known_answers():
    assert _one([0.001, -0.002, 0.0015, 0.0], [0.005] * 4) == "equivalent"
    assert _one([0.20, 0.21, 0.19], [0.01] * 3) == "differs"
    assert _one([0.0, 0.1, -0.1], [0.05] * 3) == "inconclusive"       # too noisy
    assert _one([0.04, 0.045, 0.05], [0.002] * 3) == "inconclusive"   # on the margin's edge
    # One seed: the patient error alone, and the verdict says it is about that seed.
    one = tost([0.01], [0.005], 0.05)
    assert one["df"] is None and one["seeds"] == 1 and one["p_equivalent"] < 0.05


def _simulate(true_diff, margin, seeds=5, seed_sd=0.02, patient_se=0.01, n=2000):
    rng = np.random.default_rng(0)
    outcomes = []
    for _ in range(n):
        common = rng.normal(0, patient_se)  # the same patients for every seed
        diffs = true_diff + common + rng.normal(0, seed_sd, seeds)
        r = tost(diffs, [patient_se] * seeds, margin)
        outcomes.append("equivalent" if r["p_equivalent"] < 0.05
                        else "differs" if r["p_differs"] < 0.05 else "inconclusive")
    return {o: outcomes.count(o) / n for o in ("equivalent", "differs", "inconclusive")}


def test_tost_error_rate_at_the_margin_and_power_inside():
    # A method exactly on the margin is called equivalent at most at the nominal 5%.
    at_edge = _simulate(true_diff=0.05, margin=0.05)
    assert at_edge["equivalent"] <= 0.06, at_edge
    # One that matches retraining is found equivalent most of the time with these errors.
    inside = _simulate(true_diff=0.0, margin=0.08)
    assert inside["equivalent"] >= 0.8 and inside["differs"] == 0, inside
    # One far outside is found to differ, never equivalent.
    outside = _simulate(true_diff=0.2, margin=0.05)
    assert outside["differs"] >= 0.95 and outside["equivalent"] == 0, outside


def test_holm_and_margins():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5]) == [0.5]
    values = [0.48, 0.50, 0.52]
    assert margin_from_spread(values) == pytest.approx(1.959964 * math.sqrt(2) * 0.02, rel=1e-5)
    with pytest.raises(ValueError, match="at least 3"):
        margin_from_spread([0.5, 0.51])
    m = margins_from_retrained(values, [0.80, 0.81, 0.79], "10%")
    assert m.attack == pytest.approx(m.test * 2, rel=1e-6) and "3 seeds" in m.source
    assert parse_margins("attack=0.05,test=0.02") == Margins(0.05, 0.02, "given")


def test_holm_corrects_across_methods():
    # The same borderline evidence for three methods: each alone would pass, Holm keeps one.
    pairs = ([0.0, 0.01, -0.01], [0.012] * 3)
    alone = decide({"a": {"attack": pairs, "test": pairs}}, Margins(0.045, 0.045, "t"))
    three = decide({k: {"attack": pairs, "test": pairs} for k in "abc"},
                   Margins(0.045, 0.045, "t"))
    raw = alone["a"]["figures"]["attack"]
    assert raw["p_equivalent_holm"] == raw["p_equivalent"]
    assert three["a"]["figures"]["attack"]["p_equivalent_holm"] == pytest.approx(
        min(1.0, 3 * raw["p_equivalent"]))


def _sized_runs(root, rng, collapsed_test_drop=0.15):
    """Three seeds at 10%: retrained, original (remembers), 'good' (like retraining),
    'collapsed' (attack at the retrained value but test AUC fallen)."""
    docs = []
    for seed in range(3):
        ref_attack, ref_test = 0.50 + 0.01 * (seed - 1), 0.80 + 0.005 * (seed - 1)
        for model, attack, test in (("retrained", ref_attack, ref_test),
                                    ("original", ref_attack + 0.24, ref_test - 0.01),
                                    ("good", ref_attack + 0.005, ref_test + 0.001),
                                    ("collapsed", ref_attack, ref_test - collapsed_test_drop)):
            doc = metrics_doc(model, model, 10, seed, rng)
            doc["mia"]["forget_vs_unseen"] = {"auc": attack, "low": attack - 0.05,
                                              "high": attack + 0.05}
            doc["metrics"]["test"]["joint"]["auc"]["value"] = test
            if model != "retrained":
                doc["paired"] = {"fvu_auc": {"diff": attack - ref_attack, "se": 0.004},
                                 "test_auc": {"diff": test - ref_test, "se": 0.003}}
            docs.append(write_run(root, doc))
    return docs


def test_report_verdicts_and_ranking_skip_a_collapsed_model(tmp_path):
    _sized_runs(tmp_path / "runs", np.random.default_rng(3))
    assert report_main([str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 0
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    (judged,) = data["verdicts"]
    assert judged["margins"]["attack"] == pytest.approx(1.959964 * math.sqrt(2) * 0.01, rel=1e-4)
    outcome = {k: v["verdict"] for k, v in judged["decisions"].items()}
    assert outcome["original"] == "differs"
    assert outcome["collapsed"] == "differs"          # its attack matches; its utility does not
    assert judged["decisions"]["collapsed"]["figures"]["attack"]["outcome"] != "differs"
    assert outcome["good"] in ("equivalent", "inconclusive")
    (closest,) = data["closest_to_retrained"]
    assert closest["closest"] == "good"
    assert [r["label"] for r in closest["outside_utility_margin"]] == ["collapsed"]
    text = (tmp_path / "out" / "report.md").read_text()
    assert "## Verdicts against retraining" in text and "not ranked" in text


def test_too_few_seeds_for_a_margin(tmp_path, caplog):
    paths = _sized_runs(tmp_path / "runs", np.random.default_rng(4))
    for path in paths:  # keep seeds 0 and 1 only
        if "/s2/" in str(path):
            path.unlink()
    # auto: the report is written, and says why there is no verdict
    assert report_main([str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 0
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert data["verdicts"][0]["margins"] is None
    assert "2 retrained seed(s)" in data["verdicts"][0]["reason"]
    # Asked for margins from seeds: a one-line error naming the retrained runs' files and the fix.
    caplog.clear()
    assert report_main([str(tmp_path / "runs"), "--out", str(tmp_path / "out2"),
                        "--margins", "seeds"]) == 2
    message = " ".join(r.getMessage() for r in caplog.records if r.levelname == "ERROR")
    assert "too few seeds for a margin" in message and "retrained/s0/metrics.json" in message
    assert "--margins attack=A,test=T" in message and "\n" not in message
    assert not (tmp_path / "out2").exists()
    # Given margins decide with two seeds; --write-margins refuses without measured ones.
    assert report_main([str(tmp_path / "runs"), "--out", str(tmp_path / "out3"),
                        "--margins", "attack=0.05,test=0.02"]) == 0
    data = json.loads((tmp_path / "out3" / "report.json").read_text())
    assert data["verdicts"][0]["decisions"]["original"]["verdict"] == "differs"
    assert report_main([str(tmp_path / "runs"), "--out", str(tmp_path / "out4"),
                        "--write-margins", str(tmp_path / "m.yaml")]) == 2
    assert not (tmp_path / "out4").exists() and not (tmp_path / "m.yaml").exists()


def test_margins_written_by_one_report_decide_another(tmp_path):
    _sized_runs(tmp_path / "runs", np.random.default_rng(5))
    assert report_main([str(tmp_path / "runs"), "--out", str(tmp_path / "out"),
                        "--write-margins", str(tmp_path / "margins.yaml")]) == 0
    margins = parse_margins(str(tmp_path / "margins.yaml"))
    assert margins.attack > 0 and "spread over 3 seeds" in margins.source
    bad = tmp_path / "bad.yaml"
    bad.write_text("attack: wide\ntest: 0.02\n")
    with pytest.raises(Exception, match="bad.yaml.*attack"):
        parse_margins(str(bad))


# --- the calibrated attack and forget quality --------------------------------------------------

def _rows(rng, n_patients, rows_each=4):
    groups = np.repeat(np.arange(n_patients), rows_each)
    difficulty = rng.gamma(2.0, 0.6, len(groups))  # rows differ widely in how hard they are
    return groups, difficulty


def test_calibrated_attack_separates_memory_and_stays_at_chance_without_it():
    from forgetmi.evaluation.calibrated import calibrated_attack, forget_quality
    from forgetmi.evaluation.mia import forget_vs_unseen_loss

    rng = np.random.default_rng(0)
    f_groups, f_diff = _rows(rng, 40)
    u_groups, u_diff = _rows(rng, 40)
    u_groups = u_groups + 1000
    noise = lambda n: rng.normal(0, 0.1, n)  # noqa: E731
    # references: retrained models of other seeds (never saw either side)
    f_ref, u_ref = f_diff + noise(len(f_diff)), u_diff + noise(len(u_diff))
    # a model that remembers the forget rows: their loss lowered by 0.3
    f_mem, u_mem = f_diff - 0.3 + noise(len(f_diff)), u_diff + noise(len(u_diff))
    kw = dict(forget_groups=f_groups, unseen_groups=u_groups, n_references=2, n_boot=300)
    remembers = calibrated_attack(f_mem, u_mem, f_ref, u_ref, **kw)
    plain = forget_vs_unseen_loss(f_mem, u_mem, forget_groups=f_groups, unseen_groups=u_groups,
                                  n_boot=300)
    assert remembers["auc"] > 0.9 and remembers["low"] > 0.8
    assert remembers["auc"] > plain["auc"] + 0.2  # calibration removes the rows' difficulty
    assert remembers["tpr_at_1pct_fpr"] > 0.2
    # a second retrained model: nothing to find
    f_two, u_two = f_diff + noise(len(f_diff)), u_diff + noise(len(u_diff))
    peers = calibrated_attack(f_two, u_two, f_ref, u_ref, **kw)
    assert peers["low"] < 0.5 < peers["high"] and abs(peers["auc"] - 0.5) < 0.1
    # forget quality: a KS test between the two models' forget-row losses
    assert forget_quality(f_mem, f_two)["p_value"] < 0.05
    assert forget_quality(f_diff + noise(len(f_diff)), f_two)["p_value"] > 0.05


def test_paired_differences_share_the_patients_drawn():
    """Paired: a constant offset between two models has zero bootstrap spread."""
    from forgetmi.evaluation.calibrated import paired_differences

    rng = np.random.default_rng(1)
    f_groups, f_diff = _rows(rng, 20)
    u_groups, u_diff = _rows(rng, 20)
    labels = rng.integers(0, 4, 60)
    logits = rng.normal(0, 1, (60, 4))
    logits[np.arange(60), labels] += 1.0
    test_groups = np.repeat(np.arange(15), 4) + 5000

    def model(shift_forget):
        return {"forget": {"loss": f_diff - shift_forget, "group": f_groups},
                "holdout": {"loss": u_diff, "group": u_groups + 1000},
                "test": {"label": labels, "logits": logits, "group": test_groups}}

    same = paired_differences(model(0.0), model(0.0), unseen="holdout", n_boot=200)
    assert same["fvu_auc"]["diff"] == 0 and same["fvu_auc"]["se"] == 0
    assert same["test_auc"]["diff"] == 0 and same["test_auc"]["se"] == 0
    moved = paired_differences(model(0.5), model(0.0), unseen="holdout", n_boot=200)
    assert moved["fvu_auc"]["diff"] > 0.1 and moved["fvu_auc"]["low"] > 0
    assert moved["unseen"] == "holdout"


def test_benchmark_checks_signal_and_reproduction_through_the_report(tmp_path, caplog):
    """benchmarks/benchmark_signal.py only calls `forgetmi report --check`: the signal checks
    pass on runs that tell the original from the retrained model; a rerun that moves a mean by
    more than twice the recorded spread fails the reproduction check."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "signal_script", Path(__file__).resolve().parents[1] / "benchmarks/benchmark_signal.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    paths = _sized_runs(tmp_path / "runs", np.random.default_rng(6))
    recorded = tmp_path / "figures.json"
    assert script.run([str(tmp_path / "runs"), "--record", str(recorded)]) == 0
    figures = json.loads(recorded.read_text())
    assert figures["10%"]["good"]["attack_auc"]["mean"] == pytest.approx(0.505)
    assert script.run([str(tmp_path / "runs"), "--recorded", str(recorded)]) == 0
    for path in paths:  # the 'good' model's attack AUC moves by 0.03 in every seed
        doc = json.loads(path.read_text())
        if doc["label"] == "good":
            doc["mia"]["forget_vs_unseen"]["auc"] += 0.03
            path.write_text(json.dumps(doc))
    caplog.clear()
    assert script.run([str(tmp_path / "runs"), "--recorded", str(recorded)]) == 1
    assert "FAIL forget set 10%: good attack_auc reproduced" in caplog.text
    # a run that cannot tell remembering from never seen fails its signal check
    for path in paths:
        doc = json.loads(path.read_text())
        if doc["model"] == "original":
            doc["mia"]["forget_vs_unseen"].update(auc=0.52, low=0.45, high=0.6)
            path.write_text(json.dumps(doc))
    assert script.run([str(tmp_path / "runs")]) == 1
    assert "FAIL forget set 10%, seed 0: the original remembers" in caplog.text


def test_interval_coverage_on_patients_no_model_saw():
    """Reassigning never-seen patients to two sides: the headline's interval holds 0.5 about
    95% of the time (patient-correlated rows, 60 patients)."""
    from forgetmi.evaluation.signal import interval_coverage

    rng = np.random.default_rng(2)
    groups = np.repeat(np.arange(60), 5)
    losses = rng.normal(0, 1, 60)[groups] + rng.normal(0, 1, len(groups))  # patient effect
    result = interval_coverage(losses[:150], losses[150:], groups[:150], groups[150:],
                               splits=100, n_boot=200)
    assert result["splits"] == 100 and 0.85 <= result["coverage"] <= 1.0, result
    assert 0.85 <= result["bootstrap_coverage"] <= 1.0, result
    assert 0 < result["bootstrap_mean_width"] < result["mean_width"] < 0.5, result
    alone = interval_coverage(losses[:150], losses[150:], groups[:150], groups[150:],
                              splits=100, n_boot=0)
    assert "bootstrap_coverage" not in alone and alone["coverage"] == result["coverage"]
    assert abs(result["mean_auc"] - 0.5) < 0.03
