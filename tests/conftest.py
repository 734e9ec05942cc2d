"""Shared test set-up: the same start-up quieting as the entry points (Lightning's litlogger tip and a
torch deprecation inside Lightning), so test output shows our warnings only; ``finished_run``, one short
training shared by the tests that need a finished run dir. Per-package fixtures live in
tests/<package>/conftest.py; helpers for subprocess tests of the entry points in tests/cli_helpers.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from t2ilab.compat.lightning import quiet_library_noise

quiet_library_noise()


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory) -> Path:
    """A COMPLETE 4-step training run dir (``debug=fast``, tiny model; checkpoints at steps 2 and 4), trained
    once per test session. Read-only: tests that change a run work on ``cli_helpers.copy_of(finished_run, dest)``."""
    from cli_helpers import TINY, run

    root = tmp_path_factory.mktemp("finished")
    run("train", "debug=fast", *TINY, f"hydra.run.dir={root / 'run'}", f"paths.cache_dir={root / 'cache'}",
        "logger=none", "callbacks.sample_grid=null", timeout=600)
    return root / "run"
