"""The pages of a Stream* RPC: the items its List counterpart answers, cut into messages small
enough for any client's receive limit, so a node with thousands of containers never meets
gRPC's message cap."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol, TypeVar

# A page stays under half of the smallest receive limit a client is likely to set (64 KiB);
# kubelet's own is 16 MiB, so it costs it a few more messages and nothing else.
PAGE_BYTES = 32 * 1024
# A repeated field's tag and length prefix around each item.
_ITEM_OVERHEAD = 6


class Sized(Protocol):
    def ByteSize(self) -> int: ...


Item = TypeVar("Item", bound=Sized)


def pages(items: Iterable[Item], budget: int = PAGE_BYTES) -> Iterator[list[Item]]:
    """Every item exactly once, in order, in pages of at least one item; none when there is
    nothing to send. An item larger than the budget travels alone."""
    page: list[Item] = []
    size = 0
    for item in items:
        cost = item.ByteSize() + _ITEM_OVERHEAD
        if page and size + cost > budget:
            yield page
            page, size = [], 0
        page.append(item)
        size += cost
    if page:
        yield page
