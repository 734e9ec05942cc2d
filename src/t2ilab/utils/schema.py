"""Typed schemas of the config groups users override most (trainer, data, encoder, model per family,
sampling, metrics), checked right after composition, before any data, model or W&B work.

Why dataclasses + our own strict checker instead of Hydra ConfigStore structured configs: the YAML
tree stays the one source of defaults (with its comments), typed nodes would hand ``Enum`` objects
to the modules and to saved configs, and OmegaConf's own nodes accept strings for numbers
(``"100"`` for an int), which is how a bad value used to reach Lightning. Here a wrong type or an
unknown choice names the key, the value, what is expected and an example; choices are ``Enum``s
built from the modules' own tuples (one list, no second check in the modules). Keys a schema does
not list stay free-form (Hydra already rejects unknown keys without ``+``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from enum import Enum
from typing import Any, Union, Optional

from omegaconf import DictConfig, ListConfig, OmegaConf


def choices(name: str, values: Any) -> type[Enum]:
    """An Enum whose member names and values are the given strings (the schema form of a choice)."""
    return Enum(name, {str(v): str(v) for v in values})


# ---------------------------------------------------------------- strict type check of plain values
def describe(tp: Any) -> str:
    """Human form of a schema type, for messages."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return " or ".join(describe(a) for a in inner) + (" or null" if len(inner) < len(args) else "")
    if origin in (list, tuple):
        return f"a list of {describe(args[0])}" if args else "a list"
    if origin is dict:
        return "a mapping"
    if isinstance(tp, type) and issubclass(tp, Enum):
        return "one of " + ", ".join(m.value for m in tp)
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))


def conforms(tp: Any, v: Any) -> bool:
    """Whether plain value ``v`` has schema type ``tp`` (bool is not a number, str is not a number)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(conforms(a, v) for a in args)
    if tp is type(None):
        return v is None
    if origin in (list, tuple):
        return isinstance(v, (list, tuple)) and (not args or all(conforms(args[0], x) for x in v))
    if origin is dict:
        return isinstance(v, dict)
    if isinstance(tp, type) and issubclass(tp, Enum):
        return isinstance(v, str) and v in {m.value for m in tp}
    if tp is float:
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if tp is int:
        return isinstance(v, int) and not isinstance(v, bool)
    return isinstance(v, tp)


def check_node(values: Any, schema: type, prefix: str, errors: list[str]) -> None:
    """Append one message per field of ``schema`` whose value in ``values`` (a plain dict) is wrong."""
    if not isinstance(values, dict):
        errors.append(f"  {prefix.rstrip('.')}={values!r} must be a mapping of options")
        return
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        if f.name not in values:
            continue
        tp, v, key = hints[f.name], values[f.name], prefix + f.name
        if dataclasses.is_dataclass(tp):
            if v is not None:
                check_node(v, tp, key + ".", errors)
        elif not conforms(tp, v) and not (isinstance(v, str) and v == "???"):
            example = f.metadata.get("example")
            hint = f", e.g. {key}={example}" if example is not None else ""
            errors.append(f"  {key}={v!r} ({type(v).__name__}) must be {describe(tp)}{hint}")
        elif (bad := out_of_range(v, f.metadata.get("range"))) is not None:
            example = f.metadata.get("example")
            hint = f", e.g. {key}={example}" if example is not None else ""
            errors.append(f"  {key}={v!r} is out of range: must be {bad}{hint}")


def out_of_range(v: Any, bounds: tuple | None) -> str | None:
    """The allowed range as text when number ``v`` lies outside ``bounds`` = (low, high, low_open, high_open)
    (None = unbounded on that side), else None. Non-numbers (null, "auto") are not range-checked."""
    if bounds is None or isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    low, high, low_open, high_open = bounds
    ok = (low is None or (v > low if low_open else v >= low)) and (high is None or (v < high if high_open else v <= high))
    if ok:
        return None
    if high is None:
        return f"{'>' if low_open else '>='} {low:g}"
    if low is None:
        return f"{'<' if high_open else '<='} {high:g}"
    return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


def _ex(example: Any, tp_default: Any = dataclasses.MISSING, *, ge: float | None = None, gt: float | None = None,
        le: float | None = None, lt: float | None = None) -> Any:
    """A schema field: an example for messages and, for numbers, the allowed range (the one declaration of
    it: train, sample, eval, the multirun pre-launch check and the Optuna search-space check all read it)."""
    meta: dict[str, Any] = {"example": example}
    if any(b is not None for b in (ge, gt, le, lt)):
        meta["range"] = (gt if gt is not None else ge, lt if lt is not None else le, gt is not None, lt is not None)
    return dataclasses.field(default=tp_default, metadata=meta)


# ---------------------------------------------------------------- group schemas
@dataclasses.dataclass
class TrainerSchema:
    max_steps: int = _ex(20000, ge=1)
    max_epochs: int = _ex(-1)
    val_check_interval: Optional[float] = _ex(1000)
    limit_val_batches: Optional[float] = _ex(8)
    log_every_n_steps: int = _ex(25, ge=1)
    gradient_clip_val: Optional[float] = _ex(1.0, ge=0)
    accumulate_grad_batches: int = _ex(1, ge=1)
    num_nodes: int = _ex(1, ge=1)
    enable_progress_bar: bool = _ex("false")


@dataclasses.dataclass
class DataSchema:
    image_size: int = _ex(32, ge=4)
    channels: int = _ex(3, ge=1)
    batch_size: int = _ex(64, ge=1)
    num_workers: int = _ex(0, ge=0)
    pin_memory: bool = _ex("false")
    seed: int = _ex(0)
    condition_source: choices("ConditionSource", ("text", "image_embedding")) = _ex("image_embedding")  # type: ignore[valid-type]
    # shapes
    num_train: int = _ex(20000, ge=1)
    num_val: int = _ex(1000, ge=1)
    num_test: int = _ex(1000, ge=1)
    max_shapes: int = _ex(2, ge=1)
    two_shape_prob: float = _ex(0.3, ge=0, le=1)
    supersample: int = _ex(4, ge=1)
    # class prompts / caption folders
    resize_mode: choices("ResizeMode", ("pad", "resize")) = _ex("pad")  # type: ignore[valid-type]
    val_size: int = _ex(5000, ge=1)
    limit_train: Optional[int] = _ex(5000, ge=1)
    val_fraction: float = _ex(0.05, gt=0, lt=1)


@dataclasses.dataclass
class EncoderSchema:
    model_name: str = _ex("ViT-B-32")
    pretrained: Optional[str] = _ex("laion2b_s34b_b79k")
    checkpoint_path: Optional[str] = _ex("/path/open_clip.bin")
    random_init: bool = _ex("false")
    seed: int = _ex(0)
    batch_size: int = _ex(256, ge=1)
    dim: Optional[int] = _ex(512, ge=1)
    # hf_text (encoders/hf_text.py; the tuple repeats hf_text.POOLINGS: importing it would load transformers)
    model_name_or_path: str = _ex("sentence-transformers/all-MiniLM-L6-v2")
    revision: Optional[str] = _ex("main")
    pooling: choices("Pooling", ("mean", "cls")) = _ex("mean")  # type: ignore[valid-type]
    normalize: bool = _ex("true")
    max_length: Optional[int] = _ex(77)
    device: str = _ex("cpu")


AutoBool = Union[bool, choices("Auto", ("auto",))]  # type: ignore[misc]


@dataclasses.dataclass
class PerfSchema:
    channels_last: AutoBool = _ex("false")  # type: ignore[valid-type]
    compile: AutoBool = _ex("true")  # type: ignore[valid-type]
    optimizer_impl: choices("OptimizerImpl", ("auto", "fused", "foreach", "loop")) = _ex("fused")  # type: ignore[valid-type]
    foreach_ema: bool = _ex("true")
    data_on_device: AutoBool = _ex("false")  # type: ignore[valid-type]
    sync_free_guard: AutoBool = _ex("true")  # type: ignore[valid-type]


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


def model_schemas() -> dict[str, type]:
    """``model._target_`` -> schema (imported lazily: the choice lists live in the model modules)."""
    from t2ilab.utils import model_schema

    return model_schema.BY_TARGET


def validate(cfg: DictConfig) -> None:
    """Raise one ValueError listing every wrong type / unknown choice in the composed config."""
    from t2ilab.evaluation.settings import MetricsSettings

    errors: list[str] = []
    top = {"seed": int, "num_per_prompt": int, "batch_size": int}
    for key, tp in top.items():
        if key in cfg and not conforms(tp, cfg[key]):
            errors.append(f"  {key}={cfg[key]!r} ({type(cfg[key]).__name__}) must be {describe(tp)}, e.g. {key}=4")
    groups: list[tuple[str, type | None]] = [("trainer", TrainerSchema), ("data", DataSchema),
                                             ("encoder", EncoderSchema), ("metrics", MetricsSettings),
                                             ("perf", PerfSchema)]
    model = cfg.get("model") if isinstance(cfg.get("model"), DictConfig) else None
    if model is not None:
        groups.append(("model", model_schemas().get(str(model.get("_target_")))))
    for group, schema in groups:
        node = cfg.get(group)
        if schema is None or not isinstance(node, DictConfig):
            continue
        check_node(_values(node, schema), schema, group + ".", errors)
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
    schema = model_schemas().get(f"{type(model).__module__}.{type(model).__qualname__}")
    node = typing.get_type_hints(schema).get("sampling") if schema is not None else None
    errors: list[str] = []
    valid = list(getattr(model, "sampling_keys", ()))
    unknown = sorted(k for k in sampling if valid and k not in valid)
    if unknown:
        errors.append(f"  {key}: unknown option(s) {', '.join(unknown)} for a {getattr(model, 'family', 'model')} "
                      f"checkpoint; valid: {', '.join(valid)}")
    if node is not None and dataclasses.is_dataclass(node):
        check_node({k: v for k, v in sampling.items() if k not in unknown}, node, key + ".", errors)
    if errors:
        raise ValueError("wrong sampling option(s), stopped before any sample was drawn:\n" + "\n".join(errors))
