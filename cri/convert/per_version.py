"""Conversions run once per object version, for the answers kubelet polls every second.

The stores never change an object: every update replaces it with a new frozen one. So the
message built for an object stays right for as long as the object lives, and is dropped
with it (a weak reference's callback), never served for a newer version.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from typing import TypeVar

from google.protobuf.message import Message

T = TypeVar("T")
M = TypeVar("M", bound=Message)


def per_version(build: Callable[[T], M]) -> Callable[[T], M]:
    """build(obj), built once per obj. The message is shared: callers hand it to a message
    constructor or a repeated field (which copy it) and never change it."""
    built: dict[int, M] = {}

    @functools.wraps(build)
    def cached(obj: T) -> M:
        key = id(obj)
        message = built.get(key)
        if message is None:
            message = build(obj)
            built[key] = message
            # Runs before obj's id can be reused by another object.
            weakref.finalize(obj, built.pop, key, None)
        return message

    return cached
