"""Write the W&B sweep config of an Optuna search: ``python -m t2ilab.sweeps.to_wandb hparams_search=NAME
[train overrides...] [--out sweep.yaml] [--name NAME]``.

Then ``wandb sweep sweep.yaml`` (prints the sweep id) and ``wandb agent <entity>/<project>/<id>`` on each
machine. The search space, objective and evaluation are the Optuna study's (sweeps/wandb_sweep.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m t2ilab.sweeps.to_wandb", description=__doc__.split("\n\n")[0])
    p.add_argument("overrides", nargs="*", metavar="OVERRIDE",
                   help="train overrides, one of them hparams_search=<name> (e.g. experiment=shapes_diffusion)")
    p.add_argument("--out", default="sweep.yaml", help="where the sweep config goes (default: sweep.yaml)")
    p.add_argument("--name", default=None, help="the sweep's name on W&B")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import yaml
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from t2ilab.sweeps.wandb_sweep import probe_overrides, sweep_config
    from t2ilab.tracking.objective import ObjectiveError, check_trial_config
    from t2ilab.utils.config import CONF_DIR

    fixed = []
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("train", overrides=list(args.overrides), return_hydra_config=True)
            config = sweep_config(cfg, args.overrides, args.name)
            fixed = [a for a in config["command"][4:] if not a.startswith("${")]
            for point in probe_overrides(config):  # every value the agent can pass, composed + checked first
                check_trial_config(compose("train", overrides=[*fixed, *point]))
    except (HydraException, OmegaConfBaseException, ValueError, ObjectiveError) as e:
        where = f" (the agent's command `t2ilab.train {' '.join(fixed)} ...` fails for one of its values)" if fixed else ""
        print(f"Error{where}: {str(e).strip()}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(config, sort_keys=False))
    trials = OmegaConf.select(cfg, "hydra.sweeper.n_trials") or 20
    print(f"wrote {out}: {len(config['parameters'])} parameters, metric {config['metric']['name']} "
          f"({config['metric']['goal']}); next: wandb sweep {out}  then  wandb agent --count {trials} "
          "<entity>/<project>/<sweep id> (on each machine)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
