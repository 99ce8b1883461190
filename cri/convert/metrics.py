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


_CONTAINER_TYPES = [pb.COUNTER if s.kind == COUNTER else pb.GAUGE for s in CONTAINER_SERIES]
_POD_TYPES = [pb.COUNTER if s.kind == COUNTER else pb.GAUGE for s in POD_SERIES]


def pod_metrics_to_proto(
    sandbox_ids: list[str],
    containers: list[ContainerSample],
    pods: list[PodSample],
    now_s: float,
) -> list[pb.PodSandboxMetrics]:
    """One PodSandboxMetrics per listed sandbox; samples of others are left out."""
    # Metrics are added in place: at 100 containers building them apart and appending (which
    # copies) took twice as long. Timestamp 0 throughout: the CRI's mark of a figure
    # gathered live rather than from a cache.
    by_pod = {i: pb.PodSandboxMetrics(pod_sandbox_id=i) for i in sandbox_ids}
    for pod in pods:
        if pod.sandbox_id not in by_pod:
            continue
        metrics = by_pod[pod.sandbox_id].metrics
        for pod_series, metric_type in zip(POD_SERIES, _POD_TYPES, strict=True):
            for interface in pod.interfaces:
                metrics.add(
                    name=pod_series.name,
                    metric_type=metric_type,
                    label_values=[*pod.labels, interface.name],
                    value=_u64(pod_series.value(interface)),
                )
    for sample in containers:
        if sample.sandbox_id not in by_pod:
            continue
        view = container_view(sample, now_s)
        metrics = by_pod[sample.sandbox_id].container_metrics.add(container_id=sample.name).metrics
        labels = sample.labels
        for series, metric_type in zip(CONTAINER_SERIES, _CONTAINER_TYPES, strict=True):
            for extra, value in series.values(view):
                metrics.add(
                    name=series.name,
                    metric_type=metric_type,
                    label_values=[*labels, *extra],
                    value=_u64(value),
                )
    return list(by_pod.values())


def _u64(value: float) -> pb.UInt64Value:
    return pb.UInt64Value(value=max(round(value), 0))
