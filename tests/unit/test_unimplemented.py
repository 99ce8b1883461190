"""Every RPC of the vendored proto has a handler; only the checkpoint group answers
UNIMPLEMENTED; a method no servicer knows still goes through the interceptor."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from cri.image_service import ImageService
from cri.interceptor import CallInterceptor
from cri.proto import api_pb2 as pb
from cri.proto import api_pb2_grpc
from cri.runtime_service import RuntimeService
from cri.unimplemented import CheckpointRpcs
from metrics.operations import REGISTRY
from runtime.errors import Unimplemented

SERVICERS = {
    "RuntimeService": (RuntimeService, api_pb2_grpc.RuntimeServiceServicer),
    "ImageService": (ImageService, api_pb2_grpc.ImageServiceServicer),
}


@pytest.mark.parametrize(
    ("service", "method"),
    [(s.name, m.name) for s in pb.DESCRIPTOR.services_by_name.values() for m in s.methods],
)
def test_every_rpc_of_the_proto_has_a_moorage_handler(service: str, method: str) -> None:
    ours, generated = SERVICERS[service]

    # The generated base answers UNIMPLEMENTED outside the interceptor's error mapping.
    assert getattr(ours, method) is not getattr(generated, method)


@pytest.mark.parametrize(
    ("method", "request_type"),
    [
        ("CheckpointContainer", pb.CheckpointContainerRequest),
        ("CheckpointPod", pb.CheckpointPodRequest),
        ("RestorePod", pb.RestorePodRequest),
    ],
)
async def test_checkpoint_rpcs_raise_unimplemented_naming_the_method(
    method: str, request_type: type
) -> None:
    handler = getattr(CheckpointRpcs(), method)

    with pytest.raises(Unimplemented, match=rf"^runtime.v1.RuntimeService/{method} is not"):
        await handler(request_type(), None)


def _count(method: str) -> float:
    value = REGISTRY.get_sample_value("moorage_cri_requests_total", {"method": method})
    return value or 0.0


@pytest.fixture
async def served_socket(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    # A unix socket path must stay under 108 bytes: pytest's tmp_path can be longer.
    address = f"unix://{tmp_path_factory.mktemp('s')}/g.sock"
    server = grpc.aio.server(interceptors=[CallInterceptor()])
    server.add_insecure_port(address)
    await server.start()
    try:
        yield address
    finally:
        await server.stop(None)


async def test_a_method_no_servicer_has_is_answered_and_counted_by_the_interceptor(
    served_socket: str,
) -> None:
    before = _count("FrobnicatePod")

    async with grpc.aio.insecure_channel(served_socket) as channel:
        call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            "/runtime.v1.RuntimeService/FrobnicatePod"
        )
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await call(b"")

    assert failure.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "runtime.v1.RuntimeService/FrobnicatePod" in (failure.value.details() or "")
    assert _count("FrobnicatePod") == before + 1
