"""The committed stubs are what hack/gen-proto makes of the vendored protos (cri/proto;
runtime/nri/proto: NRI and ttrpc), and those protos are the upstream files their READMEs say
they are."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from cri.proto import api_pb2
from runtime.nri.proto import api_pb2 as nri_api_pb2
from runtime.nri.proto import request_pb2, status_pb2

ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = ROOT / "cri" / "proto"
NRI_PROTO_DIR = ROOT / "runtime" / "nri" / "proto"
# Per directory, everything hack/gen-proto writes there.
GENERATED = {
    "cri/proto": ("api_pb2.py", "api_pb2.pyi", "api_pb2_grpc.py", "api_pb2_grpc.pyi"),
    "runtime/nri/proto": (
        "api_pb2.py",
        "api_pb2.pyi",
        "request_pb2.py",
        "request_pb2.pyi",
        "status_pb2.py",
        "status_pb2.pyi",
    ),
}
GENERATED_FILES = [
    f"{directory}/{name}" for directory, names in GENERATED.items() for name in names
]


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gen")
    subprocess.run([ROOT / "hack" / "gen-proto", out], check=True, capture_output=True)
    return out


@pytest.mark.parametrize("path", GENERATED_FILES)
def test_regenerating_the_stubs_changes_nothing(regenerated: Path, path: str) -> None:
    committed = (ROOT / path).read_text()
    fresh = (regenerated / path).read_text()

    assert fresh == committed, f"{path} is stale: run hack/gen-proto and commit it"


@pytest.mark.parametrize("directory", GENERATED)
def test_every_generated_file_is_checked(regenerated: Path, directory: str) -> None:
    written = {p.name for p in (regenerated / directory).iterdir()}

    assert written == set(GENERATED[directory])


def test_the_generated_modules_are_the_ones_imported() -> None:
    assert Path(api_pb2.__file__).parent == PROTO_DIR
    assert api_pb2.DESCRIPTOR.package == "runtime.v1"
    for module in (nri_api_pb2, request_pb2, status_pb2):
        assert Path(str(module.__file__)).parent == NRI_PROTO_DIR
    assert nri_api_pb2.DESCRIPTOR.package == "nri.pkg.api.v1alpha1"
    assert request_pb2.DESCRIPTOR.package == "ttrpc"
    # ttrpc's Response carries the one google.rpc.Status, not a look-alike of another name.
    assert request_pb2.Response().status.DESCRIPTOR.full_name == "google.rpc.Status"


def _floor(requirement_prefix: str) -> tuple[int, ...]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (spec,) = [d for d in project["dependencies"] if d.startswith(requirement_prefix + ">=")]
    found = re.match(rf"{requirement_prefix}>=([\d.]+)", spec)
    assert found, spec
    return tuple(int(part) for part in found[1].split("."))


@pytest.mark.parametrize("path", [p for p in GENERATED_FILES if p.endswith("_pb2.py")])
def test_the_protobuf_pin_admits_no_release_older_than_the_generated_code_needs(
    path: str,
) -> None:
    gencode = re.search(
        r"ValidateProtobufRuntimeVersion\(\s*_runtime_version\.Domain\.PUBLIC,\s*"
        r"(\d+),\s*(\d+),\s*(\d+),",
        (ROOT / path).read_text(),
    )
    assert gencode

    assert _floor("protobuf") >= tuple(int(part) for part in gencode.groups())


def test_the_grpcio_pin_admits_no_release_older_than_the_generated_code_needs() -> None:
    grpc_gencode = re.search(
        r"GRPC_GENERATED_VERSION = '([\d.]+)'", (PROTO_DIR / "api_pb2_grpc.py").read_text()
    )
    assert grpc_gencode

    assert _floor("grpcio") >= tuple(int(part) for part in grpc_gencode[1].split("."))
