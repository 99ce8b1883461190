"""cAdvisor figures as the CRI's metric messages, from the table the Prometheus endpoint
serves (metrics/cadvisor_series.py), so the two agree on names, help texts and labels.

The CRI carries unsigned integers: values are rounded, and the one negative figure cAdvisor
has (an unlimited open-files limit, -1) goes out as 0.
"""

from __future__ import annotations

from cri.proto import api_pb2 as pb
from metrics.cadvisor_series import CONTAINER_SERIES, COUNTER, POD_SERIES
from metrics.container_metrics import ContainerSample, PodSample, container_view


def _descriptor(name: str, help_text: str, labels: tuple[str, ...]) -> pb.MetricDescriptor:
    return pb.MetricDescriptor(name=name, help=help_text, label_keys=labels)


# Built once: the table is fixed, so every call answers the same message.
DESCRIPTORS = pb.ListMetricDescriptorsResponse(
    descriptors=[_descriptor(s.name, s.help, s.labels) for s in CONTAINER_SERIES]
    + [_descriptor(s.name, s.help, s.labels) for s in POD_SERIES]
)


def _metric(name: str, kind: str, labels: list[str], value: float) -> pb.Metric:
    # Timestamp 0: the CRI's mark of a figure gathered live rather than from a cache.
    return pb.Metric(
        name=name,
        metric_type=pb.COUNTER if kind == COUNTER else pb.GAUGE,
        label_values=labels,
        value=pb.UInt64Value(value=max(round(value), 0)),
    )


def pod_metrics_to_proto(
    sandbox_ids: list[str],
    containers: list[ContainerSample],
    pods: list[PodSample],
    now_s: float,
) -> list[pb.PodSandboxMetrics]:
    """One PodSandboxMetrics per listed sandbox; samples of others are left out."""
    by_pod = {i: pb.PodSandboxMetrics(pod_sandbox_id=i) for i in sandbox_ids}
    for pod in pods:
        if pod.sandbox_id not in by_pod:
            continue
        by_pod[pod.sandbox_id].metrics.extend(
            _metric(
                series.name, series.kind, [*pod.labels, interface.name], series.value(interface)
            )
            for series in POD_SERIES
            for interface in pod.interfaces
        )
    for sample in containers:
        if sample.sandbox_id not in by_pod:
            continue
        view = container_view(sample, now_s)
        metrics = [
            _metric(series.name, series.kind, [*sample.labels, *extra], value)
            for series in CONTAINER_SERIES
            for extra, value in series.values(view)
        ]
        by_pod[sample.sandbox_id].container_metrics.append(
            pb.ContainerMetrics(container_id=sample.name, metrics=metrics)
        )
    return list(by_pod.values())
