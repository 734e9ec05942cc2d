"""A small Hydra Sweeper around modern Optuna (>= 3.6): ``defaults: [override hydra/sweeper: t2ilab_optuna]``.

Same configuration keys and search-space syntax as hydra-optuna-sweeper (``hydra.sweeper.params``:
``choice(...)``, ``range(...)``, ``interval(...)``, ``tag(log, interval(...))``; plain values are fixed
overrides; sweep overrides on the command line join the search space), so a config moves between the
two unchanged apart from the sweeper's name. Why not hydra-optuna-sweeper: docs/sweeps.md.

Before any job runs, every value of the search space (each choice, both ends of each interval/range,
one parameter at a time) is composed into the job config, and ``config_check`` (a dotted path to
``fn(job_cfg)``) is called on each, so an unknown key or an invalid value fails the sweep at once.
The study's results go to ``<sweep dir>/optimization_results.yaml`` (best params/value + every trial).
"""

# This module is imported normally; the Hydra plugin module (hydra_plugins/t2ilab_optuna_sweeper) only
# subclasses OptunaSweeper and stores the config node. Hydra 1.3's scanner executes plugin modules with
# ``exec_module`` before they are in ``sys.modules`` (a dataclass there cannot resolve string annotations)
# and re-executes them in place (rebinding their classes): nothing that must stay one object lives there.
from __future__ import annotations

import logging
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.t2ilab_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    # any optuna.samplers.* class and its keyword arguments, e.g. {_target_: optuna.samplers.RandomSampler, seed: 0}
    sampler: Dict[str, Any] = field(default_factory=lambda: {"_target_": "optuna.samplers.TPESampler", "seed": None})
    direction: str = "minimize"          # minimize | maximize (of what the task function returns)
    study_name: Optional[str] = None     # null = optuna's generated name
    storage: Optional[str] = None        # e.g. sqlite:///study.db to keep / continue a study; null = in memory
    n_trials: int = 20
    n_jobs: int = 1                      # trials asked and launched together (parallel with a parallel launcher)
    max_failure_rate: float = 0.0        # share of failed trials in a batch above which the sweep stops
    params: Dict[str, Any] = field(default_factory=dict)  # search space: key -> sweep expression or fixed value
    config_check: Optional[str] = None   # dotted path of fn(job_cfg), called on composed trial configs before any job


class SearchSpaceError(ValueError):
    """The search space cannot be turned into Optuna distributions or composed into job configs."""


def _distribution(o: Override) -> Any:
    """An Optuna distribution for a sweep override (choice / range / interval, optional ``log`` tag)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    key, value = o.get_key_element(), o.value()
    if isinstance(value, ChoiceSweep):
        choices = list(o.sweep_iterator())
        bad = [c for c in choices if not (c is None or isinstance(c, (bool, int, float, str)))]
        if bad:
            raise SearchSpaceError(f"{key}: choice() values must be numbers, strings, booleans or null, got {bad}")
        return CategoricalDistribution(choices)
    if isinstance(value, RangeSweep):
        start, stop, step = value.start, value.stop, value.step
        if all(isinstance(v, int) for v in (start, stop, step)) and step > 0 and stop > start:
            last = start + (stop - start - 1) // step * step  # range() excludes stop
            return IntDistribution(start, last, step=step)
        return CategoricalDistribution(list(o.sweep_iterator()))
    if isinstance(value, IntervalSweep):
        low, high, use_log = value.start, value.end, "log" in (value.tags or set())
        if not low < high:
            raise SearchSpaceError(f"{key}: interval({low}, {high}) needs low < high")
        if use_log and low <= 0:
            raise SearchSpaceError(f"{key}: tag(log, interval({low}, {high})) needs low > 0")
        if isinstance(low, int) and isinstance(high, int):
            return IntDistribution(low, high, log=use_log)
        return FloatDistribution(float(low), float(high), log=use_log)
    raise SearchSpaceError(f"{key}: {o.input_line!r} is not supported (use choice, range or interval)")


def parse_search_space(params: Dict[str, Any], arguments: Sequence[str] = (),
                       config_loader: Any = None) -> tuple[Dict[str, Any], List[str]]:
    """(Optuna distributions by key, fixed override lines) of a ``hydra.sweeper.params`` mapping plus sweep
    overrides from the command line (which win over the mapping for the same key). Also read by
    sweeps/wandb_sweep.py, so a W&B sweep searches exactly this space."""
    lines = [f"{k}={v if isinstance(v, str) else format_value(v)}" for k, v in params.items()]
    parser = OverridesParser.create(config_loader=config_loader)
    dists: Dict[str, Any] = {}
    fixed: List[str] = []
    for o in parser.parse_overrides([*lines, *arguments]):
        key = o.get_key_element()
        dists.pop(key, None)
        fixed = [f for f in fixed if parser.parse_override(f).get_key_element() != key]
        if o.is_sweep_override():
            dists[key] = _distribution(o)
        else:
            fixed.append(o.input_line)
    return dists, fixed


_PLAIN = re.compile(r"[A-Za-z0-9_./+\-:@]*")


def format_value(v: Any) -> str:
    """A value as Hydra override text (strings that need it are quoted)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str) and not _PLAIN.fullmatch(v):
        return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return str(v)


def probe_points(dists: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Parameter sets that put every choice and both ends of every numeric range into some config
    (one parameter at a time, the others at their first value)."""
    from optuna.distributions import CategoricalDistribution

    def values(d: Any) -> list:
        return list(d.choices) if isinstance(d, CategoricalDistribution) else [d.low, d.high]

    base = {k: values(d)[0] for k, d in dists.items()}
    points = [base]
    for k, d in dists.items():
        points += [{**base, k: v} for v in values(d)[1:]]
    return points


class OptunaSweeperImpl(Sweeper):
    """Hydra Sweeper: asks Optuna for ``n_jobs`` trials at a time, launches them through the configured
    launcher and tells Optuna each job's return value (a failed job or a non-finite value = failed trial)."""

    def __init__(self, sampler: Any = None, direction: str = "minimize", study_name: Optional[str] = None,
                 storage: Optional[str] = None, n_trials: int = 20, n_jobs: int = 1, max_failure_rate: float = 0.0,
                 params: Optional[Any] = None, config_check: Optional[str] = None) -> None:
        # Hydra 1.4 instantiates plugins with _recursive_=False (the sampler arrives as its config node, built
        # here per study); Hydra 1.3 instantiates recursively (the sampler arrives already built): take both
        self.sampler_obj: Any = None
        self.sampler_cfg: Any = None
        if isinstance(sampler, DictConfig):
            self.sampler_cfg = OmegaConf.to_container(sampler, resolve=True)
        elif sampler is None or isinstance(sampler, dict):
            self.sampler_cfg = sampler
        else:
            self.sampler_obj = sampler
        self.direction, self.study_name, self.storage = str(direction), study_name, storage
        self.n_trials, self.n_jobs, self.max_failure_rate = int(n_trials), max(1, int(n_jobs)), float(max_failure_rate)
        self.params = OmegaConf.to_container(params, resolve=True) if isinstance(params, DictConfig) else dict(params or {})
        self.config_check = config_check
        if self.direction not in ("minimize", "maximize"):
            raise SearchSpaceError(f"hydra.sweeper.direction={self.direction!r}: use minimize or maximize")
        if not 0.0 <= self.max_failure_rate <= 1.0:
            raise SearchSpaceError(f"hydra.sweeper.max_failure_rate={self.max_failure_rate}: must be within [0, 1]")
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None
        self.launcher: Any = None
        self.job_idx = 0

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.job_idx = config, hydra_context, 0
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function)

    # ------------------------------------------------------------------ search space
    def _make_sampler(self) -> Any:
        import optuna
        from hydra.utils import get_class

        if self.sampler_obj is not None:
            if not isinstance(self.sampler_obj, optuna.samplers.BaseSampler):
                raise SearchSpaceError(f"hydra.sweeper.sampler: {type(self.sampler_obj).__name__} is not an optuna sampler")
            return self.sampler_obj
        cfg = dict(self.sampler_cfg or {})
        target = cfg.pop("_target_", "optuna.samplers.TPESampler")
        cls = get_class(target)
        if not (isinstance(cls, type) and issubclass(cls, optuna.samplers.BaseSampler)):
            raise SearchSpaceError(f"hydra.sweeper.sampler._target_={target!r} is not an optuna sampler class")
        return cls(**cfg)

    def search_space(self, arguments: Sequence[str]) -> tuple[Dict[str, Any], List[str]]:
        """(distributions by key, fixed overrides) from ``hydra.sweeper.params`` + the command line."""
        dists, fixed = parse_search_space(self.params, arguments,
                                          self.hydra_context.config_loader if self.hydra_context else None)
        if not dists:
            raise SearchSpaceError("the Optuna sweeper has no search space: set hydra.sweeper.params "
                                   "(e.g. an hparams_search config) or give sweep overrides like 'seed=choice(1,2)'")
        return dists, fixed

    def check_search_space(self, dists: Dict[str, Any], fixed: List[str]) -> None:
        """Compose a job config for every probe point and run ``config_check`` on it: a bad key or value
        stops the sweep here, before any job runs."""
        from hydra.utils import get_method

        check = get_method(self.config_check) if self.config_check else None
        for point in probe_points(dists):
            overrides = [*fixed, *(f"{k}={format_value(v)}" for k, v in point.items())]
            try:
                cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
                if check is not None:
                    check(cfg)
            except Exception as e:  # noqa: BLE001 - re-raised with the trial that shows it
                raise SearchSpaceError(
                    f"the search space does not give valid job configs; stopped before any job.\n"
                    f"  trial overrides: {' '.join(overrides)}\n  {type(e).__name__}: {e}") from e

    # ------------------------------------------------------------------ the study
    def sweep(self, arguments: List[str]) -> Any:
        import optuna

        assert self.config is not None and self.launcher is not None and self.hydra_context is not None
        try:
            dists, fixed = self.search_space(arguments)
            self.check_search_space(dists, fixed)
        except SearchSpaceError as e:  # one readable message, no traceback (as the grid-sweep check does)
            text = str(e) if "before any job" in str(e) else f"invalid search space, stopped before any job: {e}"
            print(f"Error: {text}", file=sys.stderr)
            raise SystemExit(2) from None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")  # read by jobs (swept keys -> W&B tags)

        study = optuna.create_study(study_name=self.study_name, storage=self.storage, sampler=self._make_sampler(),
                                    direction=self.direction, load_if_exists=True)
        log.info("Optuna study %s (%s, %s): %d trials over %s", study.study_name, type(study.sampler).__name__,
                 self.direction, self.n_trials, ", ".join(dists))
        jobs: List[Dict[str, Any]] = []
        remaining = self.n_trials
        while remaining > 0:
            batch = min(self.n_jobs, remaining)
            trials = [study.ask(dists) for _ in range(batch)]
            overrides = [[*fixed, *(f"{k}={format_value(t.params[k])}" for k in dists)] for t in trials]
            returns = self.launcher.launch(overrides, initial_job_idx=self.job_idx)
            failures: List[Any] = []
            for trial, ret, ov in zip(trials, returns, overrides):
                try:
                    value = float(ret.return_value)  # re-raises the job's exception when it failed
                    if not math.isfinite(value):
                        raise ValueError(f"the job returned {value}")
                except Exception as e:  # noqa: BLE001 - a failed job is a failed trial
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                    log.warning("trial %d failed: %s: %s", trial.number, type(e).__name__, e)
                    failures.append(ret)
                    value = None
                else:
                    study.tell(trial, value)
                jobs.append({"number": trial.number, "job": self.job_idx, "params": dict(trial.params),
                             "value": value, "overrides": list(ov)})
                self.job_idx += 1
            self._save(sweep_dir, study, jobs, dists)
            if failures and len(failures) / len(returns) > self.max_failure_rate:
                log.error("%d of %d trials failed (max_failure_rate=%s): stopping the sweep",
                          len(failures), len(returns), self.max_failure_rate)
                failures[0].return_value  # raises the first failed job's error
            remaining -= batch
        best = self._save(sweep_dir, study, jobs, dists)
        log.info("best value %s with %s (%s)", best.get("best_value"), best.get("best_params"),
                 sweep_dir / "optimization_results.yaml")
        return study

    def _save(self, sweep_dir: Path, study: Any, jobs: List[Dict[str, Any]], dists: Dict[str, Any]) -> Dict[str, Any]:
        import optuna
        from optuna.distributions import distribution_to_json

        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        results: Dict[str, Any] = {"name": "optuna", "study_name": study.study_name, "direction": self.direction}
        if done:
            results.update(best_params=dict(study.best_trial.params), best_value=float(study.best_value),
                           best_trial=study.best_trial.number)
        results["trials"] = jobs
        # the search space, so `report` can rebuild the study (history, importances, slices) from this file
        results["distributions"] = {k: distribution_to_json(d) for k, d in dists.items()}
        OmegaConf.save(OmegaConf.create(results), sweep_dir / "optimization_results.yaml")
        return results
