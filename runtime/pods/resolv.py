"""The pod's /etc/resolv.conf, rendered from the CRI DNSConfig."""

from __future__ import annotations

from pathlib import Path

from runtime.errors import InvalidArgument
from runtime.pods.model import DnsConfig

HOST_RESOLV_CONF = Path("/etc/resolv.conf")


def render_resolv_conf(dns: DnsConfig | None, host_file: Path = HOST_RESOLV_CONF) -> str:
    """DNSConfig as resolv.conf text; without one the pod sees the host's file, as in containerd."""
    if dns is None or not (dns.servers or dns.searches or dns.options):
        try:
            return host_file.read_text()
        except FileNotFoundError:
            return ""
    for item in (*dns.servers, *dns.searches, *dns.options):
        if not item.strip() or any(c in item for c in "\n\r"):
            raise InvalidArgument(f"dns_config entry {item!r} is empty or spans lines")
    lines = [f"nameserver {server}" for server in dns.servers]
    if dns.searches:
        lines.append("search " + " ".join(dns.searches))
    if dns.options:
        lines.append("options " + " ".join(dns.options))
    return "\n".join(lines) + "\n"
