"""Domain errors to gRPC status codes: kubelet acts on the code, operators read the message."""

from __future__ import annotations

import grpc

from runtime.errors import (
    FailedPrecondition,
    InvalidArgument,
    MoorageError,
    NameReserved,
    NotFound,
    Unimplemented,
)

_CODES: dict[type[MoorageError], grpc.StatusCode] = {
    NotFound: grpc.StatusCode.NOT_FOUND,
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NameReserved: grpc.StatusCode.ALREADY_EXISTS,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    Unimplemented: grpc.StatusCode.UNIMPLEMENTED,
}


def status_code_for(error: MoorageError) -> grpc.StatusCode:
    for cls in type(error).__mro__:
        if cls in _CODES:
            return _CODES[cls]
    return grpc.StatusCode.UNKNOWN
