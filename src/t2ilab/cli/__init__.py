"""How every Hydra entry point runs: one clear message and exit 2 for a user error, no traceback.

``python -m t2ilab.train|sample|eval|edit|roundtrip`` call :func:`run` with their ``@hydra.main``
function. Hydra prints its own (trimmed) traceback and exits 1 for any error, composition errors
included; here Hydra is asked to re-raise (``HYDRA_FULL_ERROR=1``, its public switch) and the error is
classified (:mod:`t2ilab.errors`): a user error prints ``Error: <message>`` on stderr
and exits 2; a bug keeps its traceback. ``T2ILAB_DEBUG=1`` shows tracebacks for everything.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable

from t2ilab.errors import HYDRA_FULL_ERROR_IS_OURS as _OURS
from t2ilab.tracking.launch import remember_command
from t2ilab.errors import debug_requested, message, user_error


def run(hydra_main: Callable[[], object]) -> None:
    """Run a ``@hydra.main``-decorated function with t2ilab's error reporting."""
    debug = debug_requested(sys.argv[1:])  # (a HYDRA_FULL_ERROR inherited from our own parent process is ignored)
    os.environ["HYDRA_FULL_ERROR"] = "1"
    os.environ[_OURS] = "0" if debug else "1"  # children (DDP ranks, submitit jobs) decide the same way
    remember_command()  # the manifest of a submitit job records this command, not submitit's own
    try:
        hydra_main()
    except BaseException as exc:  # noqa: BLE001 - classified, then reported or re-raised
        from t2ilab.utils.sweep_check import rejected_submission

        _exit_if_user_error(rejected_submission(exc) or exc, debug)
        raise


def run_job(task: Callable[[Any], Any], cfg: Any) -> Any:
    """Call the entry point's task inside ``@hydra.main``. A single run's user error is reported here and
    ends the process with 2 (so Hydra adds no "Error executing job ..." lines); in a multirun it is
    raised, so Hydra records the failed job and the sweep goes on as Hydra decides."""
    from t2ilab.compat.lightning import quiet_library_noise

    quiet_library_noise()
    try:
        return task(cfg)
    except Exception as exc:  # noqa: BLE001 - classified, then reported or re-raised
        _exit_if_user_error(exc, debug_requested() or in_multirun())
        raise


def _exit_if_user_error(exc: BaseException, keep_traceback: bool) -> None:
    """A user error: its one message on stderr, then exit 2. Anything else (or ``keep_traceback``): return."""
    err = None if keep_traceback else user_error(exc)
    if err is None:
        return
    print(f"Error: {message(err)}", file=sys.stderr, flush=True)
    print("(T2ILAB_DEBUG=1 shows the traceback)", file=sys.stderr, flush=True)
    raise SystemExit(2) from None


def in_multirun() -> bool:
    """Whether this process runs a job of a Hydra multirun (``-m``)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
