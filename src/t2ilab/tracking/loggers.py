"""Logger lifecycle helpers shared by the train and eval entry points."""

from __future__ import annotations

from typing import Any


def finish_wandb(loggers: list[Any], exit_code: int = 0, reason: str | None = None) -> None:
    """Always close the W&B run (also on errors), so the offline run is complete and syncable.

    Args:
        loggers: the run's loggers (only a WandbLogger matters).
        exit_code: recorded as the run's exit code (non-zero = W&B shows the run as failed).
        reason: what ended a failed run; stored in the run summary as ``failure``.
    """
    from lightning.pytorch.loggers import WandbLogger

    if any(isinstance(lg, WandbLogger) for lg in loggers):
        import wandb

        if wandb.run is not None:
            if reason:
                wandb.run.summary["failure"] = reason
            wandb.finish(exit_code=exit_code)
