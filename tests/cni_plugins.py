"""Debian's CNI plugins in tests and the bench: the usual chain, and removing its rules.

Every network gets a unique name; the plugins' iptables rules carry it in a comment, which is
how teardown finds exactly what one test made.
"""

from __future__ import annotations

import shlex
import subprocess
from typing import Any


def standard_plugins(bridge: str, subnet: str, ipam_dir: str) -> list[dict[str, Any]]:
    """bridge with host-local IPAM, then portmap: the chain containerd's example config runs."""
    return [
        {
            "type": "bridge",
            "bridge": bridge,
            "isGateway": True,
            "ipMasq": True,
            "hairpinMode": True,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": subnet}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": ipam_dir,
            },
        },
        {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
    ]


def rule_marker(network: str) -> str:
    """How the network's name appears in iptables-save comments."""
    return f'\\"{network}\\"'


def _iptables(*args: str) -> str:
    return subprocess.run(args, capture_output=True, text=True, check=False).stdout


def remove_plugin_rules(marker: str) -> None:
    """Delete every iptables rule mentioning marker, and the per-pod CNI chains they jump to."""
    for table in ("nat", "filter", "mangle"):
        chains: list[str] = []
        for line in _iptables("iptables-save", "-t", table).splitlines():
            if not line.startswith("-A ") or marker not in line:
                continue
            args = shlex.split(line)
            if "-j" in args:
                target = args[args.index("-j") + 1]
                if target.startswith("CNI-") and not target.startswith("CNI-HOSTPORT-"):
                    chains.append(target)
            _iptables("iptables", "-t", table, "-D", *args[1:])
        for chain in dict.fromkeys(chains):
            _iptables("iptables", "-t", table, "-F", chain)
            _iptables("iptables", "-t", table, "-X", chain)
