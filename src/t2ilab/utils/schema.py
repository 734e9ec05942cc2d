"""Typed schemas of the config groups users override most (trainer, data, encoder, model per family,
sampling, metrics), checked right after composition, before any data, model or W&B work.

The checker itself (and why it is not Hydra's structured configs) is utils/typecheck.py. Keys a schema
does not list stay free-form (Hydra already rejects unknown keys without ``+``).
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Union, Optional

from omegaconf import DictConfig, ListConfig, OmegaConf

from t2ilab.utils import model_schema
from t2ilab.utils.typecheck import check_node, choices, conforms, describe, option


# ---------------------------------------------------------------- group schemas
@dataclasses.dataclass
class TrainerSchema:
    max_steps: int = option(20000, ge=1)
    max_epochs: int = option(-1)
    val_check_interval: Optional[float] = option(1000)
    limit_val_batches: Optional[float] = option(8)
    log_every_n_steps: int = option(25, ge=1)
    gradient_clip_val: Optional[float] = option(1.0, ge=0)
    accumulate_grad_batches: int = option(1, ge=1)
    num_nodes: int = option(1, ge=1)
    enable_progress_bar: bool = option("false")
    # Lightning's precision strings (lightning.fabric.connector._PRECISION_INPUT_STR) + auto (utils/fast_paths.py)
    precision: Union[int, choices("Precision", ("auto", "32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true",  # type: ignore[valid-type]
                                               "64-true", "transformer-engine", "transformer-engine-float16",
                                               "32", "16", "64", "bf16"))] = option("32-true")


@dataclasses.dataclass
class DataSchema:
    image_size: int = option(32, ge=4)
    channels: int = option(3, ge=1)
    batch_size: int = option(64, ge=1)
    num_workers: int = option(0, ge=0)
    pin_memory: bool = option("false")
    seed: int = option(0)
    condition_source: choices("ConditionSource", ("text", "image_embedding")) = option("image_embedding")  # type: ignore[valid-type]
    # shapes
    num_train: int = option(20000, ge=1)
    num_val: int = option(1000, ge=1)
    num_test: int = option(1000, ge=1)
    max_shapes: int = option(2, ge=1)
    two_shape_prob: float = option(0.3, ge=0, le=1)
    supersample: int = option(4, ge=1)
    # class prompts / caption folders
    resize_mode: choices("ResizeMode", ("pad", "resize")) = option("pad")  # type: ignore[valid-type]
    val_size: int = option(5000, ge=1)
    limit_train: Optional[int] = option(5000, ge=1)
    val_fraction: float = option(0.05, gt=0, lt=1)


@dataclasses.dataclass
class EncoderSchema:
    model_name: str = option("ViT-B-32")
    pretrained: Optional[str] = option("laion2b_s34b_b79k")
    checkpoint_path: Optional[str] = option("/path/open_clip.bin")
    random_init: bool = option("false")
    seed: int = option(0)
    batch_size: int = option(256, ge=1)
    dim: Optional[int] = option(512, ge=1)
    # hf_text (encoders/hf_text.py; the tuple repeats hf_text.POOLINGS: importing it would load transformers)
    model_name_or_path: str = option("sentence-transformers/all-MiniLM-L6-v2")
    revision: Optional[str] = option("main")
    pooling: choices("Pooling", ("mean", "cls")) = option("mean")  # type: ignore[valid-type]
    normalize: bool = option("true")
    max_length: Optional[int] = option(77)
    device: str = option("cpu")


AutoBool = Union[bool, choices("Auto", ("auto",))]  # type: ignore[misc]


@dataclasses.dataclass
class PerfSchema:
    channels_last: AutoBool = option("false")  # type: ignore[valid-type]
    compile: AutoBool = option("true")  # type: ignore[valid-type]
    optimizer_impl: choices("OptimizerImpl", ("auto", "fused", "foreach", "loop")) = option("fused")  # type: ignore[valid-type]
    foreach_ema: bool = option("true")
    data_on_device: AutoBool = option("false")  # type: ignore[valid-type]
    sync_free_guard: AutoBool = option("true")  # type: ignore[valid-type]


def _values(node: DictConfig, schema: type) -> dict[str, Any]:
    """The schema's fields of a config node as plain values, resolved one by one (a field whose
    interpolation cannot be resolved outside a Hydra run, like ``${hydra:...}``, is skipped)."""
    hints, out = typing.get_type_hints(schema), {}
    for f in dataclasses.fields(schema):
        if f.name not in node or OmegaConf.is_missing(node, f.name):
            continue
        try:
            v = node[f.name]
            if isinstance(v, DictConfig) and dataclasses.is_dataclass(hints[f.name]):
                v = _values(v, hints[f.name])
            elif isinstance(v, (DictConfig, ListConfig)):
                v = OmegaConf.to_container(v, resolve=True)
        except Exception:  # noqa: BLE001 - unresolvable here; checked where it is used
            continue
        out[f.name] = v
    return out


def validate(cfg: DictConfig) -> None:
    """Raise one ValueError listing every wrong type / unknown choice in the composed config."""
    from t2ilab.evaluation.settings import MetricsSettings

    errors: list[str] = []
    top = {"seed": (int, 4), "num_per_prompt": (int, 4), "batch_size": (int, 4), "eval_after": (AutoBool, "false"),
           "sample_after": (bool, "false"), "skip_complete": (bool, "false")}
    for key, (tp, example) in top.items():
        if key in cfg and not conforms(tp, cfg[key]):
            errors.append(f"  {key}={cfg[key]!r} ({type(cfg[key]).__name__}) must be {describe(tp)}, e.g. {key}={example}")
    groups: list[tuple[str, type | None]] = [("trainer", TrainerSchema), ("data", DataSchema),
                                             ("encoder", EncoderSchema), ("metrics", MetricsSettings),
                                             ("perf", PerfSchema)]
    for group, schema in groups:
        node = cfg.get(group)
        if schema is None or not isinstance(node, DictConfig):
            continue
        check_node(_values(node, schema), schema, group + ".", errors)
    model = cfg.get("model") if isinstance(cfg.get("model"), DictConfig) else None
    schema = model_schema.schema_for(str(model.get("_target_"))) if model is not None else None
    if schema is not None:  # derived from the module's signature (utils/model_schema.py)
        model_schema.check_target_node({**_values(model, schema), "_target_": str(model._target_)}, "model.", errors)
    if errors:
        raise ValueError("wrong config value(s), stopped before any work:\n" + "\n".join(errors))


def check_sampling(sampling: Any, model: Any, key: str = "sampling") -> None:
    """Check generate() options given on the command line (``sampling=...`` of sample / roundtrip,
    ``metrics.sampling``) against the family's sampling schema, once the checkpoint says which family it is:
    the same types and ranges a training's ``model.sampling`` gets. Unknown options are named with the valid ones."""
    if not sampling:
        return
    if not isinstance(sampling, dict):
        raise ValueError(f"{key}={sampling!r} must be a mapping of generate() options, e.g. {key}={{num_steps: 50}}")
    schema = model_schema.schema_for(f"{type(model).__module__}.{type(model).__qualname__}")
    node = typing.get_type_hints(schema).get("sampling") if schema is not None else None
    errors: list[str] = []
    valid = list(getattr(model, "sampling_keys", ()))
    unknown = sorted(k for k in sampling if valid and k not in valid)
    if unknown:
        errors.append(f"  {key}: unknown option(s) {', '.join(unknown)} for a {getattr(model, 'family', 'model')} "
                      f"checkpoint; valid: {', '.join(valid)}")
    if node is not None and dataclasses.is_dataclass(node):
        check_node({k: v for k, v in sampling.items() if k not in unknown}, node, key + ".", errors)
    if not errors and hasattr(model, "check_sampling"):  # the family's rules across options (a guide that loads)
        try:
            model.check_sampling({**getattr(model, "sampling_defaults", {}), **sampling})
        except ValueError as e:
            errors.append(f"  {str(e).replace('sampling.', key + '.')}")
    if errors:
        raise ValueError("wrong sampling option(s), stopped before any sample was drawn:\n" + "\n".join(errors))
