"""What a call waits for while the agent recovers after the socket is up.

The socket serves within a fraction of a second of a restart; the reconciliation that makes
answers true runs after it. Each call waits for the part of the recovery its answer (or its
change) depends on, so nothing is answered from state the host has since left behind.
"""

from __future__ import annotations

import asyncio

# Answers that hold whatever the recovery finds.
_ANSWERED_AT_ONCE = frozenset({"Version"})
# Reads of pods and containers: true once their rows agree with the host (a container that
# exited while the agent was down is no longer RUNNING); the network and images do not matter.
_AFTER_STATE = frozenset(
    {
        "ListPodSandbox",
        "StreamPodSandboxes",
        "PodSandboxStatus",
        "ListContainers",
        "StreamContainers",
        "ContainerStatus",
        "ContainerStats",
        "ListContainerStats",
        "StreamContainerStats",
        "PodSandboxStats",
        "ListPodSandboxStats",
        "StreamPodSandboxStats",
        "ListMetricDescriptors",
        "ListPodSandboxMetrics",
        "StreamPodSandboxMetrics",
    }
)


class StartupGate:
    def __init__(self) -> None:
        self.state_recovered = asyncio.Event()
        # Everything else, changes and Status included: a RunPodSandbox must not race the
        # bridge's re-setup, nor Status report a network that is not set up yet.
        self.recovered = asyncio.Event()

    async def wait_for(self, method: str) -> None:
        if method in _ANSWERED_AT_ONCE:
            return
        if method in _AFTER_STATE:
            await self.state_recovered.wait()
        else:
            await self.recovered.wait()
