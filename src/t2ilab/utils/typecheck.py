"""The strict checker behind every typed config check (utils/schema.py, utils/model_schema.py,
evaluation/settings.py): schema fields with an example and a range (:func:`option`), and the check of plain
values against them. Imports nothing of t2ilab, so the schema modules never import each other in a circle.

Why dataclasses + our own strict checker instead of Hydra ConfigStore structured configs: the YAML
tree stays the one source of defaults (with its comments), typed nodes would hand ``Enum`` objects
to the modules and to saved configs, and OmegaConf's own nodes accept strings for numbers
(``"100"`` for an int), which is how a bad value used to reach Lightning. Here a wrong type or an
unknown choice names the key, the value, what is expected and an example; choices are ``Enum``s
built from the modules' own tuples (one list, no second check in the modules).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import types
import typing
from enum import Enum
from typing import Any, Callable


@dataclasses.dataclass(frozen=True)
class Range:
    """``Annotated[float, Range(ge=0, lt=1)]`` in a constructor signature: the allowed range of a number option
    (the one declaration of it; utils/model_schema.py reads it for the config check)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None


@dataclasses.dataclass(frozen=True)
class OneOf:
    """``Annotated[str, OneOf(SCHEDULES)]`` in a constructor signature: a closed set of string values."""

    values: tuple[str, ...]

    def __init__(self, values: Any) -> None:
        object.__setattr__(self, "values", tuple(str(v) for v in values))


def choices(name: str, values: Any) -> type[Enum]:
    """An Enum whose member names and values are the given strings (the schema form of a choice)."""
    return Enum(name, {str(v): str(v) for v in values})


def describe(tp: Any) -> str:
    """Human form of a schema type, for messages."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return " or ".join(describe(a) for a in inner) + (" or null" if len(inner) < len(args) else "")
    if origin in (list, tuple, collections.abc.Sequence):
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
    if origin in (list, tuple, collections.abc.Sequence):
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
            hint = _example_hint(key, f.metadata.get("example"))
            errors.append(f"  {key}={v!r} ({type(v).__name__}) must be {describe(tp)}{hint}")
        elif (bad := out_of_range(v, f.metadata.get("range"))) is not None:
            hint = _example_hint(key, f.metadata.get("example"))
            errors.append(f"  {key}={v!r} is out of range: must be {bad}{hint}")
        elif v is not None and (check := f.metadata.get("check")) is not None and (why := check(v)) is not None:
            errors.append(f"  {key}={v!r} {why}{_example_hint(key, f.metadata.get('example'))}")


def _example_hint(key: str, example: Any) -> str:
    """``, e.g. key=value`` in the command-line spelling (true/false, not True/False); '' without an example."""
    if example is None:
        return ""
    text = str(example).lower() if isinstance(example, bool) else str(example)
    return f", e.g. {key}={text}"


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


def option(example: Any, tp_default: Any = dataclasses.MISSING, *, ge: float | None = None, gt: float | None = None,
        le: float | None = None, lt: float | None = None, check: Callable[[Any], str | None] | None = None) -> Any:
    """A schema field: an example for messages and, for numbers, the allowed range (the one declaration of
    it: train, sample, eval, the multirun pre-launch check and the Optuna search-space check all read it).
    ``check(value)`` -> what is wrong with a well-typed, non-null value (None = fine), for rules a range
    cannot say."""
    meta: dict[str, Any] = {"example": example}
    if check is not None:
        meta["check"] = check
    if any(b is not None for b in (ge, gt, le, lt)):
        meta["range"] = (gt if gt is not None else ge, lt if lt is not None else le, gt is not None, lt is not None)
    return dataclasses.field(default=tp_default, metadata=meta)


def setting(default: Any, *, example: Any = None, ge: float | None = None, gt: float | None = None,
            le: float | None = None, lt: float | None = None, check: Callable[[Any], str | None] | None = None) -> Any:
    """A field whose default is also its example (``example`` when the default is not a good one)."""
    return option(default if example is None else example, default, ge=ge, gt=gt, le=le, lt=lt, check=check)
