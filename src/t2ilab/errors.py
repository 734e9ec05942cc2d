"""What counts as a *user* error, and how one is shown.

A user error is a problem with what the user gave us — a config value, an unknown key or group
choice, a missing or corrupt file, weights that are not available offline, a checkpoint that does
not fit, a run that diverged (NaN loss). The entry points print its message alone (no traceback)
and exit 2; ``T2ILAB_DEBUG=1``, ``HYDRA_FULL_ERROR=1`` or ``hydra.verbose=true`` show the traceback.
Anything else is a bug of ours and keeps its full traceback (exit 1).

The project's input checks raise ``ValueError`` / ``FileNotFoundError`` (or subclasses such as
``UserError`` below) with a message written for the user; that convention is what this module reads.
"""

from __future__ import annotations

import os
from typing import Iterator


class UserError(Exception):
    """Raised for bad input whose message already says what is wrong and how to fix it."""


# Errors whose message is for the user (our checks raise these with a fix in the message).
_USER_TYPES: tuple[type[BaseException], ...] = (UserError, ValueError, FileNotFoundError, FileExistsError,
                                                NotADirectoryError, IsADirectoryError, PermissionError)


def _extra_user_types() -> tuple[type[BaseException], ...]:
    """Library and project exceptions that describe bad input (imported lazily: start-up time)."""
    types: list[type[BaseException]] = []
    try:
        from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
        types += [ConfigCompositionException, MissingConfigException, OverrideParseException]
    except ImportError:  # pragma: no cover - hydra is a hard dependency
        pass
    try:
        from omegaconf.errors import OmegaConfBaseException
        types.append(OmegaConfBaseException)
    except ImportError:  # pragma: no cover
        pass
    from t2ilab.encoders.errors import WeightsUnavailableError
    types.append(WeightsUnavailableError)
    return tuple(types)


def causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from (``__cause__`` chain; Hydra wraps errors of
    instantiated targets in ``InstantiationException`` from the original)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__  # type: ignore[assignment]


def user_error(exc: BaseException) -> BaseException | None:
    """The user error behind ``exc`` (itself or one it was raised from), or None for a bug."""
    if isinstance(exc, (SystemExit, KeyboardInterrupt)):
        return None
    types = _USER_TYPES + _extra_user_types()
    for e in causes(exc):
        if type(e).__name__ in ("NonFiniteLossError", "NonFiniteImagesError") or isinstance(e, types):  # NaN: advised
            return e
    return None


def message(exc: BaseException) -> str:
    """The one message shown for a user error."""
    text = str(exc).strip()
    if type(exc).__module__.startswith(("hydra", "omegaconf")):
        # Hydra appends a hint about its own env var; ours (T2ILAB_DEBUG) is printed instead
        text = text.replace("Set the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace.", "")
        text = text.split("\nConfig search path:")[0]  # (Hydra lists its search path after the valid choices)
    if type(exc).__name__ == "OverrideParseException":
        bad = _unparsable_overrides()
        if bad:
            text = f"cannot parse the override {' '.join(repr(b) for b in bad)}: {text}"
    return text.strip() or type(exc).__name__


def _unparsable_overrides() -> list[str]:
    """The command-line arguments Hydra's override grammar rejects (its own message names only the token)."""
    import sys

    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser, bad = OverridesParser.create(), []
    for arg in sys.argv[1:]:
        if arg.startswith("-"):
            continue
        try:
            parser.parse_override(arg)
        except Exception:  # noqa: BLE001 - any parse failure names the argument
            bad.append(arg)
    return bad


# set by t2ilab.cli when it (not the user) turned on HYDRA_FULL_ERROR so that Hydra re-raises
HYDRA_FULL_ERROR_IS_OURS = "_T2ILAB_SET_HYDRA_FULL_ERROR"


def debug_requested(argv: list[str] | None = None) -> bool:
    """Show full tracebacks: ``T2ILAB_DEBUG=1``, the user's ``HYDRA_FULL_ERROR=1`` or ``hydra.verbose=...``
    on the command line (``argv`` defaults to this process's)."""
    import sys

    argv = sys.argv[1:] if argv is None else argv
    flag = lambda name: os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")  # noqa: E731
    users_full_error = flag("HYDRA_FULL_ERROR") and os.environ.get(HYDRA_FULL_ERROR_IS_OURS) != "1"
    return flag("T2ILAB_DEBUG") or users_full_error or any(
        a.startswith(("hydra.verbose=", "--verbose")) and not a.endswith(("=false", "=False", "=[]")) for a in argv)
