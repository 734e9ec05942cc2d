"""``python -m t2ilab.reproduce``: the re-run a recorded run entry point, which lives in t2ilab/cli/reproduce.py (every entry
point is there; this module only keeps the command, and the ``t2ilab-reproduce`` script, stable)."""

import sys

from t2ilab.cli.reproduce import main

if __name__ == "__main__":
    sys.exit(main())
