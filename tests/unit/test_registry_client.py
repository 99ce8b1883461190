"""RegistryClient against a small in-process registry speaking just enough HTTP/1.1."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from runtime.images.registries_conf import Endpoint
from runtime.images.registry import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    BadContent,
    Credentials,
    ManifestUnknown,
    Platform,
    RegistryClient,
    RegistryError,
    Unauthorized,
    Unreachable,
)

_ROUTE = re.compile(r"/v2/(.+)/(manifests|blobs)/([^/]+)")
TOKEN = "token-for-pull"
NO_CREDS = Credentials()
USER = Credentials(username="alice", password="s3cret")


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    # Promise the whole body, send only this many bytes, then hang up.
    cut_after: int | None = None


@dataclass
class FakeRegistry:
    port: int = 0
    manifests: dict[tuple[str, str], tuple[str, bytes]] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    basic_user: Credentials | None = None
    bearer: bool = False
    faults: dict[str, list[Reply]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(f"127.0.0.1:{self.port}")

    def add_manifest(self, name: str, tag: str, media_type: str, doc: dict[str, Any]) -> str:
        raw = json.dumps(doc, indent=1).encode()
        digest = digest_of(raw)
        self.manifests[name, digest] = (media_type, raw)
        if tag:
            self.manifests[name, tag] = (media_type, raw)
        return digest

    def add_blob(self, data: bytes) -> str:
        self.blobs[digest_of(data)] = data
        return digest_of(data)

    def paths(self, prefix: str) -> list[str]:
        return [r.path for r in self.requests if r.path.startswith(prefix)]

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                method, target, _ = line.decode().split(" ", 2)
                headers = {}
                while (header := await reader.readline()) not in (b"\r\n", b""):
                    key, _, value = header.decode().partition(":")
                    headers[key.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                url = urlsplit(target)
                request = Request(method, url.path, dict(parse_qsl(url.query)), headers, body)
                self.requests.append(request)
                reply = self.handle(request)
                head = f"HTTP/1.1 {reply.status} Whatever\r\nContent-Length: {len(reply.body)}\r\n"
                head += "".join(f"{k}: {v}\r\n" for k, v in reply.headers.items())
                writer.write(head.encode() + b"\r\n" + reply.body[: reply.cut_after])
                await writer.drain()
                if reply.cut_after is not None:
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    def handle(self, request: Request) -> Reply:
        if self.faults.get(request.path):
            return self.faults[request.path].pop(0)
        if request.path == "/token":
            return self.token(request)
        denied = self.check_auth(request)
        if denied:
            return denied
        if request.path == "/v2/":
            return Reply(body=b"{}")
        route = _ROUTE.fullmatch(request.path)
        if route is None:
            return Reply(404)
        name, kind, ref = route.groups()
        if kind == "manifests" and (name, ref) in self.manifests:
            media_type, raw = self.manifests[name, ref]
            return Reply(body=raw, headers={"Content-Type": media_type})
        if kind == "blobs" and ref in self.blobs:
            return Reply(body=self.blobs[ref])
        code = "MANIFEST_UNKNOWN" if kind == "manifests" else "BLOB_UNKNOWN"
        errors = {"errors": [{"code": code, "message": "unknown"}]}
        return Reply(404, json.dumps(errors).encode())

    def check_auth(self, request: Request) -> Reply | None:
        given = request.headers.get("authorization", "")
        if self.basic_user is not None:
            pair = f"{self.basic_user.username}:{self.basic_user.password}".encode()
            if given != "Basic " + base64.b64encode(pair).decode():
                return Reply(401, headers={"WWW-Authenticate": 'Basic realm="fake"'})
        if self.bearer and given != f"Bearer {TOKEN}":
            realm = f"http://127.0.0.1:{self.port}/token"
            challenge = f'Bearer realm="{realm}",service="fake",scope="repository:x:pull"'
            return Reply(401, headers={"WWW-Authenticate": challenge})
        return None

    def token(self, request: Request) -> Reply:
        if request.method == "POST":
            form = dict(parse_qsl(request.body.decode()))
            if form.get("grant_type") != "refresh_token" or form["refresh_token"] != "idtok":
                return Reply(401)
            return Reply(body=json.dumps({"access_token": TOKEN}).encode())
        pair = base64.b64encode(f"{USER.username}:{USER.password}".encode()).decode()
        if request.headers.get("authorization") != f"Basic {pair}":
            return Reply(401)
        if request.query.get("service") != "fake":
            return Reply(400)
        return Reply(body=json.dumps({"token": TOKEN, "expires_in": 300}).encode())


@pytest.fixture
async def registry() -> AsyncIterator[FakeRegistry]:
    fake = FakeRegistry()
    server = await asyncio.start_server(fake.serve, "127.0.0.1", 0)
    fake.port = server.sockets[0].getsockname()[1]
    yield fake
    server.close()


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[RegistryClient]:
    client = RegistryClient(
        certs_dir=tmp_path / "certs.d",
        timeout_s=5,
        retries=2,
        backoff_s=0,
        platform=Platform("linux", "amd64"),
    )
    yield client
    await client.aclose()


@dataclass
class Image:
    manifest_digest: str
    manifest: dict[str, Any]
    layer: bytes
    layer_digest: str


def add_image(registry: FakeRegistry, name: str, tag: str, media_type: str = OCI_MANIFEST) -> Image:
    layer = b"layer bytes " * 1000
    config = registry.add_blob(b'{"rootfs": {"diff_ids": []}}')
    manifest = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config},
        "layers": [{"digest": registry.add_blob(layer), "size": len(layer)}],
    }
    digest = registry.add_manifest(name, tag, media_type, manifest)
    return Image(digest, manifest, layer, digest_of(layer))


async def test_an_index_resolves_to_the_manifest_for_linux_amd64(
    registry: FakeRegistry, client: RegistryClient
) -> None:
    amd64 = add_image(registry, "lib/app", "")
    arm64 = add_image(registry, "lib/app", "", media_type=DOCKER_MANIFEST)
    entries = [
        ("unknown", "unknown", "", amd64.manifest_digest),
        ("linux", "arm64", "v8", arm64.manifest_digest),
        ("windows", "amd64", "", arm64.manifest_digest),
        ("linux", "amd64", "", amd64.manifest_digest),
    ]
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": digest,
                "size": len(registry.manifests["lib/app", digest][1]),
                "platform": {"os": os, "architecture": arch, "variant": variant},
            }
            for os, arch, variant, digest in entries
        ],
    }
    registry.add_manifest("lib/app", "v1", OCI_INDEX, index)

    resolved = await client.resolve(registry.endpoint, "lib/app", "v1", NO_CREDS)

    assert resolved.digest == amd64.manifest_digest
    assert resolved.media_type == OCI_MANIFEST
    assert resolved.manifest == amd64.manifest
    assert digest_of(resolved.raw) == amd64.manifest_digest
    accept = registry.requests[-1].headers["accept"]
    assert all(t in accept for t in (OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST))

    arm = RegistryClient(platform=Platform("linux", "arm64", "v8"), backoff_s=0)
    try:
        resolved = await arm.resolve(registry.endpoint, "lib/app", "v1", NO_CREDS)
    finally:
        await arm.aclose()
    assert resolved.digest == arm64.manifest_digest
    assert resolved.media_type == DOCKER_MANIFEST


async def test_an_index_without_this_platform_is_bad_content(
    registry: FakeRegistry, client: RegistryClient
) -> None:
    image = add_image(registry, "app", "")
    platform = {"os": "linux", "architecture": "s390x"}
    entry = {"mediaType": OCI_MANIFEST, "digest": image.manifest_digest, "platform": platform}
    registry.add_manifest("app", "v1", DOCKER_LIST, {"schemaVersion": 2, "manifests": [entry]})

    with pytest.raises(BadContent, match="no image for linux/amd64"):
        await client.resolve(registry.endpoint, "app", "v1", NO_CREDS)


async def test_a_manifest_by_digest_is_verified(
    registry: FakeRegistry, client: RegistryClient
) -> None:
    image = add_image(registry, "app", "v1")

    resolved = await client.resolve(registry.endpoint, "app", image.manifest_digest, NO_CREDS)
    assert resolved.digest == image.manifest_digest

    wrong = "sha256:" + "0" * 64
    registry.manifests["app", wrong] = registry.manifests["app", "v1"]
    with pytest.raises(BadContent, match="arrived with digest"):
        await client.resolve(registry.endpoint, "app", wrong, NO_CREDS)


async def test_an_unknown_tag_is_manifest_unknown(
    registry: FakeRegistry, client: RegistryClient
) -> None:
    with pytest.raises(ManifestUnknown, match=r"127\.0\.0\.1:\d+/app: manifest nope not found"):
        await client.resolve(registry.endpoint, "app", "nope", NO_CREDS)


async def test_schema1_is_refused(registry: FakeRegistry, client: RegistryClient) -> None:
    doc = {"schemaVersion": 1, "name": "app", "tag": "old", "fsLayers": []}
    registry.add_manifest(
        "app", "old", "application/vnd.docker.distribution.manifest.v1+prettyjws", doc
    )
    registry.add_manifest("app", "plain", "application/json", doc)

    for tag in ("old", "plain"):
        with pytest.raises(BadContent, match="schema 1 manifests are not supported"):
            await client.resolve(registry.endpoint, "app", tag, NO_CREDS)


async def test_blobs_are_downloaded_and_verified(
    registry: FakeRegistry, client: RegistryClient, tmp_path: Path
) -> None:
    image = add_image(registry, "app", "v1")
    dest = tmp_path / "ingest"

    await client.fetch_blob(
        registry.endpoint, "app", image.layer_digest, len(image.layer), dest, NO_CREDS
    )

    assert dest.read_bytes() == image.layer


async def test_a_connection_dropped_mid_blob_is_retried(
    registry: FakeRegistry, client: RegistryClient, tmp_path: Path
) -> None:
    image = add_image(registry, "app", "v1")
    path = f"/v2/app/blobs/{image.layer_digest}"
    registry.faults[path] = [Reply(body=image.layer, cut_after=len(image.layer) // 2)]
    dest = tmp_path / "ingest"

    await client.fetch_blob(
        registry.endpoint, "app", image.layer_digest, len(image.layer), dest, NO_CREDS
    )

    assert dest.read_bytes() == image.layer
    assert registry.paths(path) == [path, path]


async def test_a_corrupted_blob_is_bad_content_and_removed(
    registry: FakeRegistry, client: RegistryClient, tmp_path: Path
) -> None:
    image = add_image(registry, "app", "v1")
    flipped = bytearray(image.layer)
    flipped[100] ^= 0xFF
    registry.blobs[image.layer_digest] = bytes(flipped)
    dest = tmp_path / "ingest"

    with pytest.raises(BadContent, match="different digest"):
        await client.fetch_blob(
            registry.endpoint, "app", image.layer_digest, len(image.layer), dest, NO_CREDS
        )
    assert not dest.exists()

    with pytest.raises(BadContent, match="larger than"):
        await client.fetch_blob(
            registry.endpoint, "app", image.layer_digest, len(image.layer) - 1, dest, NO_CREDS
        )
    assert not dest.exists()


async def test_an_unknown_blob_is_a_registry_error(
    registry: FakeRegistry, client: RegistryClient, tmp_path: Path
) -> None:
    with pytest.raises(RegistryError, match="not found") as caught:
        await client.fetch_blob(
            registry.endpoint, "app", "sha256:" + "1" * 64, 3, tmp_path / "ingest", NO_CREDS
        )
    assert type(caught.value) is RegistryError


async def test_server_errors_are_retried_then_reported(
    registry: FakeRegistry, client: RegistryClient
) -> None:
    image = add_image(registry, "app", "v1")
    path = "/v2/app/manifests/v1"
    registry.faults[path] = [Reply(500), Reply(429)]

    resolved = await client.resolve(registry.endpoint, "app", "v1", NO_CREDS)
    assert resolved.digest == image.manifest_digest

    registry.faults[path] = [Reply(503)] * 3
    with pytest.raises(Unreachable, match=r"HTTP 503 \(gave up after 3 attempts"):
        await client.resolve(registry.endpoint, "app", "v1", NO_CREDS)


async def test_a_closed_port_is_unreachable(client: RegistryClient) -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()

    with pytest.raises(Unreachable, match="ConnectError"):
        await client.resolve(Endpoint(f"127.0.0.1:{port}"), "app", "v1", NO_CREDS)


async def test_basic_auth(registry: FakeRegistry, client: RegistryClient) -> None:
    image = add_image(registry, "app", "v1")
    registry.basic_user = USER

    with pytest.raises(Unauthorized, match="requires credentials"):
        await client.resolve(registry.endpoint, "app", "v1", NO_CREDS)
    with pytest.raises(Unauthorized, match="access denied"):
        await client.resolve(registry.endpoint, "app", "v1", Credentials("alice", "wrong"))
    resolved = await client.resolve(registry.endpoint, "app", "v1", USER)
    assert resolved.digest == image.manifest_digest


async def test_bearer_tokens_are_fetched_with_credentials_and_cached(
    registry: FakeRegistry, client: RegistryClient, tmp_path: Path
) -> None:
    image = add_image(registry, "app", "v1")
    registry.bearer = True

    await client.resolve(registry.endpoint, "app", "v1", USER)
    await client.fetch_blob(
        registry.endpoint, "app", image.layer_digest, len(image.layer), tmp_path / "b", USER
    )

    tokens = [r for r in registry.requests if r.path == "/token"]
    assert len(tokens) == 1
    assert tokens[0].query == {"service": "fake", "scope": "repository:app:pull"}
    with pytest.raises(Unauthorized, match="token server refused"):
        await client.resolve(registry.endpoint, "app", "v1", Credentials("alice", "wrong"))
    with pytest.raises(Unauthorized, match="token server refused"):
        await client.resolve(registry.endpoint, "app", "v1", NO_CREDS)


async def test_identity_and_registry_tokens(registry: FakeRegistry, client: RegistryClient) -> None:
    image = add_image(registry, "app", "v1")
    registry.bearer = True

    resolved = await client.resolve(
        registry.endpoint, "app", "v1", Credentials(identity_token="idtok")
    )
    assert resolved.digest == image.manifest_digest
    assert [r.method for r in registry.requests if r.path == "/token"] == ["POST"]

    resolved = await client.resolve(
        registry.endpoint, "app", "v1", Credentials(registry_token=TOKEN)
    )
    assert resolved.digest == image.manifest_digest
    assert len(registry.paths("/token")) == 1


def test_credentials_from_auth_and_their_repr_hides_secrets() -> None:
    creds = Credentials.from_auth(base64.b64encode(b"bob:pa:ss").decode())

    assert (creds.username, creds.password) == ("bob", "pa:ss")
    assert "pa:ss" not in repr(creds)
    with pytest.raises(ValueError, match="base64"):
        Credentials.from_auth("not base64!")
    with pytest.raises(ValueError, match="user:password"):
        Credentials.from_auth(base64.b64encode(b"nocolon").decode())


@pytest.mark.parametrize(
    ("machine", "expected"),
    [
        ("x86_64", Platform("linux", "amd64")),
        ("aarch64", Platform("linux", "arm64", "v8")),
        ("armv7l", Platform("linux", "arm", "v7")),
        ("riscv64", Platform("linux", "riscv64")),
    ],
)
def test_host_platform_uses_go_names(
    monkeypatch: pytest.MonkeyPatch, machine: str, expected: Platform
) -> None:
    monkeypatch.setattr("platform.machine", lambda: machine)

    assert Platform.host() == expected
