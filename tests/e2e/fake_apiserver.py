"""A kube-apiserver just good enough for `kubectl exec`, `attach` and `port-forward`.

It answers /version, discovery and GETs of the pods it was told about. The exec, attach and
portforward subresources it handles as the kubelet does: the runtime's CRI Exec, Attach or
PortForward gives a streaming URL, kubectl's upgrade request goes there with only the request
line's path rewritten, then bytes are copied both ways untouched until either side ends.
Plain HTTP on 127.0.0.1, no auth; one thread per connection.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import grpc

from cri.proto import api_pb2 as pb
from tests.e2e.agent import RPC_TIMEOUT_S, Agent

MAX_HEAD_BYTES = 64 * 1024
_POD_PATH = re.compile(r"/api/v1/namespaces/([^/]+)/pods/([^/]+)(?:/(exec|attach|portforward))?")
_VERSION = {"major": "1", "minor": "32", "gitVersion": "v1.32.4", "platform": "linux/amd64"}
_DISCOVERY: dict[str, Any] = {
    "/api": {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
    },
    "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": []},
    "/api/v1": {
        "kind": "APIResourceList",
        "groupVersion": "v1",
        "resources": [
            {
                "name": "pods",
                "singularName": "pod",
                "namespaced": True,
                "kind": "Pod",
                "verbs": ["get", "list"],
                "shortNames": ["po"],
            },
            *(
                {"name": f"pods/{sub}", "singularName": "", "namespaced": True, "kind": kind}
                | {"verbs": ["create", "get"]}
                for sub, kind in [
                    ("exec", "PodExecOptions"),
                    ("attach", "PodAttachOptions"),
                    ("portforward", "PodPortForwardOptions"),
                ]
            ),
        ],
    },
}


@dataclass
class FakePod:
    sandbox_id: str
    # Container name -> CRI container id; the first is kubectl's default container.
    containers: dict[str, str]
    # Containers whose spec says stdin: true (kubectl attach -i checks it).
    stdin: frozenset[str] = frozenset()


@dataclass
class Proxied:
    """One subresource request: what kubectl offered and what the runtime answered."""

    subresource: str
    method: str
    upgrade: str
    offered: str
    # From the runtime's response head, once it went through.
    status: int = 0
    chosen: str = ""


@dataclass
class _Head:
    method: str
    target: str
    header_lines: list[bytes]
    rest: bytes  # bytes read past the head

    def header(self, name: str) -> str:
        """A header's values over all its lines, joined by commas; name in lower case."""
        return _header(self.header_lines, name)


class FakeApiServer:
    def __init__(self, agent: Agent, namespace: str = "default") -> None:
        self.agent = agent
        self.namespace = namespace
        self.pods: dict[str, FakePod] = {}
        self.proxied: list[Proxied] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._spawn(self._accept_loop)

    def __enter__(self) -> FakeApiServer:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept()
        self._listener.close()
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout=5.0)

    def write_kubeconfig(self, path: Path) -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": f"http://127.0.0.1:{self.port}"}}],
            "users": [{"name": "fake", "user": {}}],
            "contexts": [
                {
                    "name": "fake",
                    "context": {"cluster": "fake", "user": "fake", "namespace": self.namespace},
                }
            ],
            "current-context": "fake",
        }
        path.write_text(json.dumps(config))
        return path

    # --- connections -----------------------------------------------------------------------

    def _spawn(self, target: Callable[..., None], *args: Any) -> threading.Thread:
        thread = threading.Thread(target=target, args=args, daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()
        return thread

    @contextlib.contextmanager
    def _tracked(self, sock: socket.socket) -> Iterator[socket.socket]:
        with self._lock:
            self._open.add(sock)
        try:
            yield sock
        finally:
            with self._lock:
                self._open.discard(sock)
            sock.close()

    def _accept_loop(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self._spawn(self._handle, conn)

    def _handle(self, conn: socket.socket) -> None:
        with self._tracked(conn):
            head = _read_head(conn)
            if head is None:
                return
            parts = urlsplit(head.target)
            match = _POD_PATH.fullmatch(parts.path)
            if match and match[3] and head.header("upgrade"):
                self._proxy(conn, head, match, parse_qs(parts.query))
            else:
                _send_json(conn, *self._answer(parts.path, match))

    def _answer(self, path: str, match: re.Match[str] | None) -> tuple[int, dict[str, Any]]:
        if path == "/version":
            return 200, _VERSION
        if path in _DISCOVERY:
            return 200, _DISCOVERY[path]
        if match and not match[3] and match[1] == self.namespace and match[2] in self.pods:
            return 200, self._manifest(match[2], self.pods[match[2]])
        return 404, _status(404, "NotFound", f"{path} not found")

    def _manifest(self, name: str, pod: FakePod) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": self.namespace, "uid": pod.sandbox_id},
            "spec": {
                "containers": [
                    {"name": c, "image": "busybox", "stdin": c in pod.stdin} for c in pod.containers
                ]
            },
            "status": {
                "phase": "Running",
                "containerStatuses": [
                    {"name": c, "ready": True, "containerID": f"moorage://{cid}"}
                    | {"state": {"running": {}}}
                    for c, cid in pod.containers.items()
                ],
            },
        }

    # --- the kubelet's part ----------------------------------------------------------------

    def _proxy(
        self, conn: socket.socket, head: _Head, match: re.Match[str], query: dict[str, list[str]]
    ) -> None:
        namespace, name, subresource = match.groups()
        offered = head.header("x-stream-protocol-version") or head.header("sec-websocket-protocol")
        record = Proxied(subresource, head.method, head.header("upgrade"), offered)
        with self._lock:
            self.proxied.append(record)
        try:
            url = urlsplit(self._stream_url(namespace, name, subresource, query))
        except (KeyError, ValueError) as exc:
            _send_json(conn, 404, _status(404, "NotFound", str(exc)))
            return
        except grpc.RpcError as exc:
            _send_json(conn, 500, _status(500, "InternalError", str(exc.details())))
            return
        assert url.hostname is not None and url.port is not None
        try:
            upstream = socket.create_connection((url.hostname, url.port), timeout=RPC_TIMEOUT_S)
        except OSError as exc:
            _send_json(conn, 502, _status(502, "BadGateway", f"dialing {url.geturl()}: {exc}"))
            return
        upstream.settimeout(None)
        with self._tracked(upstream):
            target = url.path + (f"?{url.query}" if url.query else "")
            request_line = f"{head.method} {target} HTTP/1.1\r\n".encode()
            upstream.sendall(
                request_line + b"".join(h + b"\r\n" for h in head.header_lines) + b"\r\n"
            )
            if head.rest:
                upstream.sendall(head.rest)
            # As the kubelet's proxy: when either direction ends, both sockets close.
            copier = self._spawn(_copy, conn, upstream, None)
            _copy(upstream, conn, record)
            copier.join()

    def _stream_url(
        self, namespace: str, name: str, subresource: str, query: dict[str, list[str]]
    ) -> str:
        if namespace != self.namespace:
            raise KeyError(f"no namespace {namespace}")
        pod = self.pods[name]
        runtime = self.agent.runtime
        if subresource == "portforward":
            ports = [int(p) for value in query.get("ports", []) for p in value.split(",")]
            request = pb.PortForwardRequest(pod_sandbox_id=pod.sandbox_id, port=ports)
            return str(runtime.PortForward(request, timeout=RPC_TIMEOUT_S).url)

        def flag(key: str) -> bool:
            return query.get(key, [""])[0] in ("1", "true")

        container = query.get("container", [""])[0] or next(iter(pod.containers))
        tty = flag("tty")
        # The kubelet drops stderr with a tty: the terminal merges it into stdout.
        streams = {
            "stdin": flag("stdin"),
            "stdout": flag("stdout"),
            "stderr": flag("stderr") and not tty,
            "tty": tty,
        }
        container_id = pod.containers[container]
        if subresource == "exec":
            cmd = query.get("command", [])
            exec_request = pb.ExecRequest(container_id=container_id, cmd=cmd, **streams)
            return str(runtime.Exec(exec_request, timeout=RPC_TIMEOUT_S).url)
        attach_request = pb.AttachRequest(container_id=container_id, **streams)
        return str(runtime.Attach(attach_request, timeout=RPC_TIMEOUT_S).url)


def _read_head(conn: socket.socket) -> _Head | None:
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            chunk = conn.recv(65536)
        except OSError:
            return None
        if not chunk or len(data) > MAX_HEAD_BYTES:
            return None
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    request_line, *header_lines = head.split(b"\r\n")
    method, target, _ = request_line.decode("latin-1").split(" ", 2)
    return _Head(method, target, header_lines, rest)


def _header(lines: list[bytes], name: str) -> str:
    values = []
    for line in lines:
        key, _, value = line.decode("latin-1").partition(":")
        if key.strip().lower() == name:
            values.append(value.strip())
    return ", ".join(values)


def _copy(src: socket.socket, dst: socket.socket, record: Proxied | None) -> None:
    """src to dst until either ends; notes the response head's status and protocol in record."""
    head = b""
    try:
        while data := src.recv(65536):
            if record is not None and not record.status:
                head += data
                if b"\r\n\r\n" in head:
                    status_line, *lines = head.partition(b"\r\n\r\n")[0].split(b"\r\n")
                    record.chosen = _header(lines, "x-stream-protocol-version") or _header(
                        lines, "sec-websocket-protocol"
                    )
                    record.status = int(status_line.split(b" ", 2)[1])
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _send_json(conn: socket.socket, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    head = (
        f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n"
        "Connection: close\r\n\r\n"
    )
    with contextlib.suppress(OSError):
        conn.sendall(head.encode() + payload)
