"""The RPCs Moorage does not answer yet: UNIMPLEMENTED, naming the method. Every other RPC
of the proto has a handler, which mypy checks against the generated abstract servicers."""

from __future__ import annotations

from cri.handlers import Context
from cri.proto import api_pb2 as pb
from runtime.errors import Unimplemented

SERVICE = "runtime.v1.RuntimeService"


def _unimplemented(method: str) -> Unimplemented:
    return Unimplemented(f"{SERVICE}/{method} is not implemented by moorage yet")


class CheckpointRpcs:
    async def CheckpointContainer(
        self, request: pb.CheckpointContainerRequest, context: Context
    ) -> pb.CheckpointContainerResponse:
        raise _unimplemented("CheckpointContainer")

    async def CheckpointPod(
        self, request: pb.CheckpointPodRequest, context: Context
    ) -> pb.CheckpointPodResponse:
        raise _unimplemented("CheckpointPod")

    async def RestorePod(
        self, request: pb.RestorePodRequest, context: Context
    ) -> pb.RestorePodResponse:
        raise _unimplemented("RestorePod")
