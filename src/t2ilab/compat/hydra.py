"""Hydra / OmegaConf differences between the releases we support (tested: hydra-core 1.3.2-1.3.8 and
1.4.0rc3; omegaconf 2.3). pyproject bounds: ``hydra-core>=1.3.2,<1.5``, ``omegaconf>=2.3,<2.5``."""

from __future__ import annotations

from typing import Any


def instantiate(config: Any, *args: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` that raises the target's own exception.

    Hydra 1.3 wraps any exception raised by the target (our constructors' input checks among them) in
    ``InstantiationException("Error in call to target ...")`` chained from the original; Hydra 1.4 lets
    it through. Callers and users should see the same error on both: the original, unwrapped."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate as _instantiate

    try:
        return _instantiate(config, *args, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__
        if isinstance(cause, Exception) and "Error in call to target" in str(e):
            raise cause.with_traceback(cause.__traceback__) from None
        raise
