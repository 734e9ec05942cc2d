"""Type checks of the most-overridden config values, run right after composition (before any data,
model or W&B work). A value typed wrong on the command line (``trainer.max_steps=abc``) otherwise
surfaces much later as a bare ``TypeError: '<' not supported between 'str' and 'int'`` naming no
key. Each rule names the key, the value, the expected type and an example.

This is a table, not Hydra structured configs: the YAML tree stays the single source of defaults
and free-form groups (callbacks, launchers) keep working; only the listed keys are checked.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

INT, FLOAT, NUM_OR_NONE, FLOAT_OR_NONE = "int", "float", "int-or-float-or-null", "float-or-null"

RULES: dict[str, tuple[str, Any]] = {  # key -> (kind, example value for the message)
    "seed": (INT, 0),
    "trainer.max_steps": (INT, 20000),
    "trainer.log_every_n_steps": (INT, 25),
    "trainer.val_check_interval": (NUM_OR_NONE, 1000),
    "trainer.limit_val_batches": (NUM_OR_NONE, 8),
    "trainer.gradient_clip_val": (FLOAT_OR_NONE, 1.0),
    "data.batch_size": (INT, 64),
    "data.image_size": (INT, 32),
    "data.channels": (INT, 3),
    "data.num_workers": (INT, 0),
    "model.optimizer.lr": (FLOAT, 2e-4),
    "model.optimizer.weight_decay": (FLOAT, 0.0),
    "model.optimizer_g.lr": (FLOAT, 2e-4),
    "model.optimizer_d.lr": (FLOAT, 2e-4),
    "model.cond_drop_prob": (FLOAT, 0.1),
    "model.lr_warmup_steps": (INT, 500),
    "model.ema.decay": (FLOAT, 0.999),
    "model.sampling.num_steps": (INT, 50),
    "model.sampling.guidance_scale": (FLOAT, 2.0),
    "model.sampling.eta": (FLOAT, 0.0),
    "metrics.num_samples": (INT, 1000),
    "metrics.batch_size": (INT, 64),
    "num_per_prompt": (INT, 4),
    "batch_size": (INT, 64),
}


def _ok(kind: str, v: Any) -> bool:
    is_int = isinstance(v, int) and not isinstance(v, bool)
    is_num = is_int or (isinstance(v, float) and not isinstance(v, bool))
    return {INT: is_int, FLOAT: is_num, NUM_OR_NONE: v is None or is_num, FLOAT_OR_NONE: v is None or is_num}[kind]


def check_types(cfg: DictConfig) -> None:
    """Raise one ValueError listing every listed key whose value has the wrong type."""
    bad = []
    for key, (kind, example) in RULES.items():
        node = OmegaConf.select(cfg, key, default="__absent__", throw_on_missing=False)
        if isinstance(node, str) and node == "__absent__":
            continue
        if not _ok(kind, node):
            bad.append(f"  {key}={node!r} ({type(node).__name__}) must be {kind.replace('-', ' ')}, "
                       f"e.g. {key}={example}")
    if bad:
        raise ValueError("wrong config value type(s), stopped before any work:\n" + "\n".join(bad))
