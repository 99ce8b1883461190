"""Errors of the network layer; cri/errors.py maps them to gRPC codes."""


class NetworkError(Exception):
    """A pod's network could not be set up or torn down."""


class InvalidNetworkRequest(NetworkError):
    """The request or configuration is malformed (a bad CIDR, port or protocol)."""


class AddressesExhausted(NetworkError):
    pass


class HostPortInUse(NetworkError):
    pass


class NetworkNotReady(NetworkError):
    """No usable network configuration (CNI mode without a conflist)."""
