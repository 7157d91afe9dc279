"""The local one-node Slurm cluster behaves as the HPC code expects: arrays with a concurrency cap,
submitit jobs with two torch.distributed ranks, submitit arrays, dependencies and requeue.

Real jobs on the cluster of slurm/local/ (the `slurm_cluster` fixture of tests/slurm_cluster.py)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import cloudpickle
import pytest

pytestmark = pytest.mark.slurm

if TYPE_CHECKING:
    import submitit

    from tests.slurm_cluster import SlurmCluster

# Jobs unpickle the functions below in a fresh interpreter that cannot import this test module
# (tests/ is not a package on its path): ship them by value instead of by reference.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

T = TypeVar("T")
PENDING_OR_RUNNING = ("PENDING", "RUNNING", "REQUEUED", "COMPLETING", "CONFIGURING", "RESIZING",
                      "SUSPENDED", "REQUEUE_HOLD", "REQUEUE_FED")


def diagnostics(cluster: SlurmCluster, *files: Path) -> str:
    """squeue, recent sacct, job outputs and daemon logs, for a failure message."""
    parts = []
    for args in (("squeue", "-a"), ("sacct", "-a", "-D", "-X", "-S", "now-10minutes",
                                    "-o", "JobID%20,JobName,State%25,ExitCode,Start,End")):
        done = cluster.run(*args, check=False)
        parts.append(f"$ {' '.join(args)}\n{done.stdout}{done.stderr}")
    for path in files:
        if path.is_file():
            parts.append(f"----- {path} -----\n{path.read_text(errors='replace')[-3000:]}")
    parts.append(cluster.log_tails())
    return "\n".join(parts)


def wait_for(check: Callable[[], T | None], what: str, cluster: SlurmCluster, timeout: float = 60,
             files: tuple[Path, ...] = ()) -> T:
    """Poll `check` until it returns something other than None; fail with diagnostics otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}\n{diagnostics(cluster, *files)}")
        time.sleep(0.25)


def sacct(cluster: SlurmCluster, job_id: str, duplicates: bool = False) -> list[dict[str, str]]:
    """Allocation records of a job (one per array task; with `duplicates` one per run too)."""
    fields = ["JobID", "State", "ExitCode", "Start", "End", "NodeList"]
    args = ["sacct", "-n", "-X", "-P", "-j", job_id, "-o", ",".join(fields)]
    done = cluster.run(*args, *(["-D"] if duplicates else []), extra_env={"SLURM_TIME_FORMAT": "%s"})
    return [dict(zip(fields, line.split("|"))) for line in done.stdout.splitlines() if line]


def finished(cluster: SlurmCluster, job_id: str, count: int = 1) -> list[dict[str, str]] | None:
    """The sacct records once all `count` of them have reached a final state, else None."""
    records = sacct(cluster, job_id)
    if len(records) != count or any(r["State"].split()[0] in PENDING_OR_RUNNING for r in records):
        return None
    return records


def queue_state(cluster: SlurmCluster, job_id: str) -> tuple[str, str]:
    """(state, reason) from squeue; ("", "") once the job has left the queue."""
    done = cluster.run("squeue", "-h", "-j", job_id, "-o", "%T|%r", check=False)
    line = done.stdout.strip()
    return tuple(line.split("|", 1)) if "|" in line else ("", "")  # type: ignore[return-value]


@pytest.fixture
def submit(slurm_cluster: SlurmCluster) -> Iterator[Callable[..., str]]:
    """sbatch into the cluster's partition, returning the job id; leftovers are cancelled after."""
    submitted: list[str] = []

    def sbatch(*args: str) -> str:
        done = slurm_cluster.run("sbatch", "--parsable", f"--partition={slurm_cluster.partition}", *args)
        submitted.append(done.stdout.strip().split(";")[0])
        return submitted[-1]

    yield sbatch
    if submitted:
        slurm_cluster.run("scancel", *submitted, check=False)


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The largest number of intervals open at one instant (touching ends do not overlap)."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def test_array_runs_every_task_at_most_two_at_a_time(slurm_cluster: SlurmCluster, submit: Callable[..., str],
                                                     tmp_path: Path):
    script = tmp_path / "task.sh"
    script.write_text("#!/bin/bash\necho \"start $(date +%s.%N)\"\nsleep 2\necho \"end $(date +%s.%N)\"\n")
    job_id = submit("--array=0-3%2", "--cpus-per-task=1", f"--output={tmp_path}/task_%a.out", str(script))
    outputs = tuple(tmp_path / f"task_{i}.out" for i in range(4))

    records = wait_for(lambda: finished(slurm_cluster, job_id, count=4), "4 array tasks to finish",
                       slurm_cluster, timeout=60, files=outputs)
    states = {r["JobID"]: r["State"] for r in records}
    assert states == {f"{job_id}_{i}": "COMPLETED" for i in range(4)}, diagnostics(slurm_cluster, *outputs)

    intervals = []
    for output in outputs:
        times = dict(line.split() for line in output.read_text().splitlines())
        intervals.append((float(times["start"]), float(times["end"])))
    peak = max_overlap(intervals)
    assert peak <= 2, f"{peak} tasks ran at once despite %2: {intervals}"
    assert peak == 2, f"the two CPUs were never used together: {intervals}"


def all_reduce_rank() -> tuple[int, int, float]:
    """One rank of a two-task job: join the gloo group that submitit's environment describes."""
    import submitit
    import torch
    import torch.distributed as dist

    # submitit draws the rendezvous port from 20000-60000, which overlaps Linux's ephemeral
    # range (32768-60999): a client socket of the daemons can hold it (EADDRINUSE, and the other
    # rank waits forever). Both ranks derive the same port below that range from the job id.
    env = submitit.helpers.TorchDistributedEnvironment()
    env.master_port = 20000 + int(os.environ["SLURM_JOB_ID"]) % 12000
    env.export()
    dist.init_process_group("gloo")
    try:
        value = torch.tensor([float(env.rank + 1)])
        dist.all_reduce(value)
        return env.rank, dist.get_world_size(), float(value.item())
    finally:
        # Tearing the group down before exit avoids gloo's occasional abort at interpreter exit.
        dist.destroy_process_group()


def submitit_executor(cluster: SlurmCluster, folder: Path, **parameters: Any) -> submitit.AutoExecutor:
    import submitit

    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    executor.update_parameters(slurm_partition=cluster.partition, timeout_min=5, cpus_per_task=1,
                               nodes=1, **parameters)
    return executor


def wait_for_jobs(cluster: SlurmCluster, jobs: list[submitit.Job[Any]], timeout: float) -> None:
    files = tuple(p for job in jobs for p in (job.paths.stdout, job.paths.stderr))
    wait_for(lambda: all(job.done() for job in jobs) or None, "submitit jobs to finish", cluster,
             timeout=timeout, files=files)


def test_submitit_job_with_two_distributed_ranks(slurm_cluster: SlurmCluster, tmp_path: Path):
    executor = submitit_executor(slurm_cluster, tmp_path / "submitit", tasks_per_node=2)
    job = executor.submit(all_reduce_rank)
    try:
        wait_for_jobs(slurm_cluster, [job], timeout=120)
        results = job.results()
        # The results exist before Slurm has seen both tasks exit: wait for its final word too.
        records = wait_for(lambda: finished(slurm_cluster, job.job_id), "job accounting", slurm_cluster)
    except BaseException:
        slurm_cluster.run("scancel", job.job_id, check=False)
        raise
    assert sorted(results) == [(0, 2, 3.0), (1, 2, 3.0)], job.stderr()
    assert records[0]["State"] == "COMPLETED", diagnostics(slurm_cluster, job.paths.stderr)


def square(x: int) -> int:
    return x * x


def test_submitit_map_array_with_parallelism_two(slurm_cluster: SlurmCluster, tmp_path: Path):
    executor = submitit_executor(slurm_cluster, tmp_path / "submitit", tasks_per_node=1,
                                 slurm_array_parallelism=2)
    jobs = executor.map_array(square, [1, 2, 3, 4])
    array_id = jobs[0].job_id.split("_")[0]
    try:
        wait_for_jobs(slurm_cluster, jobs, timeout=90)
        results = [job.result() for job in jobs]
        records = wait_for(lambda: finished(slurm_cluster, array_id, count=4), "array accounting",
                           slurm_cluster, timeout=30)
    except BaseException:
        slurm_cluster.run("scancel", array_id, check=False)
        raise
    assert results == [1, 4, 9, 16]
    assert "#SBATCH --array=0-3%2" in jobs[0].paths.submission_file.read_text()
    assert {r["State"] for r in records} == {"COMPLETED"}, records


def test_afterok_dependency_waits_and_a_failed_one_never_runs(slurm_cluster: SlurmCluster,
                                                              submit: Callable[..., str],
                                                              tmp_path: Path):
    first = submit(f"--output={tmp_path}/a.out", "--wrap", "sleep 3")
    second = submit(f"--dependency=afterok:{first}", f"--output={tmp_path}/b.out", "--wrap", "true")
    # While `first` runs, `second` is held for its dependency, not for resources.
    assert wait_for(lambda: queue_state(slurm_cluster, second)[1] == "Dependency" or None,
                    "the dependent job to wait with reason Dependency", slurm_cluster, timeout=10)
    records = {r["JobID"]: r for r in wait_for(lambda: finished(slurm_cluster, f"{first},{second}", 2),
                                                  "both jobs to finish", slurm_cluster, timeout=60)}
    assert records[first]["State"] == records[second]["State"] == "COMPLETED"
    assert int(records[second]["Start"]) >= int(records[first]["End"])

    failing = submit(f"--output={tmp_path}/f.out", "--wrap", "exit 3")
    marker = tmp_path / "never"
    orphan = submit(f"--dependency=afterok:{failing}", f"--output={tmp_path}/o.out",
                    "--wrap", f"touch {marker}")
    failed = wait_for(lambda: finished(slurm_cluster, failing), "the failing job", slurm_cluster)
    assert (failed[0]["State"], failed[0]["ExitCode"]) == ("FAILED", "3:0")
    # Slurm 22.05 (without kill_invalid_depend) keeps such a job pending for good; say so, then cancel.
    assert wait_for(lambda: queue_state(slurm_cluster, orphan) == ("PENDING", "DependencyNeverSatisfied")
                    or None, "DependencyNeverSatisfied", slurm_cluster, timeout=15)
    slurm_cluster.run("scancel", orphan)
    cancelled = wait_for(lambda: finished(slurm_cluster, orphan), "the cancel", slurm_cluster)
    assert cancelled[0]["State"].startswith("CANCELLED")
    # Never allocated: no node (sacct's Start of a cancelled pending job is sometimes the cancel time).
    assert cancelled[0]["NodeList"] == "None assigned", cancelled
    assert not marker.exists()


def test_requeued_job_runs_again_with_restart_count(slurm_cluster: SlurmCluster, submit: Callable[..., str],
                                                    tmp_path: Path):
    runs = tmp_path / "runs.txt"
    script = tmp_path / "requeue.sh"
    # The first run waits to be requeued; the second sees SLURM_RESTART_COUNT=1 and finishes.
    script.write_text(f"#!/bin/bash\necho \"run ${{SLURM_RESTART_COUNT:-0}}\" >> {runs}\n"
                      "[[ ${SLURM_RESTART_COUNT:-0} -ge 1 ]] || sleep 300\n")
    job_id = submit("--requeue", "--open-mode=append", f"--output={tmp_path}/requeue.out", str(script))
    wait_for(lambda: runs.is_file() and queue_state(slurm_cluster, job_id)[0] == "RUNNING" or None,
             "the first run", slurm_cluster, timeout=30, files=(runs,))
    slurm_cluster.run("scontrol", "requeue", job_id)
    # Slurm holds a requeued job back for the credential lifetime (cred_expire=10 s in slurm.conf).
    wait_for(lambda: finished(slurm_cluster, job_id), "the requeued run to finish", slurm_cluster,
             timeout=60, files=(runs, tmp_path / "requeue.out"))
    assert runs.read_text().splitlines() == ["run 0", "run 1"]
    assert [r["State"] for r in sacct(slurm_cluster, job_id, duplicates=True)] == ["REQUEUED", "COMPLETED"]
