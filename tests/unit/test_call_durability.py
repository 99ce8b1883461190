"""The interceptor answers a call only once the state.db writes it made are committed, and a
write that failed fails the call that made it."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from cri.interceptor import CallInterceptor
from runtime.state.db import StateDB

_SERVICE = "test.Writes"


def _handlers(db: StateDB) -> grpc.GenericRpcHandler:
    async def claim(request: bytes, context: Any) -> bytes:
        # Addresses as the IPAM ledger keeps them; a second claim of one breaks its key.
        for address in request.decode().split(","):
            db.claim(address, "pod")
        return b"claimed"

    return grpc.method_handlers_generic_handler(
        _SERVICE, {"Claim": grpc.unary_unary_rpc_method_handler(claim)}
    )


@pytest.fixture
async def claim(
    db: StateDB, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]]:
    address = f"unix://{tmp_path_factory.mktemp('s')}/g.sock"
    server = grpc.aio.server(interceptors=[CallInterceptor()])
    server.add_generic_rpc_handlers([_handlers(db)])
    server.add_insecure_port(address)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            yield channel.unary_unary(f"/{_SERVICE}/Claim")
    finally:
        await server.stop(None)


def _claimed(db: StateDB) -> set[str]:
    """Read as another process would: a connection of its own, no waiting for the writer."""
    conn = sqlite3.connect(db.path)
    try:
        return {row[0] for row in conn.execute("SELECT address FROM ip_allocations")}
    finally:
        conn.close()


async def test_a_call_that_returned_has_its_rows_on_disk(
    db: StateDB, claim: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]
) -> None:
    addresses = [f"10.0.0.{i}" for i in range(2, 200)]

    assert await claim(",".join(addresses).encode()) == b"claimed"

    assert _claimed(db) == set(addresses)


async def test_a_call_whose_write_failed_answers_internal_naming_state_db(
    db: StateDB, claim: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]
) -> None:
    await claim(b"10.0.0.2")

    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await claim(b"10.0.0.3,10.0.0.2")

    assert failed.value.code() is grpc.StatusCode.INTERNAL
    assert "state.db" in (failed.value.details() or "")
    assert _claimed(db) == {"10.0.0.2", "10.0.0.3"}
