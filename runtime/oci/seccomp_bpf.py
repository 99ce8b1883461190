"""Compiled seccomp filters, so crun compiles each profile once rather than per container.

crun turns the spec's seccomp section into BPF on every create: about 13 ms of a container's
start here. Its own cache needs libgcrypt, which Debian's crun is built without. crun leaves
the filter it compiled in its state dir as `seccomp.bpf`, and takes a filter back through the
`run.oci.seccomp_bpf_data` annotation (then ignoring the section). The filter depends only on
the section, crun and libseccomp and the kernel, so one learned from a container serves every
later container with the same section for as long as this agent and that binary run.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

ANNOTATION = "run.oci.seccomp_bpf_data"


class SeccompFilters:
    """Per handler binary: the section's digest -> the filter crun compiled for it (base64)."""

    def __init__(self, binary: Path) -> None:
        self._binary = binary
        self._filters: dict[str, str] = {}

    def _key(self, section: dict[str, Any]) -> str:
        # The binary's identity is part of the key: a crun upgraded under a running agent may
        # compile differently.
        st = os.stat(self._binary)
        text = json.dumps(section, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(f"{st.st_ino}:{st.st_mtime_ns}:{text}".encode()).hexdigest()

    def annotate(self, spec: dict[str, Any]) -> bool:
        """Give the spec the compiled filter for its section, if known; True if it was."""
        section = spec.get("linux", {}).get("seccomp")
        if not section:
            return False
        compiled = self._filters.get(self._key(section))
        if compiled is None:
            return False
        spec.setdefault("annotations", {})[ANNOTATION] = compiled
        return True

    def learn(self, spec: dict[str, Any], container_state_dir: Path) -> None:
        """Keep the filter crun compiled for this spec's section (after a successful create)."""
        section = spec.get("linux", {}).get("seccomp")
        if not section or ANNOTATION in spec.get("annotations", {}):
            return
        try:
            data = (container_state_dir / "seccomp.bpf").read_bytes()
        except OSError:
            return
        # A BPF program is a whole number of 8-byte instructions; anything else is not one.
        if data and len(data) % 8 == 0:
            self._filters[self._key(section)] = base64.b64encode(data).decode()
