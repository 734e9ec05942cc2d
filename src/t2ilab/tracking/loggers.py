"""Logger lifecycle helpers shared by the train and eval entry points."""

from __future__ import annotations

from typing import Any


def finish_wandb(loggers: list[Any]) -> None:
    """Always close the W&B run (also on errors), so the offline run is complete and syncable."""
    from lightning.pytorch.loggers import WandbLogger

    if any(isinstance(lg, WandbLogger) for lg in loggers):
        import wandb

        if wandb.run is not None:
            wandb.finish()
