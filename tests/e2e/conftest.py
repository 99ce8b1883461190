"""Fixtures: a running `moorage serve` per test on its own socket, dirs and cgroup parent.

Teardown runs even when the test fails: it removes the pods through the agent when it still
answers, stops the agent (SIGTERM, SIGKILL after a deadline), then removes directly whatever
is left: infra processes recorded in state.db or seen in PodSandboxStatus, mounts under the
agent's temp dir, the cgroup parent in every hierarchy, and the temp dir.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.agent import MOORAGE, Agent, AgentFactory


@pytest.fixture
def agent_factory() -> Iterator[AgentFactory]:
    if not MOORAGE.exists():
        pytest.skip(f"{MOORAGE} is missing: run hack/install")
    factory = AgentFactory()
    try:
        yield factory
    finally:
        problems = factory.cleanup()
        if problems:
            pytest.fail("cleanup after the test failed:\n" + "\n".join(problems))


@pytest.fixture
def agent(agent_factory: AgentFactory) -> Agent:
    """A running agent; `.runtime` / `.images` are the CRI stubs bound to its socket."""
    return agent_factory()
