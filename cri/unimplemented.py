"""UNIMPLEMENTED, naming the method, for every CRI call Moorage does not answer yet."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from runtime.errors import Unimplemented


class UnimplementedFallback:
    service_name = "runtime.v1.Service"

    def __getattr__(self, name: str) -> Callable[[object, object], Awaitable[None]]:
        # The generated registration looks every RPC up by its CamelCase name.
        if not name[:1].isupper():
            raise AttributeError(name)
        service = self.service_name

        async def unimplemented(request: object, context: object) -> None:
            raise Unimplemented(f"{service}/{name} is not implemented by moorage yet")

        return unimplemented
