"""Lightning (and the libraries it drives) where its defaults talk to users about things that do not
concern them. Tested: lightning 2.4-2.6 (pyproject bound ``lightning>=2.4,<2.7``), wandb 0.17-0.31.

Each piece is silenced at its source — one message or one argument — never by a blanket filter, and
tests/test_first_contact.py checks that a short training run prints none of them."""

from __future__ import annotations

import logging
import warnings
from typing import Any

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

    class WandbLogger(LightningWandbLogger):
        """Lightning's ``WandbLogger`` without its ``anonymous=None`` argument to ``wandb.init``: wandb >= 0.19
        deprecated that setting and warns whenever it is passed at all, even as None."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            if self._wandb_init.get("anonymous") is None:
                self._wandb_init.pop("anonymous", None)

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
