"""The /metrics HTTP endpoint, served by prometheus-client's own WSGI app and threading server.

Collectors that can write their own text (the container series: thousands of samples) are
served apart from the registry: in the plain text format every Prometheus server asks for by
default, their text follows generate_latest's output of the registry; any other form
(OpenMetrics, a name[] selection) goes through prometheus-client with them joined in.

The server runs in a daemon thread, not on the event loop: a scrape reads cgroup files and
network counters synchronously, and that must never hold up a CRI call. prometheus-client's
start_http_server would do the same, but it serves the registry on every path; the thin wrapper
here answers 404 outside /metrics so that a typo does not look like a working endpoint.
"""

from __future__ import annotations

import contextlib
import gzip
import ipaddress
import socket
import threading
import weakref
from collections.abc import Iterable, Sequence
from typing import Any, Protocol
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from prometheus_client import generate_latest, make_wsgi_app
from prometheus_client.exposition import (
    CONTENT_TYPE_PLAIN_0_0_4,
    ThreadingWSGIServer,
    choose_encoder,
    gzip_accepted,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import CollectorRegistry, DuplicateTimeseries

METRICS_PATH = "/metrics"
_SHUTDOWN_TIMEOUT_S = 10.0
# A megabyte of series shrinks some 20-fold at level 1 in a quarter of the time level 9 takes.
_GZIP_LEVEL = 1

_registries_with_process_collector: weakref.WeakSet[CollectorRegistry] = weakref.WeakSet()
_process_collector_lock = threading.Lock()


class TextCollector(Protocol):
    def collect(self) -> Iterable[Metric]: ...

    def text(self) -> bytes:
        """The text format of what collect() yields, as generate_latest would write it."""
        ...


class MetricsEndpoint:
    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self._closed = False
        self.host: str = str(server.server_address[0])
        self.port: int = int(server.server_address[1])

    def close(self) -> None:
        """Stops serving, frees the port and joins the thread. Blocks for up to half a second
        (the server's poll interval): from async code, call it through asyncio.to_thread."""
        if self._closed:
            return
        self._closed = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(_SHUTDOWN_TIMEOUT_S)


def parse_address(address: str) -> tuple[str, int]:
    """'host:port' or '[ipv6]:port' -> (host, port); port 0 asks for any free port."""
    expected = "expected host:port or [ipv6-address]:port, e.g. 127.0.0.1:9777 or [::1]:9777"
    host, colon, port_text = address.rpartition(":")
    if not colon or not host:
        raise ValueError(f"metrics address {address!r}: {expected}")
    if host.startswith("[") or host.endswith("]"):
        if not (host.startswith("[") and host.endswith("]")):
            raise ValueError(f"metrics address {address!r}: unbalanced brackets; {expected}")
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(
                f"metrics address {address!r}: {host!r} in brackets is not an IPv6 address"
            ) from None
    elif ":" in host:
        raise ValueError(f"metrics address {address!r}: an IPv6 address needs brackets; {expected}")
    if not (port_text.isascii() and port_text.isdigit()) or int(port_text) > 65535:
        raise ValueError(f"metrics address {address!r}: port {port_text!r} is not in 0-65535")
    return host, int(port_text)


def start_endpoint(
    address: str, registry: CollectorRegistry, text_collectors: Sequence[TextCollector] = ()
) -> MetricsEndpoint:
    """Serves `registry` and `text_collectors` at http://<address>/metrics in a daemon thread,
    with the process collector (CPU, memory, open files of the agent) added to the registry
    once."""
    host, port = parse_address(address)
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise ValueError(f"metrics address {address!r}: cannot resolve {host!r}: {error}") from None
    _add_process_collector(registry)
    server_class = _Server6 if found[0][0] == socket.AF_INET6 else _Server4
    server = make_server(
        host,
        port,
        _only_metrics_path(_app(registry, text_collectors)),
        server_class=server_class,
        handler_class=_QuietHandler,
    )
    thread = threading.Thread(target=server.serve_forever, name="metrics-endpoint", daemon=True)
    thread.start()
    return MetricsEndpoint(server, thread)


def _add_process_collector(registry: CollectorRegistry) -> None:
    with _process_collector_lock:
        if registry in _registries_with_process_collector:
            return
        # Someone else may have put one there; the figures would be the same.
        with contextlib.suppress(DuplicateTimeseries):
            ProcessCollector(registry=registry)
        _registries_with_process_collector.add(registry)


def _app(registry: CollectorRegistry, text_collectors: Sequence[TextCollector]) -> WSGIApplication:
    if not text_collectors:
        return make_wsgi_app(registry)
    joined = CollectorRegistry(auto_describe=False)
    joined.register(registry)
    for collector in text_collectors:
        joined.register(collector)
    general: WSGIApplication = make_wsgi_app(joined)

    def serve(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        encoder, _ = choose_encoder(environ.get("HTTP_ACCEPT", ""))
        if (
            environ.get("REQUEST_METHOD") != "GET"
            or encoder is not generate_latest
            or "name[]" in parse_qs(environ.get("QUERY_STRING", ""))
        ):
            return general(environ, start_response)
        output = generate_latest(registry) + b"".join(c.text() for c in text_collectors)
        headers = [("Content-Type", CONTENT_TYPE_PLAIN_0_0_4)]
        if gzip_accepted(environ.get("HTTP_ACCEPT_ENCODING", "")):
            output = gzip.compress(output, _GZIP_LEVEL)
            headers.append(("Content-Encoding", "gzip"))
        start_response("200 OK", headers)
        return [output]

    return serve


def _only_metrics_path(app: WSGIApplication) -> WSGIApplication:
    def serve(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != METRICS_PATH:
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [f"not found: metrics are served at {METRICS_PATH}\n".encode()]
        return app(environ, start_response)

    return serve


class _Server4(ThreadingWSGIServer):
    address_family = socket.AF_INET


class _Server6(ThreadingWSGIServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    # A scrape every few seconds would otherwise write an access line to stderr each time.
    def log_message(self, format: str, *args: Any) -> None:
        pass
