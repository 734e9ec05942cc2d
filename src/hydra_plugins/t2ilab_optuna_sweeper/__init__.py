"""Hydra Sweeper around modern Optuna (``hydra/sweeper: t2ilab_optuna``); docs/sweeps.md says why
it is ours and not hydra-optuna-sweeper."""
