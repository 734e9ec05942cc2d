"""Schemas of the ``model`` group, derived from the constructors' signatures — not written a second time.

A model option is written once in Python: as a parameter of the module's (or its network's) ``__init__``, with
its type and, where it matters, ``Annotated[..., Range(ge=0, lt=1)]`` (allowed numbers) or ``OneOf(...)``
(a closed set, the tuples of ``t2ilab/choices.py``); its value lives in the YAML. Nested option mappings
that are not constructor calls (``ema``, a family's ``sampling``, the torch optimiser partials) are the small
dataclasses of ``models/options.py``, named in the signature (``ema: Annotated[dict | None, EMAOptions]``) or
by the family's ``sampling_options``.

The signatures are read from the source with ``ast`` — no import — so checking a config still needs no torch
or Lightning (a wrong value is reported in about a second). A node whose ``_target_`` is a t2ilab class
(``model.net``, ``model.generator``) is checked against that class's signature in turn.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Optional, Sequence, Union

from t2ilab import choices as choice_lists
from t2ilab.models import options as option_nodes
from t2ilab.utils.typecheck import OneOf, Range, check_node, choices, option

PACKAGE_DIR = Path(__file__).resolve().parents[1]
LIBRARY_NODES = {"torch.optim.": option_nodes.OptimizerOptions}  # options of a library's class, checked as ours

_NAMESPACE: dict[str, Any] = {
    "int": int, "float": float, "bool": bool, "str": str, "list": list, "dict": dict, "tuple": tuple,
    "Any": Any, "Optional": Optional, "Union": Union, "Annotated": Annotated, "Sequence": Sequence,
    "Callable": Any,  # a partial built from a config node: checked through the node's own ``_target_``
    "Range": Range, "OneOf": OneOf,
    **{k: v for k, v in vars(choice_lists).items() if k.isupper()},
    **{k: v for k, v in vars(option_nodes).items() if isinstance(v, type) and dataclasses.is_dataclass(v)},
}


@dataclasses.dataclass
class _Param:
    annotation: Any
    example: Any


def _source(module: str) -> Path | None:
    if not module.startswith("t2ilab."):
        return None
    path = PACKAGE_DIR.joinpath(*module.split(".")[1:]).with_suffix(".py")
    return path if path.is_file() else None


@functools.lru_cache(maxsize=None)
def _module(module: str) -> tuple[dict[str, ast.ClassDef], dict[str, str]] | None:
    """(classes defined in ``module``, imported name -> dotted origin), from its source."""
    path = _source(module)
    if path is None:
        return None
    tree = ast.parse(path.read_text())
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    imported = {a.asname or a.name: f"{n.module}.{a.name}" for n in tree.body
                if isinstance(n, ast.ImportFrom) and n.module for a in n.names}
    return classes, imported


def _evaluate(node: ast.expr | None) -> Any:
    if node is None:
        return Any
    try:
        return eval(compile(ast.Expression(node), "<annotation>", "eval"), {"__builtins__": {}}, _NAMESPACE)  # noqa: S307
    except Exception:  # noqa: BLE001 - a type we do not check (nn.Module, ...): any value passes
        return Any


def _example(node: ast.expr | None) -> Any:
    try:
        value = ast.literal_eval(node) if node is not None else None
    except ValueError:
        return None
    return list(value) if isinstance(value, tuple) else value


@functools.lru_cache(maxsize=None)
def _params(target: str) -> dict[str, _Param] | None:
    """The options of class ``target`` (its ``__init__`` parameters, a base class's too when it forwards
    ``*args``/``**kwargs``), None when its source cannot be read."""
    module, _, name = target.rpartition(".")
    found = _module(module)
    if found is None or name not in found[0]:
        return None
    classes, imported = found
    cls = classes[name]
    init = next((n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
    own: dict[str, _Param] = {}
    forwards = init is None
    if init is not None:
        a = init.args
        positional = a.posonlyargs + a.args
        defaults = [None] * (len(positional) - len(a.defaults)) + list(a.defaults)
        for arg, default in [*zip(positional, defaults), *zip(a.kwonlyargs, a.kw_defaults)]:
            if arg.arg != "self":
                own[arg.arg] = _Param(_evaluate(arg.annotation), _example(default))
        forwards = a.vararg is not None or a.kwarg is not None
    for stmt in cls.body:  # the family's generate() options: ``sampling_options = DiffusionSampling``
        if (isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Name)
                and any(isinstance(t, ast.Name) and t.id == "sampling_options" for t in stmt.targets)):
            own["sampling"] = _Param(_NAMESPACE.get(stmt.value.id, Any), None)
    inherited: dict[str, _Param] = {}
    if forwards:
        for base in cls.bases:
            if isinstance(base, ast.Name):
                origin = imported.get(base.id) or (f"{module}.{base.id}" if base.id in classes else None)
                inherited = {**(_params(origin) or {} if origin else {}), **inherited}
    return {**inherited, **own}


def _with_choices(tp: Any, one_of: OneOf, name: str) -> Any:
    """``str`` (alone or inside a union) replaced by the Enum of the allowed values."""
    enum = choices(name, one_of.values)
    if tp is str:
        return enum
    if typing.get_origin(tp) in (Union, types.UnionType):
        return Union[tuple(enum if a is str else a for a in typing.get_args(tp))]  # type: ignore[return-value]
    return tp


def _field(name: str, param: _Param) -> tuple[str, Any, Any]:
    tp, bounds = param.annotation, Range()
    if typing.get_origin(tp) is Annotated:
        tp, *extras = typing.get_args(tp)
        for extra in extras:
            if isinstance(extra, Range):
                bounds = extra
            elif isinstance(extra, OneOf):
                tp = _with_choices(tp, extra, name)
            elif isinstance(extra, type) and dataclasses.is_dataclass(extra):
                tp = extra  # a nested mapping with its own schema (models/options.py)
    return name, tp, option(param.example, None, ge=bounds.ge, gt=bounds.gt, le=bounds.le, lt=bounds.lt)


@functools.lru_cache(maxsize=None)
def schema_for(target: str | None) -> type | None:
    """The schema dataclass of a config node with this ``_target_`` (None when it is not ours to check)."""
    if not target:
        return None
    for prefix, schema in LIBRARY_NODES.items():
        if target.startswith(prefix):
            return schema
    params = _params(target)
    if params is None:
        return None
    name = target.rpartition(".")[2] + "Schema"
    return dataclasses.make_dataclass(name, [_field(k, p) for k, p in params.items()])


def check_target_node(values: dict, prefix: str, errors: list[str]) -> None:
    """Check a node against the schema of its ``_target_``, then every nested node with a ``_target_`` that
    the schema does not already describe (``model.net`` -> the UNet's signature)."""
    schema = schema_for(values.get("_target_"))
    if schema is None:
        return
    check_node(values, schema, prefix, errors)
    hints = typing.get_type_hints(schema)
    for key, value in values.items():
        if isinstance(value, dict) and "_target_" in value and not dataclasses.is_dataclass(hints.get(key)):
            check_target_node(value, f"{prefix}{key}.", errors)
