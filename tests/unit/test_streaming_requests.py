"""Single-use, expiring, bounded tokens for streaming requests."""

from __future__ import annotations

import pytest

from cri.streaming.requests import ExecRequest, PortForwardRequest, RequestCache
from runtime.errors import ResourceExhausted

EXEC = ExecRequest("c1", ("sh",), tty=False, stdin=False, stdout=True, stderr=True)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_token_gives_its_request_once() -> None:
    cache = RequestCache()
    token = cache.insert(EXEC)

    assert cache.consume(token) == EXEC
    assert cache.consume(token) is None


def test_tokens_are_long_random_and_url_safe() -> None:
    cache = RequestCache()
    tokens = {cache.insert(EXEC) for _ in range(100)}

    assert len(tokens) == 100
    for token in tokens:
        assert len(token) >= 22  # >= 128 bits of base64
        assert token.replace("-", "").replace("_", "").isalnum()


def test_a_token_expires_after_its_ttl() -> None:
    clock = Clock()
    cache = RequestCache(ttl_s=60, clock=clock)
    early, late = cache.insert(EXEC), None
    clock.now += 30
    late = cache.insert(PortForwardRequest("p1", ()))
    clock.now += 31

    assert cache.consume(early) is None
    assert cache.consume(late) == PortForwardRequest("p1", ())


def test_at_most_max_pending_wait_and_expired_ones_make_room() -> None:
    clock = Clock()
    cache = RequestCache(ttl_s=60, max_pending=2, clock=clock)
    cache.insert(EXEC)
    cache.insert(EXEC)

    with pytest.raises(ResourceExhausted):
        cache.insert(EXEC)
    clock.now += 61
    cache.insert(EXEC)
    assert len(cache) == 1


def test_unknown_tokens_give_nothing() -> None:
    assert RequestCache().consume("nope") is None
