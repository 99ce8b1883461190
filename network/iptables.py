"""Masquerade, FORWARD accepts and hostPort DNAT in chains of our own, via the iptables CLI.

Each change is one iptables-restore --noflush transaction: our base chains are declared (and
so flushed) and refilled whole, which makes set-up idempotent without parsing rules back;
each pod's hostPorts live in a chain of its own, reached by one jump that names the pod.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from network.errors import NetworkError
from network.ipam import IPNetwork
from network.types import HostPort

_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class RuleSet:
    """The rule tables of one address family."""

    save: str
    restore: str
    loopback: str | None  # 127.0.0.0/8 for IPv4: localhost reaches hostPorts too

    @classmethod
    def for_family(cls, version: int) -> RuleSet:
        if version == 6:
            return cls("ip6tables-save", "ip6tables-restore", None)
        return cls("iptables-save", "iptables-restore", "127.0.0.0/8")


def _run(argv: list[str], stdin: str | None = None) -> str:
    try:
        done = subprocess.run(
            argv, input=stdin, capture_output=True, text=True, timeout=_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetworkError(f"{argv[0]}: {exc}") from None
    if done.returncode != 0:
        raise NetworkError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    return done.stdout


class PodRules:
    def __init__(self, prefix: str, bridge: str) -> None:
        self.prefix = prefix
        self.bridge = bridge
        self.hostports_chain = f"{prefix}-HOSTPORTS"
        self.postrouting_chain = f"{prefix}-POSTROUTING"
        self.forward_chain = f"{prefix}-FORWARD"

    def pod_chain(self, sandbox_id: str) -> str:
        # iptables chain names hold at most 28 characters.
        return f"{self.prefix}-HP-{sandbox_id[: 24 - len(self.prefix)]}"

    def ensure_base(self, networks: Sequence[IPNetwork]) -> None:
        for version in sorted({n.version for n in networks}):
            family = RuleSet.for_family(version)
            own = [n for n in networks if n.version == version]
            _run([family.restore, "-w", "5", "--noflush"], self._base(family, own))

    def _base(self, family: RuleSet, networks: Sequence[IPNetwork]) -> str:
        nat = _run([family.save, "-t", "nat"])
        filt = _run([family.save, "-t", "filter"])
        lines = ["*nat"]
        if f":{self.hostports_chain} " not in nat:
            lines.append(f":{self.hostports_chain} - [0:0]")
        lines.append(f":{self.postrouting_chain} - [0:0]")
        for chain in ("PREROUTING", "OUTPUT"):
            jump = f"-A {chain} -m addrtype --dst-type LOCAL -j {self.hostports_chain}"
            if jump not in nat:
                lines.append(jump)
        jump = f"-A POSTROUTING -j {self.postrouting_chain}"
        if jump not in nat:
            lines.append(jump)
        post = self.postrouting_chain
        if family.loopback:
            lines.append(
                f"-A {post} -s {family.loopback} -o {self.bridge} "
                "-m conntrack --ctstate DNAT -j MASQUERADE"
            )
        for n in networks:
            # A pod reaching a hostPort (its own or another pod's) must see the reply come
            # back from the address it asked, so DNAT'd pod-to-pod traffic is masqueraded.
            lines.append(f"-A {post} -s {n} -d {n} -m conntrack --ctstate DNAT -j MASQUERADE")
            lines.append(f"-A {post} -s {n} ! -d {n} -j MASQUERADE")
        lines += ["COMMIT", "*filter", f":{self.forward_chain} - [0:0]"]
        jump = f"-A FORWARD -j {self.forward_chain}"
        if jump not in filt:
            lines.append(jump)
        lines += [
            f"-A {self.forward_chain} -i {self.bridge} -j ACCEPT",
            f"-A {self.forward_chain} -o {self.bridge} -j ACCEPT",
            "COMMIT",
        ]
        return "\n".join(lines) + "\n"

    def add_hostports(self, sandbox_id: str, pod_ip: str, ports: Sequence[HostPort]) -> None:
        version = 6 if ":" in pod_ip else 4
        family = RuleSet.for_family(version)
        chain = self.pod_chain(sandbox_id)
        target = f"[{pod_ip}]" if version == 6 else pod_ip
        lines = ["*nat", f":{chain} - [0:0]"]
        for port in ports:
            if port.host_ip and (":" in port.host_ip) != (version == 6):
                continue
            match = f"-p {port.protocol} -m {port.protocol} --dport {port.host_port}"
            if port.host_ip:
                match = f"-d {port.host_ip} {match}"
            lines.append(
                f"-A {chain} {match} -j DNAT --to-destination {target}:{port.container_port}"
            )
        lines += [f"-A {self.hostports_chain} {self._jump_to(sandbox_id)}", "COMMIT"]
        _run([family.restore, "-w", "5", "--noflush"], "\n".join(lines) + "\n")

    def remove_hostports(self, sandbox_id: str, versions: Sequence[int] = (4,)) -> bool:
        """Remove the pod's hostPort chain; False when there was none."""
        removed = False
        chain = self.pod_chain(sandbox_id)
        for version in versions:
            family = RuleSet.for_family(version)
            nat = _run([family.save, "-t", "nat"])
            if f":{chain} " not in nat:
                continue
            lines = ["*nat"]
            lines += [
                "-D" + line[2:]
                for line in nat.splitlines()
                if line.startswith(f"-A {self.hostports_chain} ") and line.endswith(f"-j {chain}")
            ]
            lines += [f"-F {chain}", f"-X {chain}", "COMMIT"]
            _run([family.restore, "-w", "5", "--noflush"], "\n".join(lines) + "\n")
            removed = True
        return removed

    def pods_with_hostports(self, version: int = 4) -> list[str]:
        """Chain suffixes (sandbox id prefixes) of every pod hostPort chain present."""
        nat = _run([RuleSet.for_family(version).save, "-t", "nat"])
        marker = f":{self.prefix}-HP-"
        return [
            line[len(marker) :].split()[0] for line in nat.splitlines() if line.startswith(marker)
        ]

    def _jump_to(self, sandbox_id: str) -> str:
        return f'-m comment --comment "moorage pod {sandbox_id}" -j {self.pod_chain(sandbox_id)}'

    def remove_all(self, versions: Sequence[int] = (4, 6)) -> None:
        """Every rule and chain with our prefix: for tests and for operators leaving Moorage."""
        for version in versions:
            family = RuleSet.for_family(version)
            for table in ("nat", "filter"):
                try:
                    saved = _run([family.save, "-t", table])
                except NetworkError:
                    continue
                ours = [
                    line[1:].split()[0]
                    for line in saved.splitlines()
                    if line.startswith(f":{self.prefix}-")
                ]
                if not ours:
                    continue
                lines = [f"*{table}"]
                lines += [
                    "-D" + line[2:]
                    for line in saved.splitlines()
                    if line.startswith("-A ")
                    and line.split()[1] not in ours
                    and any(line.endswith(f"-j {c}") for c in ours)
                ]
                lines += [f"-F {c}" for c in ours] + [f"-X {c}" for c in ours] + ["COMMIT"]
                _run([family.restore, "-w", "5", "--noflush"], "\n".join(lines) + "\n")
