"""An HTTP proxy in front of a test registry that counts blob downloads and injects faults.

Faults hit blob GETs only, the first `remaining` of them: `drop` sends the headers and half the
body and closes the connection, `flip` changes one byte of the body, `error` answers 500, and
`hold` keeps the answer back until `released` is set.
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

_HOP_BY_HOP = {"connection", "transfer-encoding", "content-length", "keep-alive"}


@dataclass
class Faults:
    kind: str = ""  # "", "drop", "flip", "error" or "hold"
    remaining: int = 0
    blob_gets: collections.Counter[str] = field(default_factory=collections.Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)
    released: threading.Event = field(default_factory=threading.Event)

    def inject(self, kind: str, times: int = 1) -> None:
        with self.lock:
            self.kind, self.remaining = kind, times

    def take(self, path: str) -> str:
        """Record a blob GET; the fault to apply to it, if any."""
        with self.lock:
            self.blob_gets[path.rsplit("/", 1)[-1]] += 1
            if self.remaining <= 0:
                return ""
            self.remaining -= 1
            return self.kind


class FaultyProxy:
    def __init__(self, upstream: str) -> None:
        self.faults = Faults()
        self._client = httpx.Client(base_url=f"http://{upstream}", timeout=30.0)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                proxy.forward(self, "GET")

            def do_HEAD(self) -> None:
                proxy.forward(self, "HEAD")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    def forward(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        is_blob = method == "GET" and "/blobs/sha256:" in handler.path
        fault = self.faults.take(handler.path) if is_blob else ""
        if fault == "hold":
            self.faults.released.wait(60)
        if fault == "error":
            handler.send_response(500)
            handler.send_header("Content-Length", "0")
            handler.send_header("Connection", "close")
            handler.end_headers()
            handler.close_connection = True
            return
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in _HOP_BY_HOP}
        headers.pop("Host", None)
        upstream = self._client.request(method, handler.path, headers=headers)
        body = upstream.content
        if fault == "flip" and body:
            body = bytes([body[0] ^ 0xFF]) + body[1:]
        handler.send_response(upstream.status_code)
        for key, value in upstream.headers.items():
            if key.lower() not in _HOP_BY_HOP and key.lower() != "content-encoding":
                handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.send_header("Connection", "close")
        handler.end_headers()
        if method == "GET":
            handler.wfile.write(body[: len(body) // 2] if fault == "drop" else body)
        handler.wfile.flush()
        handler.close_connection = True

    def stop(self) -> None:
        self.faults.released.set()
        self._server.shutdown()
        self._server.server_close()
        self._client.close()
