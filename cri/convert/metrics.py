"""cAdvisor figures as the CRI's metric messages, from the table the Prometheus endpoint
serves (metrics/cadvisor_series.py), so the two agree on names, help texts and labels.

The CRI carries unsigned integers: values are rounded, and the one negative figure cAdvisor
has (an unlimited open-files limit, -1) goes out as 0.
"""

from __future__ import annotations

from typing import Any

from cri_api.v1 import api_pb2 as pb

from metrics.cadvisor_series import CONTAINER_SERIES, COUNTER, POD_SERIES
from metrics.container_metrics import ContainerSample, PodSample, container_view

# Built once: the table is fixed, so every call answers the same message.
DESCRIPTORS = pb.ListMetricDescriptorsResponse(
    descriptors=[
        pb.MetricDescriptor(name=series.name, help=series.help, label_keys=series.labels)
        for series in CONTAINER_SERIES
    ]
    + [
        pb.MetricDescriptor(name=series.name, help=series.help, label_keys=series.labels)
        for series in POD_SERIES
    ]
)


def _kind(kind: str) -> Any:
    return pb.COUNTER if kind == COUNTER else pb.GAUGE


def _value(value: float) -> Any:
    return pb.UInt64Value(value=max(round(value), 0))


def pod_metrics_to_proto(
    sandbox_ids: list[str],
    containers: list[ContainerSample],
    pods: list[PodSample],
    now_ns: int,
) -> list[Any]:
    """One PodSandboxMetrics per listed sandbox; samples of others are left out."""
    by_pod = {i: pb.PodSandboxMetrics(pod_sandbox_id=i) for i in sandbox_ids}
    for pod in pods:
        if pod.sandbox_id not in by_pod:
            continue
        for pod_series in POD_SERIES:
            for interface in pod.interfaces:
                by_pod[pod.sandbox_id].metrics.append(
                    pb.Metric(
                        name=pod_series.name,
                        timestamp=now_ns,
                        metric_type=_kind(pod_series.kind),
                        label_values=[*pod.labels, interface.name],
                        value=_value(pod_series.value(interface)),
                    )
                )
    for sample in containers:
        if sample.sandbox_id not in by_pod:
            continue
        view = container_view(sample, now_ns / 1e9)
        metrics = [
            pb.Metric(
                name=series.name,
                timestamp=now_ns,
                metric_type=_kind(series.kind),
                label_values=[*sample.labels, *extra],
                value=_value(value),
            )
            for series in CONTAINER_SERIES
            for extra, value in series.values(view)
        ]
        by_pod[sample.sandbox_id].container_metrics.append(
            pb.ContainerMetrics(container_id=sample.name, metrics=metrics)
        )
    return list(by_pod.values())
