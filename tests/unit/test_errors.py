from __future__ import annotations

import grpc
import pytest

from cri.errors import status_code_for
from runtime.errors import (
    FailedPrecondition,
    InvalidArgument,
    MoorageError,
    NameReserved,
    NotFound,
    Unimplemented,
)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (NotFound("pod sandbox 'x' not found"), grpc.StatusCode.NOT_FOUND),
        (InvalidArgument("config is missing"), grpc.StatusCode.INVALID_ARGUMENT),
        (NameReserved("web_default_u_0", "abc"), grpc.StatusCode.ALREADY_EXISTS),
        (FailedPrecondition("not ready"), grpc.StatusCode.FAILED_PRECONDITION),
        (Unimplemented("runtime.v1.Service/Exec"), grpc.StatusCode.UNIMPLEMENTED),
    ],
)
def test_each_domain_error_maps_to_its_grpc_code(
    error: MoorageError, code: grpc.StatusCode
) -> None:
    assert status_code_for(error) == code


def test_subclass_of_a_domain_error_maps_to_the_code_of_its_base() -> None:
    class SandboxNotFound(NotFound):
        pass

    assert status_code_for(SandboxNotFound("x")) == grpc.StatusCode.NOT_FOUND


def test_error_without_a_code_of_its_own_maps_to_unknown() -> None:
    assert status_code_for(MoorageError("boom")) == grpc.StatusCode.UNKNOWN


def test_name_reserved_names_the_name_and_the_holder() -> None:
    error = NameReserved("web_default_u_0", "abc123")

    assert str(error) == "name 'web_default_u_0' is reserved for abc123"
    assert (error.name, error.holder_id) == ("web_default_u_0", "abc123")
