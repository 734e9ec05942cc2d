"""Sweeps: the Optuna study logic behind ``hydra/sweeper=t2ilab_optuna`` (the Hydra plugin module in
``src/hydra_plugins`` only registers it)."""
