"""userns_options and Mount id mappings from the CRI: the shapes Moorage can honour.

As in containerd, a pod's user namespace has one uid and one gid range, each starting at
container id 0; mode NODE carries no mappings. A request outside that fails here rather than
running with a weaker or different mapping.
"""

from __future__ import annotations

from collections.abc import Sequence

from cri.proto import api_pb2 as pb
from runtime.errors import InvalidArgument, Unimplemented
from runtime.pods.model import IdMapping, UserNamespace

_MAX_ID = 2**32 - 1


def user_namespace(
    options: pb.UserNamespace, has_options: bool, field: str
) -> UserNamespace | None:
    """The user namespace a NamespaceOption asks for; None for the node's."""
    if not has_options:
        return None
    uids, gids = list(options.uids), list(options.gids)
    if options.mode == pb.NODE:
        if uids or gids:
            raise InvalidArgument(f"{field}: mode NODE takes no uid or gid mappings")
        return None
    if options.mode == pb.CONTAINER:
        raise Unimplemented(f"{field}: mode CONTAINER is not supported; use POD")
    if options.mode != pb.POD:
        try:
            mode = pb.NamespaceMode.Name(options.mode)
        except ValueError:
            mode = str(options.mode)
        raise InvalidArgument(f"{field}: mode {mode} is not valid for a user namespace")
    return UserNamespace(uids=_single(uids, f"{field}.uids"), gids=_single(gids, f"{field}.gids"))


def mount_mappings(mount: pb.Mount, field: str) -> UserNamespace | None:
    """A Mount's idmapping, or None when it has none; both kinds or neither."""
    uids, gids = list(mount.uidMappings), list(mount.gidMappings)
    if not uids and not gids:
        return None
    return UserNamespace(
        uids=_single(uids, f"{field}.uidMappings"), gids=_single(gids, f"{field}.gidMappings")
    )


def _single(mappings: Sequence[pb.IDMapping], field: str) -> IdMapping:
    if len(mappings) != 1:
        raise InvalidArgument(f"{field}: exactly one mapping is supported, got {len(mappings)}")
    (m,) = mappings
    if m.container_id != 0:
        raise InvalidArgument(
            f"{field}: the mapping must start at container id 0 (root must be mapped), "
            f"got {m.container_id}"
        )
    if m.length == 0 or m.host_id + m.length - 1 > _MAX_ID:
        raise InvalidArgument(f"{field}: host ids {m.host_id}+{m.length} are not a valid range")
    return IdMapping(host_id=m.host_id, container_id=m.container_id, length=m.length)
