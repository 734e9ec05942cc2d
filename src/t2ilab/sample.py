"""``python -m t2ilab.sample``: the sample export entry point, which lives in t2ilab/cli/sample.py (every entry
point is there; this module only keeps the command, and the ``t2ilab-sample`` script, stable)."""

from t2ilab.cli.sample import main

if __name__ == "__main__":
    main()
