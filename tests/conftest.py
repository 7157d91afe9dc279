"""Shared fixtures: the reference files and a small generated dataset (built once per session)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")

REPO = Path(__file__).resolve().parents[1]

# The one-node Slurm cluster (slurm/local/) as the session fixture `slurm_cluster`.
from tests.slurm_cluster import slurm_cluster  # noqa: E402,F401
REFERENCE = REPO.parent / "shared" / "reference-data"


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    if not (REFERENCE / "mimic-cxr-sub-img-edema-split-manualtest.csv").is_file():
        pytest.skip(f"reference data not found at {REFERENCE} (a clone outside the project setup)")
    return REFERENCE


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory):
    """The default small stand-in dataset, generated once for the whole test session."""
    from forgetmi.synthetic import generate_dataset
    root = tmp_path_factory.mktemp("demo") / "data"
    return generate_dataset(root, n_patients=60, image_size=128, seed=0, workers=2)


@pytest.fixture(scope="session")
def small_original(demo_data, tmp_path_factory):
    """A two-epoch original on ``demo_data`` (read-only): for tests that exercise a path."""
    from tests.originals import SMALL, train_original
    return train_original(demo_data.root, tmp_path_factory.mktemp("small-original") / "run",
                          SMALL)


@pytest.fixture(scope="session")
def fitted_original(demo_data, tmp_path_factory):
    """A twelve-epoch original that has fitted its rows (read-only): for tests that measure
    forgetting or membership."""
    from tests.originals import FITTED, train_original
    return train_original(demo_data.root, tmp_path_factory.mktemp("fitted-original") / "run",
                          FITTED)


@pytest.fixture(scope="session")
def sweep_references(demo_data, tmp_path_factory):
    """Originals and retrained models at forget sizes 6% and 10%, seeds 3 and 4 (read-only):
    the references the shipped bayes sweep's trials score against."""
    from tests.originals import train_references
    return train_references(demo_data.root, tmp_path_factory.mktemp("sweep-references"))


@pytest.fixture(scope="session")
def matrix_runs(demo_data, tmp_path_factory):
    """``matrix_runs(name)``: the folder of the launch matrix's runs under
    configs/accelerate/<name>.yaml (one subfolder per job), launched once per session."""
    from tests.launching import config_path, run_matrix
    runs: dict[str, Path] = {}

    def launched(name: str) -> Path:
        if name not in runs:
            out = tmp_path_factory.mktemp(f"matrix-{name}")
            run_matrix(config_path(name), demo_data.root, out)
            runs[name] = out
        return runs[name]
    return launched
