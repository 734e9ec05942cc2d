"""Shared test set-up: the same start-up quieting as the entry points (Lightning's litlogger tip and a
torch deprecation inside Lightning), so test output shows our warnings only. Per-package fixtures live in
tests/<package>/conftest.py; helpers for subprocess tests of the entry points in tests/cli_helpers.py."""

from t2ilab.compat.lightning import quiet_library_noise

quiet_library_noise()
