"""The README's two commands are exactly what CI runs, and the shipped configs load."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from forgetmi.config import ExperimentConfig, load_config

REPO = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    return [b.strip() for b in blocks[:2]]


def test_ci_runs_the_readme_commands():
    install, tests = readme_commands()
    ci = (REPO / ".ci" / "run").read_text()
    assert "pip install" in install and "forgetmi demo" in install
    assert "pytest" in tests
    assert install in ci.splitlines() and tests in ci.splitlines()


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "experiments").glob("*.yaml")),
                         ids=lambda p: p.name)   # evidence/: tests/test_evidence.py
def test_shipped_experiment_configs_load(path):
    import yaml
    if "experiment" in yaml.safe_load(path.read_text()):  # a protocol over an experiment
        from forgetmi.jobs.protocol import expand, load_protocol
        protocol = load_protocol(path)
        jobs = expand(protocol)              # builds and validates every job's config
        runs = len(protocol.seeds) * max(1, len(protocol.forget_sets))
        assert sum(j.kind == "unlearn" for j in jobs) == len(protocol.methods) * runs
        assert sum(j.kind == "retrain" for j in jobs) == runs
        assert sum(j.kind == "train" for j in jobs) == len(protocol.seeds)  # one original a seed
        return
    cfg = load_config(ExperimentConfig, path)
    assert cfg.data.image_size > 0
