"""Debian's Prometheus server on loopback, scraping one target every second, for tests."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.netutil import free_port
from tests.waiting import wait_until

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
    accepted: list[list[dict[str, Any]]] = []
    last_answer = "no answer yet"

    def answered(client: httpx.Client) -> bool:
        nonlocal last_answer
        try:
            response = client.get(f"{url}/api/v1/query", params={"query": query})
            results: list[dict[str, Any]] = response.json().get("data", {}).get("result", [])
        except (httpx.TransportError, ValueError) as error:
            # Prometheus is still starting: its port is not open, or it answers 503.
            last_answer = repr(error)
            return False
        last_answer = response.text
        if results and accept(results):
            accepted.append(results)
            return True
        return False

    with httpx.Client(timeout=2) as client:
        if wait_until(lambda: answered(client), DEADLINE_S):
            return accepted[-1]
    pytest.fail(f"prometheus did not answer {query} within {DEADLINE_S}s; last: {last_answer}")
