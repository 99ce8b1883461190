"""Domain errors raised below the gRPC layer; cri/errors.py maps each to a status code."""


class MoorageError(Exception):
    """Base of every error the agent reports to a CRI client."""


class NotFound(MoorageError):
    pass


class InvalidArgument(MoorageError):
    pass


class NameReserved(MoorageError):
    def __init__(self, name: str, holder_id: str) -> None:
        super().__init__(f"name {name!r} is reserved for {holder_id}")
        self.name = name
        self.holder_id = holder_id


class FailedPrecondition(MoorageError):
    pass


class Unimplemented(MoorageError):
    pass


class PermissionDenied(MoorageError):
    pass


class Unauthenticated(MoorageError):
    pass


class Unavailable(MoorageError):
    pass


class ImagePullFailed(MoorageError):
    """A pull that failed for a reason other than the ones with codes of their own."""


class DeadlineExceeded(MoorageError):
    """The operation ran past the time the caller gave it (kubelet's probe timeout)."""


class ContainerRuntimeFailed(MoorageError):
    """The OCI runtime or conmon refused: the message carries what they said."""


class ResourceExhausted(MoorageError):
    """A bounded resource is full (e.g. streaming requests waiting for their clients)."""
