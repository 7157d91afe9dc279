"""The paper's protocol as jobs with dependencies, and a small protocol run end to end."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest
import yaml

from forgetmi.config import ConfigError
from forgetmi.jobs.protocol import expand, load_protocol
from forgetmi.jobs.protocol import main as protocol_main

REPO = Path(__file__).resolve().parents[1]


def test_paper_protocol_expands_to_the_papers_grid():
    jobs = expand(load_protocol(REPO / "configs/experiments/paper.yaml"))
    kinds = Counter(j.kind for j in jobs)
    # one original per seed, shared by the 3 sizes; 3 sizes × 3 seeds: a retrained model and 12
    # unlearning runs each; the original scored at every size
    assert kinds == {"train": 3, "retrain": 9, "unlearn": 108, "evaluate": 126, "report": 1}
    names = {j.name: j for j in jobs}
    assert len(names) == len(jobs)
    position = {j.name: i for i, j in enumerate(jobs)}
    for job in jobs:
        assert all(position[a] < position[job.name] for a in job.after), job.name
    unlearn = names["unlearn/forgetmi-retention/6/s2"]
    assert unlearn.after == ["original/s2"]
    assert "--original=runs/paper/original/s2/model" in unlearn.argv
    assert "--preset=retention" in unlearn.argv and "--epochs=30" in unlearn.argv
    assert "--forget_set=forget_set_6per.csv" in unlearn.argv and "--seed=2" in unlearn.argv
    assert "--epochs=5" in names["unlearn/scrub/3/s0"].argv       # a method's own setting wins
    evaluation = names["evaluate/unlearn/scrub/3/s0"]
    # scored against its seed's retrained model, calibrated by those of every seed of its size
    assert evaluation.after == ["retrained/3/s0", "retrained/3/s1", "retrained/3/s2",
                                "unlearn/scrub/3/s0"]
    assert "--retrained" in evaluation.argv
    references = evaluation.argv[evaluation.argv.index("--references") + 1:][:3]
    assert [Path(r).parts[-2:] for r in references] == [("3", f"s{s}") for s in range(3)]
    assert "--retrained" not in names["evaluate/retrained/3/s0"].argv
    assert "--references" in names["evaluate/retrained/3/s0"].argv
    assert len(names["report"].after) == 126
    # the shared original: one set of training rows for every size, scored at each size into
    # its own folder, on that size's forget set, against that size's retrained model
    listed = "--val_avoid=[forget_set_3per.csv,forget_set_6per.csv,forget_set_10per.csv]"
    assert listed in names["original/s2"].argv and "--forget_set=None" in names["original/s2"].argv
    assert all(listed in j.argv for j in jobs if j.kind in ("retrain", "unlearn"))
    for size in ("3", "6", "10"):
        scored = names[f"evaluate/original/{size}/s2"]
        assert scored.argv[0] == "runs/paper/original/s2"
        assert scored.output_dir == Path(f"runs/paper/original/s2/eval/{size}")
        assert scored.argv[scored.argv.index("--out") + 1] == str(scored.output_dir)
        assert f"--forget_set=forget_set_{size}per.csv" in scored.argv
        reference = scored.argv[scored.argv.index("--retrained") + 1]
        assert reference == f"runs/paper/retrained/{size}/s2"
        assert "original/s2" in scored.after


@pytest.mark.parametrize("change,message", [
    ({"colour": "blue"}, r"p.yaml: unknown protocol key\(s\) colour"),
    ({"base_dir": "/elsewhere"}, "'base_dir' is not a protocol key"),
    ({"seeds": "zero"}, "p.yaml: seeds: expected an integer, got 'zero'"),
    ({"methods": {"x": {"preset": "equal"}}}, "must be a mapping with a 'method'"),
    ({"methods": "presets/missing.yaml"}, r"presets/missing.yaml: presets file not found"),
    ({"unlearn": {"epochs": "many"}}, "protocol job original/s0"),
])
def test_bad_protocols_are_refused(tmp_path, change, message):
    values = yaml.safe_load((REPO / "configs/experiments/paper.yaml").read_text())
    values["experiment"] = str(REPO / "configs/experiments/mimic-cxr.yaml")
    if "unlearn" in change:
        values["train"]["epochs"] = "many"   # fails on the first job built
        message = "expected an integer"
    values.update({k: v for k, v in change.items() if k != "unlearn"})
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(values))
    with pytest.raises(ConfigError, match=message):
        expand(load_protocol(path))


def test_small_protocol_runs_end_to_end(demo_data, tmp_path, caplog):
    experiment = tmp_path / "experiment.yaml"
    experiment.write_text(yaml.safe_dump({
        "data": {"root": str(demo_data.root), "image_size": 64},
        "model": {"text_encoder": "tiny"},
        "train": {"batch_size": 8, "warmup_ratio": 0.0, "early_stopping_patience": 0,
                  "log_every": 50, "checkpoint_every": 1000},
        "tracking": {"wandb": "disabled"}}))
    protocol = tmp_path / "protocol.yaml"
    protocol.write_text(yaml.safe_dump({
        "experiment": "experiment.yaml", "output_dir": str(tmp_path / "runs"), "seeds": [0, 1],
        "forget_sets": {"3": "forget_set_3per.csv", "10": "forget_set_10per.csv"},
        "train": {"epochs": 1, "lr": 1e-3},
        "unlearn": {"epochs": 1, "lr": 1e-3},
        "methods": {"forgetmi-unimodal": {"method": "forgetmi", "preset": "unimodal"},
                    "neggrad+": {"method": "neggrad+"}},
        "evaluate": {"bootstrap": 20}}))
    assert protocol_main([str(protocol)]) == 0
    runs = tmp_path / "runs"
    rows = list(csv.DictReader((runs / "report" / "report.csv").open()))
    assert {(r["label"], r["size"]) for r in rows} == {
        (label, size) for label in ("original", "retrained", "forgetmi (unimodal)", "neggrad+")
        for size in ("3%", "10%")}
    assert all(int(float(r["n"])) == 2 for r in rows)
    # the mean over the two seeds is the mean of the two runs' own figures
    auc = [json.loads((runs / "neggrad+" / "10" / f"s{s}" / "metrics.json")
                      .read_text())["metrics"]["test"]["joint"]["auc"]["value"] for s in (0, 1)]
    labels = {r["label"]: r for r in rows if r["size"] == "10%"}
    assert float(labels["neggrad+"]["test_auc_mean"]) == pytest.approx(sum(auc) / 2, abs=1e-9)
    # one original per seed, scored at each size on that size's forget rows
    assert sorted(p.name for p in (runs / "original").iterdir()) == ["s0", "s1"]
    for size in ("3", "10"):
        scored = json.loads((runs / "original" / "s0" / "eval" / size / "metrics.json").read_text())
        forget = demo_data.root / f"forget_set_{size}per.csv"
        assert scored["forget_percent"] == float(size) and scored["model"] == "original"
        assert scored["mia"]["forget_vs_unseen"]["n_forget"] == sum(1 for _ in forget.open()) - 1
    # a second run finds everything done and redoes only the report
    caplog.clear()
    assert protocol_main([str(protocol)]) == 0
    assert caplog.text.count("already done") == (2 + 2 * 2 * 3) + 2 * 2 * 4


def test_stand_in_data_is_generated_once_and_never_over_other_data(tmp_path, caplog):
    from forgetmi.jobs.protocol import ensure_stand_in
    caplog.set_level("INFO", logger="forgetmi.protocol")
    root = tmp_path / "data"
    experiment = tmp_path / "experiment.yaml"
    experiment.write_text(yaml.safe_dump({"data": {"root": str(root)}}))
    values = {"experiment": "experiment.yaml", "methods": {"n": {"method": "neggrad+"}},
              "stand_in": {"patients": 30, "image_size": 32, "test_fraction": 0.3,
                           "label_noise": 0.5}}
    path = tmp_path / "protocol.yaml"
    path.write_text(yaml.safe_dump(values))
    ensure_stand_in(load_protocol(path))
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["parameters"]["test_fraction"] == 0.3
    assert manifest["parameters"]["label_noise"] == 0.5
    assert manifest["counts"]["rows_per_fold"]["TEST"] > 0.2 * manifest["counts"]["images"]
    stamp = (root / "manifest.json").stat().st_mtime_ns
    ensure_stand_in(load_protocol(path))                       # same settings: reused
    assert (root / "manifest.json").stat().st_mtime_ns == stamp and "reusing" in caplog.text
    values["stand_in"]["label_noise"] = 0.17                   # other settings: refused
    path.write_text(yaml.safe_dump(values))
    with pytest.raises(ConfigError, match=r"other settings \(label_noise 0.5 != 0.17\)"):
        ensure_stand_in(load_protocol(path))
    other = tmp_path / "mine"                                  # a folder of other data: refused
    (other / "keep.txt").parent.mkdir()
    (other / "keep.txt").write_text("not a stand-in")
    with pytest.raises(ConfigError, match="is not a stand-in dataset"):
        ensure_stand_in(load_protocol(path), [f"--data.root={other}"])
    assert (other / "keep.txt").read_text() == "not a stand-in"
    values["stand_in"]["colour"] = "blue"
    path.write_text(yaml.safe_dump(values))
    with pytest.raises(ConfigError, match="unknown stand_in key"):
        load_protocol(path)


def test_a_finished_run_with_other_settings_is_refused_not_reused(tmp_path, monkeypatch):
    from forgetmi.config import ExperimentConfig, load_config, save_config, with_overrides
    (tmp_path / "experiment.yaml").write_text(yaml.safe_dump({"data": {"root": "data"}}))
    values = {"experiment": "experiment.yaml", "output_dir": str(tmp_path / "runs"), "seeds": [0],
              "methods": {"n": {"method": "neggrad+", "epochs": 2}}}
    path = tmp_path / "protocol.yaml"
    path.write_text(yaml.safe_dump(values))
    job = next(j for j in expand(load_protocol(path)) if j.kind == "unlearn")
    assert not job.done()
    ran = load_config(ExperimentConfig, job.argv[1], job.argv[2:])
    (job.output_dir / "timing.json").parent.mkdir(parents=True)
    (job.output_dir / "timing.json").write_text(json.dumps({"job": "unlearn"}))
    save_config(with_overrides(ran, ["--log_every=7", "--wandb=offline"]),
                job.output_dir / "config.yaml")
    assert job.done()                                  # only logging differs: reused
    save_config(with_overrides(ran, ["--epochs=3", "--lr=0.5"]), job.output_dir / "config.yaml")
    with pytest.raises(ConfigError, match=r"finished with other settings than this protocol's "
                                          r"\(train\.epochs 3 -> 2; train\.lr 0\.5 -> 0\.0001\)"):
        job.done()
    # A retrained model whose validation did not avoid the other sizes' forget sets (a protocol
    # run before one original served every size) is refused; one that avoided the same patients
    # (the largest of nested sets, or a single size) is reused.
    monkeypatch.chdir(tmp_path)                       # the experiment's data.root is "data"
    (tmp_path / "data").mkdir()
    header = "subject_id,study_id,dicom_id,edema_severity,fold\n"
    (tmp_path / "data" / "forget_set_3per.csv").write_text(header + "11,1,a,0,1\n")
    (tmp_path / "data" / "forget_set_10per.csv").write_text(header + "11,1,a,0,1\n12,2,b,1,2\n")
    values["forget_sets"] = {"3": "forget_set_3per.csv", "10": "forget_set_10per.csv"}
    path.write_text(yaml.safe_dump(values))
    jobs = {j.name: j for j in expand(load_protocol(path))}
    for name in ("retrained/3/s0", "retrained/10/s0"):
        job = jobs[name]
        (job.output_dir / "timing.json").parent.mkdir(parents=True)
        (job.output_dir / "timing.json").write_text(json.dumps({"job": "retrain"}))
        ran = load_config(ExperimentConfig, job.argv[1], job.argv[2:])
        save_config(with_overrides(ran, ["--val_avoid=[]"]), job.output_dir / "config.yaml")
    with pytest.raises(ConfigError, match=r"data\.val_avoid \[\] -> \['forget_set_10per.csv'\]"):
        jobs["retrained/3/s0"].done()
    assert jobs["retrained/10/s0"].done()             # 3% ⊂ 10%: the same validation
    values["forget_sets"] = {"3": "forget_set_3per.csv"}
    path.write_text(yaml.safe_dump(values))
    assert next(j for j in expand(load_protocol(path)) if j.name == "retrained/3/s0").done()


def _stand_in_protocol(tmp_path: Path) -> Path:
    (tmp_path / "experiment.yaml").write_text(yaml.safe_dump({"data": {"root": "data"}}))
    path = tmp_path / "protocol.yaml"
    path.write_text(yaml.safe_dump({
        "experiment": "experiment.yaml", "output_dir": str(tmp_path / "runs"), "seeds": [0],
        "methods": {"n": {"method": "neggrad+"}},
        "stand_in": {"patients": 30, "image_size": 32}}))
    return path


def test_dry_run_and_a_missing_slurm_make_nothing(tmp_path, monkeypatch, caplog):
    caplog.set_level("INFO", logger="forgetmi")
    path = _stand_in_protocol(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert protocol_main([str(path), "--dry-run"]) == 0
    assert "unlearn/n/default/s0" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["experiment.yaml", "protocol.yaml"]
    bare = tmp_path / "bin"                          # a PATH without sbatch
    bare.mkdir()
    monkeypatch.setenv("PATH", str(bare))
    caplog.clear()
    assert protocol_main([str(path), "--executor", "slurm"]) == 2
    assert "Slurm not found (no sbatch on PATH)" in caplog.text and "--executor local" in caplog.text
    caplog.clear()
    assert protocol_main([str(path), "--jobs", "2"]) == 2
    assert "--jobs N runs tasks side by side with --executor local" in caplog.text
    # Neither the stand-in data nor any run folder was made.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin", "experiment.yaml", "protocol.yaml"]


def test_every_run_of_a_protocol_is_one_wandb_group(tmp_path):
    from forgetmi.config import ExperimentConfig, load_config
    from forgetmi.utils.tracking import group_for
    path = _stand_in_protocol(tmp_path)
    runs = [j for j in expand(load_protocol(path)) if j.kind in ("train", "retrain", "unlearn")]
    assert len(runs) == 3
    for job in runs:
        cfg = load_config(ExperimentConfig, job.argv[1], job.argv[2:])
        assert cfg.tracking.group == group_for("protocol", tmp_path / "runs")
    # The protocol's own settings (and the command line's) win.
    values = yaml.safe_load(path.read_text())
    values["unlearn"] = {"tracking.group": "mine"}
    path.write_text(yaml.safe_dump(values))
    unlearn = next(j for j in expand(load_protocol(path)) if j.kind == "unlearn")
    assert load_config(ExperimentConfig, unlearn.argv[1], unlearn.argv[2:]).tracking.group == "mine"


def test_an_original_of_another_forget_set_is_taken_only_if_it_trained_on_the_same_rows(
        demo_data, tmp_path):
    from forgetmi.config import ExperimentConfig, load_config, save_config
    from forgetmi.models.provenance import ProvenanceError, align_partitions
    sets = [f"forget_set_{p}per.csv" for p in (3, 6, 10)]

    def original(name, **data):
        cfg = load_config(ExperimentConfig, None, [f"--data.root={demo_data.root}",
                                                   "--holdout=holdout.csv", "--seed=0"])
        cfg.data.__dict__.update(data)
        save_config(cfg, tmp_path / name / "config.yaml")
        return tmp_path / name / "model"

    run = load_config(ExperimentConfig, None, [f"--data.root={demo_data.root}", "--seed=0",
                                               "--holdout=holdout.csv", f"--forget_set={sets[0]}"])
    # A protocol's shared original: the run adopts its validation rule, and the rows agree.
    shared = original("shared", forget_set=None, val_avoid=sets)
    assert align_partitions(run, shared).data.val_avoid == sets
    # An original made for the 10% set alone carved validation from rows the 3% set's
    # original would train on: refused, in one line naming the model and the difference.
    with pytest.raises(ProvenanceError) as err:
        align_partitions(run, original("per-size", forget_set=sets[2]))
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / "per-size" / "model") in message
    assert "trained on other rows than this run's data gives it" in message
    assert "data.forget_set" in message and "data.val_avoid" in message
    # The same forget set: taken as before, whatever else was recorded.
    same = original("same", forget_set=sets[0])
    assert align_partitions(run, same) == run
