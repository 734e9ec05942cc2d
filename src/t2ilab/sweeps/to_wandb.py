"""``python -m t2ilab.sweeps.to_wandb``: the W&B sweep config of an Optuna search; the entry point lives in
t2ilab/cli/to_wandb.py (every entry point is there; this module only keeps the command stable)."""

import sys

from t2ilab.cli.to_wandb import main

if __name__ == "__main__":
    sys.exit(main())
