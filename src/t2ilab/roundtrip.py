"""``python -m t2ilab.roundtrip``: the image -> caption -> image round trip entry point, which lives in t2ilab/cli/roundtrip.py (every entry
point is there; this module only keeps the command, and the ``t2ilab-roundtrip`` script, stable)."""

from t2ilab.cli.roundtrip import main

if __name__ == "__main__":
    main()
