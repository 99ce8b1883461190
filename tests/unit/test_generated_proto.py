"""The committed stubs are what hack/gen-proto makes of the vendored proto, and that proto is
the upstream file the README says it is."""

from __future__ import annotations

import re
import subprocess
import tomllib
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


def _floor(requirement_prefix: str) -> tuple[int, ...]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (spec,) = [d for d in project["dependencies"] if d.startswith(requirement_prefix + ">=")]
    found = re.match(rf"{requirement_prefix}>=([\d.]+)", spec)
    assert found, spec
    return tuple(int(part) for part in found[1].split("."))


def test_the_runtime_pins_admit_no_release_older_than_the_generated_code_needs() -> None:
    gencode = re.search(
        r"ValidateProtobufRuntimeVersion\(\s*_runtime_version\.Domain\.PUBLIC,\s*"
        r"(\d+),\s*(\d+),\s*(\d+),",
        (PROTO_DIR / "api_pb2.py").read_text(),
    )
    grpc_gencode = re.search(
        r"GRPC_GENERATED_VERSION = '([\d.]+)'", (PROTO_DIR / "api_pb2_grpc.py").read_text()
    )
    assert gencode and grpc_gencode

    assert _floor("protobuf") >= tuple(int(part) for part in gencode.groups())
    assert _floor("grpcio") >= tuple(int(part) for part in grpc_gencode[1].split("."))
