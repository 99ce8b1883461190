"""Enum lookups that turn an unknown wire value into InvalidArgument naming the field."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from runtime.errors import InvalidArgument


def enum_value(table: Mapping[Any, Any], value: int, field: str) -> Any:
    try:
        return table[value]
    except KeyError:
        raise InvalidArgument(f"{field}: unknown value {value}") from None
