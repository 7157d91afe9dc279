"""Sweeps in W&B's format expanded offline, the release's parameter names, and a local run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from forgetmi.config import ConfigError, ExperimentConfig, load_config
from forgetmi.errors import ForgetMIError
from forgetmi.hpc.executor import HpcConfig, submit_array
from forgetmi.hpc.launcher import accelerate_env
from forgetmi.hpc.local import failures, raise_failures
from forgetmi.hpc.submit import add_hpc_arguments, hpc_from_args
from forgetmi.hpc.sweep import expand, load_sweep, run_id
from forgetmi.hpc.tasks import Task
from forgetmi.jobs.status import main as status_main
from forgetmi.jobs.sweep import main as sweep_main
from forgetmi.jobs.train import main as train_main
from forgetmi.utils.tracking import group_for, run_id_for
from tests.originals import TINY
from tests.wandb_files import offline_runs

REPO = Path(__file__).resolve().parents[1]
COMMON = [*TINY, "--checkpoint_every=1000"]


def test_shipped_grid_sweep_expands_to_the_ablation(tmp_path):
    runs = expand(load_sweep(REPO / "configs/sweeps/forgetmi-weights.yaml"), tmp_path)
    assert len(runs) == 5 * 3 * 3                              # presets × sizes × seeds
    presets = sorted(r.params["preset"] for r in runs)
    assert presets == sorted(["equal", "unimodal", "multimodal", "retention", "no-noise"] * 9)
    assert len({r.run_id for r in runs}) == 45
    from forgetmi.config import resolve_run_path
    run = next(r for r in runs if r.params["forget_set"] == "forget_set_6per.csv"
               and r.params["seed"] == 2)
    assert resolve_run_path(run.config.unlearn.original, run.config) == \
        "runs/paper/original/s2/model"                            # one original per seed
    assert resolve_run_path("runs/x/original/{size}/s{seed}/model", run.config) == \
        "runs/x/original/6/s2/model"                              # {size} still fills in
    baselines = expand(load_sweep(REPO / "configs/sweeps/baselines.yaml"), tmp_path)
    assert len(baselines) == 7 * 3 * 3
    again = expand(load_sweep(REPO / "configs/sweeps/forgetmi-weights.yaml"), tmp_path)
    assert [r.run_id for r in again] == [r.run_id for r in runs]   # deterministic folders
    assert all(r.output_dir.parent == tmp_path / "runs" for r in runs)


def test_release_parameter_names_are_accepted(tmp_path):
    runs = expand(load_sweep(REPO / "configs/sweeps/release-names.yaml"), tmp_path, count=4)
    assert len(runs) == 4
    for run in runs:
        argv = [a for a in run.argv if not a.startswith("--config=")]
        cfg = load_config(ExperimentConfig, REPO / "configs/experiments/mimic-cxr.yaml", argv)
        p = run.params
        # alpha weights UR, beta UU, theta MU, gamma MR
        assert cfg.unlearn.weights == [p["beta"], p["alpha"], p["theta"], p["gamma"]]
        assert cfg.noise.image_std == pytest.approx(p["noise_std"])
        assert cfg.train.lr == p["learning_rate"] and cfg.train.epochs == p["unlearn_epochs"]
        assert cfg.train.batch_size == p["unlearn_batch_size"]
        assert cfg.data.forget_set == p["forget_set_path"]
        assert cfg.noise.use_image is cfg.noise.use_text is True


def test_bad_sweeps_are_refused(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"method": "grid", "parameters": {"lr": {"values": ["fast"]}},
                                    "program": "launch/unlearn.py"}))
    with pytest.raises(ConfigError, match="expected a number"):
        expand(load_sweep(path), tmp_path)
    path.write_text(yaml.safe_dump({"method": "annealing", "parameters": {}}))
    with pytest.raises(ConfigError, match="grid, random or bayes"):
        load_sweep(path)
    path.write_text(yaml.safe_dump({"method": "random", "parameters": {"lr": {"value": 1}}}))
    with pytest.raises(ConfigError, match="--count"):
        expand(load_sweep(path), tmp_path)


def test_the_rendezvous_port_is_outside_the_ephemeral_range(tmp_path):
    """submitit draws from 20000-60000, inside Linux's ephemeral 32768-60999: a client socket
    of any process on the node could hold the port while the ranks wait for each other."""
    from forgetmi.hpc.launcher import LINUX_EPHEMERAL, ephemeral_ports, rendezvous_port

    ports = {rendezvous_port(f"{job}_{task}", LINUX_EPHEMERAL)
             for job in range(1000, 1020) for task in range(5)}
    assert all(10000 <= port <= 32767 for port in ports)
    assert len(ports) > 90                                   # jobs rarely share one
    assert rendezvous_port("4242_3", LINUX_EPHEMERAL) == rendezvous_port("4242_3", LINUX_EPHEMERAL)
    # the node's own range, wherever it lies
    assert all(not 15000 <= rendezvous_port(str(j), (15000, 40000)) <= 40000 for j in range(200))
    assert all(45001 <= rendezvous_port(str(j), (1024, 45000)) <= 65535 for j in range(200))
    ranges = tmp_path / "ip_local_port_range"
    ranges.write_text("20000\t50000\n")
    assert ephemeral_ports(ranges) == (20000, 50000)
    assert ephemeral_ports(tmp_path / "absent") == LINUX_EPHEMERAL
    ranges.write_text("garbage\n")
    assert ephemeral_ports(ranges) == LINUX_EPHEMERAL
    low, high = ephemeral_ports()                            # this machine's
    assert not low <= rendezvous_port("1") <= high


def test_accelerate_environment_for_slurm_ranks():
    env = accelerate_env("configs/accelerate/zero2.yaml", REPO, cuda=False)
    assert env["ACCELERATE_USE_DEEPSPEED"] == "true" and env["DS_ACCELERATOR"] == "cpu"
    assert Path(env["ACCELERATE_DEEPSPEED_CONFIG_FILE"]) == REPO / "configs/deepspeed/zero2.json"
    assert accelerate_env("configs/accelerate/ddp.yaml", REPO, cuda=False)["ACCELERATE_USE_CPU"] == "1"
    assert "ACCELERATE_USE_CPU" not in accelerate_env("configs/accelerate/ddp.yaml", REPO, cuda=True)


def test_local_sweep_runs_each_point_once_and_gathers_a_report(demo_data, tmp_path, caplog,
                                                               capsys, monkeypatch):
    for mode, name in (("train", "original"), ("retrain", "retrained")):
        assert train_main([f"--data.root={demo_data.root}", f"--output_dir={tmp_path / name}/s0",
                           *COMMON, "--epochs=1", "--lr=1e-3", f"--mode={mode}"]) == 0
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({
        "program": "launch/unlearn.py", "method": "grid",
        "parameters": {"preset": {"values": ["equal", "unimodal"]},
                       "seed": {"value": 0},
                       "original": {"value": str(tmp_path / "original" / "s{seed}" / "model")},
                       "epochs": {"value": 1}},
        "command": ["${env}", "python", "${program}", "${args}"]}))
    out = tmp_path / "out"
    args = [str(sweep), "--out", str(out), "--executor", "local",
            "--retrained", str(tmp_path / "retrained" / "s{seed}"),
            f"--data.root={demo_data.root}", *COMMON]
    assert sweep_main(args) == 0
    manifest = json.loads((out / "sweep.json").read_text())
    # each run scored itself when it ended: no evaluation task
    assert [t["kind"] for t in manifest["tasks"]] == ["unlearn"] * 2 + ["report"]
    assert all(t["state"] == "done" for t in manifest["tasks"])
    for task in manifest["tasks"][:2]:
        folder = Path(task["output_dir"])
        cfg = yaml.safe_load((folder / "config.yaml").read_text())
        assert cfg["unlearn"]["preset"] == task["params"]["preset"]
        assert cfg["unlearn"]["original"] == str(tmp_path / "original" / "s0" / "model")
        assert json.loads((folder / "timing.json").read_text())["job"] == "unlearn"
        assert json.loads((folder / "metrics.json").read_text())["gap"] is not None
    report = json.loads((out / "report" / "report.json").read_text())
    # Each trial is its own row, and the trials are tabled against the swept key.
    assert {r["label"].split(" [")[0] for r in report["runs"]} == {"forgetmi (equal)",
                                                                   "forgetmi (unimodal)"}
    assert report["by_parameter"]["swept"] == ["preset"]
    assert all(row["replicates"] == 1 and row["score"] is not None
               for row in report["by_parameter"]["rows"])
    caplog.clear()
    assert sweep_main(args) == 0                                  # idempotent
    assert caplog.text.count("already finished; not resubmitted") == 2
    caplog.clear()
    capsys.readouterr()
    assert status_main([str(out)]) == 0
    assert "3 task(s): 3 done" in capsys.readouterr().out   # a table on stdout, not a log
    # A task that fails (here: its model is missing) does not stop the array's other tasks.
    sweep.write_text(yaml.safe_dump({
        "program": "launch/unlearn.py", "method": "grid",
        "parameters": {"original": {"values": [str(tmp_path / "missing"),
                                               str(tmp_path / "original" / "s0" / "model")]},
                       "seed": {"value": 0}, "epochs": {"value": 1}}}))
    caplog.clear()
    failing = tmp_path / "failing"
    assert sweep_main([str(sweep), "--out", str(failing), "--executor", "local", "--jobs", "2",
                       f"--data.root={demo_data.root}", *COMMON]) == 2
    finished = list((failing / "runs").glob("*/timing.json"))
    assert len(finished) == 1 and json.loads(finished[0].read_text())["job"] == "unlearn"
    # The manifest records both tasks and their logs; the error names the failed one and its log.
    tasks = {t["state"]: t for t in json.loads((failing / "sweep.json").read_text())["tasks"]}
    assert set(tasks) == {"done", "failed"}
    assert Path(tasks["failed"]["params"]["original"]) == tmp_path / "missing"
    assert f"1 of 2 task(s) failed: {tasks['failed']['name']} (log: {tasks['failed']['log']})" \
        in caplog.text
    failed_log, done_log = (Path(tasks[s]["log"]).read_text() for s in ("failed", "done"))
    assert str(tmp_path / "missing") in failed_log and "forget rows (" not in failed_log
    assert "forget rows (" in done_log and str(tmp_path / "missing") not in done_log
    assert f"{tasks['done']['name']}: done" in caplog.text
    caplog.clear()
    capsys.readouterr()
    assert status_main([str(failing)]) == 0
    table = capsys.readouterr().out
    assert f"failed         —  log: {tasks['failed']['log']}" in table
    assert "2 task(s): " in table and {"1 done", "1 failed"} == set(
        table.split("2 task(s): ")[1].strip().split(", "))
    # Relative paths resolve where the sweep was submitted, not in the package's folder.
    monkeypatch.chdir(tmp_path)
    sweep.write_text(yaml.safe_dump({
        "program": "launch/unlearn.py", "method": "grid",
        "parameters": {"original": {"value": "original/s0/model"}, "seed": {"value": 0},
                       "epochs": {"value": 1}}}))
    assert sweep_main(["sweep.yaml", "--out", "relative", "--executor", "local",
                       f"--data.root={demo_data.root}", *COMMON]) == 0
    assert len(list((tmp_path / "relative" / "runs").glob("*/model/model.safetensors"))) == 1
    assert not (REPO / "relative").exists()


def test_online_sweep_command_and_agent_scripts(monkeypatch):
    """What can be checked of the online path without a W&B server: the command each agent
    runs, and that the sbatch scripts parse and say what they run."""
    import subprocess

    from forgetmi.hpc.node_launch import command

    monkeypatch.setenv("FORGETMI_ACCELERATE_CONFIG", "configs/accelerate/zero2.yaml")
    monkeypatch.setenv("SLURM_GPUS_ON_NODE", "4")
    monkeypatch.delenv("FORGETMI_PROCESSES", raising=False)
    monkeypatch.setenv("WANDB_RUN_ID", "abc123")
    monkeypatch.setenv("WANDB_SWEEP_ID", "sw9")
    cmd = command("launch/unlearn.py", ["--preset=equal", "--seed=1"])
    assert cmd[1:8] == ["-m", "accelerate.commands.launch", "--config_file",
                        "configs/accelerate/zero2.yaml", "--num_processes", "4",
                        "--main_process_port"]
    assert cmd[9:] == ["launch/unlearn.py", "--preset=equal", "--seed=1",
                       "--output_dir=runs/sweeps/sw9/abc123"]
    online = load_sweep(REPO / "configs/sweeps/forgetmi-weights-online.yaml")
    assert online.config["command"][2:4] == ["-m", "forgetmi.hpc.node_launch"]
    assert len(expand(online, Path("/nonexistent-sweep"))) == 45
    for script in ("wandb_agents.sbatch", "single_run.sbatch"):
        path = REPO / "slurm" / script
        assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
        text = path.read_text()
        assert "#SBATCH --requeue" in text and "forgetmi" in text
    assert "wandb agent --count 1" in (REPO / "slurm/wandb_agents.sbatch").read_text()


def _hpc(argv):
    import argparse
    parser = argparse.ArgumentParser()
    add_hpc_arguments(parser)
    return hpc_from_args(parser.parse_args(argv))


def test_hpc_settings_from_a_file_and_the_command_line(tmp_path):
    settings = tmp_path / "cluster.yaml"
    settings.write_text(yaml.safe_dump({
        "partition": "gpu", "account": "lab", "time_min": 120, "gpus_per_task": 4,
        "sbatch": {"exclusive": True}, "setup": ["module load cuda"]}))
    hpc = _hpc(["--hpc-config", str(settings), "--time-min", "30", "--sbatch", "mail-type=END",
                "--sbatch", "requeue=true"])
    assert (hpc.partition, hpc.account, hpc.time_min) == ("gpu", "lab", 30)   # the flag wins
    assert hpc.processes == 4 and hpc.accelerate_config == "configs/accelerate/ddp.yaml"
    assert hpc.sbatch == {"exclusive": True, "mail-type": "END", "requeue": True}
    assert hpc.setup == ["module load cuda"]
    assert _hpc(["--gpus-per-task", "2"]).processes == 2
    assert _hpc([]).executor == "slurm" and _hpc([]).sbatch == {}


@pytest.mark.parametrize("content,message", [
    ({"partitoin": "gpu"}, r"cluster.yaml: unknown HPC config key\(s\) partitoin"),
    ({"time_min": "long"}, r"cluster.yaml: time_min: expected an integer, got 'long'"),
    ({"executor": "kubernetes"}, r"executor must be one of slurm, local, debug"),
    (["gpu"], r"cluster.yaml: expected a mapping"),
])
def test_bad_hpc_settings_name_the_file_and_key(tmp_path, content, message):
    settings = tmp_path / "cluster.yaml"
    settings.write_text(yaml.safe_dump(content))
    with pytest.raises(ForgetMIError, match=message):
        _hpc(["--hpc-config", str(settings)])
    with pytest.raises(ForgetMIError, match="missing.yaml: HPC config not found"):
        _hpc(["--hpc-config", str(tmp_path / "missing.yaml")])
    with pytest.raises(ForgetMIError, match="--sbatch 'exclusive': expected KEY=VALUE"):
        _hpc(["--sbatch", "exclusive"])


# -- running here, several at once -----------------------------------------------------------------

def _pair(tmp_path: Path, seconds: float) -> list[Task]:
    """Two tasks that each wait ``seconds`` for the other to start."""
    return [Task(f"pair/{me}", "tests.local_tasks:rendezvous",
                 [str(tmp_path / f"{me}.marker"), str(tmp_path / f"{other}.marker"), str(seconds)],
                 str(tmp_path), cwd=str(REPO))
            for me, other in (("a", "b"), ("b", "a"))]


def test_local_tasks_run_side_by_side_each_with_its_log(tmp_path, monkeypatch):
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    jobs = submit_array(HpcConfig(executor="local", jobs=2), _pair(tmp_path, 60), tmp_path / "slurm",
                        "pair")
    assert failures(jobs) == []                       # each met the other: they ran at once
    logs = {job.name: job.log.read_text() for job in jobs}
    assert [job.log for job in jobs] == [tmp_path / "slurm" / "pair_a.log",
                                         tmp_path / "slurm" / "pair_b.log"]
    assert "task a met b" in logs["pair/a"] and "task b" not in logs["pair/a"]
    assert "task b met a" in logs["pair/b"] and "task a" not in logs["pair/b"]
    # Each task has one thread in every pool...
    for log in logs.values():
        assert "OMP_NUM_THREADS=1, MKL_NUM_THREADS=1, OPENBLAS_NUM_THREADS=1" in log


def test_one_task_at_a_time_fails_the_pair_naming_the_task_and_its_log(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")      # ...unless the environment says otherwise
    for name in ("MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    tasks = _pair(tmp_path, 1.5)
    jobs = submit_array(HpcConfig(executor="local", jobs=1), tasks, tmp_path / "slurm", "pair")
    a, b = jobs
    assert a.error and "b never started" in a.log.read_text()
    assert b.error is None and "task b met a" in b.log.read_text()   # the other still finished
    assert "OMP_NUM_THREADS=3, MKL_NUM_THREADS=3, OPENBLAS_NUM_THREADS=3" in b.log.read_text()
    with pytest.raises(ForgetMIError, match=r"^1 of 2 task\(s\) failed: pair/a \(log: "
                                            rf"{tmp_path}/slurm/pair_a.log\); the others"):
        raise_failures(failures(jobs), len(tasks))


def test_single_process_tasks_start_warm_each_its_own_process(tmp_path, monkeypatch):
    """Forked from one server that imported torch & co. once, yet each task has the
    environment, folder, log and exit code it would have had as a fresh process."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    tasks = [Task(f"who/{i}", "tests.local_tasks:whoami", [str(tmp_path / f"{i}.json"), str(code)],
                  str(tmp_path), env={"FORGETMI_TEST_TASK": str(i)}, cwd=str(REPO))
             for i, code in ((0, 0), (1, 0), (2, 3))]
    jobs = submit_array(HpcConfig(executor="local", jobs=2), tasks, tmp_path / "slurm", "who")
    assert [j.error is None for j in jobs] == [True, True, False]
    assert "exited with code 3" in jobs[2].error
    seen = [json.loads((tmp_path / f"{i}.json").read_text()) for i in range(3)]
    assert [s["task"] for s in seen] == ["0", "1", "2"]
    assert all(s["cwd"] == str(REPO) and s["threads"] == "1" for s in seen)
    assert len({s["ppid"] for s in seen}) == 1 and seen[0]["ppid"] != os.getpid()  # one server
    assert all("whoami done" in j.log.read_text() for j in jobs)
    # Started cold (FORGETMI_WARM_START=0), a task is this process's child instead.
    monkeypatch.setenv("FORGETMI_WARM_START", "0")
    monkeypatch.setenv("FORGETMI_STALE", "yes")
    jobs = submit_array(HpcConfig(executor="local", jobs=1), tasks[:1], tmp_path / "cold", "who")
    cold = json.loads((tmp_path / "0.json").read_text())
    assert failures(jobs) == [] and cold["ppid"] == os.getpid() and cold["stale"] == "yes"


# -- what a sweep would do, and where it cannot run -----------------------------------------------

def test_dry_run_lists_the_runs_and_writes_nothing(tmp_path, caplog):
    caplog.set_level("INFO", logger="forgetmi")
    sweep = REPO / "configs/sweeps/forgetmi-weights.yaml"
    out = tmp_path / "sweep"
    assert sweep_main([str(sweep), "--out", str(out), "--dry-run"]) == 0
    assert not out.exists()
    runs = expand(load_sweep(sweep), out)
    for run in runs:
        assert f"{run.run_id}  to run   {run.output_dir}" in caplog.text
    assert "dry run: 45 unlearn run(s), 45 to run, 0 finished; nothing written" in caplog.text
    # A finished run is said to be so, and still nothing is written.
    done = runs[0].output_dir
    done.mkdir(parents=True)
    (done / "timing.json").write_text(json.dumps({"job": "unlearn"}))
    caplog.clear()
    assert sweep_main([str(sweep), "--out", str(out), "--dry-run", "--executor", "local"]) == 0
    assert f"{runs[0].run_id}  finished {done}" in caplog.text
    assert "44 to run, 1 finished" in caplog.text
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == \
        [Path("runs"), Path("runs") / runs[0].run_id, Path("runs") / runs[0].run_id / "timing.json"]


def test_without_slurm_a_submission_says_so_before_making_anything(tmp_path, monkeypatch, caplog):
    bare = tmp_path / "bin"                          # a PATH without sbatch
    bare.mkdir()
    monkeypatch.setenv("PATH", str(bare))
    out = tmp_path / "sweep"
    sweep = str(REPO / "configs/sweeps/forgetmi-weights.yaml")
    assert sweep_main([sweep, "--out", str(out)]) == 2          # slurm is the default executor
    (line,) = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert line.startswith("Slurm not found (no sbatch on PATH)") and "--executor local" in line
    assert not out.exists()
    caplog.clear()
    assert sweep_main([sweep, "--out", str(out), "--jobs", "2"]) == 2   # --jobs is for local
    assert "--jobs 2: tasks side by side on this machine, with --executor local" in caplog.text
    assert not out.exists()


# -- W&B -------------------------------------------------------------------------------------------

def test_wandb_ids_are_readable_unique_and_stable(tmp_path):
    run = tmp_path / "tune" / "s3" / "runs" / "0a1b2c3d4e"
    first = run_id_for(run, "unlearn", 3)
    assert first == run_id_for(tmp_path / "tune" / "s3" / "runs" / "." / "0a1b2c3d4e", "unlearn", 3)
    assert first.startswith("unlearn-s3-runs-0a1b2c3d4e-")
    others = {run_id_for(tmp_path / "tune" / "s4" / "runs" / "0a1b2c3d4e", "unlearn", 3),
              run_id_for(run, "unlearn", 4), run_id_for(run, "train", 3), first}
    assert len(others) == 4
    deep = run_id_for(tmp_path / ("x" * 200) / ("y" * 200), "retrain", 12345)
    assert len(deep) == 64 and deep.startswith("retrain-s12345-") and deep[-9] == "-"
    for ident in (first, deep, group_for("sweep-a b:c", tmp_path / "o#?")):
        assert not set(ident) - set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                    "0123456789-_")
    assert group_for("sweep-tune", tmp_path / "a" / "s3") != group_for("sweep-tune",
                                                                        tmp_path / "b" / "s3")


def test_sweeps_on_two_seeds_are_two_wandb_runs_in_their_own_groups(demo_data, tmp_path,
                                                                    monkeypatch):
    """The tuning recipe: one sweep, --seed=3 and --seed=4, each with its own --out. The two
    runs share a folder name (the same parameters) but not their W&B id or group."""
    monkeypatch.delenv("WANDB_SWEEP_ID", raising=False)
    sweep = tmp_path / "tune.yaml"
    sweep.write_text(yaml.safe_dump({"program": "launch/train.py", "method": "grid",
                                     "parameters": {"lr": {"value": 1e-3},
                                                    "epochs": {"value": 1}}}))
    runs = {}
    for seed in (3, 4):
        out = tmp_path / "tune" / f"s{seed}"
        assert sweep_main([str(sweep), "--out", str(out), "--executor", "local",
                           f"--data.root={demo_data.root}", *COMMON, "--wandb=offline",
                           f"--seed={seed}"]) == 0
        (task,) = json.loads((out / "sweep.json").read_text())["tasks"]
        (run,) = offline_runs(Path(task["output_dir"]))
        assert run.id == run_id_for(task["output_dir"], "train", seed)
        assert run.id.startswith(f"train-s{seed}-")
        assert (run.group, run.job_type) == (group_for("sweep-tune", out), "train")
        assert run.group.startswith(f"sweep-tune-tune-s{seed}-")
        assert f"upload it with: wandb sync {run.folder}" in Path(task["log"]).read_text()
        runs[seed] = (run, Path(task["output_dir"]).name)
    assert runs[3][1] == runs[4][1] == run_id({"lr": 1e-3, "epochs": 1})   # same folder name
    assert runs[3][0].id != runs[4][0].id and runs[3][0].group != runs[4][0].group


def test_a_resumed_run_continues_its_wandb_run(demo_data, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_SWEEP_ID", raising=False)
    out = tmp_path / "retrained"
    args = [f"--data.root={demo_data.root}", f"--output_dir={out}", *TINY, "--wandb=offline",
            "--epochs=1", "--checkpoint_every=1", "--mode=retrain", "--seed=2"]
    assert train_main([*args, "--stop_after=2"]) == 3                # stopped mid-epoch
    assert json.loads((out / "checkpoints/latest/trainer_state.json").read_text())["updates"] == 1
    assert train_main(args) == 0                                     # resumed there
    first, second = offline_runs(out)
    assert first.folder != second.folder                             # two starts...
    assert first.id == second.id == run_id_for(out, "retrain", 2)   # ...of one W&B run
    assert (second.job_type, second.group) == ("retrain", "")       # a standalone run: no group


def test_under_a_wandb_sweep_agent_the_agent_names_the_run(tmp_path):
    """In a process of its own, as an agent starts each run (wandb reads WANDB_RUN_ID once per
    process)."""
    import os
    import subprocess
    import sys
    code = ("from forgetmi.config import TrackingConfig\n"
            "from forgetmi.utils.tracking import Tracker\n"
            f"Tracker({str(tmp_path)!r}, TrackingConfig(wandb='offline', group='g'), {{}}, "
            "job='unlearn', seed=0).finish()\n")
    env = {**os.environ, "WANDB_SWEEP_ID": "sw9", "WANDB_RUN_ID": "agent123",
           "WANDB_MODE": "offline"}
    subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, check=True, timeout=300)
    (run,) = offline_runs(tmp_path)
    assert (run.id, run.group, run.job_type) == ("agent123", "g", "unlearn")


def test_run_cap_counts_the_trials_already_there(tmp_path):
    """Rerunning a capped random sweep once proposed run_cap more trials each time (a tuning
    rerun doubled one method's budget). run_cap is the total: an interrupted sweep gets its
    unfinished trials again and new ones up to the cap, a complete one nothing new."""
    import json

    sweep = load_sweep(REPO / "configs/sweeps/tune/finetune.yaml")
    first = expand(sweep, tmp_path, proposal_seed=0)
    cap = sweep.config["run_cap"]
    assert len({r.trial for r in first}) == cap and len(first) == 2 * cap   # two seeds each
    for run in first[:6]:  # three trials started (each seed's folder made), none finished
        run.output_dir.mkdir(parents=True)
        (run.output_dir / "sweep_params.json").write_text(json.dumps(run.params))
    again = expand(sweep, tmp_path, proposal_seed=0)
    assert len({r.trial for r in again}) == cap                     # not cap + 3
    assert {r.run_id for r in first[:6]} <= {r.run_id for r in again}
    assert expand(sweep, tmp_path, count=2, proposal_seed=0)        # --count still adds
