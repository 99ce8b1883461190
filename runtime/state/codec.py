"""JSON encoding of the model dataclasses for the state store.

Rows hold one JSON document per object, so adding a field to a dataclass needs no schema
migration: decode fills missing fields from their defaults.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import types
import typing
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

T = TypeVar("T")


def to_json(obj: object) -> str:
    return json.dumps(_plain(obj), separators=(",", ":"), sort_keys=True)


def from_json(cls: type[T], text: str) -> T:
    return typing.cast(T, _decode(cls, json.loads(text)))


def _plain(value: object) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _decode(tp: Any, raw: Any) -> Any:
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if raw is None:
            return None
        (inner,) = [a for a in get_args(tp) if a is not type(None)]
        return _decode(inner, raw)
    if origin is list:
        (item,) = get_args(tp)
        return [_decode(item, v) for v in raw]
    if origin is dict:
        _, val = get_args(tp)
        return {k: _decode(val, v) for k, v in raw.items()}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(raw)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        hints = get_type_hints(tp)
        names = {f.name for f in dataclasses.fields(tp) if f.init}
        return tp(**{k: _decode(hints[k], v) for k, v in raw.items() if k in names})
    return raw
