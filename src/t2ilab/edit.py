"""``python -m t2ilab.edit``: the text-guided editing entry point, which lives in t2ilab/cli/edit.py (every entry
point is there; this module only keeps the command, and the ``t2ilab-edit`` script, stable)."""

from t2ilab.cli.edit import main

if __name__ == "__main__":
    main()
