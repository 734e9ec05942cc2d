"""Hydra plugin registration of t2ilab's Optuna sweeper (``hydra/sweeper: t2ilab_optuna``).

Hydra only accepts plugin classes defined under ``hydra_plugins``: this module defines that class and
stores its config node; the logic lives in :mod:`t2ilab.sweeps.optuna_sweeper`. Keep it this thin:
Hydra 1.3's plugin scanner executes it before it is in ``sys.modules`` and may execute it again in place
(tests/test_hparams_search.py imports it that way), so no dataclass and no exception class lives here.
"""
from hydra.core.config_store import ConfigStore

from t2ilab.sweeps.optuna_sweeper import (OptunaSweeperConf, OptunaSweeperImpl, SearchSpaceError,  # noqa: F401
                                          format_value, probe_points)


class OptunaSweeper(OptunaSweeperImpl):
    """The registered plugin class (``_target_`` of the ``t2ilab_optuna`` sweeper node)."""


ConfigStore.instance().store(group="hydra/sweeper", name="t2ilab_optuna", node=OptunaSweeperConf, provider="t2ilab")
