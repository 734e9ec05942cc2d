"""OmegaConf resolvers used by the config tree (registered on ``import t2ilab``)."""

from __future__ import annotations

import os
import secrets

from omegaconf import OmegaConf

# One id per process, fixed at import: every access to ``${t2ilab.run_id:}`` in this process
# returns the same value, while two launches in the same second get different ids.
_RUN_ID = f"{os.getpid() % 100000:05d}{secrets.token_hex(3)}"


def run_id() -> str:
    """Process-wide unique run id (pid + 24 random bits): makes run dirs collision-free."""
    return _RUN_ID


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("t2ilab.run_id"):
        OmegaConf.register_new_resolver("t2ilab.run_id", run_id, use_cache=True)
    if not OmegaConf.has_resolver("t2ilab.eval"):
        # small arithmetic in configs, e.g. ${t2ilab.eval:'${data.image_size} // 8'}
        OmegaConf.register_new_resolver("t2ilab.eval", lambda expr: eval(expr, {"__builtins__": {}}))
