"""Training entry point: ``python -m t2ilab.train [group=choice ...] [key=value ...]``.

compose config -> print + save it and a manifest -> encoder, datamodule, model, callbacks,
loggers -> ``trainer.fit`` -> optional sample export. Returns ``cfg.optimized_metric`` for sweepers.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from t2ilab.utils.config import CONF_DIR, show_and_save_config

# torch / Lightning / the model code are imported inside the functions that use them: `--help` and a
# config error must not wait for them (seconds on a 2-core machine)

log = logging.getLogger("t2ilab.train")


def resolve_ckpt_path(value: Any, cfg: DictConfig, lead: bool = True) -> str | None:
    """``auto`` -> this run dir's ``last.ckpt`` when it exists (a relaunched / requeued job), else None."""
    if value is None or str(value).strip().lower() in ("", "null", "none"):
        return None
    if str(value) != "auto":
        return str(value)
    ck = (cfg.get("callbacks") or {}).get("model_checkpoint") or {}
    ck_dir = Path(ck.get("dirpath") or Path(cfg.paths.run_dir) / "checkpoints")
    for stray in ck_dir.glob(".*.tmp") if lead else ():  # left by a killed save (the target is intact)
        stray.unlink(missing_ok=True)
    newest = _newest_checkpoint(ck_dir)
    if newest is not None:
        log.info("ckpt_path=auto: resuming from %s", newest)
        return str(newest)
    log.info("ckpt_path=auto: no checkpoint in %s, starting fresh", ck_dir)
    return None


def _newest_checkpoint(ck_dir: Path) -> Path | None:
    """The checkpoint of the highest step in ``ck_dir``: ``last.ckpt`` unless a periodic ``step=N.ckpt`` is
    newer (a process killed between writing ``step=N.ckpt`` and ``last.ckpt`` leaves ``last.ckpt`` one
    interval behind) or ``last.ckpt`` cannot be read."""
    import re

    last = ck_dir / "last.ckpt"
    periodic = {int(m.group(1)): p for p in ck_dir.glob("step=*.ckpt") if (m := re.fullmatch(r"step=(\d+)\.ckpt", p.name))}
    if not last.is_file():
        return periodic[max(periodic)] if periodic else None
    if not periodic:
        return last
    try:
        import torch

        last_step = int(torch.load(last, map_location="cpu", mmap=True, weights_only=False).get("global_step", -1))
    except Exception:  # noqa: BLE001 - an unreadable last.ckpt: the periodic checkpoints are the record
        log.warning("ckpt_path=auto: %s cannot be read; using the newest periodic checkpoint", last)
        return periodic[max(periodic)]
    if max(periodic) > last_step:
        log.warning("ckpt_path=auto: %s (step %d) is newer than last.ckpt (step %d): the previous process ended "
                    "between the two saves", periodic[max(periodic)].name, max(periodic), last_step)
        return periodic[max(periodic)]
    return last


def _preflight(cfg: DictConfig, lead: bool = True) -> dict:
    """Before anything is written: resolve ``ckpt_path`` (``auto``); the checkpoint must be readable and
    fit the composed config, and a relaunch into a run dir that holds a run with another seed is refused
    (it would continue that run's weights). Returns the checkpoint's metadata ({} when starting fresh).
    ``lead``: False on DDP ranks > 0 (they only read: rank 0 owns the run dir's files)."""
    auto = str(cfg.ckpt_path) == "auto"
    with open_dict(cfg):
        cfg.ckpt_path = resolve_ckpt_path(cfg.ckpt_path, cfg, lead)
    if not cfg.ckpt_path:
        return {}
    from t2ilab.models.checkpoint import check_compatible, read_metadata

    _, meta = read_metadata(cfg.ckpt_path)
    check_compatible(cfg.ckpt_path, meta, cfg)
    old_bs = ((meta.get("config") or {}).get("data") or {}).get("batch_size")
    if old_bs is not None and old_bs != cfg.data.batch_size:
        log.warning("resuming with data.batch_size=%s (checkpoint had %s): the resumed epoch skips the items the "
                    "checkpoint's batches covered, so this is not an exact continuation", cfg.data.batch_size, old_bs)
    if auto:
        _refuse_other_run(cfg, meta)
    return meta


# what defines a run besides its structure (checked by check_compatible): a relaunch into the run dir with another
# value would silently continue that run's weights under a config that never trained them
_RUN_KEYS = ("seed", "model")
_FREE_KEYS = ("model.sampling",)  # how grids are drawn: free to change on a relaunch


def _refuse_other_run(cfg: DictConfig, meta: dict) -> None:
    """``ckpt_path=auto`` found this run dir's checkpoint: refuse when the composed config is another run (seed
    or a model hyperparameter differs), before anything is written. Longer training (``trainer.*``), logging
    and sampling settings may change. An explicit ``ckpt_path=<file>`` is the way to start from its weights."""
    from t2ilab.tracking.launch import describe_slurm, slurm_identity
    from t2ilab.utils.config import flatten

    old_cfg = meta.get("config") or {}
    new_cfg = OmegaConf.to_container(cfg, resolve=True)
    old = {k: v for k, v in flatten(old_cfg).items() if k.split(".")[0] in _RUN_KEYS}
    new = {k: v for k, v in flatten(new_cfg).items() if k.split(".")[0] in _RUN_KEYS}
    diffs = sorted(k for k in old.keys() & new.keys() if old[k] != new[k] and not k.startswith(_FREE_KEYS))
    if not diffs:
        return
    where = describe_slurm(slurm_identity())
    lines = "\n".join(f"  {k}: run {old[k]!r} != now {new[k]!r}" for k in diffs)
    raise ValueError(
        f"run dir {cfg.paths.run_dir} holds another run{f' (this is {where})' if where else ''}; resuming it with\n"
        f"{lines}\nwould continue that run's weights under values that never trained them. Launch into a new run dir "
        f"(T2ILAB_RUN_NAME=<name> or hydra.run.dir=<dir>; on Slurm each seed / setting needs its own job or name), "
        f"drop the differing overrides to continue the run, or start from its weights on purpose with "
        f"ckpt_path=<run dir>/checkpoints/last.ckpt in a new run dir")


def _identity(cfg: DictConfig, meta: dict, lead: bool) -> None:
    """The W&B run id is the checkpoint's (or this run dir's), never a new one."""
    from t2ilab.tracking.loggers import wandb_identity

    if meta.get("wandb_id"):
        log.info("resuming W&B run %s", meta["wandb_id"])
    if lead:  # ranks > 0 never start a W&B run (and must not race rank 0 for <run_dir>/wandb_id)
        wandb_identity(cfg, cfg.paths.run_dir, meta.get("wandb_id"))


def train(cfg: DictConfig) -> float | None:
    """Run one training job described by a composed config (see conf/train.yaml)."""
    from t2ilab.tracking import run_lock, run_status
    from t2ilab.utils.io import ensure_writable_dir
    from t2ilab.utils.schema import validate

    os.environ.setdefault("WANDB_MODE", "offline")
    run_dir = ensure_writable_dir(cfg.paths.run_dir, "paths.run_dir")
    # DDP: ranks > 0 run this function too (Lightning's launcher re-runs the command with the same
    # hydra.run.dir; Slurm / torchrun start every rank): only rank 0 writes the run dir's files
    rank = run_status.launch_rank()
    lead = rank == 0
    if not lead:
        _quiet_rank(rank)
    with contextlib.ExitStack() as owner:
        # one owner per run dir (rank 0 of a DDP job): a second launch into it fails here, naming the holder
        if lead:
            owner.enter_context(run_lock.owned(run_dir))
        try:  # checks that read only: a refused launch leaves the run dir's manifest, config and markers as they were
            validate(cfg)  # (before torch / Lightning are imported: a wrong value is reported in about a second)
            meta = _preflight(cfg, lead)
            _resolve_eval_after(cfg)
        except BaseException as e:
            if lead and run_status.status_of(run_dir) is None and not (Path(run_dir) / "manifest.json").exists():
                run_status.record_failure(run_dir, e, None)  # a new run dir says why it is empty
            raise
        if lead and _skip_complete(cfg, run_dir):
            return _recorded_objective(cfg, run_dir)
        return _train(cfg, run_dir, rank, meta)


def _skip_complete(cfg: DictConfig, run_dir: Path) -> bool:
    """A resubmitted sweep (same sweep dir) does not re-run its COMPLETE jobs: the job's run dir is COMPLETE
    and the preflight found the same run (same structure, same seed). ``skip_complete=false`` forces a rerun;
    single runs relaunched by hand are not skipped (they resume, e.g. to train longer)."""
    from t2ilab.cli import in_multirun
    from t2ilab.tracking import run_status

    status = run_status.status_of(run_dir)
    if not (in_multirun() and cfg.get("skip_complete", True) and status and status.get("status") == "COMPLETE"):
        return False
    log.info("run dir %s is COMPLETE (step %s): skipped; skip_complete=false reruns it", run_dir, status.get("step"))
    return True


def _recorded_objective(cfg: DictConfig, run_dir: Path) -> float | None:
    """``optimized_metric`` of a skipped COMPLETE run, as the run dir recorded it (the one run reader)."""
    if not cfg.get("optimized_metric"):
        return None
    from t2ilab.tracking.objective import ObjectiveError
    from t2ilab.tracking.run_metrics import read_metrics

    value = read_metrics(run_dir).final.get(str(cfg.optimized_metric))
    if value is None:
        raise ObjectiveError(f"run dir {run_dir} is COMPLETE but holds no {cfg.optimized_metric}: rerun it with "
                             "skip_complete=false")
    return float(value)


def _train(cfg: DictConfig, run_dir: Path, rank: int, meta: dict) -> float | None:
    """The run itself, after every check passed; every ending is recorded."""
    from t2ilab.tracking import run_status

    lead = rank == 0
    loggers: list[Any] = []
    trainer: L.Trainer | None = None
    try:  # from here on, every ending is recorded (COMPLETE / FAILED, W&B exit code, train.log)
        import lightning as L
        import torch

        from t2ilab.compat.hydra import instantiate
        from t2ilab.models.atomic_io import AtomicCheckpointIO
        from t2ilab.models.generation import generate_images  # noqa: F401  (import errors early)
        from t2ilab.tracking.loggers import finish_wandb
        from t2ilab.tracking.manifest import build_manifest, write_manifest
        from t2ilab.tracking.run_callbacks import DDPFailure, InterruptCheckpoint
        from t2ilab.tracking.sample_grid import SampleGridCallback
        from t2ilab.utils.builders import build_datamodule, build_encoder, build_model, instantiate_group

        if lead:
            previous = run_status.clear(run_dir)  # a relaunch into the same run dir is running again
            if previous:
                log.info("run dir %s was marked %s before (%s); running again", run_dir, previous["status"],
                         previous.get("reason") or "no reason")
            show_and_save_config(cfg, run_dir)
        config = OmegaConf.to_container(cfg, resolve=True)
        manifest = build_manifest(config, cfg.seed)
        if lead:
            write_manifest(run_dir, manifest)
        _identity(cfg, meta, lead)

        L.seed_everything(cfg.seed, workers=True)
        if torch.cuda.is_available():
            torch.set_float32_matmul_precision("high")
        encoder = build_encoder(cfg.encoder, cfg)
        model = build_model(cfg.model, encoder.dim, getattr(encoder, "token_dim", 0))
        datamodule = build_datamodule(cfg.data, encoder)
        datamodule.shuffle_seed = cfg.seed  # DDP: every rank shards the same per-epoch permutation
        model.run_config = config
        perf, perf_fallbacks = _fast_paths(cfg, model, datamodule)
        if _single_process(cfg):
            from t2ilab.compat.lightning import quiet_srun_hint

            quiet_srun_hint()

        loggers = instantiate_group(cfg.logger)
        for lg in loggers if lead else []:  # (Lightning's rank-zero guard is not set up before fit)
            lg.log_hyperparams({**config, "manifest": {k: v for k, v in manifest.items() if k != "config"},
                                "perf_resolved": perf, "perf_fallbacks": perf_fallbacks,
                                "code_version": (manifest.get("git") or {}).get("sha")})
        callbacks = _usable_callbacks(instantiate_group(cfg.callbacks), bool(loggers),
                                      bool(cfg.trainer.get("enable_progress_bar", True)))
        callbacks = _with_final_eval(cfg, callbacks)
        grid_cb = next((c for c in callbacks if isinstance(c, SampleGridCallback)), None)
        if grid_cb is not None and cfg.sample_after:
            grid_cb.at_train_end = False  # sample_after draws the final grid (once), with the callback's settings
        trainer = instantiate(cfg.trainer, callbacks=[*callbacks, InterruptCheckpoint(), DDPFailure(run_dir)],
                              logger=loggers or False, plugins=[AtomicCheckpointIO()], precision=perf["precision"])
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
        if cfg.sample_after and trainer.is_global_zero:
            model.to(trainer.strategy.root_device)  # Lightning moved it to the CPU after fit
            _final_samples(model, datamodule, grid_cb, trainer, Path(run_dir))
    except BaseException as e:  # noqa: BLE001 - every ending is recorded, then re-raised non-zero
        from t2ilab.tracking.loggers import finish_wandb

        step = trainer.global_step if trainer is not None else None
        code = run_status.exit_code(e)
        if lead:
            # cleared at start, so a marker now is this DDP run's: the first rank to fail wrote it (DDPFailure)
            prior = run_status.status_of(run_dir)
            if prior and str(prior.get("reason") or "").startswith("DDP rank"):
                reason = prior["reason"]
                if not reason.startswith("DDP rank 0:"):  # root cause first, then what rank 0 saw
                    reason = f"{reason}; then rank 0: {run_status.describe(e, step)}"
                    run_status.mark(run_dir, "FAILED", reason, step)
                    log.error("run FAILED: %s", reason)
            else:
                code, reason = run_status.record_failure(run_dir, e, step)
            finish_wandb(loggers, exit_code=code, reason=reason)
        elif not run_status.is_interrupt(e) and not run_status.status_of(run_dir):
            # an error of this rank alone before fit (in fit DDPFailure recorded it): Lightning's launcher
            # SIGKILLs rank 0 when a child rank dies, so rank 0 leaves no record of it
            run_status.record_failure(run_dir, e, step, rank=rank)
        if isinstance(e, (SystemExit, KeyboardInterrupt)):
            raise SystemExit(code) from e  # SIGTERM would otherwise exit 0
        raise
    if lead:
        run_status.mark(run_dir, "COMPLETE", step=trainer.global_step)
        finish_wandb(loggers)
    from t2ilab.tracking.objective import objective_value

    return objective_value(cfg, trainer.callback_metrics)  # raises when optimized_metric is set but missing


def _resolve_eval_after(cfg: DictConfig) -> None:
    """``eval_after=auto`` -> true in a multirun, false otherwise, before the config is saved: the run records
    what it did, so ``reproduce`` of a sweep job evaluates its rerun too."""
    from t2ilab.cli import in_multirun

    if str(cfg.get("eval_after", "auto")) == "auto":
        with open_dict(cfg):
            cfg.eval_after = in_multirun()


def _with_final_eval(cfg: DictConfig, callbacks: list[Any]) -> list[Any]:
    """``eval_after``: one evaluation of the final (EMA) model by the evaluation callback, with the ``metrics``
    group's settings and metrics whose weights are missing skipped (named in metrics.json) — unless the
    configured callbacks already evaluate at the end of training (``callbacks=eval``, the Optuna presets)."""
    from t2ilab.evaluation.callback import EvaluationCallback

    _resolve_eval_after(cfg)
    if not cfg.eval_after or any(isinstance(c, EvaluationCallback) and c.eval_on_train_end for c in callbacks):
        return callbacks
    metrics = OmegaConf.merge(cfg.metrics, {"skip_unavailable": True})
    log.info("eval_after: the final model is evaluated once at the end (%s samples; eval_after=false skips it)",
             metrics.num_samples)
    return [*callbacks, EvaluationCallback(metrics=metrics, cache_dir=cfg.paths.cache_dir, eval_on_train_end=True)]


def _fast_paths(cfg: DictConfig, model: Any, datamodule: Any) -> tuple[dict, list[str]]:
    """Resolve ``perf`` and ``trainer.precision`` (``auto``) for the training device, apply them, log
    what runs (and any fallback)."""
    from t2ilab.utils import fast_paths

    device = fast_paths.training_device(cfg.trainer.get("accelerator"))
    perf = OmegaConf.to_container(cfg.perf, resolve=True) if cfg.get("perf") is not None else {}
    choices, notes = fast_paths.resolve(perf, device)
    fast_paths.apply(model, datamodule, choices, device)
    choices["precision"], note = fast_paths.resolve_precision(cfg.trainer.get("precision"), device)
    notes += [note] if note else []
    log.info("fast paths on %s: %s", device.type, ", ".join(f"{k}={v}" for k, v in choices.items()))
    return choices, notes


def _single_process(cfg: DictConfig) -> bool:
    """Whether this training runs as one process (one node, one device)."""
    import torch

    t = cfg.trainer
    devices, accel = t.get("devices", "auto"), str(t.get("accelerator", "auto"))
    if int(t.get("num_nodes", 1) or 1) != 1:
        return False
    if str(devices) == "auto":
        return not (accel in ("auto", "gpu", "cuda") and torch.cuda.device_count() > 1)
    return str(devices) in ("1", "[0]") or (isinstance(devices, (list, tuple)) and len(devices) == 1)


def _quiet_rank(rank: int) -> None:
    """DDP rank > 0: only warnings and errors, prefixed with the rank, in the shared train.log/console."""
    for handler in logging.getLogger().handlers:
        handler.setLevel(max(handler.level, logging.WARNING))
        handler.addFilter(_RankPrefix(rank))


class _RankPrefix(logging.Filter):
    def __init__(self, rank: int) -> None:
        super().__init__()
        self.prefix = f"[rank {rank}] "

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(self.prefix):
            record.msg = self.prefix + str(record.msg)
        return True


def _usable_callbacks(callbacks: list[Any], have_logger: bool, progress_bar: bool = True) -> list[Any]:
    """Drop callbacks that need an experiment logger when there is none (``logger=none``) and the progress
    bar when ``trainer.enable_progress_bar=false`` (Lightning refuses a bar callback then)."""
    from lightning.pytorch.callbacks import LearningRateMonitor
    from lightning.pytorch.callbacks.progress import ProgressBar

    if not progress_bar:
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    if have_logger:
        return callbacks
    dropped = [type(c).__name__ for c in callbacks if isinstance(c, LearningRateMonitor)]
    if dropped:
        log.info("logger=none: dropping %s (it needs a logger)", ", ".join(dropped))
    return [c for c in callbacks if not isinstance(c, LearningRateMonitor)]


def _final_samples(model: Any, datamodule: Any, grid_cb: Any, trainer: Any, run_dir: Path) -> None:
    """``sample_after``: <run_dir>/samples/final (PNGs + prompts.jsonl) and final_grid.png beside it,
    drawn once with the sample-grid callback's prompts / images per prompt / seed / sampling (so it
    continues the grid series) and logged to W&B as that series' last image."""
    from lightning.pytorch.loggers import WandbLogger

    from t2ilab.models.generation import write_samples
    from t2ilab.tracking.sample_grid import SampleGridCallback
    from t2ilab.evaluation.images import grid_path_beside

    if grid_cb is None:
        grid_cb = SampleGridCallback(prompts=None, num_prompts=8, num_per_prompt=4, seed=0)
    prompts = grid_cb.prompts_for(datamodule)
    out = run_dir / "samples" / "final"
    write_samples(model, datamodule.encode(prompts), prompts, out, num_per_prompt=grid_cb.num_per_prompt,
                  seed=grid_cb.seed, desc="final samples", **grid_cb.sampling_for(model))
    for lg in trainer.loggers:
        if isinstance(lg, WandbLogger):
            lg.log_image(key="samples/grid", images=[str(grid_path_beside(out))], caption=[" | ".join(prompts)],
                         step=trainer.global_step)



@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> float | None:
    from t2ilab.cli import run_job

    return run_job(train, cfg)


def main() -> None:
    """Console entry point: Hydra parses the command line; a user error is one message and exit 2."""
    from t2ilab.cli import run

    run(_hydra_main)


if __name__ == "__main__":
    main()
