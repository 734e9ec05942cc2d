"""The Optuna view of a study's sweep dir for ``report``: rebuilt from ``<sweep dir>/optimization_results.yaml``
(our sweeper writes every trial with its params and value, and the search space as Optuna distributions), drawn
with Optuna's own ``visualization.matplotlib`` (optimisation history, parameter importances, slices), plus the
best trial's command line from its run dir's manifest."""

from __future__ import annotations

import io
import logging
import shlex
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
RESULTS = "optimization_results.yaml"


@dataclass
class StudyView:
    path: Path
    direction: str
    n_trials: int
    n_complete: int
    best_value: float | None
    best_params: dict[str, Any]
    best_command: str | None
    figures: list[tuple[str, bytes]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def find_studies(paths: list[str]) -> list[Path]:
    """Sweep dirs among (or directly below) the report's PATHs that hold an Optuna study's results."""
    found = []
    for raw in paths:
        root = Path(raw)
        for p in [root / RESULTS, *sorted(root.glob(f"*/{RESULTS}"))]:
            if p.is_file() and p.parent not in found:
                found.append(p.parent)
    return found


def _best_command(sweep_dir: Path, best: dict[str, Any] | None) -> str | None:
    """``python -m t2ilab.train <the best trial's overrides>`` (from its manifest; the sweeper's record else)."""
    import json

    if best is None:
        return None
    overrides = best.get("overrides") or []
    manifest = sweep_dir / str(best.get("job")) / "manifest.json"
    if manifest.is_file():
        try:
            overrides = json.loads(manifest.read_text()).get("overrides") or overrides
        except (OSError, ValueError):
            pass
    return shlex.join(["python", "-m", "t2ilab.train", *overrides])


def load_study_view(sweep_dir: Path) -> StudyView:
    import optuna
    from omegaconf import OmegaConf
    from optuna.distributions import json_to_distribution

    results = OmegaConf.to_container(OmegaConf.load(sweep_dir / RESULTS), resolve=False)
    trials = results.get("trials") or []
    direction = str(results.get("direction") or "minimize")
    complete = [t for t in trials if t.get("value") is not None]
    best = None
    if complete:
        pick = min if direction == "minimize" else max
        best = pick(complete, key=lambda t: t["value"])
    view = StudyView(sweep_dir, direction, len(trials), len(complete), best["value"] if best else None,
                     dict(best["params"]) if best else {}, _best_command(sweep_dir, best))
    dists = {k: json_to_distribution(v) for k, v in (results.get("distributions") or {}).items()}
    if not dists:
        view.notes.append("no search space recorded (a study from before report drew studies): no figures")
        return view
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction=direction)
    for t in trials:
        state = optuna.trial.TrialState.COMPLETE if t.get("value") is not None else optuna.trial.TrialState.FAIL
        try:
            study.add_trial(optuna.trial.create_trial(params=dict(t["params"]), distributions=dists,
                                                      value=t.get("value"), state=state))
        except ValueError as e:  # a trial outside the recorded space (the space was edited between batches)
            view.notes.append(f"trial {t.get('number')} left out of the figures: {e}")
    view.figures = _figures(study, view.notes)
    return view


def _figures(study: Any, notes: list[str]) -> list[tuple[str, bytes]]:
    import matplotlib
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    plots = [("optimisation history", ovm.plot_optimization_history), ("parameter importances",
             ovm.plot_param_importances), ("slices: objective vs each parameter", ovm.plot_slice)]
    out = []
    for title, plot in plots:
        try:  # (optuna sets its plot style globally: rc_context restores ours afterwards)
            with warnings.catch_warnings(), matplotlib.rc_context():
                warnings.simplefilter("ignore")  # optuna marks its matplotlib backend experimental
                ax = plot(study)
            fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
            fig.set_layout_engine("constrained")
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=100)
            out.append((title, buf.getvalue()))
            plt.close(fig)
        except Exception as e:  # noqa: BLE001 - e.g. importances need 2+ complete trials with varied params
            notes.append(f"{title}: not drawn ({type(e).__name__}: {e})")
    return out


def study_markdown(view: StudyView) -> list[str]:
    better = "lowest" if view.direction == "minimize" else "highest"
    lines = [f"## Optuna study `{view.path}`", "",
             f"{view.n_complete} of {view.n_trials} trials completed; best ({better}) objective: "
             f"{view.best_value if view.best_value is None else f'{view.best_value:.4g}'}"]
    if view.best_params:
        lines += ["", "| parameter | best value |", "| --- | --- |",
                  *(f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |"
                    for k, v in view.best_params.items())]
    if view.best_command:
        lines += ["", "Best trial, rerun as:", "", "```", view.best_command, "```"]
    lines += [f"- {n}" for n in view.notes]
    return [*lines, ""]
