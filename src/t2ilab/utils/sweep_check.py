"""Check a grid sweep before any job is launched (a Hydra callback, ``hydra.callbacks`` in
conf/hydra/default.yaml).

Hydra composes each job's config only when the job runs — on Slurm, inside the job, after
submission — so a typo in one swept value (``model.optimizer.lr=1e-4,abc``) or an unknown key
would otherwise surface as N failed jobs. Here, in the launching process, every value of every
swept key is composed at least once (each value with the first value of the other swept keys;
``sum(len(values))`` compositions, not the full product) and type-checked by the same schema
checker the jobs run (utils/schema.validate). Any failure stops the sweep with the job's
overrides and the reason.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class SweepError(ValueError):
    """A grid sweep whose jobs would fail at composition or type checking."""


class SubmissionRejected(SweepError):
    """The cluster refused the sweep's submission (nothing was submitted)."""


# the sweep dir of this launching process and whether it existed before the launch (set on_multirun_start)
_SWEEP_DIR: dict[str, Any] = {}
_LAUNCH_LEFTOVERS = {".submitit", "multirun.yaml", ".hydra"}  # what a launch writes before anything runs


def rejected_submission(exc: BaseException) -> SubmissionRejected | None:
    """``sbatch`` refused the sweep (submitit raises ``FailedJobError`` from sbatch's non-zero exit): one
    message with Slurm's reason and the likely fix; the sweep dir this launch created is removed when no
    job wrote into it. None for any other error."""
    import subprocess

    from t2ilab.errors import causes

    failed = next((e for e in causes(exc) if type(e).__name__ == "FailedJobError"), None)
    cause = failed.__cause__ if failed is not None else None
    if not (isinstance(cause, subprocess.CalledProcessError) and str(next(iter(cause.cmd), "")).endswith("sbatch")):
        return None
    reason = " ".join(str(cause.stderr or failed).split()) or f"sbatch exited with {cause.returncode}"
    fix = "check the partition / account / time limit in hydra.launcher.* (`sinfo` lists what the cluster has)"
    if "gres" in reason.lower() or "generic resource" in reason.lower():
        fix = ("this partition has no GPUs: use hydra/launcher=slurm_cpu (or hydra.launcher.gpus_per_node=0 "
               "hydra.launcher.cpus_per_task=<n> hydra.launcher.mem_gb=<GB> trainer=cpu)")
    where = _remove_empty_sweep_dir()
    return SubmissionRejected(f"Slurm refused the sweep's submission, nothing was submitted ({reason}). Fix: {fix}."
                              f"{where}")


def _remove_empty_sweep_dir() -> str:
    from pathlib import Path
    import shutil

    path, existed = _SWEEP_DIR.get("path"), _SWEEP_DIR.get("existed", True)
    if path is None or existed or not Path(path).is_dir():
        return ""
    if any(p.name not in _LAUNCH_LEFTOVERS for p in Path(path).iterdir()):
        return f" The sweep dir {path} was kept (it holds job output)."
    shutil.rmtree(path, ignore_errors=True)
    return f" The empty sweep dir {path} was removed."


def covering_jobs(overrides: list[str]) -> list[list[str]]:
    """Job override lists that use every value of every swept key at least once."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    # interval(...) sweeps cannot be enumerated (only a search sweeper samples them): not checked here
    swept = [(o, [str(v) for v in o.sweep_string_iterator()]) for o in parsed
             if o.is_sweep_override() and not o.is_interval_sweep()]
    if not swept:
        return [fixed]

    def line(o: Any, value: str) -> str:
        return f"{o.get_key_element()}={value}"

    first = [line(o, values[0]) for o, values in swept]
    jobs = [fixed + first]
    for i, (o, values) in enumerate(swept):
        for v in values[1:]:
            jobs.append(fixed + first[:i] + [line(o, v)] + first[i + 1:])
    return jobs


def check_sweep(config_name: str, overrides: list[str]) -> int:
    """Compose and validate the covering jobs; returns how many were checked, raises SweepError."""
    from hydra import compose

    from t2ilab.utils.schema import validate

    jobs = covering_jobs(overrides)
    for job in jobs:
        try:
            validate(compose(config_name=config_name, overrides=job))
        except Exception as e:  # noqa: BLE001 - composition errors come in several Hydra/OmegaConf types
            raise SweepError(f"this sweep would fail before training; no job was launched.\n"
                             f"  job overrides: {' '.join(job)}\n  {type(e).__name__}: {e}") from None
    return len(jobs)


def check_launcher(config: DictConfig) -> None:
    """A Slurm launcher must start one task per training process: ``tasks_per_node`` equal to
    ``trainer.devices`` when that is a number (a mismatch starts several full copies of one training, or
    a DDP job waiting for ranks that never come). Raises SweepError naming both values and the fix."""
    launcher = config.hydra.get("launcher") or {}
    if "slurm" not in str(launcher.get("_target_", "")).lower():
        return
    try:
        tasks, devices = launcher.get("tasks_per_node"), config.trainer.get("devices")
    except Exception:  # noqa: BLE001 - unresolvable here: the job's own check reports it
        return
    gpus, accel = launcher.get("gpus_per_node"), str(config.trainer.get("accelerator", "auto"))
    if str(devices).isdigit() and accel in ("gpu", "cuda") and gpus is not None and int(devices) > int(gpus):
        raise SweepError(f"trainer.devices={devices} but hydra.launcher.gpus_per_node={gpus}: the job would ask "
                         f"Slurm for fewer GPUs than the training uses; no job was launched. Set "
                         f"hydra.launcher.gpus_per_node={devices}")
    if isinstance(devices, (list, tuple)) or str(devices).isdigit():
        want = len(devices) if isinstance(devices, (list, tuple)) else int(devices)
        if tasks is not None and int(tasks) != want:
            raise SweepError(
                f"hydra.launcher.tasks_per_node={tasks} but trainer.devices={devices}: Slurm would start {tasks} "
                f"processes per node for a training that uses {want} device(s); no job was launched. Leave "
                f"tasks_per_node unset (it follows trainer.devices) or set trainer.devices={tasks} trainer=ddp")


class ValidateSweep(Callback):
    """``on_multirun_start``: refuse a sweep with an invalid key or value before launching anything."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from pathlib import Path

        try:  # remembered so that a rejected submission can remove the sweep dir it created
            _SWEEP_DIR.update(path=str(config.hydra.sweep.dir), existed=Path(str(config.hydra.sweep.dir)).exists())
        except Exception:  # noqa: BLE001 - an unresolvable sweep dir fails in Hydra with its own message
            pass
        try:
            check_launcher(config)
            if "BasicSweeper" not in str(config.hydra.sweeper.get("_target_", "")):
                return  # other sweepers (ours for Optuna: t2ilab/sweeps/optuna_sweeper.py) check their own space
            n = check_sweep(config.hydra.job.config_name, list(config.hydra.overrides.task))
        except SweepError as e:  # SystemExit: Hydra turns callback Exceptions into mere warnings
            print(f"Error: {e}", file=sys.stderr)
            raise SystemExit(2) from None
        log.info("sweep checked before launch: %d job config(s) composed and type-checked", n)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        """A launcher only acts in a multirun: say so instead of training here without a word."""
        choice = str((config.hydra.runtime.get("choices") or {}).get("hydra/launcher") or "basic")
        if choice != "basic":
            log.warning("hydra/launcher=%s takes effect only with -m (multirun): this run trains here, in this "
                        "process; add -m to submit it through the launcher", choice)
