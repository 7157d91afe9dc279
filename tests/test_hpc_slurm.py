"""Sweeps and pipelines on a real one-node Slurm cluster (slurm/local/), on the embedded data.

The shipped bayes sweep as one array of four unlearning runs two at a time, each scoring
itself; one array task of two ranks running DeepSpeed
ZeRO-2; the paper's pipeline shrunk to one size and seed as dependent arrays (original →
unlearn → evaluate → report); and a running task pre-empted (USR2, as Slurm warns before a
time-out or pre-emption) that submitit checkpoints and requeues, and that resumes from its
checkpoint to the same weights as an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import re
import time
from datetime import datetime
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from forgetmi.hpc.status import task_states
from forgetmi.jobs.sweep import main as sweep_main
from forgetmi.jobs.protocol import main as protocol_main
from forgetmi.jobs.train import main as train_main
from tests.originals import BAYES_SWEEP, TINY, bayes_overrides

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
WAIT_S = 420


FINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL")


def wait_until_finished(cluster, folder: Path, timeout: float = WAIT_S) -> list[dict]:
    """Poll ``forgetmi status`` until no task is pending or running, and Slurm's accounting
    has the final state of every submitted task (results are written before the job ends)."""
    deadline = time.monotonic() + timeout
    while True:
        states = task_states(folder)
        jobs = sorted({s["job_id"].split("_")[0] for s in states if s.get("job_id")})
        settled = all(r["state"].split()[0] in FINAL for j in jobs for r in sacct(cluster, j))
        if settled and not any(s["state"] in ("pending", "running", "unknown") for s in states):
            return states
        if time.monotonic() > deadline:
            queue = cluster.run("squeue", "-a", check=False).stdout
            pytest.fail(f"tasks still running after {timeout} s: {states}\n{queue}\n"
                        f"{cluster.log_tails()}")
        time.sleep(2)


def sacct(cluster, job: str) -> list[dict]:
    out = cluster.run("sacct", "-n", "-P", "-X", "-j", job,
                      "--format=JobID,State,Start,End,ExitCode").stdout
    rows = []
    for line in out.splitlines():
        jid, state, start, end, code = line.split("|")
        rows.append({"id": jid, "state": state, "exit": code,
                     "start": datetime.fromisoformat(start) if start[:1].isdigit() else None,
                     "end": datetime.fromisoformat(end) if end[:1].isdigit() else None})
    return rows


def log_tail(task: dict) -> str:
    log = task.get("log")
    return Path(log).read_text()[-3000:] if log and Path(log).is_file() else "(no log)"


@pytest.fixture(scope="module")
def original(small_original):
    return small_original


def write_sweep(path: Path, parameters: dict, program: str = "launch/unlearn.py") -> Path:
    path.write_text(yaml.safe_dump({"program": program, "method": "grid",
                                    "parameters": {k: {"values": v} if isinstance(v, list)
                                                   else {"value": v}
                                                   for k, v in parameters.items()}}))
    return path


def test_the_bayes_sweep_is_one_array_two_at_a_time_and_each_trial_scores_itself(
        slurm_cluster, demo_data, sweep_references, tmp_path):
    """The shipped bayes file, as a user submits it: one trial at two sizes and two seeds."""
    out = tmp_path / "out"
    assert sweep_main([str(BAYES_SWEEP), "--out", str(out), "--executor", "slurm",
                       "--max-parallel", "2", "--partition", slurm_cluster.partition,
                       "--time-min", "15", "--count", "1", "--proposal-seed", "0",
                       *bayes_overrides(demo_data.root, sweep_references)]) == 0
    states = wait_until_finished(slurm_cluster, out)
    assert all(s["state"] == "done" for s in states), [(s, log_tail(s)) for s in states]
    runs = [s for s in states if s["kind"] == "unlearn"]
    # each run scores itself: no evaluation array, the report after the runs' array
    assert [s["kind"] for s in states] == ["unlearn"] * 4 + ["report"], states
    arrays = {s["job_id"].split("_")[0] for s in runs}
    assert len(arrays) == 1                                   # one sbatch --array
    rows = sacct(slurm_cluster, arrays.pop())
    assert len(rows) == 4 and all(r["state"] == "COMPLETED" for r in rows), rows
    # never more than two tasks at once: at each start, count the tasks running
    for r in rows:
        running = sum(1 for o in rows if o["start"] <= r["start"] < o["end"])
        assert running <= 2, rows
    report = sacct(slurm_cluster, next(s for s in states if s["kind"] == "report")["job_id"])[0]
    assert report["start"] >= max(r["end"] for r in rows)      # afterok held it
    assert {(s["params"]["seed"], s["params"]["forget_set"]) for s in runs} == {
        (seed, f"forget_set_{size}per.csv") for seed in (3, 4) for size in (6, 10)}
    for s in runs:
        folder = Path(s["output_dir"])
        cfg = yaml.safe_load((folder / "config.yaml").read_text())
        assert cfg["unlearn"]["weight_mu"] == s["params"]["unlearn.weight_mu"]
        score = json.loads((folder / "metrics.json").read_text())["score"]
        assert score["retrained"] == cfg["evaluate"]["retrained"] and score["value"] >= 0
        # each task keeps to the one CPU it was allocated (unless the caller set its threads)
        logged = Path(s["log"]).with_suffix(".err").read_text()     # submitit: stderr
        assert ("1 CPU thread(s) per process, as allocated" in logged
                or "OMP_NUM_THREADS" in os.environ), logged[:3000]
    table = json.loads((out / "report" / "report.json").read_text())["by_parameter"]
    assert len(table["rows"]) == 1 and table["rows"][0]["replicates"] == 4


def test_a_task_of_two_ranks_runs_deepspeed_zero2(slurm_cluster, demo_data, original, tmp_path):
    sweep = write_sweep(tmp_path / "sweep.yaml", {"method": "scrub", "original": str(original),
                                                  "epochs": 1, "max_steps": 4})
    out = tmp_path / "out"
    assert sweep_main([str(sweep), "--out", str(out), "--executor", "slurm", "--processes", "2",
                       "--accelerate-config", "configs/accelerate/zero2.yaml",
                       "--partition", slurm_cluster.partition, "--time-min", "15",
                       f"--data.root={demo_data.root}", *TINY, "--batch_size=4",
                       "--keep_checkpoints=1"]) == 0   # the finished run's, read below
    [state] = wait_until_finished(slurm_cluster, out)
    assert state["state"] == "done", log_tail(state)
    timing = json.loads((Path(state["output_dir"]) / "timing.json").read_text())
    assert timing["world_size"] == 2 and timing["zero_stage"] == 2, timing
    assert timing["distributed_type"] == "DistributedType.DEEPSPEED" and timing["ranks_agree"]
    shards = list((Path(state["output_dir"]) / "checkpoints/latest/pytorch_model")
                  .glob("zero_pp_rank_*_optim_states.pt"))
    assert len(shards) == 2                                    # the optimizer state is sharded
    # the rendezvous port lies outside the node's ephemeral range (submitit's draw does not)
    from forgetmi.hpc.launcher import ephemeral_ports
    logs = "".join(p.read_text(errors="replace") for p in (out / "slurm").rglob("*_log.*"))
    ports = {int(port) for port in re.findall(r"rendezvous at \S+:(\d+)", logs)}
    assert len(ports) == 1, logs[-3000:]                      # every rank meets at one port
    [port] = ports
    low, high = ephemeral_ports()
    assert not low <= port <= high, port


def test_pipeline_runs_as_dependent_arrays_and_gathers_a_report(slurm_cluster, demo_data,
                                                                tmp_path):
    experiment = tmp_path / "experiment.yaml"
    experiment.write_text(yaml.safe_dump({
        "data": {"root": str(demo_data.root), "image_size": 64},
        "model": {"text_encoder": "tiny"},
        "train": {"batch_size": 8, "warmup_ratio": 0.0, "early_stopping_patience": 0,
                  "log_every": 50},
        "tracking": {"wandb": "disabled"}}))
    protocol = tmp_path / "protocol.yaml"
    protocol.write_text(yaml.safe_dump({
        "experiment": "experiment.yaml", "output_dir": str(tmp_path / "runs"), "seeds": [0],
        "forget_sets": {"10": "forget_set_10per.csv"}, "train": {"epochs": 1, "lr": 1e-3},
        "unlearn": {"epochs": 1, "lr": 1e-3},
        "methods": {"forgetmi-unimodal": {"method": "forgetmi", "preset": "unimodal"}},
        "evaluate": {"bootstrap": 20}}))
    assert protocol_main([str(protocol), "--executor", "slurm", "--max-parallel", "2",
                          "--partition", slurm_cluster.partition, "--time-min", "15"]) == 0
    states = wait_until_finished(slurm_cluster, tmp_path / "runs")
    assert all(s["state"] == "done" for s in states), [(s, log_tail(s)) for s in states]
    by_name = {s["name"]: s for s in states}
    original = sacct(slurm_cluster, by_name["original/s0"]["job_id"])[0]
    unlearn = sacct(slurm_cluster, by_name["unlearn/forgetmi-unimodal/10/s0"]["job_id"])[0]
    report = sacct(slurm_cluster, by_name["report"]["job_id"])[0]
    assert unlearn["start"] >= original["end"]                 # afterok held it
    evaluations = [sacct(slurm_cluster, s["job_id"])[0] for s in states
                   if s["kind"] == "evaluate"]
    assert len(evaluations) == 3
    assert all(e["start"] >= unlearn["end"] for e in evaluations)
    assert report["start"] >= max(e["end"] for e in evaluations)
    summary = json.loads((tmp_path / "runs" / "report" / "report.json").read_text())
    assert {r["label"] for r in summary["runs"]} == {"original", "retrained",
                                                     "forgetmi (unimodal)"}
    assert (tmp_path / "runs" / "report" / "report.md").is_file()


def test_preempted_task_resumes_from_its_checkpoint(slurm_cluster, demo_data, tmp_path):
    # 20-25 updates an epoch: the first checkpoint (update 4) comes with over 50 still to go
    args = [f"--data.root={demo_data.root}", *TINY, "--epochs=3", "--lr=1e-3",
            "--checkpoint_every=4", "--seed=3"]
    sweep = write_sweep(tmp_path / "sweep.yaml", {"seed": 3}, program="launch/train.py")
    out = tmp_path / "out"
    assert sweep_main([str(sweep), "--out", str(out), "--executor", "slurm",
                       "--partition", slurm_cluster.partition, "--time-min", "15", *args]) == 0
    [task] = task_states(out)
    run = Path(task["output_dir"])
    deadline = time.monotonic() + WAIT_S
    while not (run / "checkpoints" / "latest" / "trainer_state.json").is_file():
        assert time.monotonic() < deadline, log_tail(task)
        assert not (run / "timing.json").is_file(), "finished before it could be pre-empted"
        time.sleep(0.3)
    # USR2 is what Slurm sends before a time-out or pre-emption: submitit calls the task's
    # checkpoint() and requeues it.
    slurm_cluster.run("scancel", "--signal=USR2", task["job_id"])
    [task] = wait_until_finished(slurm_cluster, out)
    assert task["state"] == "done", log_tail(task)
    log = log_tail(task) + "".join(p.read_text() for p in (out / "slurm").glob("*_log.*"))
    assert "restart 1, resuming from the latest checkpoint" in log, log[-3000:]
    assert "resumed from" in log and "(epoch 0, step 0)" not in log, log[-3000:]
    restarts = slurm_cluster.run("sacct", "-n", "-P", "-X", "-D", "-j", task["job_id"],
                                 "--format=JobID,State").stdout.splitlines()
    assert any("REQUEUED" in r or "PREEMPTED" in r for r in restarts), restarts
    # the same run uninterrupted, here, ends with the same weights
    straight = tmp_path / "straight"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)       # as the task ran: its one allocated CPU, the same kernels
    try:
        assert train_main([*args, f"--output_dir={straight}"]) == 0
    finally:
        torch.set_num_threads(threads)
    a = load_file(str(run / "model" / "model.safetensors"))
    b = load_file(str(straight / "model" / "model.safetensors"))
    assert max(float((a[k].float() - b[k].float()).abs().max()) for k in a) <= 1e-6
