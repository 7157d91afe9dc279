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
