"""The W&B sweep equivalent of a t2ilab Optuna search, for people who run W&B's own agent.

``sweep_config(cfg, overrides)`` turns the composed train config of ``hparams_search=<name>`` into a W&B sweep
config: the same search space (``hydra.sweeper.params``, parsed by the Optuna sweeper's own parser, so both
search exactly the same values), the same objective (``optimized_metric`` with ``hydra.sweeper.direction``),
``method: bayes``, and a ``command`` that runs one ordinary training per agent call:

    ${env} ${interpreter} -m t2ilab.train hparams_search=<name> <your other overrides> logger=wandb ${args_no_hyphens}

``hparams_search=<name>`` stays in the command: a single run ignores the Optuna sweeper but keeps the
study's evaluation of the final model (``callbacks=eval``, fixed prompts and noise, the objective metric), so
the agent's runs report the metric the sweep optimises. W&B reads the objective from the run summary, which
our logger defines as the best (min / max) value (compat/lightning.WandbLogger).

Mapping (Optuna distribution -> W&B parameter): ``choice`` -> ``values``; ``interval`` -> ``uniform`` (floats),
``int_uniform`` (ints), ``log_uniform_values`` / ``q_log_uniform_values`` with ``q: 1`` under ``tag(log, ...)``;
``range`` -> the explicit ``values`` (W&B has no integer step); plain values -> ``value``.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from t2ilab.sweeps.optuna_sweeper import parse_search_space

# overrides of the converting command that do not belong in the agent's training command
_NOT_FOR_THE_AGENT = ("hydra.sweeper.", "hydra/sweeper", "hydra.launcher.", "hydra/launcher")


class NoSearchSpaceError(ValueError):
    """The composed config has no ``hydra.sweeper.params``."""


def parameter(dist: Any) -> dict[str, Any]:
    """One W&B sweep parameter for an Optuna distribution (see the module docstring)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        return {"values": list(dist.choices)}
    if isinstance(dist, IntDistribution):
        if dist.log:
            return {"distribution": "q_log_uniform_values", "min": dist.low, "max": dist.high, "q": 1}
        if dist.step != 1:
            return {"values": list(range(dist.low, dist.high + 1, dist.step))}
        return {"distribution": "int_uniform", "min": dist.low, "max": dist.high}
    if isinstance(dist, FloatDistribution):
        kind = "log_uniform_values" if dist.log else "uniform"
        return {"distribution": kind, "min": float(dist.low), "max": float(dist.high)}
    raise TypeError(f"no W&B parameter for {type(dist).__name__}")  # pragma: no cover - parse_search_space's types


def probe_overrides(config: dict[str, Any]) -> list[list[str]]:
    """``key=value`` argument lists that put every choice and both ends of every range of the sweep's parameters
    into some agent command (one parameter at a time, the others at their first value): what the converter
    composes and type-checks before writing, as the Optuna sweeper does before its first trial."""
    from t2ilab.sweeps.optuna_sweeper import format_value

    def values(p: dict[str, Any]) -> list[Any]:
        return list(p["values"]) if "values" in p else [p["value"]] if "value" in p else [p["min"], p["max"]]

    params = {k: values(p) for k, p in config["parameters"].items()}
    base = {k: v[0] for k, v in params.items()}
    points = [base, *({**base, k: x} for k, v in params.items() for x in v[1:])]
    return [[f"{k}={format_value(v)}" for k, v in point.items()] for point in points]


def _fixed_value(line: str) -> tuple[str, Any]:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    o = OverridesParser.create().parse_override(line)
    return o.get_key_element(), o.value()


def sweep_config(cfg: Any, overrides: Sequence[str], name: str | None = None) -> dict[str, Any]:
    """The W&B sweep config (a plain dict, YAML-ready) of the composed train config ``cfg`` of
    ``python -m t2ilab.train <overrides>`` (``cfg`` composed with ``return_hydra_config=True``)."""
    from omegaconf import OmegaConf

    params = OmegaConf.select(cfg, "hydra.sweeper.params")
    if not params:
        raise NoSearchSpaceError("the composed config has no search space (hydra.sweeper.params): pass an Optuna "
                                 "search, e.g. hparams_search=diffusion_optuna (conf/hparams_search/)")
    dists, fixed = parse_search_space(OmegaConf.to_container(params, resolve=True))
    parameters = {key: parameter(d) for key, d in dists.items()}
    parameters.update({k: {"value": v} for k, v in map(_fixed_value, fixed)})
    metric = cfg.get("optimized_metric")
    if not metric:
        raise NoSearchSpaceError("the composed config names no objective (optimized_metric); the hparams_search "
                                 "configs set eval/classifier_fd")
    direction = str(OmegaConf.select(cfg, "hydra.sweeper.direction") or "minimize")
    keep = [o for o in overrides if not o.lstrip("+~").startswith(_NOT_FOR_THE_AGENT) and not o.startswith("logger=")]
    out: dict[str, Any] = {
        "method": "bayes",
        "metric": {"name": str(metric), "goal": "maximize" if direction.startswith("max") else "minimize"},
        "parameters": parameters,
        "command": ["${env}", "${interpreter}", "-m", "t2ilab.train", *keep, "logger=wandb", "${args_no_hyphens}"],
    }
    project = OmegaConf.select(cfg, "logger.wandb.project")
    if project:
        out["project"] = str(project)
    if name:
        out["name"] = name
    return out
