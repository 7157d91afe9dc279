"""Bad input is refused in one line, exit code 2, before anything is written.

Each case runs a command as a user would and checks three things: the exit code is 2, exactly
one error line (under 300 characters, no traceback) names the key or path at fault, and the
target (or the folder that would have been made) is byte-identical afterwards.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from forgetmi.cli import main
from forgetmi.errors import OutputError
from forgetmi.utils.atomic import atomic_path, write_text
from tests.originals import TINY

REPO = Path(__file__).resolve().parents[1]
RELEASE_SWEEP = REPO / "configs" / "sweeps" / "release-names.yaml"
# A file that is not text: a PNG signature and bytes that are not UTF-8.
BINARY = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(128, 256)) * 4
# Text that is not a CSV: a quote that never closes (pandas' tokenizer fails on it).
UNCLOSED_QUOTE = b'subject_id\n"10000001\n10000002\n'


def snapshot(path: Path) -> dict[str, str] | None:
    """Every file and folder under ``path`` with its bytes' hash; None when nothing is there."""
    if not path.exists() and not path.is_symlink():
        return None
    if path.is_file():
        return {".": hashlib.sha256(path.read_bytes()).hexdigest()}
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            if p.is_file() else "folder" for p in sorted(path.rglob("*"))}


def one_error_line(caplog, *needles: str) -> str:
    """The one error logged: one line, under 300 characters as printed, naming ``needles``."""
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    message = errors[0].getMessage()
    printed = f"00:00:00 ERROR {errors[0].name}: {message}"
    assert errors[0].exc_info is None and "\n" not in message, message
    assert len(printed) < 300, printed
    for needle in needles:
        assert needle in message, (needle, message)
    return message


def refused(caplog, argv: list[str], target: Path, *needles: str) -> str:
    """Run ``forgetmi argv``: exit 2, one error line naming ``needles``, ``target`` untouched."""
    before = snapshot(target)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="forgetmi"):
        assert main(argv) == 2
    assert snapshot(target) == before
    return one_error_line(caplog, *needles)


def user_folder(path: Path) -> Path:
    """A folder of someone's own files."""
    (path / "notes").mkdir(parents=True)
    (path / "notes" / "keep.txt").write_text("mine\n")
    (path / "data.csv").write_text("a,b\n1,2\n")
    return path


# -- config values: refused where the config is declared, before any folder is made ----------

CONFIG_CASES = [
    ("train", "--lr=-0.001", "train.lr"),
    ("train", "--lr=0", "train.lr"),
    ("train", "--lr=nan", "train.lr"),
    ("unlearn", "--lr=inf", "train.lr"),
    ("train", "--text_lr=-1", "train.text_lr"),
    ("train", "--epochs=0", "train.epochs"),
    ("unlearn", "--epochs=-2", "train.epochs"),
    ("train", "--image_size=0", "data.image_size"),
    ("retrain", "--image_size=-64", "data.image_size"),
    ("train", "--crop_size=0", "data.crop_size"),
    ("train", "--crop_size=-512", "data.crop_size"),
    ("train", "--val_fraction=1", "data.val_fraction"),
    ("train", "--val_fraction=-0.1", "data.val_fraction"),
    ("train", "--val_fraction=nan", "data.val_fraction"),
    ("unlearn", "--noise.image_std=nan", "noise.image_std"),
    ("unlearn", "--noise.image_std=inf", "noise.image_std"),
    ("unlearn", "--noise.image_std=-0.1", "noise.image_std"),
    ("unlearn", "--noise.text_level=1.5", "noise.text_level"),
    ("unlearn", "--text_level=-0.1", "noise.text_level"),
    ("train", "--checkpoint_every=0", "train.checkpoint_every"),
    ("train", "--warmup_ratio=2", "train.warmup_ratio"),
    ("train", "--early_stopping_metric=joint_acu", "train.early_stopping_metric"),
    # choices: typed, with the closest one suggested
    ("unlearn", "--preset=uni", "unlearn.preset", "did you mean unimodal?"),
    ("train", "--wandb=ofline", "tracking.wandb", "did you mean offline?"),
    ("unlearn", "--unlearn.objective=pul", "unlearn.objective", "did you mean pull?"),
    ("train", "--scheduler=cosin", "train.scheduler", "did you mean cosine?"),
    ("train", "--precision=fp8", "train.precision"),
    ("train", "--final_model=lst", "train.final_model", "did you mean last?"),
    ("train", "--data.preprocessing=relase", "data.preprocessing", "did you mean release?"),
    ("train", "--model.origin=paper", "model.origin"),
]


@pytest.mark.parametrize("job,override,key,hint", [(*c, "")[:4] for c in CONFIG_CASES],
                         ids=[f"{case[0]}{case[1]}" for case in CONFIG_CASES])
def test_a_bad_config_value_is_refused_before_anything_is_made(caplog, tmp_path, job, override,
                                                                key, hint):
    out = tmp_path / "run"
    message = refused(caplog, [job, f"--data.root={tmp_path / 'no-data'}", f"--output_dir={out}",
                               "--original=elsewhere/model", override], out, key, hint)
    assert override.split("=", 1)[1] in message  # the value given, too


def test_an_output_dir_that_is_a_file_is_refused(caplog, tmp_path):
    out = tmp_path / "run"
    out.write_text("not a run\n")
    refused(caplog, ["train", f"--output_dir={out}", "--wandb=disabled"], out, "output_dir",
            str(out))


def test_a_config_file_with_a_bad_value_names_the_file(caplog, tmp_path):
    config = tmp_path / "experiment.yaml"
    config.write_text("train:\n  lr: .nan\n")
    out = tmp_path / "run"
    refused(caplog, ["train", f"--config={config}", f"--output_dir={out}"], out,
            str(config), "train.lr")


@pytest.mark.parametrize("override,key", [("--epochs=0", "train.epochs"),
                                          ("--wandb=ofline", "tracking.wandb")])
def test_config_checks_run_before_torch_is_imported(tmp_path, override, key):
    """The whole stderr of a real process: one line, and torch never loaded."""
    out = tmp_path / "run"
    probe = ("import sys; from forgetmi.cli import main; code = main(sys.argv[1:]); "
             "assert 'torch' not in sys.modules, 'torch was imported'; sys.exit(code)")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", probe, "train", override,
                           f"--output_dir={out}"], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env=env)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and len(lines[0]) < 300 and key in lines[0], done.stderr
    assert not out.exists()


def test_the_validation_metrics_the_config_allows_are_the_ones_reported():
    import numpy as np

    from forgetmi.config import VALIDATION_METRICS
    from forgetmi.evaluation.metrics import HEADS, head_metrics
    rng = np.random.default_rng(0)
    predictions = {"label": np.arange(8) % 4,
                   **{f"{h}_logits": rng.normal(size=(8, 4)) for h in HEADS}}
    assert sorted(head_metrics(predictions)) == sorted(VALIDATION_METRICS)


# -- writers never replace what is not theirs ------------------------------------------------

@pytest.fixture(scope="module")
def published(tmp_path_factory) -> Path:
    """A checkpoint folder in the release's layout, to import."""
    from tests.published import published_folder
    return published_folder(tmp_path_factory.mktemp("published"))[1]


def test_import_checkpoint_never_replaces_a_user_folder(caplog, tmp_path, published):
    mine = user_folder(tmp_path / "mine")
    refused(caplog, ["import-checkpoint", str(published), str(mine)], mine, str(mine))
    refused(caplog, ["import-checkpoint", str(published), str(mine), "--overwrite"], mine,
            str(mine), "--overwrite")


def test_import_checkpoint_onto_a_file_or_below_one_is_refused(caplog, tmp_path, published):
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"someone's weights")
    refused(caplog, ["import-checkpoint", str(published), str(target)], target, str(target))
    refused(caplog, ["import-checkpoint", str(published), str(target / "sub")], target,
            str(target))


def test_import_checkpoint_overwrites_only_its_own_import(caplog, tmp_path, published):
    dst = tmp_path / "imported"
    assert main(["import-checkpoint", str(published), str(dst)]) == 0
    refused(caplog, ["import-checkpoint", str(published), str(dst)], dst, str(dst), "--overwrite")
    assert main(["import-checkpoint", str(published), str(dst), "--overwrite"]) == 0
    assert sorted(p.name for p in dst.iterdir()) == ["config.json", "model.safetensors"]
    # an empty folder holds nothing to lose
    (tmp_path / "empty").mkdir()
    assert main(["import-checkpoint", str(published), str(tmp_path / "empty")]) == 0


def test_import_checkpoint_never_replaces_a_runs_model(caplog, tmp_path, published):
    """A model folder inside a run folder is that run's record, even one imported before."""
    run = tmp_path / "run"
    assert main(["import-checkpoint", str(published), str(run / "model")]) == 0
    (run / "config.yaml").write_text("seed: 0\n")
    refused(caplog, ["import-checkpoint", str(published), str(run / "model"), "--overwrite"], run,
            str(run / "model"))


def test_convert_sweep_never_replaces_a_user_folder_or_file(caplog, tmp_path):
    mine = user_folder(tmp_path / "mine")
    refused(caplog, ["convert-sweep", str(RELEASE_SWEEP), str(mine)], mine, str(mine))
    theirs = tmp_path / "sweep.yaml"
    theirs.write_text("program: mine.py\n")
    refused(caplog, ["convert-sweep", str(RELEASE_SWEEP), str(theirs)], theirs, str(theirs))
    refused(caplog, ["convert-sweep", str(RELEASE_SWEEP), str(theirs), "--overwrite"], theirs,
            str(theirs))


def test_convert_sweep_overwrites_only_its_own_output(caplog, tmp_path):
    out = tmp_path / "converted.yaml"
    assert main(["convert-sweep", str(RELEASE_SWEEP), str(out)]) == 0
    refused(caplog, ["convert-sweep", str(RELEASE_SWEEP), str(out)], out, str(out),
            "--overwrite")
    assert main(["convert-sweep", str(RELEASE_SWEEP), str(out), "--overwrite"]) == 0


def test_make_demo_data_overwrites_only_a_generated_dataset(caplog, tmp_path):
    mine = user_folder(tmp_path / "mine")
    refused(caplog, ["make-demo-data", str(mine), "--patients", "20", "--image-size", "64",
                     "--overwrite"], mine, str(mine), "not a generated dataset")


def test_reports_and_tables_never_replace_a_folder(caplog, tmp_path, demo_data):
    mine = user_folder(tmp_path / "mine")
    refused(caplog, ["audit", "--split", str(demo_data.split), "--forget",
                     str(demo_data.forget_sets[10]), "--report", str(mine)], mine, str(mine))
    a_file = tmp_path / "forget-sets"
    a_file.write_text("not a folder\n")
    refused(caplog, ["make-forget-set", "--split", str(demo_data.split), "--out", str(a_file)],
            a_file, str(a_file))


def test_files_named_by_the_user_are_replaced_only_with_force(caplog, tmp_path, demo_data):
    """make-forget-set once wrote its forget sets over a folder's own files of those names,
    and audit --report / check-holdout --json over any file: now each is refused, untouched,
    and --force replaces it."""
    sets = tmp_path / "sets"
    sets.mkdir()
    (sets / "forget_set_3per.csv").write_text("my own forget set\n")
    refused(caplog, ["make-forget-set", "--split", str(demo_data.split), "--out", str(sets)],
            sets, "forget_set_3per.csv", "--force")
    assert not (sets / "holdout.csv").exists()                # nothing written half-way
    assert main(["make-forget-set", "--split", str(demo_data.split), "--out", str(sets),
                 "--force"]) == 0
    assert (sets / "forget_set_3per.csv").read_text().startswith("subject_id")
    report = tmp_path / "audit.txt"
    report.write_text("my audit\n")
    refused(caplog, ["audit", "--split", str(demo_data.split), "--forget",
                     str(demo_data.forget_sets[10]), "--report", str(report)], report,
            str(report), "--force")
    assert main(["audit", "--split", str(demo_data.split), "--forget",
                 str(demo_data.forget_sets[10]), "--report", str(report), "--force"]) == 0
    assert report.read_text() != "my audit\n"
    draws = tmp_path / "draws.json"
    draws.write_text("{}")
    refused(caplog, ["check-holdout", "--draws", "2", "--json", str(draws)], draws, str(draws))


# -- atomic_path itself ---------------------------------------------------------------------

def test_atomic_path_never_swaps_a_file_and_a_folder(tmp_path):
    folder = user_folder(tmp_path / "folder")
    with pytest.raises(OutputError, match="is a folder"):
        write_text(folder, "text")
    with pytest.raises(OutputError, match="folder exists"):
        with atomic_path(folder, folder=True) as tmp:
            tmp.mkdir()
    a_file = tmp_path / "file.txt"
    a_file.write_text("mine\n")
    with pytest.raises(OutputError, match="not a folder"):
        with atomic_path(a_file, folder=True, replace=True) as tmp:
            tmp.mkdir()
    with pytest.raises(OutputError, match="cannot create its folder"):
        write_text(a_file / "below.txt", "text")
    with pytest.raises(OutputError, match="was expected"):  # the caller wrote the other kind
        with atomic_path(tmp_path / "new.txt") as tmp:
            tmp.mkdir()
    assert snapshot(folder) == snapshot(user_folder(tmp_path / "again"))
    assert a_file.read_text() == "mine\n" and not (tmp_path / "new.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again", "file.txt", "folder"]


def test_atomic_path_replaces_what_the_caller_owns(tmp_path):
    write_text(tmp_path / "a.txt", "one")
    write_text(tmp_path / "a.txt", "two")           # a file replaces a file
    assert (tmp_path / "a.txt").read_text() == "two"
    for text in ("one", "two"):                     # a folder its owner rebuilds
        with atomic_path(tmp_path / "cache", folder=True, replace=True) as tmp:
            tmp.mkdir()
            (tmp / "index.json").write_text(text)
    assert (tmp_path / "cache" / "index.json").read_text() == "two"


# -- training and unlearning: every refusal before the first write ---------------------------

@pytest.fixture
def trained_run(small_original, tmp_path) -> Path:
    """A copy of a finished training run (its checkpoints left out), to aim jobs at."""
    run = tmp_path / "trained"
    shutil.copytree(small_original.parent, run, ignore=shutil.ignore_patterns("checkpoints"))
    return run


def test_unlearning_into_the_originals_own_run_is_refused_untouched(caplog, demo_data,
                                                                      trained_run):
    refused(caplog, ["unlearn", f"--data.root={demo_data.root}", f"--output_dir={trained_run}",
                     f"--original={trained_run / 'model'}", *TINY, "--epochs=1"],
            trained_run, "output_dir", str(trained_run))


def test_a_finished_run_of_another_job_is_refused_untouched(caplog, demo_data, small_original,
                                                              trained_run):
    refused(caplog, ["unlearn", f"--data.root={demo_data.root}", f"--output_dir={trained_run}",
                     f"--original={small_original}", *TINY, "--epochs=1"],
            trained_run, str(trained_run), "finished train run")
    refused(caplog, ["retrain", f"--data.root={demo_data.root}", f"--output_dir={trained_run}",
                     *TINY, "--epochs=1"], trained_run, str(trained_run), "finished train run")


def test_a_model_folder_that_is_not_a_model_is_refused_untouched(caplog, demo_data, tmp_path):
    run = tmp_path / "run"
    user_folder(run / "model")
    refused(caplog, ["train", f"--data.root={demo_data.root}", f"--output_dir={run}", *TINY,
                     "--epochs=1"], run, str(run / "model"))


def test_a_checkpoint_of_other_settings_is_refused_before_any_write(caplog, demo_data, tmp_path):
    """A crashed run's folder keeps its config and records when a rerun with other settings is
    refused (the refusal used to come after both were rewritten)."""
    run = tmp_path / "run"
    common = [f"--data.root={demo_data.root}", f"--output_dir={run}", *TINY, "--epochs=1",
              "--checkpoint_every=1"]
    assert main(["train", *common, "--stop_after=2"]) == 3  # checkpointed after update 1
    assert (run / "config.yaml").is_file() and (run / "trainable.json").is_file()
    refused(caplog, ["train", *common, "--batch_size=4"], run, str(run), "other settings",
            "train.batch_size 8 -> 4")


# -- tables that are not text -----------------------------------------------------------------

@pytest.mark.parametrize("payload", [BINARY, UNCLOSED_QUOTE], ids=["binary", "unclosed-quote"])
def test_a_request_file_that_is_not_a_csv_is_refused_in_one_line(caplog, tmp_path, payload):
    request = tmp_path / "request.csv"
    request.write_bytes(payload)
    workspace = tmp_path / "workspace"
    refused(caplog, ["forget", "--workspace", str(workspace), "--config", "unused.yaml",
                     "--request", str(request)], workspace, str(request))


READERS = ["read_split", "read_forget_set", "read_synonyms", "read_reports", "read_raw_csv"]


@pytest.mark.parametrize("payload", [BINARY, UNCLOSED_QUOTE], ids=["binary", "unclosed-quote"])
@pytest.mark.parametrize("reader", READERS)
def test_every_table_reader_names_a_file_it_cannot_read(tmp_path, reader, payload):
    from forgetmi.data import formats
    from forgetmi.errors import DataError
    path = tmp_path / "table.csv"
    path.write_bytes(payload)
    with pytest.raises(DataError) as err:
        getattr(formats, reader)(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert len(str(err.value)) < 300


def test_a_data_file_that_is_not_text_is_refused_by_the_cli(caplog, tmp_path):
    split = tmp_path / "split.csv"
    split.write_bytes(BINARY)
    out = tmp_path / "sets"
    refused(caplog, ["make-forget-set", "--split", str(split), "--out", str(out)], out,
            str(split))
    reports = tmp_path / "all_data.tsv"
    reports.write_bytes(BINARY)
    refused(caplog, ["keywords", str(reports)], out, str(reports))


def test_nan_is_never_a_valid_range():
    """The range checks compare with NaN-safe bounds (NaN fails every comparison)."""
    from forgetmi.config import ConfigError, Perturbation, TrainConfig
    for build in (lambda: TrainConfig(lr=math.nan), lambda: Perturbation(image_std=math.nan),
                  lambda: Perturbation(image_mean=math.inf)):
        with pytest.raises(ConfigError):
            build()


# -- sweep files: checked before W&B's engine sees them ---------------------------------------

GOOD_SWEEP = {"program": "launch/unlearn.py", "method": "random", "run_cap": 2,
              "metric": {"name": "score", "goal": "maximize"},
              "parameters": {"lr": {"distribution": "log_uniform_values", "min": 1e-5,
                                    "max": 1e-3}}}
SWEEP_CASES = [
    # (what changes, the words the line must hold)
    ({"parameters": {"lr": {"distribution": "log-uniform", "min": 1e-5, "max": 1e-3}}},
     ["parameters.lr", "'log-uniform'", "did you mean log_uniform?"]),
    ({"parameters": {"lr": {"values": []}}}, ["parameters.lr", "non-empty list"]),
    ({"parameters": {"lr": {"min": 0.1, "max": 0.01}}}, ["parameters.lr", "min 0.1", "swap"]),
    ({"parameters": {"lr": {"vals": [1e-3]}}}, ["parameters.lr", "'vals'", "did you mean values?"]),
    ({"parameters": {"lr": 0.001}}, ["parameters.lr", "expected a mapping"]),
    ({"parameters": {"lr": {"distribution": "uniform", "min": 0}}}, ["parameters.lr", "max"]),
    ({"parameters": {"epochs": {"distribution": "int_uniform", "min": 1, "max": 2.5}}},
     ["parameters.epochs", "integer"]),
    ({"parameters": {"lr": {"distribution": "log_uniform_values", "min": 0, "max": 1}}},
     ["parameters.lr", "min > 0"]),
    ({"method": "grid"}, ["parameters.lr", "grid", "values"]),
    ({"run_cap": 0}, ["run_cap", "got 0"]),
    ({"run_cap": -3}, ["run_cap", "got -3"]),
    ({"paramters": {}}, ["'paramters'", "did you mean parameters?"]),
    ({"metric": {"name": "score", "goal": "maximise"}}, ["metric.goal", "did you mean maximize?"]),
    ({"method": "bayesian"}, ["method", "did you mean bayes?"]),
]


@pytest.mark.parametrize("change,needles", SWEEP_CASES,
                         ids=[next(iter(c[0])) + str(i) for i, c in enumerate(SWEEP_CASES)])
def test_a_bad_sweep_file_is_refused_naming_the_file_and_parameter(caplog, tmp_path, change,
                                                                    needles):
    import yaml
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({**GOOD_SWEEP, **change}))
    out = tmp_path / "out"
    for mode in (["--dry-run"], ["--executor", "local"]):
        refused(caplog, ["sweep", str(sweep), "--out", str(out), *mode], tmp_path, str(sweep),
                *needles)


def test_a_sweep_count_below_zero_is_refused(caplog, tmp_path):
    import yaml
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump(GOOD_SWEEP))
    refused(caplog, ["sweep", str(sweep), "--out", str(tmp_path / "out"), "--count", "-1",
                     "--executor", "local"], tmp_path, "--count -1")


def test_every_shipped_sweep_file_passes_the_checks():
    from forgetmi.hpc.sweep import load_sweep
    for path in sorted((REPO / "configs" / "sweeps").rglob("*.yaml")):
        load_sweep(path)


# -- a model that does not fit the config: refused before any step ---------------------------

def model_with_labels(folder: Path, labels: int) -> Path:
    """A saved model whose heads have ``labels`` outputs (a 2-label one as another package or
    an older config could have written: the config check is bypassed on purpose)."""
    import torch.nn as nn

    from forgetmi.config import ModelConfig
    from forgetmi.models import JointModel
    model = JointModel(ModelConfig(text_encoder="tiny", image_widths=[8, 16]))
    dim = model.img_model.embed_dim
    model.img_model.fc1 = nn.Linear(dim, labels)
    model.text_model.classifier = nn.Linear(dim, labels)
    model.joint_head = nn.Linear(dim, labels)
    model.config.num_labels = labels
    model.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("labels", [2, 5])
@pytest.mark.parametrize("method", ["forgetmi", "finetune"])
def test_an_original_of_another_label_count_is_refused_before_unlearning(caplog, tmp_path,
                                                                         labels, method):
    """Once an IndexError deep in the loss, and with the default method an exit code 0."""
    original = model_with_labels(tmp_path / "original" / "model", labels)
    out = tmp_path / "run"
    message = refused(caplog, ["unlearn", f"--data.root={tmp_path / 'no-data'}",
                               f"--output_dir={out}", f"--original={original}", *TINY,
                               "--epochs=1", f"--method={method}"], tmp_path, str(original),
                      "num_labels", str(labels))
    assert "4" in message


def test_a_model_config_that_contradicts_its_weights_is_one_short_line(caplog, tmp_path):
    import json
    original = model_with_labels(tmp_path / "original" / "model", 4)
    meta = json.loads((original / "config.json").read_text())
    meta["forgetmi_model"]["image_widths"] = [8, 24]
    (original / "config.json").write_text(json.dumps(meta))
    refused(caplog, ["unlearn", f"--data.root={tmp_path / 'no-data'}",
                     f"--output_dir={tmp_path / 'run'}", f"--original={original}", *TINY,
                     "--epochs=1"], tmp_path, str(original), "image_widths [8, 24]", "[8, 16]",
            "config.json")
    # the loader's own check, met by a folder read without the provenance step: short too
    from forgetmi.errors import ForgetMIError
    from forgetmi.models import JointModel
    with pytest.raises(ForgetMIError) as err:
        JointModel.from_pretrained(original)
    message = str(err.value)
    assert "img_model.layer2" in message and "config.json" in message, message
    assert len(message) < 300 and "\n" not in message, message


def test_widths_follow_the_model_unless_the_config_names_others(caplog, tmp_path):
    from forgetmi.config import ExperimentConfig, load_config
    from forgetmi.models.provenance import ProvenanceError, align_with_model
    original = model_with_labels(tmp_path / "model", 4)
    cfg = align_with_model(load_config(ExperimentConfig, None, ["--text_encoder=tiny"]),
                           original)
    assert cfg.model.image_widths == [8, 16]   # the saved config tells the model's truth
    with pytest.raises(ProvenanceError, match=r"image_widths \[8, 16\] .* gives \[8, 32\]"):
        align_with_model(load_config(ExperimentConfig, None, ["--text_encoder=tiny",
                                                              "--model.image_widths=[8,32]"]),
                         original)


# -- a protocol's dry run checks what a run would --------------------------------------------

def protocol_files(tmp_path: Path, **changes) -> Path:
    """A protocol over a data folder whose files exist (their content is never read here)."""
    import yaml
    root = tmp_path / "data"
    root.mkdir(exist_ok=True)
    for name in ("split.csv", "all_data.tsv", "forget_set_3per.csv", "forget_set_10per.csv"):
        (root / name).write_text("")
    experiment = {"data": {"root": str(root), **changes.pop("data", {})}}
    (tmp_path / "experiment.yaml").write_text(yaml.safe_dump(experiment))
    protocol = {"experiment": "experiment.yaml", "output_dir": str(tmp_path / "runs"),
                "seeds": [0], "forget_sets": {"3": "forget_set_3per.csv"},
                "methods": {"ft": {"method": "finetune"}}, "evaluate": {"bootstrap": 10},
                **changes}
    path = tmp_path / "protocol.yaml"
    path.write_text(yaml.safe_dump(protocol))
    return path


PROTOCOL_CASES = [
    ({"forget_sets": {"7": "forget_set_7per.csv"}}, [], ["forget_set_7per.csv", "file not found",
                                                         "forget_sets"]),
    ({"data": {"holdout": "holdout.csv"}}, [], ["holdout.csv", "data.holdout"]),
    ({"data": {"root": "/nowhere/data"}}, [], ["/nowhere/data/split.csv", "data.root"]),
    ({"methods": {"ft": {"method": "fine-tune"}}}, [], ["methods.ft", "'fine-tune'",
                                                        "did you mean finetune?"]),
    ({"evaluate": {"bootsrap": 10}}, [], ["evaluate.bootsrap", "did you mean evaluate.bootstrap?"]),
    ({"evaluate": {"bootstrap": 0}}, [], ["evaluate.bootstrap", "positive integer"]),
    ({}, ["--executor", "local", "--hpc-config", "{hpc}"], ["sbatch", "expected a mapping",
                                                             "got list"]),
    ({}, ["--hpc-config", "{hpc}"], ["--hpc-config", "--executor"]),
    ({}, ["--partition", "gpu"], ["--partition", "--executor"]),
]


@pytest.mark.parametrize("changes,flags,needles", PROTOCOL_CASES,
                         ids=[f"case{i}" for i in range(len(PROTOCOL_CASES))])
def test_a_protocol_dry_run_refuses_what_a_run_would(caplog, tmp_path, changes, flags, needles):
    path = protocol_files(tmp_path, **changes)
    hpc = tmp_path / "cluster.yaml"
    hpc.write_text("sbatch: [exclusive]\n")
    flags = [f.format(hpc=hpc) for f in flags]
    for mode in (["--dry-run"], []):
        refused(caplog, ["protocol", str(path), *mode, *flags], tmp_path, *needles)


def test_a_protocol_dry_run_passes_when_everything_is_there(caplog, tmp_path):
    path = protocol_files(tmp_path)
    with caplog.at_level(logging.INFO, logger="forgetmi"):
        assert main(["protocol", str(path), "--dry-run"]) == 0
    assert "unlearn/ft/3/s0" in caplog.text and not (tmp_path / "runs").exists()


# -- HPC options ---------------------------------------------------------------------------------

@pytest.mark.parametrize("sbatch,needles", [
    ("sbatch: [exclusive]", ["sbatch: expected a mapping", "'exclusive: true'", "got list"]),
    ("sbatch: exclusive", ["sbatch: expected a mapping", "got str"]),
    ("sbatch: {exclusive: [1, 2]}", ["sbatch.exclusive: expected one value", "got list"]),
])
def test_an_hpc_file_with_a_wrong_type_is_one_line(caplog, tmp_path, sbatch, needles):
    import yaml
    hpc = tmp_path / "cluster.yaml"
    hpc.write_text(sbatch + "\n")
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump(GOOD_SWEEP))
    refused(caplog, ["sweep", str(sweep), "--out", str(tmp_path / "out"), "--executor", "local",
                     "--hpc-config", str(hpc)], tmp_path, str(hpc), *needles)


def test_hpc_options_without_an_executor_are_refused_where_jobs_would_run_here(caplog, tmp_path):
    """protocol and ulira run their jobs in this process without --executor: the options
    would be ignored. sweep's tasks always go to an executor (slurm unless the file says)."""
    hpc = tmp_path / "cluster.yaml"
    hpc.write_text("partition: gpu\n")
    config = tmp_path / "experiment.yaml"
    config.write_text("seed: 0\n")
    refused(caplog, ["ulira", "--config", str(config), "--train-config", str(config),
                     "--target", str(tmp_path / "model"), "--out", str(tmp_path / "ulira"),
                     "--hpc-config", str(hpc)], tmp_path, "--hpc-config", "--executor")
    refused(caplog, ["protocol", str(protocol_files(tmp_path)), "--hpc-config", str(hpc)],
            tmp_path, "--hpc-config", "--executor")
    # sweep: the file's settings are used (its executor, or Slurm), never dropped
    import argparse

    from forgetmi.hpc.submit import add_hpc_arguments, hpc_from_args
    hpc.write_text("executor: local\npartition: gpu\n")
    parser = argparse.ArgumentParser()
    add_hpc_arguments(parser)
    settings = hpc_from_args(parser.parse_args(["--hpc-config", str(hpc)]))
    assert (settings.executor, settings.partition) == ("local", "gpu")


# -- a checkpoint that cannot be resumed: one line, never resumed without a part ------------

class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def _damage(latest: Path, how: str) -> None:
    """Damage one file of a checkpoint and rewrite its manifest to match: the checksums catch
    damage by accident, not a file replaced on purpose (or by a buggy copy)."""
    import json

    import torch

    from forgetmi.engine.checkpoint import MANIFEST, _manifest
    if how == "rng-missing":
        (latest / "random_states_0.pkl").unlink()
    elif how == "rng-truncated":
        path = latest / "random_states_0.pkl"
        path.write_bytes(path.read_bytes()[:20])
    elif how == "rng-not-a-state":
        torch.save({"random_state": "no", "numpy_random_seed": 1,
                    "torch_manual_seed": torch.zeros(3)}, latest / "random_states_0.pkl")
    elif how == "optimizer-tampered":
        torch.save({"state": {}, "param_groups": [], "extra": _Payload()},
                   latest / "optimizer.bin")
    elif how == "optimizer-truncated":
        path = latest / "optimizer.bin"
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "model-truncated":
        path = latest / "model.safetensors"
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    (latest / MANIFEST).write_text(json.dumps(_manifest(latest)))


@pytest.fixture(scope="module")
def crashed_run(demo_data, tmp_path_factory) -> tuple[Path, list[str]]:
    """A training run stopped after its second update, checkpointed at each."""
    run = tmp_path_factory.mktemp("crashed") / "run"
    args = [f"--data.root={demo_data.root}", *TINY, "--epochs=2", "--checkpoint_every=1"]
    assert main(["train", *args, f"--output_dir={run}", "--stop_after=2"]) == 3
    return run, args


DAMAGE = {"rng-missing": ["random_states_0.pkl", "RNG state"],
          "rng-truncated": ["random_states_0.pkl", "RNG state", "truncated"],
          "rng-not-a-state": ["random_states_0.pkl", "not an RNG state"],
          "optimizer-tampered": ["optimizer.bin", "objects other than tensors"],
          "optimizer-truncated": ["optimizer.bin", "truncated"],
          "model-truncated": ["model.safetensors", "truncated"]}


@pytest.mark.parametrize("how", DAMAGE)
def test_a_checkpoint_that_cannot_be_resumed_is_refused_in_one_line(caplog, capsys, tmp_path,
                                                                    crashed_run, how):
    """Once: an RNG state that did not load was skipped without a word (the run went on with
    other draws), a tampered optimizer state printed torch's advice to load it with every
    safety off, a truncated one quoted torch's 444-character line."""
    run = tmp_path / "run"
    shutil.copytree(crashed_run[0], run)
    _damage(run / "checkpoints" / "latest", how)
    message = refused(caplog, ["train", *crashed_run[1], f"--output_dir={run}"], run,
                      "start afresh with --resume=false", *DAMAGE[how])
    assert "weights_only" not in message
    assert "this must never run" not in capsys.readouterr().out


# -- evaluate MODEL_DIR: the run's own config, or what to pass --------------------------------

def test_evaluating_a_model_folder_outside_a_run_says_what_to_pass(caplog, tmp_path):
    model = model_with_labels(tmp_path / "imported", 4)
    refused(caplog, ["evaluate", str(model), "--bootstrap=5"], tmp_path, str(model), "--config",
            "--data.root")


def test_evaluating_a_runs_model_folder_uses_the_runs_config(caplog, trained_run):
    """Once "split.csv: file not found": the model folder of a run is scored as that run."""
    with caplog.at_level(logging.INFO, logger="forgetmi"):
        assert main(["evaluate", str(trained_run / "model"), "--bootstrap=5"]) == 0
    assert (trained_run / "metrics.json").is_file()
    assert not (trained_run / "model" / "metrics.json").exists()


# -- every command, as a user runs it: exit 2, one line on stderr, nothing touched -----------

def commands() -> list[str]:
    """Every `forgetmi` subcommand, from the CLI's own table (the jobs and the data tools)."""
    import argparse

    from forgetmi.cli import build_parser
    [sub] = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return sorted(sub.choices)


# One bad input per command ({t}: the test's folder, where every file below is made). A new
# command without a case fails test_every_command_has_a_bad_input_case.
COMMAND_CASES = {
    "audit": "--split {t}/missing.csv --forget {t}/missing.csv --report {t}/audit.txt",
    "build-cache": "--data.root={t}/no-data",
    "check-holdout": "--draws 0 --json {t}/draws.json",
    "configs": "--show configs/accelerate/nope.yaml",
    "convert-sweep": f"{RELEASE_SWEEP} {{t}}/mine",
    "demo": "--patients 3 --out {t}/demo",
    "evaluate": "{t}/bare-model",
    "forget": "--workspace {t}/workspace --config {t}/experiment.yaml --request {t}/binary.csv",
    "history": "{t}/no-workspace",
    "import-checkpoint": "{t}/no-checkpoint {t}/imported",
    "keywords": "{t}/binary.csv",
    "make-demo-data": "{t}/mine --patients 20 --image-size 64 --overwrite",
    "make-forget-set": "--split {t}/binary.csv --out {t}/sets",
    "protocol": "{t}/protocol.yaml --hpc-config {t}/cluster.yaml",
    "rankings": "label={t}/empty content={t}/no-results --out {t}/rankings",
    "report": "{t}/empty --out {t}/report",
    "retrain": "--epochs=0 --output_dir={t}/run",
    "select": "{t}/empty --budget=0 --write {t}/presets.yaml",
    "status": "{t}/empty",
    "sweep": "{t}/sweep.yaml --out {t}/sweep --executor local",
    "train": "--lr=-1 --output_dir={t}/run",
    "ulira": "--config {t}/experiment.yaml --train-config {t}/experiment.yaml --target "
             "{t}/bare-model --out {t}/ulira --hpc-config {t}/cluster.yaml",
    "unlearn": "--preset=uni --original={t}/bare-model --output_dir={t}/run",
}


def test_every_command_has_a_bad_input_case():
    assert sorted(COMMAND_CASES) == commands()


@pytest.fixture(scope="module")
def command_folder(tmp_path_factory) -> Path:
    """What the cases read: a binary file, YAML files, a user's folder, a bare model folder."""
    import yaml
    t = tmp_path_factory.mktemp("commands")
    (t / "binary.csv").write_bytes(BINARY)
    (t / "experiment.yaml").write_text("seed: 0\n")
    (t / "cluster.yaml").write_text("partition: gpu\n")
    (t / "protocol.yaml").write_text("experiment: experiment.yaml\nseeds: [0]\n")
    (t / "sweep.yaml").write_text(yaml.safe_dump(
        {**GOOD_SWEEP, "parameters": {"lr": {"distribution": "unifrom", "min": 0, "max": 1}}}))
    (t / "empty").mkdir()
    (t / "bare-model").mkdir()
    for name in ("config.json", "model.safetensors"):
        (t / "bare-model" / name).write_text("")
    user_folder(t / "mine")
    return t


@pytest.mark.parametrize("command", commands())
def test_every_command_refuses_bad_input_in_one_line(command_folder, command):
    """The whole stderr of a real process: one line, no traceback; nothing written."""
    argv = COMMAND_CASES[command].format(t=command_folder).split()
    before = snapshot(command_folder)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "forgetmi.cli", command, *argv],
                          cwd=command_folder, capture_output=True, text=True, timeout=300,
                          env=env)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr[-3000:]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert len(lines[0]) < 300, lines[0]
    assert snapshot(command_folder) == before
