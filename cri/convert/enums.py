"""Enum lookups that turn an unknown wire value into InvalidArgument naming the field."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from runtime.errors import InvalidArgument

K = TypeVar("K")
T = TypeVar("T")


def enum_value(table: Mapping[K, T], value: K, field: str) -> T:
    try:
        return table[value]
    except KeyError:
        raise InvalidArgument(f"{field}: unknown value {value}") from None
