"""The committed stubs are what hack/gen-proto makes of the vendored proto, and that proto is
the upstream file the README says it is."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cri.proto import api_pb2

ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = ROOT / "cri" / "proto"
GENERATED = ("api_pb2.py", "api_pb2.pyi", "api_pb2_grpc.py", "api_pb2_grpc.pyi")


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gen")
    subprocess.run([ROOT / "hack" / "gen-proto", out], check=True, capture_output=True)
    return out / "cri" / "proto"


@pytest.mark.parametrize("name", GENERATED)
def test_regenerating_the_stubs_changes_nothing(regenerated: Path, name: str) -> None:
    committed = (PROTO_DIR / name).read_text()
    fresh = (regenerated / name).read_text()

    assert fresh == committed, f"cri/proto/{name} is stale: run hack/gen-proto and commit it"


def test_the_generated_modules_are_the_ones_imported() -> None:
    assert Path(api_pb2.__file__).parent == PROTO_DIR
    assert api_pb2.DESCRIPTOR.package == "runtime.v1"
