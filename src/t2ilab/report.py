"""``python -m t2ilab.report``: the ablation report entry point, which lives in t2ilab/cli/report.py (every entry
point is there; this module only keeps the command, and the ``t2ilab-report`` script, stable)."""

import sys

from t2ilab.cli.report import main

if __name__ == "__main__":
    sys.exit(main())
