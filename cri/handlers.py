"""What every group of RPC handlers holds."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc

from cri.config import Config
from runtime.agent import Runtime

if TYPE_CHECKING:
    from cri.streaming.server import StreamingServer

# Handlers read no metadata and set no trailers: the interceptor maps errors to status codes.
Context = grpc.aio.ServicerContext[Any, Any]


class Handlers:
    def __init__(
        self, runtime: Runtime, config: Config, streaming: StreamingServer | None = None
    ) -> None:
        self.runtime = runtime
        self.config = config
        # None where no streaming server runs (tests of other RPCs): Exec and co. then fail.
        self.streaming = streaming
