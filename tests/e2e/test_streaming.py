"""Exec, Attach and PortForward end to end: the RPC's URL, then our own SPDY/3.1 and WebSocket
clients against the agent's streaming server and a real container."""

from __future__ import annotations

import asyncio
import functools
import json
import os
from typing import Any
from urllib.parse import urlsplit

import grpc
import pytest

from cri.proto import api_pb2 as pb
from tests.e2e.agent import Agent
from tests.e2e.containers import Pod, container_config, exec_sync, pulled, stop
from tests.e2e.pods import assert_rpc_error
from tests.registry_fixture import LocalRegistry
from tests.streaming.spdy_client import SpdyClient, UpgradeRefused, connect
from tests.streaming.ws_client import ChannelClient, Rejected, WsClient
from tests.waiting import wait_until

TIMEOUT_S = 30


@pytest.fixture
def image(agent: Agent, registry: LocalRegistry) -> str:
    return pulled(agent, registry)


@pytest.fixture
def sleeper(agent: Agent, image: str) -> str:
    return Pod(agent).run(container_config(image, ["sleep", "600"]))


def exec_url(agent: Agent, container_id: str, cmd: list[str], **streams: bool) -> str:
    request = pb.ExecRequest(container_id=container_id, cmd=cmd, **streams)
    return str(agent.runtime.Exec(request).url)


def where(url: str) -> tuple[str, int, str]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port, parts.path


async def spdy_session(url: str, protocols: list[str]) -> SpdyClient:
    host, port, path = where(url)
    client, chosen = await connect(host, port, path, protocols)
    assert chosen == protocols[0]
    return client


async def spdy_exec(
    url: str, *, stdin: bytes | None = None, stderr: bool = True
) -> tuple[bytes, bytes, dict[str, Any]]:
    """stdout, stderr and the v4 status of an exec over SPDY."""
    client = await spdy_session(url, ["v4.channel.k8s.io"])
    try:
        error = await client.open_stream({"streamtype": "error"})
        streams = {}
        if stdin is not None:
            streams["stdin"] = await client.open_stream({"streamtype": "stdin"})
        streams["stdout"] = await client.open_stream({"streamtype": "stdout"})
        if stderr:
            streams["stderr"] = await client.open_stream({"streamtype": "stderr"})
        for stream in (error, *streams.values()):
            await stream.wait_reply()
        if stdin is not None:
            await streams["stdin"].write(stdin)
            await streams["stdin"].close()
        out = await streams["stdout"].read_all()
        err = await streams["stderr"].read_all() if stderr else b""
        status = json.loads(await error.read_all() or b"{}")
    finally:
        await client.close()
    return out, err, status


async def test_exec_over_spdy_returns_output_apart_and_the_exit_code(
    agent: Agent, sleeper: str
) -> None:
    url = exec_url(
        agent, sleeper, ["sh", "-c", "echo out; echo err >&2; exit 7"], stdout=True, stderr=True
    )

    out, err, status = await asyncio.wait_for(spdy_exec(url), TIMEOUT_S)

    assert (out, err) == (b"out\n", b"err\n")
    assert status["status"] == "Failure"
    assert status["reason"] == "NonZeroExitCode"
    assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "7"}]


async def test_exec_over_spdy_echoes_stdin_and_succeeds(agent: Agent, sleeper: str) -> None:
    url = exec_url(agent, sleeper, ["cat"], stdin=True, stdout=True, stderr=True)

    out, _, status = await asyncio.wait_for(spdy_exec(url, stdin=b"hello\n" * 1000), TIMEOUT_S)

    assert out == b"hello\n" * 1000
    assert status["status"] == "Success"


async def test_a_tty_exec_sees_the_clients_terminal_size(agent: Agent, sleeper: str) -> None:
    url = exec_url(agent, sleeper, ["sh", "-c", "stty size"], tty=True, stdout=True, stdin=True)
    client = await spdy_session(url, ["v4.channel.k8s.io"])
    try:
        error = await client.open_stream({"streamtype": "error"})
        stdin = await client.open_stream({"streamtype": "stdin"})
        stdout = await client.open_stream({"streamtype": "stdout"})
        resize = await client.open_stream({"streamtype": "resize"})
        for stream in (error, stdin, stdout, resize):
            await stream.wait_reply()
        await resize.write(json.dumps({"Width": 123, "Height": 45}).encode())

        out = await asyncio.wait_for(stdout.read_all(), TIMEOUT_S)
        status = json.loads(await error.read_all())
    finally:
        await client.close()

    assert out.strip() == b"45 123"
    assert status["status"] == "Success"


async def test_exec_over_websocket_v5_closes_stdin_and_reports_the_code(
    agent: Agent, sleeper: str
) -> None:
    url = exec_url(agent, sleeper, ["sh", "-c", "cat; exit 3"], stdin=True, stdout=True)
    host, port, path = where(url)
    ws = await WsClient.connect(host, port, path, ["v5.channel.k8s.io"])
    channels = ChannelClient(ws)

    await channels.send(0, b"through the socket\n")
    await channels.close_stdin()
    received = await asyncio.wait_for(channels.read_to_end(), TIMEOUT_S)

    assert ws.subprotocol == "v5.channel.k8s.io"
    assert received[1] == b"through the socket\n"
    status = json.loads(received[3])
    assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]
    assert ws.close_code == 1000


async def test_attach_streams_a_running_containers_output(agent: Agent, image: str) -> None:
    pod = Pod(agent)
    container_id = pod.run(
        container_config(image, ["sh", "-c", "while true; do echo tick; sleep 0.1; done"])
    )
    url = agent.runtime.Attach(pb.AttachRequest(container_id=container_id, stdout=True)).url
    host, port, path = where(url)
    ws = await WsClient.connect(host, port, path, ["v4.channel.k8s.io"])
    channels = ChannelClient(ws)

    seen = await asyncio.wait_for(channels.read(1, len(b"tick\ntick\n")), TIMEOUT_S)
    await ws.close()

    assert seen == b"tick\ntick\n"
    assert exec_sync(agent, container_id, ["true"]).exit_code == 0


async def test_attach_with_stdin_reaches_the_containers_process(agent: Agent, image: str) -> None:
    pod = Pod(agent)
    config = container_config(image, ["cat"], stdin=True)
    container_id = pod.run(config)
    url = agent.runtime.Attach(
        pb.AttachRequest(container_id=container_id, stdin=True, stdout=True)
    ).url
    client = await spdy_session(url, ["v4.channel.k8s.io"])
    try:
        error = await client.open_stream({"streamtype": "error"})
        stdin = await client.open_stream({"streamtype": "stdin"})
        stdout = await client.open_stream({"streamtype": "stdout"})
        for stream in (error, stdin, stdout):
            await stream.wait_reply()
        await stdin.write(b"echoed by cat\n")
        await asyncio.wait_for(stdout.wait_received(len(b"echoed by cat\n")), TIMEOUT_S)
        assert await stdout.read() == b"echoed by cat\n"
    finally:
        await client.close()


async def test_port_forward_over_spdy_reaches_a_listener_in_the_pod(
    agent: Agent, image: str
) -> None:
    server = "nc -l -p 8080 -e sh -c 'read line; echo \"pod got $line\"'"
    url = await listening_pod(agent, image, server, 8080)
    client = await spdy_session(url, ["portforward.k8s.io"])
    try:
        error = await client.open_stream({"streamtype": "error", "port": "8080", "requestid": "1"})
        data = await client.open_stream({"streamtype": "data", "port": "8080", "requestid": "1"})
        await error.wait_reply()
        await data.wait_reply()
        await data.write(b"hello\n")
        answer = await asyncio.wait_for(data.read_all(), TIMEOUT_S)
    finally:
        await client.close()

    assert answer == b"pod got hello\n"


async def test_port_forward_to_a_closed_port_reports_on_its_error_stream(agent: Agent) -> None:
    pod = Pod(agent)
    url = agent.runtime.PortForward(pb.PortForwardRequest(pod_sandbox_id=pod.id)).url
    client = await spdy_session(url, ["portforward.k8s.io"])
    try:
        error = await client.open_stream({"streamtype": "error", "port": "9", "requestid": "1"})
        data = await client.open_stream({"streamtype": "data", "port": "9", "requestid": "1"})
        await error.wait_reply()
        await data.wait_reply()
        message = await asyncio.wait_for(error.read_all(), TIMEOUT_S)
    finally:
        await client.close()

    assert b"9" in message and b"refused" in message.lower()


async def test_port_forward_over_websocket_carries_the_port_prefix(
    agent: Agent, image: str
) -> None:
    url = await listening_pod(agent, image, "echo ready | nc -l -p 8081", 8081)
    host, port, path = where(url)
    ws = await WsClient.connect(host, port, f"{path}?port=8081", ["v4.channel.k8s.io"])
    channels = ChannelClient(ws)

    assert await asyncio.wait_for(channels.read(0, 2), TIMEOUT_S) == (8081).to_bytes(2, "little")
    assert await asyncio.wait_for(channels.read(0, 6), TIMEOUT_S) == b"ready\n"
    await ws.close()


async def test_a_token_works_once(agent: Agent, sleeper: str) -> None:
    url = exec_url(agent, sleeper, ["true"], stdout=True)
    await asyncio.wait_for(spdy_exec(url, stderr=False), TIMEOUT_S)

    with pytest.raises(UpgradeRefused) as refused:
        await spdy_session(url, ["v4.channel.k8s.io"])

    assert refused.value.status == 404


async def test_an_unsupported_protocol_is_refused_listing_the_supported(
    agent: Agent, sleeper: str
) -> None:
    url = exec_url(agent, sleeper, ["true"], stdout=True)
    host, port, path = where(url)

    with pytest.raises(UpgradeRefused) as spdy_refused:
        await connect(host, port, path, ["v9.channel.k8s.io"])
    url = exec_url(agent, sleeper, ["true"], stdout=True)
    host, port, path = where(url)
    with pytest.raises(Rejected) as ws_refused:
        await WsClient.connect(host, port, path, ["v9.channel.k8s.io"])

    assert spdy_refused.value.status == 403
    assert b"v4.channel.k8s.io" in spdy_refused.value.body
    assert ws_refused.value.status == 400
    assert b"v5.channel.k8s.io" in ws_refused.value.body


async def test_a_request_without_an_upgrade_or_with_a_huge_head_is_refused(
    agent: Agent, sleeper: str
) -> None:
    host, port, path = where(exec_url(agent, sleeper, ["true"], stdout=True))
    plain = await _raw_request(host, port, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    huge = f"GET {path} HTTP/1.1\r\nHost: x\r\nX-Big: {'a' * 65536}\r\n\r\n".encode()
    oversized = await _raw_request(host, port, huge)

    assert plain.startswith(b"HTTP/1.1 404") or plain.startswith(b"HTTP/1.1 400")
    assert oversized.startswith(b"HTTP/1.1 431")


@pytest.mark.parametrize(
    ("streams", "message"),
    [
        ({}, "one of stdin, stdout and stderr"),
        ({"tty": True, "stdout": True, "stderr": True}, "tty and stderr"),
    ],
)
def test_exec_requests_with_impossible_streams_are_invalid(
    agent: Agent, sleeper: str, streams: dict[str, bool], message: str
) -> None:
    assert_rpc_error(
        lambda: exec_url(agent, sleeper, ["true"], **streams),
        grpc.StatusCode.INVALID_ARGUMENT,
        message,
    )


def test_streaming_rpcs_need_a_running_container_and_a_known_pod(agent: Agent, image: str) -> None:
    pod = Pod(agent)
    created = pod.create(container_config(image, ["sleep", "600"]))
    running = pod.run(container_config(image, ["sleep", "600"]))
    stop(agent, running)

    for container_id in (created, running):
        assert_rpc_error(
            functools.partial(exec_url, agent, container_id, ["true"], stdout=True),
            grpc.StatusCode.FAILED_PRECONDITION,
            "not running",
        )
    assert_rpc_error(
        lambda: agent.runtime.PortForward(pb.PortForwardRequest(pod_sandbox_id="0" * 64)),
        grpc.StatusCode.NOT_FOUND,
    )
    assert_rpc_error(
        lambda: agent.runtime.Attach(
            pb.AttachRequest(container_id=created, stdin=True, stdout=True)
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
    )


async def test_twenty_concurrent_execs_each_get_their_own_output(
    agent: Agent, sleeper: str
) -> None:
    urls = [
        exec_url(agent, sleeper, ["echo", f"session {i}"], stdout=True, stderr=True)
        for i in range(20)
    ]

    results = await asyncio.wait_for(asyncio.gather(*(spdy_exec(u) for u in urls)), TIMEOUT_S)

    assert [out for out, _, _ in results] == [f"session {i}\n".encode() for i in range(20)]


async def test_many_sessions_leak_no_fds_processes_or_threads(agent: Agent, sleeper: str) -> None:
    async def one(i: int) -> None:
        url = exec_url(agent, sleeper, ["true"], stdout=True)
        if i % 2:
            await spdy_exec(url, stderr=False)
        else:
            host, port, path = where(url)
            ws = await WsClient.connect(host, port, path, ["v4.channel.k8s.io"])
            await ChannelClient(ws).read_to_end()

    for i in range(20):
        await one(i)
    before = _footprint(agent.pid)
    for i in range(300):
        await asyncio.wait_for(one(i), TIMEOUT_S)
    after = _footprint(agent.pid)

    assert after["children"] <= before["children"]
    assert after["threads"] <= before["threads"] + 2
    assert after["fds"] <= before["fds"] + 5


def _footprint(pid: int) -> dict[str, int]:
    children = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children += int(fields[1]) == pid
    return {
        "children": children,
        "threads": len(os.listdir(f"/proc/{pid}/task")),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
    }


async def _raw_request(host: str, port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(4096), TIMEOUT_S)
    except ConnectionError:
        return b""
    finally:
        writer.close()


async def listening_pod(agent: Agent, image: str, script: str, port: int) -> str:
    """A port-forward URL to a new pod whose container runs script, once it listens on port."""
    pod = Pod(agent)
    container_id = pod.run(container_config(image, ["sh", "-c", script]))
    await _wait_listening(agent, container_id, port)
    return str(agent.runtime.PortForward(pb.PortForwardRequest(pod_sandbox_id=pod.id)).url)


async def _wait_listening(agent: Agent, container_id: str, port: int) -> None:
    """Until something in the container listens on port (hex in /proc/net/tcp, tcp6)."""
    needle = f":{port:04X} "

    def listening() -> bool:
        tables = ["cat", "/proc/net/tcp", "/proc/net/tcp6"]
        table = exec_sync(agent, container_id, tables).stdout.decode()
        return needle in table

    assert await asyncio.to_thread(wait_until, listening), f"nothing listens on {port}"


class TunnelTransport:
    """SPDY bytes in binary WebSocket messages, as kubectl's port-forward tunnel sends them."""

    def __init__(self, ws: WsClient) -> None:
        self._ws = ws
        self._pending = b""

    async def read(self, max_bytes: int) -> bytes:
        while not self._pending:
            message = await self._ws.receive()
            if message is None:
                return b""
            assert isinstance(message, bytes)
            self._pending = message
        data, self._pending = self._pending[:max_bytes], self._pending[max_bytes:]
        return data

    async def write(self, data: bytes) -> None:
        await self._ws.send_binary(data)

    async def close(self) -> None:
        # The client's frame reader is inside receive(): it ends when the socket goes.
        self._ws.vanish()


async def test_port_forward_through_the_spdy_over_websocket_tunnel(
    agent: Agent, image: str
) -> None:
    url = await listening_pod(agent, image, "echo tunnelled | nc -l -p 8082", 8082)
    host, port, path = where(url)
    ws = await WsClient.connect(host, port, path, ["SPDY/3.1+portforward.k8s.io"])
    client = SpdyClient(TunnelTransport(ws), flow_control=False)
    await client.start()
    try:
        error = await client.open_stream({"streamtype": "error", "port": "8082", "requestid": "0"})
        data = await client.open_stream({"streamtype": "data", "port": "8082", "requestid": "0"})
        await error.wait_reply()
        await data.wait_reply()
        await asyncio.wait_for(data.wait_received(len(b"tunnelled\n")), TIMEOUT_S)
        assert await data.read() == b"tunnelled\n"
    finally:
        await client.close()
    assert ws.subprotocol == "SPDY/3.1+portforward.k8s.io"
