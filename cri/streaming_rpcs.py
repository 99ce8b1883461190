"""Exec, Attach and PortForward: each checks its request and answers with a single-use URL on
the streaming server, where the client then upgrades to SPDY or WebSocket."""

from __future__ import annotations

from cri.convert import streaming as convert
from cri.convert.containers import container_id
from cri.handlers import Context, Handlers
from cri.proto import api_pb2 as pb
from cri.streaming.requests import AttachRequest, ExecRequest, PortForwardRequest
from runtime.errors import Unavailable


class StreamingRpcs(Handlers):
    async def Exec(self, request: pb.ExecRequest, context: Context) -> pb.ExecResponse:
        container = self.runtime.streams.streamable(container_id(request))
        return pb.ExecResponse(url=self._url(convert.exec_request_from_proto(request, container)))

    async def Attach(self, request: pb.AttachRequest, context: Context) -> pb.AttachResponse:
        container = self.runtime.streams.streamable(container_id(request))
        url = self._url(convert.attach_request_from_proto(request, container))
        return pb.AttachResponse(url=url)

    async def PortForward(
        self, request: pb.PortForwardRequest, context: Context
    ) -> pb.PortForwardResponse:
        sandbox = self.runtime.streams.forwardable(convert.sandbox_id(request))
        url = self._url(convert.port_forward_request_from_proto(request, sandbox.id))
        return pb.PortForwardResponse(url=url)

    def _url(self, request: ExecRequest | AttachRequest | PortForwardRequest) -> str:
        if self.streaming is None:
            raise Unavailable("the streaming server is not running")
        return self.streaming.url_for(request)
