"""Every place t2ilab touches Lightning's private attributes or quiets its output — and nowhere else.
Tested: lightning 2.4-2.6 (pyproject bound ``lightning>=2.4,<2.7``), wandb 0.17-0.31. Each reach has a
focused test in tests/test_compat.py, so an upgrade fails one named test, not a resume in production.

* exact resume: :func:`rewrite_as_previous_batch_end` edits the checkpoint's fit-loop progress;
  :func:`batches_that_stepped`, :func:`restart_recounts_last_batch` and :func:`uncount_last_batch` keep an
  interrupt at a validation boundary from shifting the resumed run's logged steps by one;
* the GAN's discriminator steps: :func:`uncounted_step` (LightningOptimizer's step-counting hooks) and
  :func:`ddp_find_unused_parameters` (the DDP strategy's kwargs before it wraps the module);
* optimiser values given at resume: :func:`set_scheduler_last_lr`;
* the final checkpoint: :func:`last_saved_step` of a ``ModelCheckpoint``;
* :func:`attached_trainer` (a module's trainer or None, without Lightning's "not attached" error);
* checkpoints as W&B model artifacts: ``WandbLogger`` logs them itself through the public logger hooks
  (no private reach; Lightning's own logging cannot add ``step-N`` aliases or metadata);
* output: the litlogger tip, a torch deprecation inside Lightning, the ``srun`` hint for one process,
  the ``anonymous`` argument wandb deprecated — each silenced at its source (one message / argument),
  never by a blanket filter; tests/test_first_contact.py checks a short run prints none of them."""

from __future__ import annotations

import collections
import contextlib
import logging
import warnings
from typing import Any, Iterator, Mapping

_TIP = "💡 Tip: For seamless cloud logging"  # Lightning >= 2.6 advertises litlogger on every fit


def quiet_srun_hint() -> None:
    """For a single-process run: Lightning warns on any machine with Slurm's ``srun`` that the command was
    not started through ``srun`` — advice for multi-process jobs (which hang without it), noise for one
    process. t2ilab's Slurm launcher (``hydra/launcher=slurm``) starts its tasks with ``srun`` itself."""
    warnings.filterwarnings("ignore", message=r"The `srun` command is available on your system but is not used")


class _DropMessage(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def quiet_library_noise() -> None:
    """Drop the start-up lines that are advertising or library-internal deprecations (idempotent)."""
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropMessage) for f in rank_zero.filters):
        rank_zero.addFilter(_DropMessage(_TIP))
    # torch >= 2.10 deprecates isinstance(x, LeafSpec); Lightning's own pytree helper still constructs one
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            module=r"lightning\.pytorch\.utilities\._pytree")


def _wandb_logger_class() -> type:
    from lightning.pytorch.loggers.wandb import WandbLogger as LightningWandbLogger
    from lightning.pytorch.utilities import rank_zero_only

    class WandbLogger(LightningWandbLogger):
        """Lightning's ``WandbLogger`` without its ``anonymous=None`` argument to ``wandb.init`` (wandb >= 0.19
        deprecated that setting and warns whenever it is passed at all, even as None), with every metric
        defined (step metric, best-value summary) before its first value, and with checkpoints logged as
        model artifacts by t2ilab (tracking/artifacts.CheckpointArtifacts: aliases ``latest`` / ``best`` /
        ``step-N``, metadata step, score, metrics, config hash) instead of by Lightning, whose private
        ``_scan_and_log_checkpoints`` offers no way to add aliases or metadata. Lightning gets
        ``log_model=False``; the public logger hooks ``after_save_checkpoint`` / ``finalize`` do the logging
        with Lightning's schedule; no private attribute is reached. Tested with lightning 2.6.6 and wandb 0.31.0
        (pyproject bounds ``lightning<2.7``, ``wandb<0.32``; ``add_file_policy`` is read with a fallback):
        tests/test_wandb_artifacts.py trains with it and reads the artifacts back from the offline run.

        Steps: every row goes to W&B with an explicit ``step`` = the step Lightning logs it at (the
        ``trainer/global_step`` value), so a resumed run's segments continue one monotonic ``_step`` (wandb's own
        counter restarts at 0 in a resumed offline segment). wandb drops a row logged at a lower step than the one
        before, and callbacks log at ``global_step`` (k + 1) before Lightning logs that batch's training metrics
        at k, so rows are sent in step order: the newest two steps are held back (merged per step) until a later
        step arrives, or until :meth:`flush` (``finalize``, ``finish_wandb``); a row that is later still joins
        the last one sent. The scalars sent are kept (:attr:`sent`, bounded) so that ``finish_wandb`` can write
        the ones wandb's service lost (killed by a preemption's SIGTERM) into a new segment of the same run.
        (W&B's ``resume_from`` / ``fork_from`` rewind a run on the server: not available offline, not used.)"""

        def __init__(self, *args: Any, log_model: Any = False, checkpoint_name: str | None = None,
                     **kwargs: Any) -> None:
            from t2ilab.tracking.artifacts import CheckpointArtifacts, log_model_mode

            mode = log_model_mode(log_model)
            super().__init__(*args, log_model=False, checkpoint_name=checkpoint_name, **kwargs)
            if self._wandb_init.get("anonymous") is None:
                self._wandb_init.pop("anonymous", None)
            self._defined: set[str] = set()
            self._pending: dict[int, dict[str, Any]] = {}  # step -> row not yet sent (see the class docstring)
            self._last_sent = -1
            self._service_lost = False
            self.sent: collections.deque[tuple[int, dict[str, float]]] = collections.deque(maxlen=100_000)
            self.checkpoints = CheckpointArtifacts(mode, checkpoint_name, getattr(self, "add_file_policy", "mutable"))

        @rank_zero_only
        def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
            """Each metric is defined once before its first value: plotted against ``trainer/global_step`` and
            summarised by its best value (``min``/``max``, tracking/objective.metric_goal), so W&B's runs table
            sorts runs by the best FD or loss rather than the last one."""
            from t2ilab.tracking.objective import metric_goal

            for key in [k for k in metrics if k not in self._defined and k != "trainer/global_step"]:
                goal = metric_goal(key)
                self._call(lambda: self.experiment.define_metric(key, step_metric="trainer/global_step",
                                                                 **({"summary": goal} if goal else {})))
                self._defined.add(key)
            if step is None or self._wandb_init.get("sync_tensorboard"):
                self.flush()
                self._call(lambda: super(WandbLogger, self).log_metrics(metrics, step))  # (wandb's own step counter)
            else:
                prefix = getattr(self, "_prefix", "")
                row = {f"{prefix}{self.LOGGER_JOIN_CHAR}{k}" if prefix else k: v for k, v in metrics.items()}
                self._pending.setdefault(int(step), {}).update(row)
                newest = max(self._pending)
                for s in sorted(self._pending):
                    if s >= newest - 1:
                        break
                    self._send(s)
            self.checkpoints.note_metrics(dict(metrics))

        def _send(self, step: int) -> None:
            row = self._pending.pop(step)
            scalars = {k: float(v) for k, v in row.items()
                       if isinstance(v, (int, float)) and not isinstance(v, bool)}
            self.sent.append((step, scalars))
            self._last_sent = max(step, self._last_sent)
            self._call(lambda: self.experiment.log({**row, "trainer/global_step": step}, step=self._last_sent))

        def _call(self, send: Any) -> None:
            """Talk to wandb's service unless it has died: a preemption's SIGTERM reaches the service and the
            training process together, and the training loop may log before its own signal handler runs. A dead
            service must not turn the clean checkpoint-and-exit into a crash: one warning, later calls are
            skipped, and ``finish_wandb`` writes the rows kept in :attr:`sent` to a new segment."""
            if self._service_lost:
                return
            try:
                send()
            except (ConnectionError, OSError, BrokenPipeError) as e:
                self._service_lost = True
                logging.getLogger(__name__).warning("W&B's service stopped (%s: %s); training goes on, the rows it "
                                                    "misses are written when the run ends", type(e).__name__, e)

        def flush(self) -> None:
            """Send the rows held back (all of them, in step order)."""
            for s in sorted(self._pending):
                self._send(s)

        def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
            """Called by ``ModelCheckpoint`` on rank zero after each save."""
            super().after_save_checkpoint(checkpoint_callback)
            self.checkpoints.saved(checkpoint_callback, lambda: self.experiment)

        @rank_zero_only
        def finalize(self, status: str) -> None:
            try:
                self.flush()
            except Exception as e:  # noqa: BLE001 - wandb's service is gone (preemption): finish_wandb rewrites
                # the lost rows from `sent`; never replace the exception that is ending fit
                logging.getLogger(__name__).warning("could not send the last W&B rows (%s: %s)", type(e).__name__, e)
            super().finalize(status)
            if status == "success":  # (as Lightning: checkpoints of a failed run are not logged at the end)
                self.checkpoints.finished(lambda: self.experiment)

    WandbLogger.__module__, WandbLogger.__qualname__ = __name__, "WandbLogger"
    return WandbLogger


def __getattr__(name: str) -> Any:
    """``WandbLogger`` is built on first use (``logger=wandb``), so importing this module (the entry points do,
    to quiet the start-up) does not import Lightning."""
    if name == "WandbLogger":
        cls = _wandb_logger_class()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ------------------------------------------------------------------------------------ internals
def attached_trainer(module: Any) -> Any:
    """The module's Trainer, or None when it is not attached (``module.trainer`` raises then)."""
    return getattr(module, "_trainer", None)


def last_saved_step(checkpoint_callback: Any) -> int | None:
    """The global step of a ``ModelCheckpoint``'s last save (None if unknown)."""
    return getattr(checkpoint_callback, "_last_global_step_saved", None)


def set_scheduler_last_lr(scheduler: Any, optimizer: Any) -> None:
    """After changing param-group lrs by hand: what ``scheduler.get_last_lr()`` (and Lightning's
    LearningRateMonitor) report must follow, or the first logged lr is the checkpoint's."""
    if scheduler is not None and hasattr(scheduler, "_last_lr"):
        scheduler._last_lr = [pg["lr"] for pg in optimizer.param_groups]


@contextlib.contextmanager
def uncounted_step(opt: Any) -> Iterator[None]:
    """Run ``opt.step()`` through the strategy (precision plugins, DDP) without advancing ``global_step``:
    under manual optimisation Lightning counts a step in the LightningOptimizer's ``_on_before_step`` /
    ``_on_after_step`` hooks, which are swapped for no-ops here (and restored)."""
    hooks = getattr(opt, "_on_before_step", None), getattr(opt, "_on_after_step", None)
    if hooks[0] is None or hooks[1] is None:  # a plain torch optimiser (module used outside a Trainer)
        yield
        return
    opt._on_before_step = opt._on_after_step = lambda: None
    try:
        yield
    finally:
        opt._on_before_step, opt._on_after_step = hooks


def ddp_find_unused_parameters(trainer: Any) -> bool:
    """Set ``find_unused_parameters=True`` on a DDP strategy that has not wrapped the module yet, unless the
    user chose a value (``strategy=ddp_find_unused_parameters_*``). Returns whether it was set."""
    from lightning.pytorch.strategies import DDPStrategy

    strategy = getattr(trainer, "strategy", None) if trainer is not None else None
    kwargs = getattr(strategy, "_ddp_kwargs", None)
    if isinstance(strategy, DDPStrategy) and isinstance(kwargs, dict) and "find_unused_parameters" not in kwargs:
        kwargs["find_unused_parameters"] = True
        return True
    return False


def rewrite_as_previous_batch_end(checkpoint: dict) -> bool:
    """Rewrite the fit-loop progress of a checkpoint taken *mid-batch*, before the batch's update (an
    interrupt: SIGTERM, Slurm preemption), so it reads exactly like the checkpoint Lightning writes at the
    end of the previous batch (``RestartStage.RESTARTED_ON_TRAIN_BATCH_END``); Lightning otherwise resumes a
    mid-batch checkpoint with other loop counters than a batch-end one. Returns False (left as is) when the
    batch was the first of its epoch, whose previous batch-end state belongs to the previous epoch."""
    fit = (checkpoint.get("loops") or {}).get("fit_loop") or {}
    bp = fit.get("epoch_loop.batch_progress")
    if not bp or bp["current"]["processed"] < 1 or bp["current"]["started"] != bp["current"]["processed"] + 1:
        return False
    for part in ("total", "current"):
        done = bp[part]["processed"]
        bp[part].update(ready=done, started=done, completed=done - 1)
    bp["is_last_batch"] = False  # the previous batch had a successor in this epoch
    fit["epoch_loop.state_dict"]["_batches_that_stepped"] -= 1  # Lightning adds it back on restart
    optim = fit.get("epoch_loop.automatic_optimization.optim_progress", {}).get("optimizer")
    if optim:
        for part in ("total", "current"):
            done = optim["step"][part]["completed"]
            optim["step"][part]["ready"] = done
            optim["zero_grad"][part].update(ready=done, started=done, completed=done)
    manual = fit.get("epoch_loop.manual_optimization.optim_step_progress")
    for part in ("total", "current") if manual else ():
        manual[part]["ready"] = manual[part]["completed"]
    return True


def batches_that_stepped(trainer: Any) -> int:
    """Lightning's logging step counter (the ``step`` its loggers receive): batches whose update ran."""
    return int(trainer.fit_loop.epoch_loop._batches_that_stepped)


def restart_recounts_last_batch(trainer: Any) -> bool:
    """Whether Lightning, resuming a checkpoint written *now*, would count the batch it last completed a second
    time. That happens when the batch ended on a validation boundary and the save came after the batch was done
    (``RestartStage.RESTARTED_ON_LAST``): the restarted loop skips the validation it believes the saved process
    ran and counts that skipped advance as a stepped batch (lightning 2.4-2.6, ``TrainingEpochLoop.advance`` /
    ``on_advance_end``). Checkpoints Lightning writes itself at that point (``ModelCheckpoint`` on validation
    end) are saved *before* the batch is counted, so the recount is right for them and wrong for a save after
    ``on_advance_end`` — where Lightning raises on SIGTERM. The caller knows which (see ``InterruptCheckpoint``)."""
    loop = trainer.fit_loop.epoch_loop
    done = loop.batch_progress.total
    if not (done.ready == done.started == done.processed == done.completed) or done.completed == 0:
        return False  # mid-batch (rewrite_as_previous_batch_end's case) or nothing trained
    return bool(loop._should_check_val_fx(trainer.fit_loop._data_fetcher))


def uncount_last_batch(checkpoint: dict) -> None:
    """Lower the checkpoint's ``_batches_that_stepped`` by the one Lightning adds back when it resumes (above)."""
    checkpoint["loops"]["fit_loop"]["epoch_loop.state_dict"]["_batches_that_stepped"] -= 1
