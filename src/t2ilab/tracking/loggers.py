"""Logger lifecycle helpers shared by the train and eval entry points."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Any


def finish_wandb(loggers: list[Any], exit_code: int = 0, reason: str | None = None) -> None:
    """Always close the W&B run (also on errors), so the offline run is complete and syncable.

    A preemption's SIGTERM reaches wandb's service process (``wandb-core``) too (Slurm signals every process of
    the job step): it exits at once and loses what it had not written yet (it writes its log in 32 KiB blocks),
    and ``wandb.finish`` fails. The rows our WandbLogger sent after the last one on disk, the failure reason and
    the exit code then go into a new segment of the same W&B run (compat/wandb.finish_lost_tail), so the run's
    history reaches the step of the checkpoint the interrupt wrote.

    Args:
        loggers: the run's loggers (only a WandbLogger matters).
        exit_code: recorded as the run's exit code (non-zero = W&B shows the run as failed).
        reason: what ended a failed run; stored in the run summary as ``failure``.
    """
    if not loggers:
        return
    from lightning.pytorch.loggers import WandbLogger

    wandb_loggers = [lg for lg in loggers if isinstance(lg, WandbLogger)]
    if not wandb_loggers:
        return
    import wandb

    run = wandb.run
    if run is None:
        return
    log = logging.getLogger(__name__)
    try:
        for lg in wandb_loggers:
            if hasattr(lg, "flush"):
                lg.flush()  # rows held back for step order (compat/lightning.WandbLogger)
        if reason:
            run.summary["failure"] = reason
        wandb.finish(exit_code=exit_code)
    except Exception as e:  # noqa: BLE001 - e.g. the service process was killed by the same SIGTERM;
        # never let this replace the error that ended the run
        log.warning("could not finish the W&B run cleanly (%s: %s); writing what it lost to a new segment",
                    type(e).__name__, e)
        from t2ilab.compat.wandb import finish_lost_tail

        rows = sorted((r for lg in wandb_loggers for r in getattr(lg, "sent", ())), key=lambda r: r[0])
        try:
            kept = finish_lost_tail(run, rows, exit_code, reason)
            log.warning("W&B run %s: %d logged rows the service lost were written to a new segment", run.id, kept)
        except Exception as e2:  # noqa: BLE001
            log.warning("could not write the lost W&B rows either (%s: %s)", type(e2).__name__, e2)


def wandb_identity(cfg: Any, run_dir: str | Path, resumed_id: str | None = None) -> None:
    """Fill ``logger.wandb.id`` / ``resume`` / ``name`` / ``group`` / ``tags`` so a run keeps one W&B run for
    its whole life and sweeps group on dashboards, and keep everything W&B writes under the run dir:

    * id: under ``wandb agent`` (``WANDB_SWEEP_ID`` set) the agent's ``WANDB_RUN_ID``; the checkpoint's run id
      when resuming, else the one stored in ``<run_dir>/wandb_id``
      (written at the first start; a job relaunched into the same run dir before its first
      checkpoint continues the same W&B run), unless the user set ``logger.wandb.id``;
    * name: the run dir's name (its path below ``<outputs>/runs``, or ``<sweep name>/<job>`` in a multirun);
    * multirun: group = the sweep's name (``T2ILAB_SWEEP_NAME``, else the sweep dir's path below
      ``<outputs>/multiruns``, else its last component), tags += the job's values of the swept keys
      (``model.optimizer.lr=1e-4``; at most 64 characters each, W&B's limit);
    * ``WANDB_DATA_DIR`` / ``WANDB_CACHE_DIR`` (artifact staging, media caches) below ``<run_dir>/wandb``:
      an offline run copied elsewhere and synced with ``wandb sync`` uploads everything it logged.
    """
    from omegaconf import open_dict

    wb = (cfg.get("logger") or {}).get("wandb")
    if wb is None:
        return
    id_file = Path(run_dir) / "wandb_id"
    with open_dict(cfg):
        if not wb.get("id"):  # a W&B sweep agent names the run it launched us for: keep that id
            agent = os.environ.get("WANDB_RUN_ID") if os.environ.get("WANDB_SWEEP_ID") else None
            wid = agent or resumed_id or (id_file.read_text().strip() if id_file.is_file() else secrets.token_hex(4))
            wb.id, wb.resume = wid, "allow"
        if not id_file.is_file():
            id_file.write_text(str(wb.id) + "\n")
        sweep = _sweep_info(_outputs(cfg))
        if sweep is not None:
            group, overrides = sweep
            wb.group = wb.get("group") or group
            wb.tags = [*list(wb.get("tags") or []), *overrides]
        wb.name = wb.get("name") or run_label(run_dir, _outputs(cfg), sweep[0] if sweep else None)
    keep_wandb_files_in(run_dir)


def _outputs(cfg: Any) -> Path | None:
    try:
        return Path(str(cfg.paths.output_dir)).expanduser().resolve()
    except Exception:  # noqa: BLE001 - no paths group (tests composing a partial config)
        return None


def _below(path: Path, root: Path | None) -> str | None:
    try:
        return str(path.resolve().relative_to(root)) if root is not None else None
    except ValueError:
        return None


def run_label(run_dir: str | Path, outputs: Path | None, sweep: str | None = None) -> str:
    """The W&B run name: ``<sweep>/<job>`` in a multirun, else the run dir's path below ``<outputs>/runs``
    (``2026-12-07/05-59-30_1234abcdef``, ``slurm/17_3``), else its last component."""
    run_dir = Path(run_dir)
    if sweep is not None:
        return f"{sweep}/{run_dir.name}"
    return _below(run_dir, outputs / "runs" if outputs is not None else None) or run_dir.name


def keep_wandb_files_in(run_dir: str | Path) -> None:
    """W&B's artifact staging and caches default to ``~/.local/share/wandb`` / ``~/.cache/wandb``, outside the
    run dir: a logged table's images then stay behind when the run dir is copied and synced elsewhere."""
    base = Path(run_dir) / "wandb"
    os.environ["WANDB_DATA_DIR"] = str(base / "data")
    os.environ["WANDB_CACHE_DIR"] = str(base / "cache")


def sweep_name(sweep_dir: str | Path, outputs: Path | None) -> str:
    """``T2ILAB_SWEEP_NAME``, else the sweep dir's path below ``<outputs>/multiruns`` (the default sweep dir:
    ``<date>/<time>_<id>``), else its last component (``hydra.sweep.dir=.../lr_sweep`` -> ``lr_sweep``)."""
    if os.environ.get("T2ILAB_SWEEP_NAME"):
        return os.environ["T2ILAB_SWEEP_NAME"]
    return _below(Path(sweep_dir), outputs / "multiruns" if outputs is not None else None) or Path(sweep_dir).name


def _sweep_info(outputs: Path | None = None) -> tuple[str, list[str]] | None:
    """(sweep name, this job's values of the swept keys) inside a Hydra multirun, else None."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
    except (ImportError, ValueError):
        return None
    if hc.mode != RunMode.MULTIRUN:
        return None
    name = sweep_name(hc.sweep.dir, outputs)
    swept = swept_keys(Path(hc.sweep.dir) / "multirun.yaml")
    own = list(hc.overrides.task)
    tags = [o for o in own if o.split("=", 1)[0].lstrip("+~") in swept]
    return name, [t if len(t) <= 64 else t[:61] + "..." for t in tags[:20]]  # W&B refuses tags over 64 chars


def swept_keys(multirun_yaml: Path) -> set[str]:
    """Keys a sweep varies: grid overrides with several values (``seed=1,2``, ``range(...)``) on the
    launching command line, plus the search space of a sweeper (``hydra.sweeper.params``, Optuna)."""
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from omegaconf import OmegaConf

        launch = OmegaConf.load(multirun_yaml)
        parsed = OverridesParser.create().parse_overrides(list(launch.hydra.overrides.task))
    except Exception:  # noqa: BLE001 - no/unreadable multirun.yaml: no swept values to tag
        return set()
    keys = {o.key_or_group for o in parsed if o.is_sweep_override()}
    return keys | set((OmegaConf.select(launch, "hydra.sweeper.params") or {}).keys())
