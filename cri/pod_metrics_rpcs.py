"""ListMetricDescriptors and ListPodSandboxMetrics: the cAdvisor figures over the CRI, for
kubelets that take them from the runtime instead of cAdvisor.

They come from the same collector the Prometheus endpoint serves, so both always agree on
names, help texts and labels. The CRI carries integers: values are rounded.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import grpc
from cri_api.v1 import api_pb2 as pb
from prometheus_client.metrics_core import Metric

from cri.handlers import Handlers
from cri.metrics_wiring import MetricsSnapshot, cgroup_reader
from metrics.container_metrics import BASE_LABELS, ContainerCollector


class PodMetricsRpcs(Handlers):
    def _families(self) -> list[Metric]:
        collector = ContainerCollector(MetricsSnapshot(self.runtime, cgroup_reader(self.runtime)))
        return [f for f in collector.collect() if f.name != "container_scrape_error"]

    async def ListMetricDescriptors(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        families = await asyncio.to_thread(self._families)
        return pb.ListMetricDescriptorsResponse(
            descriptors=[
                pb.MetricDescriptor(
                    name=_exposed_name(family), help=family.documentation, label_keys=_keys(family)
                )
                for family in families
            ]
        )

    async def ListPodSandboxMetrics(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        families = await asyncio.to_thread(self._families)
        now = time.time_ns()
        pods = {
            (s.config.metadata.name, s.config.metadata.namespace): s.id
            for s in self.runtime.sandboxes.select()
        }
        by_pod: dict[str, Any] = {
            pod_id: pb.PodSandboxMetrics(pod_sandbox_id=pod_id) for pod_id in pods.values()
        }
        containers: dict[str, Any] = {}
        for family in families:
            keys = _keys(family)
            kind = pb.COUNTER if family.type == "counter" else pb.GAUGE
            for name, labels, value in _samples(family):
                pod_id = pods.get((labels.get("pod", ""), labels.get("namespace", "")))
                if pod_id is None:
                    continue
                metric = pb.Metric(
                    name=name,
                    timestamp=now,
                    metric_type=kind,
                    label_values=[labels.get(k, "") for k in keys],
                    value=pb.UInt64Value(value=max(round(value), 0)),
                )
                container_id = labels.get("name", "")
                if not container_id:
                    by_pod[pod_id].metrics.append(metric)
                    continue
                if container_id not in containers:
                    # add() returns the stored message; append() would store a copy.
                    containers[container_id] = by_pod[pod_id].container_metrics.add(
                        container_id=container_id
                    )
                containers[container_id].metrics.append(metric)
        return pb.ListPodSandboxMetricsResponse(pod_metrics=list(by_pod.values()))


def _exposed_name(family: Metric) -> str:
    return f"{family.name}_total" if family.type == "counter" else family.name


def _keys(family: Metric) -> list[str]:
    if family.samples:
        return list(family.samples[0].labels)
    return list(BASE_LABELS)


def _samples(family: Metric) -> Iterator[tuple[str, dict[str, str], float]]:
    for sample in family.samples:
        yield sample.name, dict(sample.labels), float(sample.value)
