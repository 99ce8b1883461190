from __future__ import annotations

import inspect

import pytest

from cri.unimplemented import UnimplementedFallback
from runtime.errors import Unimplemented


class ImageFallback(UnimplementedFallback):
    service_name = "runtime.v1.ImageService"


def test_missing_rpc_is_a_coroutine_function() -> None:
    handler = UnimplementedFallback().ListContainers

    assert inspect.iscoroutinefunction(handler)


async def test_missing_rpc_raises_unimplemented_naming_service_and_method() -> None:
    handler = UnimplementedFallback().ListContainers

    with pytest.raises(Unimplemented, match=r"^runtime.v1.Service/ListContainers is not"):
        await handler(object(), object())


async def test_subclass_names_its_own_service() -> None:
    with pytest.raises(Unimplemented, match=r"^runtime.v1.ImageService/PullImage is not"):
        await ImageFallback().PullImage(object(), object())


@pytest.mark.parametrize("name", ["listContainers", "_private", "__wrapped__", "foo"])
def test_missing_lowercase_attribute_is_an_attribute_error(name: str) -> None:
    fallback = UnimplementedFallback()

    with pytest.raises(AttributeError):
        getattr(fallback, name)
    assert not hasattr(fallback, name)


def test_defined_attributes_are_not_replaced() -> None:
    assert UnimplementedFallback().service_name == "runtime.v1.Service"
