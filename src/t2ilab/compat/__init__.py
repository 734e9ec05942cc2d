"""One small module per library whose behaviour differs across the versions we support or whose
internals we must touch; each names the versions it was tested on (pyproject declares the bounds)."""
