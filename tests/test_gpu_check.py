"""benchmarks/gpu_check.sh kept runnable without a GPU: its Python snippets compile, import names
that exist, pass settings the config knows and files and flags that exist; the cheap snippets
(data, model) run on the CPU at tiny sizes. A rename then fails here, not in a GPU session."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from forgetmi.config import ExperimentConfig, load_config

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"
# Stand-ins for the shell variables the script passes as setting values.
SHELL_VALUES = {"$DATA": "/data", "$ENCODER_ARG": "none", "$4": "none"}


def _label(line: str, last_step: str | None) -> str:
    step = re.search(r"\bstep (\S+)", line)
    assigned = re.match(r"\s*(\w+)=\$\(cat <<", line)
    logged = re.search(r"\$LOG/(\w+)\.txt", line)
    if step:
        return step.group(1)
    if assigned:
        return assigned.group(1).lower().replace("_", "-")
    if logged:
        return logged.group(1)
    return last_step or "unnamed"


def snippets() -> dict[str, str]:
    """The script's heredocs (its Python), named by the step or variable that runs them."""
    found: dict[str, str] = {}
    lines = SCRIPT.read_text(encoding="utf-8").splitlines()
    last_step = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if re.search(r"\bstep (\S+)", line):
            last_step = re.search(r"\bstep (\S+)", line).group(1)
        if re.search(r"<<'?EOF'?", line):
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "EOF")
            found[_label(line, last_step)] = "\n".join(lines[i + 1:end]) + "\n"
            i = end
        i += 1
    return found


def logical_lines() -> list[str]:
    """The script's lines with backslash continuations joined."""
    return SCRIPT.read_text(encoding="utf-8").replace("\\\n", " ").splitlines()


def test_the_script_is_valid_bash_and_every_snippet_is_found():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    assert {"environment", "data", "model", "engine-single", "engine-zero2"} <= set(snippets())


@pytest.mark.parametrize("name", sorted(snippets()))
def test_every_snippet_compiles_and_its_imports_exist(name):
    tree = ast.parse(compile(snippets()[name], f"gpu_check.sh:{name}", "exec",
                             flags=ast.PyCF_ONLY_AST))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            wanted = [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            wanted = [(node.module, alias.name) for alias in node.names]
        else:
            continue
        for module, attribute in wanted:
            if importlib.util.find_spec(module.split(".")[0]) is None:
                assert not module.startswith("forgetmi"), module
                continue  # a GPU-only package this machine lacks (the script checks for it)
            loaded = importlib.import_module(module)
            assert attribute is None or hasattr(loaded, attribute), f"{module}.{attribute}"


def test_settings_files_and_flags_it_passes_exist():
    text = SCRIPT.read_text(encoding="utf-8")
    train = re.search(r"^TRAIN=\((.*?)\)", text, flags=re.M | re.S).group(1)
    matrix = next(line for line in logical_lines() if "tests/matrix_worker.py" in line)
    for group in (train, matrix):
        overrides = re.findall(r"(--[a-z_.]+=)(\"[^\"]*\"|\S+)", group)
        assert overrides
        args = [key + SHELL_VALUES.get(value.strip('"'), value.strip('"'))
                for key, value in overrides]
        load_config(ExperimentConfig, None, args)  # raises on an unknown or mistyped key

    for path in set(re.findall(r"\b((?:configs|launch|tests|benchmarks)/[\w/.$-]+\.(?:py|yaml))",
                               text)):
        for expanded in ([path.replace("$1", c) for c in ("single", "zero2")] if "$1" in path
                         else [path]):
            assert (REPO / expanded).is_file(), expanded
    assert importlib.util.find_spec("accelerate.commands.launch") is not None

    for script in ("benchmarks/bench_train.py", "benchmarks/check_matrix_run.py"):
        source = (REPO / script).read_text(encoding="utf-8")
        for line in (l for l in logical_lines() if script in l and "$PY" in l):
            for flag in re.findall(r"\s(--[a-z][a-z-]*)", line.split(script, 1)[1]):
                assert f'"{flag}"' in source, f"{script} has no {flag}"


def run_snippet(name: str, args: list[str], tmp_path: Path) -> str:
    env = dict(os.environ, PYTHONPATH=str(REPO), CHECK_DEVICE="cpu", CHECK_IMAGE_SIZE="64",
               CHECK_PATIENTS="20", CHECK_STEPS="1", OMP_NUM_THREADS="1",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    done = subprocess.run([sys.executable, "-", *args], input=snippets()[name], text=True,
                          capture_output=True, cwd=tmp_path, env=env, timeout=300)
    assert done.returncode == 0, f"{name}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_data_and_model_snippets_run_on_the_cpu_at_tiny_sizes(tmp_path):
    data = tmp_path / "data"
    run_snippet("data", [str(data), str(tmp_path / "bert-minilm-random")], tmp_path)
    assert (data / "split.csv").is_file()
    out = run_snippet("model", ["tiny", str(data)], tmp_path)
    assert "bf16 vs fp32 image logits" in out
    shapes = re.search(r"shapes (\[.*?\])", out).group(1)
    lengths = {length for _, length in ast.literal_eval(shapes)}
    assert lengths and all(length % 64 == 0 or length == 320 for length in lengths), out


def test_fp16_loss_scale_suits_short_runs_in_every_launcher():
    """The same start (2^8) and growth window (100 updates) for DeepSpeed and Accelerate's
    GradScaler: DeepSpeed's default 2^16 skipped 10 of a run's first 12 updates."""
    import json

    from forgetmi.engine.distributed import FP16_SCALER, build_accelerator

    for name in ("zero2", "zero3"):
        fp16 = json.loads((REPO / "configs" / "deepspeed" / f"{name}.json").read_text())["fp16"]
        assert 2.0 ** fp16["initial_scale_power"] == FP16_SCALER["init_scale"]
        assert fp16["loss_scale_window"] == FP16_SCALER["growth_interval"]
    handler = build_accelerator(None, 1).scaler_handler
    assert (handler.init_scale, handler.growth_interval) == (2.0 ** 8, 100)
