"""userns_options and Mount id mappings: the one shape Moorage honours, and clear refusals."""

from __future__ import annotations

from typing import Any

import pytest

from cri.convert.userns import mount_mappings, user_namespace
from cri.proto import api_pb2 as pb
from runtime.errors import InvalidArgument, Unimplemented
from runtime.pods.model import IdMapping, UserNamespace


def mapping(host_id: int = 100_000, container_id: int = 0, length: int = 65536) -> Any:
    return pb.IDMapping(host_id=host_id, container_id=container_id, length=length)


def options(**fields: Any) -> Any:
    fields.setdefault("mode", pb.POD)
    fields.setdefault("uids", [mapping()])
    fields.setdefault("gids", [mapping(200_000)])
    return pb.UserNamespace(**fields)


def test_mode_pod_with_one_mapping_each_is_the_pods_user_namespace() -> None:
    assert user_namespace(options(), True, "f") == UserNamespace(
        IdMapping(100_000, 0, 65536), IdMapping(200_000, 0, 65536)
    )


def test_no_options_and_mode_node_are_the_nodes_user_namespace() -> None:
    assert user_namespace(pb.UserNamespace(), False, "f") is None
    assert user_namespace(options(mode=pb.NODE, uids=[], gids=[]), True, "f") is None


@pytest.mark.parametrize(
    ("request_options", "message"),
    [
        (options(uids=[mapping(), mapping(300_000, 65536)]), "exactly one mapping"),
        (options(gids=[]), "exactly one mapping"),
        (options(uids=[mapping(container_id=1)]), "container id 0"),
        (options(uids=[mapping(length=0)]), "not a valid range"),
        (options(uids=[mapping(host_id=2**32 - 2)]), "not a valid range"),
        (options(mode=pb.NODE), "NODE takes no"),
        (options(mode=pb.TARGET), "TARGET"),
        (options(mode=99), "99"),
    ],
)
def test_requests_outside_that_shape_are_invalid(request_options: Any, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        user_namespace(request_options, True, "f")


def test_a_per_container_user_namespace_is_unimplemented() -> None:
    with pytest.raises(Unimplemented, match="CONTAINER"):
        user_namespace(options(mode=pb.CONTAINER), True, "f")


def test_a_mount_carries_its_mappings_or_none() -> None:
    idmapped = pb.Mount(uidMappings=[mapping()], gidMappings=[mapping(200_000)])

    assert mount_mappings(idmapped, "m") == UserNamespace(
        IdMapping(100_000, 0, 65536), IdMapping(200_000, 0, 65536)
    )
    assert mount_mappings(pb.Mount(), "m") is None
    with pytest.raises(InvalidArgument, match="gidMappings"):
        mount_mappings(pb.Mount(uidMappings=[mapping()]), "m")
