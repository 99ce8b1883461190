"""Domain errors to gRPC status codes: kubelet acts on the code, operators read the message."""

from __future__ import annotations

import grpc

from network.errors import (
    AddressesExhausted,
    HostPortInUse,
    InvalidNetworkRequest,
    NetworkError,
    NetworkNotReady,
)
from runtime.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    MoorageError,
    NameReserved,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unimplemented,
)

_CODES: dict[type[Exception], grpc.StatusCode] = {
    NotFound: grpc.StatusCode.NOT_FOUND,
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NameReserved: grpc.StatusCode.ALREADY_EXISTS,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    Unimplemented: grpc.StatusCode.UNIMPLEMENTED,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    InvalidNetworkRequest: grpc.StatusCode.INVALID_ARGUMENT,
    HostPortInUse: grpc.StatusCode.ALREADY_EXISTS,
    AddressesExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    NetworkNotReady: grpc.StatusCode.FAILED_PRECONDITION,
    NetworkError: grpc.StatusCode.UNKNOWN,
}

# Errors a handler may raise on purpose: anything else is a bug and answers INTERNAL.
DOMAIN_ERRORS = (MoorageError, NetworkError)


def status_code_for(error: Exception) -> grpc.StatusCode:
    for cls in type(error).__mro__:
        if cls in _CODES:
            return _CODES[cls]
    return grpc.StatusCode.UNKNOWN
