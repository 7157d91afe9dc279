"""The picklable callable every Slurm task runs.

A task names its job by ``module:function`` (see :mod:`forgetmi.jobs`), imported only in the
task's own process: this layer knows no job.

Paths and argument lists travel, never models (each submission is pickled). On a requeue
(pre-emption, time-out) submitit calls :meth:`Task.checkpoint`, which resubmits the same task:
the job resumes from its run's ``checkpoints/latest`` (resume is on by default), and a run that
had already finished returns at once.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger("forgetmi.hpc")


@dataclass
class Task:
    name: str
    target: str                              # the job: "module:function" taking argv
    argv: list[str]
    output_dir: str
    accelerate_config: str | None = None     # configs/accelerate/*.yaml for multi-process tasks
    env: dict[str, str] = field(default_factory=dict)
    # Where the task was made: relative paths in argv resolve here, as where the command was typed.
    cwd: str = field(default_factory=os.getcwd)
    log: str | None = None                   # the job's stdout + stderr (None: this process's)
    warm: bool = False                       # start as a fork of the warm server (hpc.warm)

    def __call__(self) -> dict:
        """Run the job in a child process (one per Slurm task, i.e. per rank).

        The child ends with the engine's hard exit after tearing down its process group, which
        avoids gloo's occasional abort at interpreter exit; this parent never joins the group,
        so submitit records its result and Slurm its exit code cleanly.
        """
        import subprocess
        import sys

        from forgetmi.hpc.launcher import accelerate_env
        from forgetmi.utils.logs import setup_logging

        setup_logging()
        env = dict(os.environ)
        if int(env.get("SLURM_NTASKS", "1")) > 1:
            import submitit

            from forgetmi.hpc.launcher import rendezvous_port
            dist = submitit.helpers.TorchDistributedEnvironment()
            # A port given by the user (MASTER_PORT) stands; else one outside the ephemeral
            # range, the same on every rank of the job.
            port = env.get("MASTER_PORT") or rendezvous_port(submitit.JobEnvironment().job_id)
            env.update(RANK=str(dist.rank), LOCAL_RANK=str(dist.local_rank),
                       WORLD_SIZE=str(dist.world_size), LOCAL_WORLD_SIZE=str(dist.local_world_size),
                       MASTER_ADDR=dist.master_addr, MASTER_PORT=str(port))
            logger.info("%s: rank %d of %d, rendezvous at %s:%s", self.name, dist.rank,
                        dist.world_size, dist.master_addr, port)
            env.update(accelerate_env(self.accelerate_config, self.cwd))
        env.update(self.env)
        # Use the CPUs Slurm allocated, not every core of the node: torch otherwise starts one
        # thread per core in each task, and tasks sharing a node oversubscribe it.
        cpus = env.get("SLURM_CPUS_PER_TASK")
        if cpus and "OMP_NUM_THREADS" not in env:
            env["OMP_NUM_THREADS"] = cpus
            logger.info("%s: %s CPU thread(s) per process, as allocated", self.name, cpus)
        restarts = int(env.get("SLURM_RESTART_COUNT", "0"))
        if restarts:
            logger.info("%s: restart %d, resuming from the latest checkpoint", self.name, restarts)
        cmd = [sys.executable, "-m", "forgetmi.hpc.run", self.target, *self.argv]
        if self.warm and self.log and int(env.get("WORLD_SIZE", "1")) == 1 \
                and not self.accelerate_config:
            from forgetmi.hpc import warm
            code = warm.run(self.target, self.argv, env, self.cwd, self.log)
        elif self.log:
            with open(self.log, "w", encoding="utf-8") as out:
                code = subprocess.run(cmd, env=env, cwd=self.cwd, stdout=out,
                                      stderr=subprocess.STDOUT).returncode
        else:
            code = subprocess.run(cmd, env=env, cwd=self.cwd).returncode
        if code != 0:
            # A failed job must fail its Slurm task, so dependent arrays (afterok) never start.
            raise RuntimeError(f"{self.name}: {self.target} exited with code {code}; see "
                               f"{self.log or 'this log'}")
        return {"name": self.name, "output_dir": self.output_dir,
                "rank": int(env.get("RANK", "0")), "restarts": restarts}

    def checkpoint(self, *args, **kwargs):
        import dataclasses

        import submitit
        return submitit.helpers.DelayedSubmission(dataclasses.replace(self))
