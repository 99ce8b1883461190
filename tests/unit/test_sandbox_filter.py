from __future__ import annotations

import pytest

from runtime.pods.model import SandboxFilter, SandboxState
from tests.unit.builders import sandbox

POD = sandbox("abc123", state=SandboxState.READY, labels={"app": "web", "tier": "front"})


def test_empty_filter_matches_every_sandbox() -> None:
    assert SandboxFilter().matches(POD)
    assert SandboxFilter().matches(sandbox("x", labels={}, state=SandboxState.NOTREADY))


@pytest.mark.parametrize(("prefix", "expected"), [("abc", True), ("abc123", True), ("abd", False)])
def test_id_prefix_must_start_the_id(prefix: str, expected: bool) -> None:
    assert SandboxFilter(id_prefix=prefix).matches(POD) is expected


def test_id_prefix_longer_than_the_id_does_not_match() -> None:
    assert not SandboxFilter(id_prefix="abc1234").matches(POD)


@pytest.mark.parametrize(
    ("state", "expected"),
    [(SandboxState.READY, True), (SandboxState.NOTREADY, False), (None, True)],
)
def test_state_must_equal_the_sandbox_state(state: SandboxState | None, expected: bool) -> None:
    assert SandboxFilter(state=state).matches(POD) is expected


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ({}, True),
        ({"app": "web"}, True),
        ({"app": "web", "tier": "front"}, True),
        ({"app": "web", "tier": "back"}, False),
        ({"app": "db"}, False),
        ({"missing": "x"}, False),
        ({"missing": ""}, False),
    ],
)
def test_every_label_of_the_selector_must_match(selector: dict[str, str], expected: bool) -> None:
    assert SandboxFilter(label_selector=selector).matches(POD) is expected


def test_all_criteria_must_hold_together() -> None:
    flt = SandboxFilter(id_prefix="abc", state=SandboxState.READY, label_selector={"app": "web"})

    assert flt.matches(POD)
    assert not flt.matches(sandbox("abc9", state=SandboxState.NOTREADY, labels={"app": "web"}))
    assert not flt.matches(sandbox("zzz", labels={"app": "web"}))
    assert not flt.matches(sandbox("abc9", labels={"app": "db"}))
