"""Who launched a run: the user's command line and, on Slurm, the job's full identity. Import-light (os,
json, shlex only): the run-name resolver reads it on every ``import t2ilab``.

Slurm identity = job id (``<array job>_<task>`` for an array task) + restart count. A requeue
(``scontrol requeue``, preemption) keeps the job id and raises ``SLURM_RESTART_COUNT``: the same run, resumed
from its ``last.ckpt``. The manifest and the run-dir lock record the whole identity, so a reader can tell a
requeued segment from a second launch inside the same allocation."""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Mapping

COMMAND_ENV = "T2ILAB_COMMAND"
"""The user's command line (a JSON list), set by the entry point (``t2ilab.cli.run``). Slurm exports the
launching environment to the job, so a job started by submitit (whose own argv is ``submitit.core._submit``)
still records the command the user typed."""

_SLURM_FIELDS = {"job_id": "SLURM_JOB_ID", "array_job_id": "SLURM_ARRAY_JOB_ID", "array_task_id": "SLURM_ARRAY_TASK_ID",
                 "restart_count": "SLURM_RESTART_COUNT", "step_id": "SLURM_STEP_ID", "procid": "SLURM_PROCID",
                 "partition": "SLURM_JOB_PARTITION", "nodelist": "SLURM_JOB_NODELIST",
                 "cluster": "SLURM_CLUSTER_NAME", "user": "SLURM_JOB_USER", "submit_dir": "SLURM_SUBMIT_DIR"}


def slurm_job(env: Mapping[str, str] | None = None) -> str | None:
    """The Slurm job as users name it: ``<array job id>_<task id>`` for an array task, else the job id
    (None outside Slurm). Array tasks of one array never share it."""
    env = os.environ if env is None else env
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID") or None


def slurm_identity(env: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """Everything Slurm says about this job (None outside Slurm): ``job`` (as :func:`slurm_job`),
    ``restart_count`` (0 for the first segment, +1 per requeue) and the raw variables that are set."""
    env = os.environ if env is None else env
    job = slurm_job(env)
    if job is None:
        return None
    ident: dict[str, Any] = {"job": job}
    ident.update({k: env[v] for k, v in _SLURM_FIELDS.items() if env.get(v)})
    ident["restart_count"] = int(env.get("SLURM_RESTART_COUNT") or 0)
    return ident


def describe_slurm(ident: Mapping[str, Any] | None) -> str:
    """``Slurm job 17_3 (restart 1)`` for messages ('' outside Slurm)."""
    if not ident:
        return ""
    restart = ident.get("restart_count") or 0
    return f"Slurm job {ident.get('job')}" + (f" (restart {restart})" if restart else "")


def remember_command(argv: list[str] | None = None) -> None:
    """Record this process's command line as the user's command (called by the entry points)."""
    os.environ[COMMAND_ENV] = json.dumps([sys.executable, *(sys.argv if argv is None else argv)])


def user_command() -> list[str]:
    """The command the user typed: the entry point's, inherited through Slurm / submitit; else this process's."""
    raw = os.environ.get(COMMAND_ENV)
    if raw:
        try:
            cmd = json.loads(raw)
            if isinstance(cmd, list) and all(isinstance(c, str) for c in cmd):
                return cmd
        except ValueError:
            pass
    return [sys.executable, *sys.argv]
