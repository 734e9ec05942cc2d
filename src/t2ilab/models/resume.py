"""Resume semantics: the composed config wins over the optimiser state stored in a checkpoint.

Lightning restores each optimiser's ``param_groups`` (lr, weight decay, betas, eps) and the LR
scheduler's ``base_lrs`` from the checkpoint, silently replacing what the user asked for on the
command line (e.g. the NaN guard's advice "resume with a lower learning rate" did nothing). The
module records the configured values when it builds each optimiser (``record``); after the
restore (``on_train_start``) ``apply`` writes them back into the restored optimisers and
schedulers, keeping the moment estimates, and logs every change. Hyper-parameters that live in
the config rather than in optimiser state (max_steps, gradient clipping, EMA decay) already take
effect; ``config_changes`` lists them against the checkpoint's stored config for the log.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable

import torch

from t2ilab.compat.lightning import set_scheduler_last_lr
from t2ilab.utils.config import get_dotted

log = logging.getLogger(__name__)

OPTIMIZER_KEYS = ("lr", "weight_decay", "betas", "eps", "momentum")
LOGGED_CONFIG_KEYS = ("trainer.max_steps", "trainer.gradient_clip_val", "model.ema.decay", "model.lr_warmup_steps")


def record(optimizer: torch.optim.Optimizer) -> list[dict[str, Any]]:
    """The configured hyper-parameters of each param group (base lr = before warm-up scaling)."""
    out = []
    for g in optimizer.param_groups:
        hp = {k: g[k] for k in OPTIMIZER_KEYS if k in g}
        hp["lr"] = g.get("initial_lr", g["lr"])
        out.append(hp)
    return out


def _fmt(v: Any) -> str:
    return str(tuple(float(x) for x in v)) if isinstance(v, (tuple, list)) else f"{v:g}" if isinstance(v, float) else str(v)


def apply(optimizers: Iterable[torch.optim.Optimizer], schedulers: Iterable[Any],
          configured: dict[int, list[dict[str, Any]]], name: str = "optimizer") -> list[str]:
    """Write the configured hyper-parameters into restored optimisers/schedulers; returns the
    changes as "lr 1e-4 (checkpoint had 0.001)" strings (also logged).

    Args:
        optimizers: the trainer's optimisers after checkpoint restore.
        schedulers: their LR schedulers (any with ``optimizer``, ``base_lrs``, ``lr_lambdas``).
        configured: ``id(optimizer) -> record(optimizer)`` taken when the optimiser was built.
        name: prefix for the log lines.
    """
    sched_of = {id(s.optimizer): s for s in schedulers if hasattr(s, "optimizer")}
    changes = []
    for i, opt in enumerate(optimizers):
        want = configured.get(id(opt))
        if want is None or len(want) != len(opt.param_groups):
            continue
        sched = sched_of.get(id(opt))
        for j, (g, hp) in enumerate(zip(opt.param_groups, want)):
            for k, v in hp.items():
                had = g.get("initial_lr", g["lr"]) if k == "lr" else g.get(k)
                same = tuple(had) == tuple(v) if isinstance(v, (tuple, list)) else had == v
                if same:
                    continue
                changes.append(f"{name}[{i}].{k} {_fmt(v)} (checkpoint had {_fmt(had)})")
                if k != "lr":
                    g[k] = v
                    continue
                g["initial_lr"] = v
                factor = 1.0
                if sched is not None and hasattr(sched, "base_lrs"):
                    sched.base_lrs[j] = v
                    lambdas = getattr(sched, "lr_lambdas", None)
                    factor = lambdas[j](sched.last_epoch) if lambdas else 1.0
                g["lr"] = v * factor
                set_scheduler_last_lr(sched, opt)
    for c in changes:
        log.warning("resuming with %s: the config wins over the checkpoint's optimiser state", c)
    return changes


def config_changes(old: dict | None, new: dict | None, keys: Iterable[str] = LOGGED_CONFIG_KEYS) -> list[str]:
    """``key new (checkpoint had old)`` for config values that differ between two run configs."""
    out = [f"{k} {get_dotted(new, k)} (checkpoint had {get_dotted(old, k)})" for k in keys
           if get_dotted(old, k) != get_dotted(new, k)]
    for c in out:
        log.warning("resuming with %s", c)
    return out
