"""The one-node Slurm cluster of slurm/local/ as a session fixture.

`slurm_cluster` gives tests a working Slurm (sbatch, srun, squeue, sacct with exact states):
- an already-running cluster when FORGETMI_SLURM_STATE names its state folder (env.sh there and
  `sinfo` answers), which is left running;
- otherwise, where Slurm is installed, one started by slurm/local/start.sh in a temporary folder
  and stopped by slurm/local/stop.sh when the session ends (also when starting fails half-way);
- otherwise the tests that use it are skipped, naming slurm/local/install.sh.

While the fixture is active SLURM_CONF is set in os.environ, so libraries that call the Slurm
commands themselves (submitit) reach the same cluster.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "slurm" / "local"
START_TIMEOUT_S = 180


@dataclass(frozen=True)
class SlurmCluster:
    """A running cluster: its state folder, the environment to reach it, its default partition."""

    state_dir: Path
    env: dict[str, str]  # a full environment for subprocesses, SLURM_CONF included
    partition: str
    started_here: bool

    def run(self, *args: str, timeout: float = 30, check: bool = True,
            extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run a Slurm command (sbatch, squeue, ...) against this cluster."""
        return subprocess.run(list(args), env={**self.env, **(extra_env or {})}, capture_output=True,
                              text=True, timeout=timeout, check=check)

    def log_tails(self, lines: int = 30) -> str:
        """The end of each daemon log, for failure messages."""
        parts = []
        for log in sorted((self.state_dir / "log").glob("*.log")):
            text = log.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"----- {log} -----\n" + "\n".join(text))
        return "\n".join(parts)


def read_env_file(path: Path) -> dict[str, str]:
    """The `export NAME=VALUE` lines that start.sh writes to STATE_DIR/env.sh."""
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("export ") and "=" in line:
            name, value = line[len("export "):].split("=", 1)
            env[name.strip()] = value.strip().strip("'\"")
    return env


def _cluster_from(state_dir: Path, started_here: bool) -> SlurmCluster:
    exported = read_env_file(state_dir / "env.sh")
    env = {**os.environ, **exported}
    env["PATH"] = env.get("PATH", "") + os.pathsep + "/usr/sbin"
    partition = exported.get("FORGETMI_SLURM_PARTITION", "debug")
    return SlurmCluster(state_dir=state_dir, env=env, partition=partition, started_here=started_here)


def _answers(cluster: SlurmCluster) -> bool:
    try:
        return cluster.run("sinfo", "-h", "-o", "%P", timeout=15, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _running_cluster() -> SlurmCluster | None:
    """The cluster FORGETMI_SLURM_STATE points to, if it is up."""
    state = os.environ.get("FORGETMI_SLURM_STATE")
    if not state:
        return None
    state_dir = Path(state).resolve()
    if not (state_dir / "env.sh").is_file():
        warnings.warn(f"FORGETMI_SLURM_STATE={state}: no env.sh there; starting a fresh cluster")
        return None
    cluster = _cluster_from(state_dir, started_here=False)
    if not _answers(cluster):
        warnings.warn(f"FORGETMI_SLURM_STATE={state}: sinfo does not answer; starting a fresh cluster")
        return None
    return cluster


def _start_cluster(request: pytest.FixtureRequest) -> SlurmCluster:
    if shutil.which("slurmctld", path=os.environ.get("PATH", "") + os.pathsep + "/usr/sbin") is None:
        pytest.skip("Slurm is not installed: run `sudo slurm/local/install.sh` (or point "
                    "FORGETMI_SLURM_STATE at a cluster started by slurm/local/start.sh)")
    if os.geteuid() != 0:
        pytest.skip("slurm/local/start.sh runs its daemons as root; start a cluster with "
                    "`sudo slurm/local/start.sh DIR` and set FORGETMI_SLURM_STATE=DIR")
    # A short path under /tmp: the munge and MariaDB sockets live here (108-byte socket path limit).
    state_dir = Path(tempfile.mkdtemp(prefix="forgetmi-slurm-"))

    def stop() -> None:
        subprocess.run([str(SCRIPTS / "stop.sh"), str(state_dir)], capture_output=True, timeout=120)
        shutil.rmtree(state_dir, ignore_errors=True)

    # Registered before starting, so daemons of a half-finished start are stopped too.
    request.addfinalizer(stop)
    try:
        started = subprocess.run([str(SCRIPTS / "start.sh"), str(state_dir)], capture_output=True,
                                 text=True, timeout=START_TIMEOUT_S)
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"slurm/local/start.sh {state_dir} took over {START_TIMEOUT_S}s:\n{error.stderr}")
    if started.returncode != 0:
        pytest.fail(f"slurm/local/start.sh {state_dir} failed ({started.returncode}):\n"
                    f"{started.stdout}\n{started.stderr}")
    return _cluster_from(state_dir, started_here=True)


@pytest.fixture(scope="session")
def slurm_cluster(request: pytest.FixtureRequest) -> SlurmCluster:
    """A running one-node Slurm cluster for the whole session (see the module docstring)."""
    cluster = _running_cluster() or _start_cluster(request)
    # submitit and other libraries run sbatch/sacct with os.environ: point them here for the session.
    previous = {name: os.environ.get(name) for name in ("SLURM_CONF",)}
    os.environ["SLURM_CONF"] = cluster.env["SLURM_CONF"]

    def restore() -> None:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    request.addfinalizer(restore)
    return cluster
