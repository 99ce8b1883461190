"""Merging what several NRI plugins ask for into one adjustment and one update per container.

Plugins reply in index order. Each field of a container (or entry of a keyed field: an env
var by name, a mount by destination, …) may be set by one plugin only: a second plugin
setting it is a ConflictingAdjustment, as upstream (containerd/nri pkg/adaptation/result.go).
A plugin may set a field it set before. Who set what is kept as OwningPlugins, which
validating plugins receive.

Removal markers are upstream's: an entry whose key is prefixed with "-" removes that entry
from the container. A removal drops an earlier plugin's addition of the entry, and that
plugin then owns the entry (as cleared): a third plugin setting it conflicts with the
remover. Removal markers stay in the merged adjustment for entries it does not add again,
so the runtime removes them from the container's own spec.
Unlike upstream, this holds for every keyed field with markers (annotations, env, mounts,
devices, sysctl, net devices): upstream drops env and device markers from the result and
leaves an earlier plugin's annotation, sysctl or net device next to a later one's marker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message

from runtime.errors import FailedPrecondition

from .model import is_set
from .proto import api_pb2

REMOVAL_MARKER = "-"
MEMORY_FIELDS = {
    "limit": api_pb2.MemLimit,
    "reservation": api_pb2.MemReservation,
    "swap": api_pb2.MemSwapLimit,
    "kernel": api_pb2.MemKernelLimit,
    "kernel_tcp": api_pb2.MemTCPLimit,
    "swappiness": api_pb2.MemSwappiness,
    "disable_oom_killer": api_pb2.MemDisableOomKiller,
    "use_hierarchy": api_pb2.MemUseHierarchy,
}
CPU_FIELDS = {
    "shares": api_pb2.CPUShares,
    "quota": api_pb2.CPUQuota,
    "period": api_pb2.CPUPeriod,
    "realtime_runtime": api_pb2.CPURealtimeRuntime,
    "realtime_period": api_pb2.CPURealtimePeriod,
}
# LinuxContainerAdjustment's whole-message fields, each owned as one.
LINUX_MESSAGE_FIELDS = {
    "oom_score_adj": api_pb2.OomScoreAdj,
    "io_priority": api_pb2.IoPriority,
    "seccomp_policy": api_pb2.SeccompPolicy,
    "scheduler": api_pb2.LinuxSched,
    "memory_policy": api_pb2.MemoryPolicy,
}
RDT_FIELDS = {
    "clos_id": api_pb2.RdtClosID,
    "schemata": api_pb2.RdtSchemata,
    "enable_monitoring": api_pb2.RdtEnableMonitoring,
}

Claim = Callable[[int, str | None], None]
T = TypeVar("T")


class AdjustmentError(FailedPrecondition):
    """Plugins' replies that cannot be merged into one adjustment."""


class ConflictingAdjustment(AdjustmentError):
    def __init__(self, plugin: str, other: str, field: int, key: str | None) -> None:
        what = api_pb2.Field.Name(api_pb2.Field.ValueType(field)) + (
            f" {key}" if key is not None else ""
        )
        super().__init__(f'plugins "{plugin}" and "{other}" both tried to set {what}')
        self.plugins = (plugin, other)
        self.field = field
        self.key = key


def marked_for_removal(key: str) -> tuple[str, bool]:
    """(the key without its removal marker, whether it had one)."""
    if key.startswith(REMOVAL_MARKER):
        return key[len(REMOVAL_MARKER) :], True
    return key, False


class Ownership:
    """Which plugin set which field (or entry) of which container."""

    def __init__(self) -> None:
        self.owners = api_pb2.OwningPlugins()

    def claim(self, container_id: str, field: int, plugin: str, key: str | None = None) -> None:
        table = self._table(container_id, field, key)
        index: Any = field if key is None else key
        if (other := table.get(index)) is not None:
            # A cleared field is owned by its clearer, marked for removal.
            owner = marked_for_removal(other)[0]
            if owner != plugin:
                raise ConflictingAdjustment(plugin, owner, field, key)
        table[index] = plugin

    def clear(self, container_id: str, field: int, plugin: str, key: str | None = None) -> None:
        index: Any = field if key is None else key
        self._table(container_id, field, key)[index] = REMOVAL_MARKER + plugin

    def accumulate(self, container_id: str, field: int, plugin: str) -> None:
        """Fields every plugin may add to (hooks) list all of them, comma-separated."""
        simple = self.owners.owners[container_id].simple
        previous = simple[field].split(",") if field in simple else []
        if plugin not in previous:
            simple[field] = ",".join([*previous, plugin])

    def _table(self, container_id: str, field: int, key: str | None) -> Any:
        owners = self.owners.owners[container_id]
        return owners.simple if key is None else owners.compound[field].owners


@dataclass
class Collected:
    """Plugins' replies merged: the adjustment of the container being created (empty when
    collecting updates only), updates of other containers, evictions, and who set what."""

    adjustment: api_pb2.ContainerAdjustment
    updates: list[api_pb2.ContainerUpdate]
    evictions: list[api_pb2.ContainerEviction]
    owners: api_pb2.OwningPlugins


def collect(
    container_id: str, replies: Sequence[tuple[str, api_pb2.CreateContainerResponse]]
) -> Collected:
    """Merge the CreateContainer replies of plugins, given in plugin index order."""
    ownership = Ownership()
    adjustments = _Adjustments(container_id, ownership)
    updates = _Updates(ownership, creating=container_id)
    evictions: list[api_pb2.ContainerEviction] = []
    for plugin, reply in replies:
        adjustments.add(plugin, reply.adjust)
        updates.add(plugin, reply.update)
        evictions.extend(reply.evict)
    return Collected(adjustments.result(), updates.result(), evictions, ownership.owners)


def collect_updates(
    replies: Sequence[tuple[str, Iterable[api_pb2.ContainerUpdate]]],
    *,
    requested: api_pb2.ContainerUpdate | None = None,
) -> Collected:
    """Merge the updates plugins ask for (UpdateContainer, StopContainer, UpdateContainers),
    in plugin index order; `requested` is the CRI's own update being made, which plugins'
    updates of that container adjust: it comes last in the result."""
    ownership = Ownership()
    updates = _Updates(ownership, requested=requested)
    for plugin, reply in replies:
        updates.add(plugin, reply)
    return Collected(api_pb2.ContainerAdjustment(), updates.result(), [], ownership.owners)


@dataclass
class _Keyed(Generic[T]):
    """A field whose entries are set by key, in the order first set."""

    owned_as: int
    entries: dict[str, T] = field(default_factory=dict)
    removals: dict[str, T] = field(default_factory=dict)
    # Namespaces: upstream claims an entry for removing it too.
    claim_removals: bool = False

    def add(
        self,
        items: Iterable[tuple[str, T]],
        plugin: str,
        container_id: str,
        ownership: Ownership,
    ) -> None:
        additions = []
        for marked_key, item in items:
            key, marked = marked_for_removal(marked_key)
            if not marked:
                additions.append((key, item))
                continue
            if self.claim_removals:
                ownership.claim(container_id, self.owned_as, plugin, key)
            elif key in self.entries:
                ownership.clear(container_id, self.owned_as, plugin, key)
            self.entries.pop(key, None)
            self.removals[key] = item
        for key, item in additions:
            ownership.claim(container_id, self.owned_as, plugin, key)
            self.entries[key] = item

    def result(self) -> list[T]:
        # A removal of what is added again is the addition's replacing it.
        markers = [item for key, item in self.removals.items() if key not in self.entries]
        return [*self.entries.values(), *markers]


class _Adjustments:
    def __init__(self, container_id: str, ownership: Ownership) -> None:
        self.container_id = container_id
        self.ownership = ownership
        self.merged = api_pb2.ContainerAdjustment()
        self.annotations = _Keyed[str](api_pb2.Annotations)
        self.env = _Keyed[api_pb2.KeyValue](api_pb2.Env)
        self.mounts = _Keyed[api_pb2.Mount](api_pb2.Mounts)
        self.devices = _Keyed[api_pb2.LinuxDevice](api_pb2.Devices)
        self.namespaces = _Keyed[api_pb2.LinuxNamespace](api_pb2.Namespace, claim_removals=True)
        self.sysctl = _Keyed[str](api_pb2.Sysctl)
        self.net_devices = _Keyed[api_pb2.LinuxNetDevice](api_pb2.LinuxNetDevices)
        self.rlimits: dict[str, api_pb2.POSIXRlimit] = {}
        self.cdi_devices: dict[str, api_pb2.CDIDevice] = {}

    def add(self, plugin: str, adjust: api_pb2.ContainerAdjustment) -> None:
        claim = _claimer(self.ownership, self.container_id, plugin)

        def keyed(target: _Keyed[Any], items: Iterable[tuple[str, Any]]) -> None:
            target.add(items, plugin, self.container_id, self.ownership)

        merged = self.merged
        keyed(self.annotations, adjust.annotations.items())
        keyed(self.mounts, ((m.destination, m) for m in adjust.mounts))
        keyed(self.env, ((e.key, e) for e in adjust.env))
        self._add_args(plugin, list(adjust.args))
        self._add_hooks(plugin, adjust.hooks)
        linux = adjust.linux
        keyed(self.devices, ((d.path, d) for d in linux.devices))
        _merge_resources(claim, linux.resources, merged.linux.resources)
        merged.linux.resources.devices.extend(linux.resources.devices)
        if linux.cgroups_path:
            claim(api_pb2.CgroupsPath, None)
            merged.linux.cgroups_path = linux.cgroups_path
        for name, field_ in LINUX_MESSAGE_FIELDS.items():
            if is_set(linux, name):
                claim(field_, None)
                getattr(merged.linux, name).CopyFrom(getattr(linux, name))
        keyed(self.namespaces, ((n.type, n) for n in linux.namespaces))
        keyed(self.sysctl, linux.sysctl.items())
        keyed(self.net_devices, linux.net_devices.items())
        if linux.HasField("rdt"):
            self._add_rdt(plugin, linux.rdt)
        for rlimit in adjust.rlimits:
            claim(api_pb2.Rlimits, rlimit.type)
            self.rlimits[rlimit.type] = rlimit
        # Only ever added: a CDI device is resolved by the runtime, not listed in the spec.
        for device in adjust.CDI_devices:
            claim(api_pb2.CdiDevices, device.name)
            self.cdi_devices[device.name] = device

    def _add_args(self, plugin: str, args: list[str]) -> None:
        if not args:
            return
        # Upstream's override: a leading "" replaces another plugin's args, no conflict.
        if args[0] == "":
            self.ownership.clear(self.container_id, api_pb2.Args, plugin)
            args = args[1:]
        self.ownership.claim(self.container_id, api_pb2.Args, plugin)
        del self.merged.args[:]
        self.merged.args.extend(args)

    def _add_hooks(self, plugin: str, hooks: api_pb2.Hooks) -> None:
        added = False
        for descriptor in hooks.DESCRIPTOR.fields:
            kind = descriptor.name
            if new := getattr(hooks, kind):
                getattr(self.merged.hooks, kind).extend(new)
                added = True
        if added:
            self.ownership.accumulate(self.container_id, api_pb2.OciHooks, plugin)

    def _add_rdt(self, plugin: str, rdt: api_pb2.LinuxRdt) -> None:
        merged = self.merged.linux.rdt
        if rdt.remove:
            for field_ in RDT_FIELDS.values():
                self.ownership.clear(self.container_id, field_, plugin)
            merged.Clear()
            merged.remove = True
        for name, field_ in RDT_FIELDS.items():
            if is_set(rdt, name):
                self.ownership.claim(self.container_id, field_, plugin)
                getattr(merged, name).CopyFrom(getattr(rdt, name))
                merged.remove = False

    def result(self) -> api_pb2.ContainerAdjustment:
        merged = api_pb2.ContainerAdjustment()
        merged.CopyFrom(self.merged)
        for key, value in self.annotations.entries.items():
            merged.annotations[key] = value
        for key in self.annotations.removals.keys() - self.annotations.entries.keys():
            merged.annotations[REMOVAL_MARKER + key] = ""
        merged.mounts.extend(self.mounts.result())
        merged.env.extend(self.env.result())
        merged.rlimits.extend(self.rlimits.values())
        merged.CDI_devices.extend(self.cdi_devices.values())
        linux = merged.linux
        linux.devices.extend(self.devices.result())
        linux.namespaces.extend(self.namespaces.result())
        for key, value in self.sysctl.entries.items():
            linux.sysctl[key] = value
        for key in self.sysctl.removals.keys() - self.sysctl.entries.keys():
            linux.sysctl[REMOVAL_MARKER + key] = ""
        for key, device in self.net_devices.entries.items():
            linux.net_devices[key].CopyFrom(device)
        for key in self.net_devices.removals.keys() - self.net_devices.entries.keys():
            linux.net_devices[REMOVAL_MARKER + key].SetInParent()
        return merged


class _Updates:
    """Updates of containers by id, in the order first asked for."""

    def __init__(
        self,
        ownership: Ownership,
        *,
        creating: str = "",
        requested: api_pb2.ContainerUpdate | None = None,
    ) -> None:
        self.ownership = ownership
        self.creating = creating
        self.requested = requested
        self.updates: dict[str, api_pb2.ContainerUpdate] = {}
        if requested is not None:
            self.updates[requested.container_id] = _copy(requested)

    def add(self, plugin: str, updates: Iterable[api_pb2.ContainerUpdate]) -> None:
        for update in updates:
            container_id = update.container_id
            if container_id == self.creating:
                raise AdjustmentError(
                    f'plugin "{plugin}" asked to update {container_id}, the container being '
                    "created: its adjustment is the way to change it"
                )
            merged = self.updates.get(container_id)
            if merged is None:
                merged = api_pb2.ContainerUpdate(
                    container_id=container_id, ignore_failure=update.ignore_failure
                )
            else:
                merged.ignore_failure = merged.ignore_failure and update.ignore_failure
            # On a conflict an update that may fail is dropped whole, claims and all.
            owners_before = _copy(self.ownership.owners)
            resources = _copy(merged.linux.resources)
            claim = _claimer(self.ownership, container_id, plugin)
            try:
                _merge_resources(claim, update.linux.resources, resources)
            except ConflictingAdjustment:
                if not update.ignore_failure:
                    raise
                self.ownership.owners.CopyFrom(owners_before)
                continue
            merged.linux.resources.CopyFrom(resources)
            self.updates[container_id] = merged

    def result(self) -> list[api_pb2.ContainerUpdate]:
        updates = dict(self.updates)
        last = [updates.pop(self.requested.container_id)] if self.requested else []
        return [*updates.values(), *last]


def _claimer(ownership: Ownership, container_id: str, plugin: str) -> Claim:
    def claim(field: int, key: str | None) -> None:
        ownership.claim(container_id, field, plugin, key)

    return claim


def _merge_resources(
    claim: Claim, source: api_pb2.LinuxResources, target: api_pb2.LinuxResources
) -> None:
    """Set in `target` what `source` sets, claiming each field; device rules are the caller's
    (adjustments only add them, updates do not carry them)."""
    for fields, source_part, target_part in (
        (MEMORY_FIELDS, source.memory, target.memory),
        (CPU_FIELDS, source.cpu, target.cpu),
    ):
        for name, field_ in fields.items():
            if is_set(source_part, name):
                claim(field_, None)
                getattr(target_part, name).CopyFrom(getattr(source_part, name))
    if source.cpu.cpus:
        claim(api_pb2.CPUSetCPUs, None)
        target.cpu.cpus = source.cpu.cpus
    if source.cpu.mems:
        claim(api_pb2.CPUSetMems, None)
        target.cpu.mems = source.cpu.mems
    for limit in source.hugepage_limits:
        claim(api_pb2.HugepageLimits, limit.page_size)
        kept = [h for h in target.hugepage_limits if h.page_size != limit.page_size]
        del target.hugepage_limits[:]
        target.hugepage_limits.extend([*kept, limit])
    for key, value in source.unified.items():
        claim(api_pb2.CgroupsUnified, key)
        target.unified[key] = value
    for name, field_ in (
        ("blockio_class", api_pb2.BlockioClass),
        ("rdt_class", api_pb2.RdtClass),
        ("pids", api_pb2.PidsLimit),
    ):
        if is_set(source, name):
            claim(field_, None)
            getattr(target, name).CopyFrom(getattr(source, name))


M = TypeVar("M", bound=Message)


def _copy(message: M) -> M:
    copy = type(message)()
    copy.CopyFrom(message)
    return copy
