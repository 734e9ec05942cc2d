"""``python -m t2ilab.eval``: the evaluation entry point, which lives in t2ilab/cli/eval.py (every entry
point is there; this module only keeps the command, and the ``t2ilab-eval`` script, stable)."""

from t2ilab.cli.eval import main

if __name__ == "__main__":
    main()
