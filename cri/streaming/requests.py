"""The sessions an Exec, Attach or PortForward RPC hands to the streaming server, each behind a
single-use token in the URL it returns."""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from runtime.errors import ResourceExhausted

# kubelet's values: a URL is used at once or not at all, and a node never has many waiting.
TOKEN_TTL_S = 60.0
MAX_PENDING = 1000
_TOKEN_BYTES = 24  # 192 random bits, URL-safe base64


@dataclass(frozen=True)
class ExecRequest:
    container_id: str
    command: tuple[str, ...]
    tty: bool
    stdin: bool
    stdout: bool
    stderr: bool


@dataclass(frozen=True)
class AttachRequest:
    container_id: str
    tty: bool
    stdin: bool
    stdout: bool
    stderr: bool


@dataclass(frozen=True)
class PortForwardRequest:
    sandbox_id: str
    # Empty: the client names the ports (SPDY headers or the WebSocket URL).
    ports: tuple[int, ...]


StreamRequest = ExecRequest | AttachRequest | PortForwardRequest

PATHS: dict[type[StreamRequest], str] = {
    ExecRequest: "exec",
    AttachRequest: "attach",
    PortForwardRequest: "portforward",
}


class RequestCache:
    """Requests waiting for their client, by token; a token works once, within its TTL."""

    def __init__(
        self,
        ttl_s: float = TOKEN_TTL_S,
        max_pending: int = MAX_PENDING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl_s = ttl_s
        self._max_pending = max_pending
        self._clock = clock
        # Insertion order is expiry order: the TTL is the same for all.
        self._pending: OrderedDict[str, tuple[float, StreamRequest]] = OrderedDict()

    def insert(self, request: StreamRequest) -> str:
        self._expire()
        if len(self._pending) >= self._max_pending:
            raise ResourceExhausted(
                f"{self._max_pending} streaming requests are waiting for their clients; "
                "try again later"
            )
        token = secrets.token_urlsafe(_TOKEN_BYTES)
        self._pending[token] = (self._clock() + self._ttl_s, request)
        return token

    def consume(self, token: str) -> StreamRequest | None:
        """The request behind token, which is then spent; None if unknown, used or expired."""
        self._expire()
        entry = self._pending.pop(token, None)
        return entry[1] if entry is not None else None

    def __len__(self) -> int:
        self._expire()
        return len(self._pending)

    def _expire(self) -> None:
        now = self._clock()
        while self._pending:
            token, (deadline, _) = next(iter(self._pending.items()))
            if deadline > now:
                return
            del self._pending[token]
