"""The evidence run's design (configs/experiments/evidence/): the three kinds of memory differ
only in what the model can remember, the table is drawn where nothing was tuned, every forget
size is large enough to judge, and the sweeps score against the tuning protocol's models."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from forgetmi.data.splits import draw_forget_sets
from forgetmi.jobs.protocol import expand, load_protocol
from forgetmi.synthetic.cohort import build_cohort
from forgetmi.unlearning import METHODS

REPO = Path(__file__).resolve().parents[1]
EVIDENCE = REPO / "configs/experiments/evidence"
KINDS = {"label": (0.5, 0.0), "content": (0.0, 0.5), "both": (0.5, 0.5)}  # label noise, atypical


def _read(name: str) -> dict:
    return yaml.safe_load((EVIDENCE / f"{name}.yaml").read_text())


def test_the_kinds_differ_only_in_what_the_model_remembers():
    files = {kind: _read(kind) for kind in KINDS}
    for kind, (label_noise, atypical) in KINDS.items():
        stand_in = files[kind]["stand_in"]
        assert (stand_in["label_noise"], stand_in["atypical"]) == (label_noise, atypical)
        assert files[kind]["output_dir"] == f"runs/evidence/{kind}"
        assert files[kind]["data"] == {"root": f"forgetmi-evidence/{kind}/data"}

    def shared(doc: dict) -> dict:
        doc = {k: v for k, v in doc.items() if k not in ("output_dir", "data")}
        doc["stand_in"] = {k: v for k, v in doc["stand_in"].items()
                           if k not in ("label_noise", "atypical")}
        return doc
    assert shared(files["label"]) == shared(files["content"]) == shared(files["both"])
    table = files["both"]
    assert len(table["seeds"]) >= 5 and sorted(table["forget_sets"], key=int) == ["3", "6", "10"]


def _seeds_and_generators(doc, seeds: set, generators: set) -> None:
    """Every training seed and generator seed named anywhere in a config document."""
    if isinstance(doc, dict):
        for key, value in doc.items():
            if key == "seeds" and isinstance(value, list):
                seeds.update(value)
            elif key == "seed" and isinstance(value, int):
                seeds.add(value)
            elif key == "seed" and isinstance(value, dict):        # a sweep's parameter
                seeds.update(value.get("values", [value.get("value")]))
            elif key == "stand_in" and isinstance(value, dict):
                generators.add(value.get("seed", 0))
                continue
            _seeds_and_generators(value, seeds, generators)
    elif isinstance(doc, list):
        for item in doc:
            _seeds_and_generators(item, seeds, generators)


def test_the_table_is_drawn_where_nothing_was_tuned_or_run_before():
    table = {kind: _read(kind) for kind in KINDS}
    seeds, generators = set(), set()
    for path in sorted((REPO / "configs").rglob("*.yaml")):
        if path.parent == EVIDENCE and path.stem in KINDS:
            continue
        _seeds_and_generators(yaml.safe_load(path.read_text()), seeds, generators)
    generators |= {0}                                   # the demo's and the tests' stand-ins
    for doc in table.values():
        assert not set(doc["seeds"]) & seeds
        assert doc["stand_in"]["seed"] not in generators


@pytest.mark.parametrize("name", ["tuning", *KINDS])
def test_every_forget_set_is_large_enough_to_judge(name):
    """At least 150 rows in the 3% set (~40 patients), as many again in the holdout."""
    stand_in = _read(name)["stand_in"]
    cohort = build_cohort(stand_in["patients"], stand_in["seed"], stand_in["test_fraction"],
                          stand_in["label_noise"], stand_in["atypical"])
    split = cohort.table[["subject_id", "study_id", "dicom_id", "severity", "fold"]]
    draw = draw_forget_sets(split, (3, 6, 10), seed=stand_in["seed"])
    assert len(draw.forget_sets[3]) >= 150
    assert len(draw.holdout) >= len(draw.forget_sets[10]) * 0.8


def test_the_tuning_protocol_is_the_tables_recipe_on_its_own_draw():
    tuning, both = _read("tuning"), _read("both")
    assert tuning["train"] == both["train"] and tuning["experiment"] == both["experiment"]
    assert {k: v for k, v in tuning["stand_in"].items() if k != "seed"} == \
        {k: v for k, v in both["stand_in"].items() if k != "seed"}
    jobs = expand(load_protocol(EVIDENCE / "tuning.yaml"))
    assert sorted(j.name for j in jobs if j.stage < 2) == [
        "original/s3", "original/s4", "retrained/6/s3", "retrained/6/s4"]


@pytest.mark.parametrize("kind", KINDS)
def test_the_table_runs_every_method_at_every_size_and_seed(kind, tmp_path):
    """Every job of the table builds a valid config. The methods' settings come from the
    tuning stage (configs/presets/evidence.yaml, written by forgetmi select); each method at
    its defaults stands in for them here, so the table is checked before it is tuned."""
    doc = _read(kind)
    assert doc["methods"] == "../../presets/evidence.yaml"
    doc["methods"] = {name: {"method": name} for name in METHODS}
    doc["experiment"] = str(EVIDENCE / doc["experiment"])
    path = tmp_path / f"{kind}.yaml"
    path.write_text(yaml.safe_dump(doc))
    protocol = load_protocol(path)
    jobs = expand(protocol)
    names = {j.name for j in jobs}
    # The protocol's data block reaches every run: each kind trains on its own stand-in.
    assert all(f"--data.root=forgetmi-evidence/{kind}/data" in j.argv
               for j in jobs if j.kind in ("train", "retrain", "unlearn"))
    for method in METHODS:
        for size in ("3", "6", "10"):
            for seed in protocol.seeds:
                assert f"unlearn/{method}/{size}/s{seed}" in names
                assert f"evaluate/unlearn/{method}/{size}/s{seed}" in names
    assert sum(name.startswith("retrained/") for name in names) == 3 * len(protocol.seeds)
