"""Typed config: defaults < YAML < --key=value, with errors that name the key."""

from __future__ import annotations

import pytest
import yaml

from forgetmi.config import (ConfigError, ExperimentConfig, as_overrides, load_config, save_config,
                             with_overrides)


def test_precedence_and_types(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("seed: 5\ndata:\n  image_size: 512\n  root: /data\nnoise:\n  text_level: 0.3\n")
    cfg = load_config(ExperimentConfig, path, ["--image_size=1024", "--noise.use_text=false",
                                               "--keywords=lung,edema", "--crop_size", "2048"])
    assert cfg.seed == 5 and cfg.data.root == "/data"
    assert cfg.data.image_size == 1024 and cfg.data.crop_size == 2048
    assert cfg.noise.text_level == 0.3 and cfg.noise.use_text is False
    assert cfg.noise.keywords == ("lung", "edema")
    assert cfg.data.path("split").as_posix() == "/data/split.csv"
    assert load_config(ExperimentConfig, None, ["--crop_size=none"]).data.crop_size is None


def test_bare_names_resolve_to_the_top_level_first():
    cfg = load_config(ExperimentConfig, None, ["--seed=4", "--noise.seed=9", "--lr=1e-5"])
    assert (cfg.seed, cfg.noise.seed, cfg.train.lr) == (4, 9, 1e-5)


def test_precision_spellings(tmp_path):
    assert load_config(ExperimentConfig, None, ["--precision=no"]).train.precision == "no"
    path = tmp_path / "p.yaml"
    path.write_text("train:\n  precision: no\n")  # YAML 1.1 reads this as False
    assert load_config(ExperimentConfig, path).train.precision == "no"
    assert load_config(ExperimentConfig, None, ["--precision=bf16"]).train.precision == "bf16"
    with pytest.raises(ConfigError, match="expected no, bf16 or fp16"):
        load_config(ExperimentConfig, None, ["--precision=fp8"])


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(ExperimentConfig, None, ["--image_size=384", "--seed=2"])
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(ExperimentConfig, tmp_path / "config.yaml") == cfg
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["data"]["image_size"] == 384


def test_overrides_from_a_mapping_apply_to_a_built_config():
    base = load_config(ExperimentConfig, None, ["--seed=2", "--noise.text_level=0.3"])
    settings = {"method": "forgetmi", "lr": 3e-3, "noise.image_std": 0.3,
                "unlearn.objective": "push", "keywords": ["lung", "edema"]}
    assert as_overrides(settings)[-1] == "--keywords=[lung,edema]"
    cfg = with_overrides(base, as_overrides(settings))
    assert (cfg.unlearn.method, cfg.train.lr, cfg.noise.image_std) == ("forgetmi", 3e-3, 0.3)
    assert cfg.unlearn.objective == "push" and cfg.noise.keywords == ("lung", "edema")
    assert (cfg.seed, cfg.noise.text_level) == (2, 0.3)          # the rest kept
    assert (base.train.lr, base.unlearn.method) == (1e-4, "forgetmi")   # a copy, not changed
    assert with_overrides(base, []) is base
    with pytest.raises(ConfigError, match="noise.image_std: expected a number"):
        with_overrides(base, ["--noise.image_std=loud"])


@pytest.mark.parametrize("overrides,message", [
    (["--image_size=big"], "data.image_size: expected an integer, got 'big'"),
    (["--image_size=1.5"], "data.image_size: expected an integer"),
    (["--no_such_key=1"], "unknown config key 'no_such_key'"),
    (["--use_image=maybe"], "noise.use_image: expected true/false"),
    (["image_size"], "expected --key=value"),
])
def test_bad_overrides(overrides, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        load_config(ExperimentConfig, None, overrides)


def test_bad_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("data:\n  imagesize: 3\n")
    with pytest.raises(ConfigError, match="bad.yaml: unknown config key\\(s\\) data.imagesize"):
        load_config(ExperimentConfig, path)
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(ExperimentConfig, path)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(ExperimentConfig, tmp_path / "missing.yaml")


@pytest.mark.parametrize("text,needles", [
    ("train:\n  lrr: 0.1\n", ["train.lrr", "did you mean train.lr?"]),
    ("unlearn:\n  scrub:\n    temprature: 2\n", ["unlearn.scrub.temprature",
                                                  "did you mean unlearn.scrub.temperature?"]),
    ("train:\n  zzz: 1\n", ["train.zzz", "--help"]),
])
def test_an_unknown_nested_key_is_one_short_line_with_the_closest(tmp_path, text, needles):
    """Not the section's 25 sibling keys: the closest one, or where to find them all."""
    path = tmp_path / "experiment.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(ExperimentConfig, path)
    message = str(err.value)
    assert all(n in message for n in needles), message
    assert "\n" not in message and len(message) < 200 and "warmup_ratio" not in message, message


def test_a_mapping_field_refuses_other_types():
    from forgetmi.config import from_dict
    from forgetmi.hpc.executor import HpcConfig
    with pytest.raises(ConfigError, match=r"cluster.yaml: sbatch: expected a mapping .* got list"):
        from_dict(HpcConfig, {"sbatch": ["exclusive"]}, "cluster.yaml", what="HPC config")


def test_a_model_config_refuses_fewer_labels_than_edema_grades():
    from forgetmi.config import ModelConfig
    with pytest.raises(ConfigError, match=r"model.num_labels: expected 4 or more .* got 2"):
        load_config(ExperimentConfig, None, ["--model.num_labels=2"])
    with pytest.raises(ConfigError, match="model.image_widths"):
        ModelConfig(image_widths=[])
    assert ModelConfig(num_labels=5).num_labels == 5


def test_constant_scheduler_keeps_the_learning_rate_on_every_step():
    """The paper's schedule was effectively constant: no warmup ramp, no decay."""
    import torch

    from forgetmi.engine.optim import build_scheduler

    assert load_config(ExperimentConfig).train.scheduler == "cosine"  # the default is kept
    train = load_config(ExperimentConfig, None, ["--scheduler=constant",
                                                 "--warmup_ratio=0.1"]).train
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=1e-4)
    scheduler = build_scheduler(optimizer, train.scheduler, 20, train.warmup_ratio)
    rates = []
    for _ in range(20):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert rates == [1e-4] * 20
    with pytest.raises(ConfigError, match=r"train\.scheduler: expected one of cosine \| linear \| constant"):
        load_config(ExperimentConfig, None, ["--scheduler=plateau"])


def test_a_saved_config_leaves_derived_settings_to_be_derived(tmp_path):
    """unlearn.objective unset means the preset's: a run's saved config keeps it unset (noting
    what it came to), so the config reused with --preset=no-noise pushes as that preset does."""
    cfg = load_config(ExperimentConfig, None, ["--preset=unimodal"])
    assert cfg.unlearn.objective is None and cfg.unlearn.effective_objective == "pull"
    save_config(cfg, tmp_path / "config.yaml")
    text = (tmp_path / "config.yaml").read_text()
    assert yaml.safe_load(text)["unlearn"]["objective"] is None
    assert "#   unlearn.objective: pull" in text
    reused = load_config(ExperimentConfig, tmp_path / "config.yaml", ["--preset=no-noise"])
    assert reused.unlearn.effective_objective == "push"
    assert load_config(ExperimentConfig, tmp_path / "config.yaml") == cfg
    # an explicit choice is the run's own: saved, and kept whatever the preset
    explicit = load_config(ExperimentConfig, None, ["--objective=pull"])
    save_config(explicit, tmp_path / "explicit.yaml")
    assert "derived" not in (tmp_path / "explicit.yaml").read_text()
    assert load_config(ExperimentConfig, tmp_path / "explicit.yaml",
                       ["--preset=no-noise"]).unlearn.effective_objective == "pull"


def test_keep_checkpoints_is_checked():
    assert load_config(ExperimentConfig, None, []).train.keep_checkpoints == 0
    assert load_config(ExperimentConfig, None, ["--keep_checkpoints=3"]).train.keep_checkpoints == 3
    with pytest.raises(ConfigError, match="train.keep_checkpoints: expected a number >= 0"):
        load_config(ExperimentConfig, None, ["--keep_checkpoints=-1"])
    with pytest.raises(ConfigError, match="train.keep_checkpoints: expected an integer"):
        load_config(ExperimentConfig, None, ["--keep_checkpoints=all"])


def test_data_paths_made_absolute_and_a_relative_root_named(tmp_path, monkeypatch):
    from forgetmi.config import load_run_config
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    cfg = load_config(ExperimentConfig, None, ["--data.root=data"])
    assert cfg.data.absolute().root == str(tmp_path / "data")
    assert cfg.data.absolute().split == "split.csv"               # still relative to the root
    bare = load_config(ExperimentConfig, None, ["--split=s.csv", "--reports=r.tsv",
                                                 "--val_avoid=[f.csv]"]).data.absolute()
    assert (bare.split, bare.reports, bare.val_avoid) == (str(tmp_path / "s.csv"),
                                                         str(tmp_path / "r.tsv"),
                                                         [str(tmp_path / "f.csv")])
    # a run saved before data paths were absolute, read from elsewhere: the key to set is named
    run = tmp_path / "run"
    save_config(cfg, run / "config.yaml")
    assert load_run_config(run).data.root == "data"                # found from here
    monkeypatch.chdir(run)
    with pytest.raises(ConfigError, match=r"data.root 'data' is relative to where the run was "
                                          r"started .* give --data.root="):
        load_run_config(run)
    assert load_run_config(run, [f"--data.root={tmp_path / 'data'}"]).data.root == \
        str(tmp_path / "data")


def test_a_bad_value_names_where_it_came_from(tmp_path):
    """The file, or the override as typed: a YAML path is not blamed for the command line."""
    path = tmp_path / "exp.yaml"
    path.write_text("train:\n  epochs: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(ExperimentConfig, path, ["--image_size=big"])
    assert str(err.value) == ("data.image_size: expected an integer, got 'big' "
                              "(from the command line: --image_size=big)")
    path.write_text("train:\n  epochs: three\n")
    with pytest.raises(ConfigError) as err:
        load_config(ExperimentConfig, path, ["--image_size=64"])
    assert str(err.value) == f"{path}: train.epochs: expected an integer, got 'three'"


@pytest.mark.parametrize("text", ["epochs: 1\n", "train.epochs: 1\n", "train:\n  epochs: 1\n"])
def test_yaml_accepts_the_key_forms_the_command_line_does(tmp_path, text):
    path = tmp_path / "exp.yaml"
    path.write_text(text + "scrub.temperature: 3\nseed: 2\n")
    cfg = load_config(ExperimentConfig, path)
    assert cfg == load_config(ExperimentConfig, None, ["--epochs=1", "--scrub.temperature=3",
                                                       "--seed=2"])
    assert (cfg.train.epochs, cfg.unlearn.scrub.temperature, cfg.seed) == (1, 3, 2)


def test_a_key_set_both_flat_and_nested_in_yaml_is_refused(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("epochs: 1\ntrain:\n  epochs: 2\n")
    with pytest.raises(ConfigError, match=r"exp\.yaml: epochs and train\.epochs are both set"):
        load_config(ExperimentConfig, path)
