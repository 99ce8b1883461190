"""The agent's own operation figures, kept in one prometheus-client registry."""

from __future__ import annotations

import functools

from prometheus_client import CollectorRegistry, Counter, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

CRI_REQUESTS = Counter(
    "moorage_cri_requests",
    "CRI calls answered, by method",
    ["method"],
    registry=REGISTRY,
)
CRI_ERRORS = Counter(
    "moorage_cri_errors",
    "CRI calls that ended with a non-OK status, by method and gRPC code",
    ["method", "code"],
    registry=REGISTRY,
)
CRI_LATENCY = Histogram(
    "moorage_cri_request_duration_seconds",
    "Time to answer a CRI call, by method",
    ["method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)


def record_cri_call(method: str, code: str, duration_s: float) -> None:
    requests, latency = _series_of(method)
    requests.inc()
    latency.observe(duration_s)
    if code != "OK":
        CRI_ERRORS.labels(method, code).inc()


@functools.cache
def _series_of(method: str) -> tuple[Counter, Histogram]:
    """labels() takes a lock and builds a key on every call; the children never change."""
    return CRI_REQUESTS.labels(method), CRI_LATENCY.labels(method)
