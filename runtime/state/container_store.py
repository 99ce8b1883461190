"""Containers in memory and in state.db, kept in step: every change goes through this class."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from runtime.containers.model import Container, ContainerFilter, ContainerState
from runtime.errors import InvalidArgument, NameReserved, NotFound
from runtime.state.codec import from_json, to_json
from runtime.state.db import StateDB


def reserved_name(container: Container, sandbox_name: str) -> str:
    """Unique per pod and attempt, as kubelet expects a runtime to reserve it."""
    return f"{container.config.name}_{sandbox_name}_{container.config.attempt}"


class ContainerStore:
    def __init__(self, db: StateDB) -> None:
        self._db = db
        self._by_id: dict[str, Container] = {}
        self._names: dict[str, str] = {}
        self._name_by_id: dict[str, str] = {}
        self._retiring: dict[str, Container] = {}
        for name, record in db.named_records("containers"):
            container = from_json(Container, record)
            if container.removing:
                self._retiring[container.id] = container
                continue
            self._by_id[container.id] = container
            self._names[name] = container.id
            self._name_by_id[container.id] = name

    def reserve(self, container: Container, name: str) -> None:
        holder = self._names.get(name)
        if holder is not None:
            raise NameReserved(name, holder)
        self._db.put("containers", container.id, name, to_json(container))
        self._by_id[container.id] = container
        self._names[name] = container.id
        self._name_by_id[container.id] = name

    def update(self, container_id: str, change: Callable[[Container], Container]) -> Container:
        updated = change(self._by_id[container_id])
        name = self._name_by_id[container_id]
        self._db.put("containers", container_id, name, to_json(updated))
        self._by_id[container_id] = updated
        return updated

    def retire(self, container_id: str) -> Container:
        """Gone for every query and its name free, but kept on disk as removing until its
        clean-up ends (delete), so that a restart finishes the clean-up."""
        retired = replace(self._by_id.pop(container_id), removing=True)
        name = self._name_by_id.pop(container_id)
        self._names.pop(name, None)
        # The name column is unique and the name is free again: the row keys on the id.
        self._db.put("containers", container_id, container_id, to_json(retired))
        self._retiring[container_id] = retired
        return retired

    def delete(self, container_id: str) -> None:
        if self._retiring.pop(container_id, None) is not None:
            self._db.delete("containers", container_id)
            return
        if self._by_id.pop(container_id, None) is None:
            return
        self._db.delete("containers", container_id)
        name = self._name_by_id.pop(container_id, None)
        if name is not None:
            self._names.pop(name, None)

    def find(self, id_or_prefix: str) -> Container | None:
        """By full id or unique prefix; a container still being created is not visible."""
        if not id_or_prefix:
            raise InvalidArgument("container_id is empty")
        exact = self._by_id.get(id_or_prefix)
        if exact is not None:
            return exact if exact.state is not ContainerState.CREATING else None
        matches = [c for c in self._visible() if c.id.startswith(id_or_prefix)]
        if len(matches) > 1:
            raise InvalidArgument(f"container id prefix {id_or_prefix!r} is ambiguous")
        return matches[0] if matches else None

    def get(self, id_or_prefix: str) -> Container:
        container = self.find(id_or_prefix)
        if container is None:
            raise NotFound(f"container {id_or_prefix!r} not found")
        return container

    def select(self, flt: ContainerFilter | None = None) -> list[Container]:
        containers = sorted(self._visible(), key=lambda c: c.created_at_ns)
        return [c for c in containers if flt is None or flt.matches(c)]

    def in_sandbox(self, sandbox_id: str) -> list[Container]:
        """Every row of the pod, half-created ones included."""
        return [c for c in self._by_id.values() if c.sandbox_id == sandbox_id]

    def all(self) -> list[Container]:
        """Retiring ones included: their layers stay in use and their cgroups exist."""
        return [*self._by_id.values(), *self._retiring.values()]

    def _visible(self) -> list[Container]:
        return [c for c in self._by_id.values() if c.state is not ContainerState.CREATING]
