"""Debian's Prometheus server on loopback, scraping one target every second, for tests."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.netutil import free_port

DEADLINE_S = 60.0


@contextlib.contextmanager
def running_prometheus(target: str) -> Iterator[str]:
    """Prometheus scraping `target` (host:port); yields its base URL, stopped by PID after."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("needs prometheus (Debian package prometheus)")
    workdir = Path(tempfile.mkdtemp(prefix="moorage-prom-"))
    port = free_port()
    # JSON is YAML, so no YAML writer is needed.
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [{"job_name": "moorage", "static_configs": [{"targets": [target]}]}],
    }
    (workdir / "prometheus.yml").write_text(json.dumps(config))
    log_path = workdir / "prometheus.log"
    process: subprocess.Popen[bytes] | None = None
    try:
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={workdir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        yield f"http://127.0.0.1:{port}"
        if process.poll() is not None:
            pytest.fail(f"prometheus exited early:\n{log_path.read_text()[-4000:]}")
    finally:
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=15)
        shutil.rmtree(workdir, ignore_errors=True)


def query_until(
    url: str, query: str, accept: Callable[[list[dict[str, Any]]], bool]
) -> list[dict[str, Any]]:
    """Ask Prometheus's HTTP API until the result satisfies `accept` (or fail at the deadline)."""
    deadline = time.monotonic() + DEADLINE_S
    last_answer = "no answer yet"
    with httpx.Client(timeout=2) as client:
        while time.monotonic() < deadline:
            try:
                response = client.get(f"{url}/api/v1/query", params={"query": query})
                results: list[dict[str, Any]] = response.json().get("data", {}).get("result", [])
                if results and accept(results):
                    return results
                last_answer = response.text
            except (httpx.TransportError, ValueError) as error:
                # Prometheus is still starting: its port is not open, or it answers 503.
                last_answer = repr(error)
            time.sleep(0.2)
    pytest.fail(f"prometheus did not answer {query} within {DEADLINE_S}s; last: {last_answer}")
