"""Security contexts: namespace options, seccomp and AppArmor profiles, users and groups."""

from __future__ import annotations

from cri.convert.enums import enum_value
from cri.convert.userns import user_namespace
from cri.proto import api_pb2 as pb
from runtime.containers.model import ContainerSecurity, Seccomp, SeccompKind
from runtime.errors import InvalidArgument
from runtime.pods.model import NamespaceMode, NamespaceOptions

_MODES = {
    pb.POD: NamespaceMode.POD,
    pb.CONTAINER: NamespaceMode.CONTAINER,
    pb.NODE: NamespaceMode.NODE,
    pb.TARGET: NamespaceMode.TARGET,
}
_MODES_TO_PB = {mode: value for value, mode in _MODES.items()}
_SECCOMP = {
    pb.SecurityProfile.RuntimeDefault: SeccompKind.RUNTIME_DEFAULT,
    pb.SecurityProfile.Unconfined: SeccompKind.UNCONFINED,
    pb.SecurityProfile.Localhost: SeccompKind.LOCALHOST,
}


def namespace_options_from_proto(ns: pb.NamespaceOption, field: str) -> NamespaceOptions:
    return NamespaceOptions(
        network=enum_value(_MODES, ns.network, f"{field}.network"),
        pid=enum_value(_MODES, ns.pid, f"{field}.pid"),
        ipc=enum_value(_MODES, ns.ipc, f"{field}.ipc"),
        target_id=ns.target_id,
        user=user_namespace(
            ns.userns_options, ns.HasField("userns_options"), f"{field}.userns_options"
        ),
    )


def namespace_options_to_proto(ns: NamespaceOptions) -> pb.NamespaceOption:
    return pb.NamespaceOption(
        network=_MODES_TO_PB[ns.network],
        pid=_MODES_TO_PB[ns.pid],
        ipc=_MODES_TO_PB[ns.ipc],
        target_id=ns.target_id,
    )


def container_security_from_proto(sc: pb.LinuxContainerSecurityContext) -> ContainerSecurity:
    field = "config.linux.security_context"
    return ContainerSecurity(
        strict_supplemental_groups=sc.supplemental_groups_policy
        == pb.SupplementalGroupsPolicy.Strict,
        apparmor_profile=_apparmor(sc, field),
        selinux_labelled=any(
            getattr(sc.selinux_options, key) for key in ("user", "role", "type", "level")
        ),
        run_as_user=sc.run_as_user.value if sc.HasField("run_as_user") else None,
        run_as_username=sc.run_as_username,
        run_as_group=sc.run_as_group.value if sc.HasField("run_as_group") else None,
        supplemental_groups=list(sc.supplemental_groups),
        privileged=sc.privileged,
        readonly_rootfs=sc.readonly_rootfs,
        no_new_privs=sc.no_new_privs,
        capabilities_add=list(sc.capabilities.add_capabilities),
        capabilities_drop=list(sc.capabilities.drop_capabilities),
        seccomp=_seccomp(sc, field),
        masked_paths=list(sc.masked_paths),
        readonly_paths=list(sc.readonly_paths),
        namespaces=namespace_options_from_proto(sc.namespace_options, f"{field}.namespace_options"),
    )


def _seccomp(sc: pb.LinuxContainerSecurityContext, field: str) -> Seccomp:
    """The profile the request names, in the `seccomp` message or the deprecated string."""
    if sc.HasField("seccomp"):
        kind = enum_value(_SECCOMP, sc.seccomp.profile_type, f"{field}.seccomp.profile_type")
        if kind is SeccompKind.LOCALHOST and not sc.seccomp.localhost_ref:
            raise InvalidArgument(f"{field}.seccomp.localhost_ref is empty for a Localhost profile")
        return Seccomp(kind, sc.seccomp.localhost_ref)
    path = sc.seccomp_profile_path
    if not path:
        return Seccomp()
    if path in ("runtime/default", "docker/default"):
        return Seccomp(SeccompKind.RUNTIME_DEFAULT)
    if path == "unconfined":
        return Seccomp(SeccompKind.UNCONFINED)
    if path.startswith("localhost/") and len(path) > len("localhost/"):
        return Seccomp(SeccompKind.LOCALHOST, path.removeprefix("localhost/"))
    raise InvalidArgument(
        f"{field}.seccomp_profile_path {path!r}: runtime/default, unconfined or localhost/<path>"
    )


def _apparmor(sc: pb.LinuxContainerSecurityContext, field: str) -> str:
    """The profile in the form the deprecated apparmor_profile string used."""
    if sc.HasField("apparmor"):
        kind = sc.apparmor.profile_type
        if kind == pb.SecurityProfile.Unconfined:
            return "unconfined"
        if kind == pb.SecurityProfile.Localhost:
            if not sc.apparmor.localhost_ref:
                raise InvalidArgument(f"{field}.apparmor.localhost_ref is empty for Localhost")
            return f"localhost/{sc.apparmor.localhost_ref}"
        return "runtime/default"
    return str(sc.apparmor_profile)
