"""Sandboxes in memory and in state.db, kept in step: every change goes through this class."""

from __future__ import annotations

from collections.abc import Callable

from runtime.errors import InvalidArgument, NameReserved, NotFound
from runtime.pods.model import Sandbox, SandboxFilter, SandboxState
from runtime.state.codec import from_json, to_json
from runtime.state.db import StateDB


class SandboxStore:
    def __init__(self, db: StateDB) -> None:
        self._db = db
        self._by_id: dict[str, Sandbox] = {}
        self._id_by_name: dict[str, str] = {}
        for record in db.records("sandboxes"):
            sandbox = from_json(Sandbox, record)
            self._by_id[sandbox.id] = sandbox
            self._id_by_name[sandbox.name] = sandbox.id

    def reserve(self, sandbox: Sandbox) -> None:
        """Claim the sandbox's name and record it, or fail naming the holder."""
        holder = self._id_by_name.get(sandbox.name)
        if holder is not None:
            raise NameReserved(sandbox.name, holder)
        self._db.put("sandboxes", sandbox.id, sandbox.name, to_json(sandbox))
        self._by_id[sandbox.id] = sandbox
        self._id_by_name[sandbox.name] = sandbox.id

    def update(self, sandbox_id: str, change: Callable[[Sandbox], Sandbox]) -> Sandbox:
        updated = change(self._by_id[sandbox_id])
        self._db.put("sandboxes", updated.id, updated.name, to_json(updated))
        self._by_id[sandbox_id] = updated
        return updated

    def delete(self, sandbox_id: str) -> None:
        sandbox = self._by_id.pop(sandbox_id, None)
        if sandbox is None:
            return
        self._db.delete("sandboxes", sandbox_id)
        self._id_by_name.pop(sandbox.name, None)

    def find(self, id_or_prefix: str) -> Sandbox | None:
        """Look up by full id or unique id prefix, as kubelet and crictl pass either.

        A sandbox still being built is not visible yet, as in containerd.
        """
        if not id_or_prefix:
            raise InvalidArgument("pod_sandbox_id is empty")
        exact = self._by_id.get(id_or_prefix)
        if exact is not None:
            return exact if exact.state is not SandboxState.CREATING else None
        matches = [s for s in self._visible() if s.id.startswith(id_or_prefix)]
        if len(matches) > 1:
            raise InvalidArgument(f"pod sandbox id prefix {id_or_prefix!r} is ambiguous")
        return matches[0] if matches else None

    def get(self, id_or_prefix: str) -> Sandbox:
        sandbox = self.find(id_or_prefix)
        if sandbox is None:
            raise NotFound(f"pod sandbox {id_or_prefix!r} not found")
        return sandbox

    def select(self, flt: SandboxFilter | None = None) -> list[Sandbox]:
        sandboxes = sorted(self._visible(), key=lambda s: s.created_at_ns)
        return [s for s in sandboxes if flt is None or flt.matches(s)]

    def all(self) -> list[Sandbox]:
        """Every row, half-built ones included: for recovery."""
        return list(self._by_id.values())

    def _visible(self) -> list[Sandbox]:
        return [s for s in self._by_id.values() if s.state is not SandboxState.CREATING]
