"""Linux cgroup resources as the CRI asks for them, shared by containers and pods."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Resources:
    """CRI LinuxContainerResources; 0 and empty mean "not set"."""

    cpu_period: int = 0
    cpu_quota: int = 0
    cpu_shares: int = 0
    memory_limit_bytes: int = 0
    memory_swap_limit_bytes: int = 0
    oom_score_adj: int = 0
    cpuset_cpus: str = ""
    cpuset_mems: str = ""
    # Page size ("2MB", "1GB") -> limit in bytes.
    hugepage_limits: dict[str, int] = field(default_factory=dict)
    # cgroup v2 file name -> value.
    unified: dict[str, str] = field(default_factory=dict)
