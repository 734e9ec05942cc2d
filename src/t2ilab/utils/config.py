"""Where the config tree lives, and how a composed config is shown and saved."""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path
from typing import Any, Sequence

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def _find_conf_dir() -> Path:
    """T2ILAB_CONF_DIR, else the config tree shipped with the package: ``t2ilab/conf`` is a link to the
    checkout's top-level ``conf/`` (the one source; editable installs follow it) and a copy of it in a
    wheel / ``pip install .`` (package data). Fails with a clear message."""
    env = os.environ.get("T2ILAB_CONF_DIR")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[1] / "conf")  # t2ilab/utils -> t2ilab/conf
    for c in candidates:
        if (c / "train.yaml").is_file():
            return c.resolve()
    raise FileNotFoundError(f"t2ilab config tree not found (looked in {[str(c) for c in candidates]}); "
                            "reinstall t2ilab (`pip install -e .` from the repo or `pip install .`) or set "
                            "T2ILAB_CONF_DIR=/path/to/conf")


CONF_DIR: Path = _find_conf_dir()

TREE_ORDER = ("data", "encoder", "model", "trainer", "callbacks", "logger", "metrics", "paths")


def config_tree(cfg: DictConfig, order: Sequence[str] = TREE_ORDER, resolve: bool = True) -> str:
    """The composed config rendered as a rich tree (plain text), groups in a stable order."""
    from rich.console import Console
    from rich.syntax import Syntax
    from rich.tree import Tree

    tree = Tree("config", guide_style="dim")
    keys = [k for k in order if k in cfg] + [k for k in cfg if k not in order and k != "hydra"]
    for key in keys:
        branch = tree.add(str(key), guide_style="dim")
        value = cfg[key]
        text = OmegaConf.to_yaml(value, resolve=resolve) if isinstance(value, DictConfig) else str(value)
        branch.add(Syntax(text, "yaml", theme="ansi_dark", word_wrap=True))
    buf = io.StringIO()
    Console(file=buf, width=110, force_terminal=False, color_system=None).print(tree)
    return buf.getvalue()


def show_and_save_config(cfg: DictConfig, run_dir: str | Path | None) -> None:
    """Save the config tree (``config_tree.txt``) and the resolved yaml into the run dir and say so in one
    line; ``print_config=true`` also prints the tree (the whole ~200 lines) to the console."""
    text = config_tree(cfg)
    if cfg.get("print_config"):
        print(text, flush=True)
    if run_dir is not None:
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config_tree.txt").write_text(text)
        (run_dir / "config_resolved.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        log.info("config: %s (print_config=true prints it here)", run_dir / "config_tree.txt")


def get_dotted(cfg: Any, dotted: str) -> Any:
    """``cfg["a"]["b"]`` for ``"a.b"`` in a plain (container) config; None where a part is missing."""
    for part in dotted.split("."):
        if not isinstance(cfg, dict) or part not in cfg:
            return None
        cfg = cfg[part]
    return cfg


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> ``{"a.b.c": value}`` (lists are values, not descended into)."""
    if not isinstance(tree, dict):
        return {prefix: tree} if prefix else {}
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        out.update(flatten(v, key) if isinstance(v, dict) and v else {key: v})
    return out
