"""Stats figures to the CRI's messages. A figure the host did not provide stays unset."""

from __future__ import annotations

from cri.convert import containers, sandboxes
from cri.proto import api_pb2 as pb
from cri.stats_source import ContainerFigures, PodFigures
from metrics.model import CgroupStats, InterfaceStats


def _u64(value: int | None) -> pb.UInt64Value | None:
    return None if value is None else pb.UInt64Value(value=max(value, 0))


def _cpu(stats: CgroupStats | None, nano_cores: int | None, timestamp: int) -> pb.CpuUsage | None:
    if stats is None:
        return None
    return pb.CpuUsage(
        timestamp=timestamp,
        usage_core_nano_seconds=_u64(stats.cpu.usage_ns),
        usage_nano_cores=_u64(nano_cores),
    )


def _memory(stats: CgroupStats | None, timestamp: int) -> pb.MemoryUsage | None:
    if stats is None:
        return None
    memory = stats.memory
    available = None
    if memory.limit_bytes is not None and memory.working_set_bytes is not None:
        available = max(memory.limit_bytes - memory.working_set_bytes, 0)
    return pb.MemoryUsage(
        timestamp=timestamp,
        working_set_bytes=_u64(memory.working_set_bytes),
        available_bytes=_u64(available),
        usage_bytes=_u64(memory.usage_bytes),
        rss_bytes=_u64(memory.rss_bytes),
        page_faults=_u64(memory.page_faults),
        major_page_faults=_u64(memory.major_page_faults),
    )


def container_stats_to_proto(figures: ContainerFigures, writable_root: str) -> pb.ContainerStats:
    container = figures.container
    layer = figures.layer
    stats = figures.stats
    return pb.ContainerStats(
        attributes=pb.ContainerAttributes(
            id=container.id,
            metadata=containers.metadata_to_proto(container),
            labels=container.config.labels,
            annotations=container.config.annotations,
        ),
        cpu=_cpu(stats, figures.nano_cores, figures.timestamp_ns),
        memory=_memory(stats, figures.timestamp_ns),
        swap=pb.SwapUsage(
            timestamp=figures.timestamp_ns, swap_usage_bytes=_u64(stats.memory.swap_bytes)
        )
        if stats
        else None,
        writable_layer=pb.FilesystemUsage(
            timestamp=layer.measured_at_ns,
            fs_id=pb.FilesystemIdentifier(mountpoint=writable_root),
            used_bytes=_u64(layer.used_bytes),
            inodes_used=_u64(layer.inodes_used),
        )
        if layer
        else None,
    )


def _interface(stats: InterfaceStats) -> pb.NetworkInterfaceUsage:
    return pb.NetworkInterfaceUsage(
        name=stats.name,
        rx_bytes=_u64(stats.rx_bytes),
        rx_errors=_u64(stats.rx_errors),
        tx_bytes=_u64(stats.tx_bytes),
        tx_errors=_u64(stats.tx_errors),
    )


def pod_stats_to_proto(figures: PodFigures, writable_root: str) -> pb.PodSandboxStats:
    sandbox = figures.sandbox
    stats = figures.stats
    interfaces = [_interface(i) for i in figures.interfaces]
    default = next(
        (i for i in interfaces if i.name == "eth0"), interfaces[0] if interfaces else None
    )
    return pb.PodSandboxStats(
        attributes=pb.PodSandboxAttributes(
            id=sandbox.id,
            metadata=sandboxes.metadata_to_proto(sandbox.config.metadata),
            labels=sandbox.config.labels,
            annotations=sandbox.config.annotations,
        ),
        linux=pb.LinuxPodSandboxStats(
            cpu=_cpu(stats, figures.nano_cores, figures.timestamp_ns),
            memory=_memory(stats, figures.timestamp_ns),
            network=pb.NetworkUsage(
                timestamp=figures.timestamp_ns, default_interface=default, interfaces=interfaces
            )
            if interfaces
            else None,
            process=pb.ProcessUsage(
                timestamp=figures.timestamp_ns, process_count=_u64(stats.pids.current)
            )
            if stats
            else None,
            containers=[container_stats_to_proto(c, writable_root) for c in figures.containers],
        ),
    )
