"""``python -m t2ilab.train``: the training entry point, which lives in t2ilab/cli/train.py (every entry
point is there; this module only keeps the command, and the ``t2ilab-train`` script, stable)."""

from t2ilab.cli.train import main

if __name__ == "__main__":
    main()
