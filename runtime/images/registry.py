"""A client for the OCI distribution API: resolve a manifest, download a blob.

Everything a registry sends is checked against the digest that names it, so a mirror, proxy or
broken connection can make a pull fail but never make it store the wrong bytes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import hashlib
import ipaddress
import json
import os
import platform
import re
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import structlog

from runtime.images.registries_conf import Endpoint
from runtime.lazy_module import lazy_module

if TYPE_CHECKING:
    import httpx
else:
    # httpx and httpcore cost the agent 5 MB and ~70 ms of start-up; most restarts pull nothing.
    httpx = lazy_module("httpx")

log = structlog.get_logger("moorage.images")

T = TypeVar("T")
# Told (attempt number, bytes of that attempt on disk) as a blob downloads.
Progress = Callable[[int, int], None]

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
_SCHEMA1 = frozenset(
    {
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
    }
)
_INDEXES = frozenset({OCI_INDEX, DOCKER_LIST})
_IMAGES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
_ACCEPT = ", ".join([OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST])
# containerd's limit: a manifest is metadata, so anything larger is a broken or hostile server.
_MANIFEST_MAX = 4 << 20
_ERROR_BODY_MAX = 64 << 10
# Blob bytes handed to the writing thread at a time: large enough that hashing and writing
# run without the GIL, small enough to keep a pull's memory flat.
_WRITE_BATCH = 1 << 20
_SHA256 = re.compile(r"sha256:[0-9a-f]{64}")
_CHALLENGE_PARAM = re.compile(r'(\w+)=(?:"([^"]*)"|([^\s,]*))')

_ARCHITECTURES = {
    "x86_64": ("amd64", ""),
    "amd64": ("amd64", ""),
    "aarch64": ("arm64", "v8"),
    "arm64": ("arm64", "v8"),
    "armv7l": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "i386": ("386", ""),
    "i686": ("386", ""),
}


class RegistryError(Exception):
    pass


class ManifestUnknown(RegistryError):
    pass


class Unauthorized(RegistryError):
    pass


class Unreachable(RegistryError):
    pass


class BadContent(RegistryError):
    pass


class _Transient(Exception):
    """A failure that another attempt may not meet: network trouble, 5xx, 429."""


@dataclass(frozen=True)
class Credentials:
    username: str = ""
    password: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)
    registry_token: str = field(default="", repr=False)

    @classmethod
    def from_auth(cls, auth: str) -> Credentials:
        """From the base64 `user:password` of a docker config or CRI AuthConfig.auth."""
        try:
            decoded = base64.b64decode(auth, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise ValueError("auth is not base64 encoded user:password") from None
        username, colon, password = decoded.partition(":")
        if not colon:
            raise ValueError("auth is not base64 encoded user:password")
        return cls(username=username, password=password)


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    @classmethod
    def host(cls) -> Platform:
        machine = platform.machine().lower()
        architecture, variant = _ARCHITECTURES.get(machine, (machine, ""))
        return cls("linux", architecture, variant)


@dataclass(frozen=True)
class ResolvedManifest:
    digest: str
    media_type: str
    raw: bytes
    manifest: dict[str, Any]


@dataclass(frozen=True)
class _Site:
    """One registry host as this client reaches it."""

    host: str
    base_url: str
    client: httpx.AsyncClient

    def repository(self, path: str) -> str:
        return f"{self.host}/{path}"


class RegistryClient:
    def __init__(
        self,
        *,
        certs_dir: Path = Path("/etc/containers/certs.d"),
        timeout_s: float = 30.0,
        retries: int = 3,
        backoff_s: float = 0.2,
        platform: Platform | None = None,
    ) -> None:
        self.certs_dir = certs_dir
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.platform = platform or Platform.host()
        self._clients: dict[tuple[str, str, bool], httpx.AsyncClient] = {}
        self._clients_lock = asyncio.Lock()
        self._schemes: dict[str, str] = {}
        # Keyed by the credentials too: a token one pod's secret earned must not serve another.
        self._auth: dict[tuple[str, str, Credentials], str] = {}

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()

    async def resolve(
        self, endpoint: Endpoint, path: str, reference: str, creds: Credentials
    ) -> ResolvedManifest:
        """The image manifest for a tag or digest, picking this host's platform from an index."""
        site = await self._site(endpoint)
        started = time.monotonic()
        resolved = await self._manifest(site, path, reference, creds)
        if resolved.media_type in _INDEXES:
            chosen = self._choose(site, path, reference, resolved.manifest)
            resolved = await self._manifest(site, path, chosen["digest"], creds)
            if len(resolved.raw) != chosen.get("size", len(resolved.raw)):
                raise BadContent(
                    f"{site.repository(path)}: manifest {chosen['digest']} is not the size "
                    "its index gives"
                )
        if resolved.media_type not in _IMAGES:
            raise BadContent(
                f"{site.repository(path)}: {reference} is a {resolved.media_type or 'untyped'} "
                "manifest, not an image"
            )
        log.debug(
            "manifest resolved",
            repository=site.repository(path),
            reference=reference,
            digest=resolved.digest,
            size=len(resolved.raw),
            duration_s=round(time.monotonic() - started, 3),
        )
        return resolved

    async def fetch_blob(  # noqa: PLR0917  (the puller's positional calling convention)
        self,
        endpoint: Endpoint,
        path: str,
        digest: str,
        size: int,
        dest: Path,
        creds: Credentials,
        progress: Progress | None = None,
    ) -> None:
        """Download a blob into `dest`, verified and synced; on failure `dest` is removed.

        `progress(attempt, bytes)` is told how much of each attempt is on disk so far (a retry
        rewrites `dest` from the start)."""
        site = await self._site(endpoint)
        repository = site.repository(path)
        if not _SHA256.fullmatch(digest):
            raise BadContent(f"{repository}: unsupported blob digest {digest!r}")
        started = time.monotonic()
        attempts = 0

        async def attempt() -> None:
            nonlocal attempts
            attempts += 1
            headers = {"Accept-Encoding": "identity"}
            url = f"/v2/{path}/blobs/{digest}"
            async with self._get(site, path, url, creds, headers, redirects=True) as response:
                await _raise_for_status(response, repository, f"blob {digest}", RegistryError)
                report = functools.partial(progress, attempts) if progress else None
                await _download(response, dest, repository, digest, size, report)

        try:
            await self._with_retries(repository, attempt)
        except BaseException:
            await asyncio.to_thread(dest.unlink, missing_ok=True)
            raise
        log.debug(
            "blob downloaded",
            repository=repository,
            digest=digest,
            size=size,
            duration_s=round(time.monotonic() - started, 3),
        )

    def _choose(
        self, site: _Site, path: str, reference: str, index: dict[str, Any]
    ) -> dict[str, Any]:
        best: dict[str, Any] | None = None
        best_rank = 0
        for entry in index.get("manifests") or []:
            if not isinstance(entry, dict) or not _SHA256.fullmatch(str(entry.get("digest"))):
                continue
            rank = _platform_rank(self.platform, entry.get("platform"))
            if rank > best_rank:
                best, best_rank = entry, rank
        if best is None:
            wanted = "/".join(filter(None, (self.platform.os, self.platform.architecture)))
            wanted += f"/{self.platform.variant}" if self.platform.variant else ""
            raise BadContent(f"{site.repository(path)}: {reference} has no image for {wanted}")
        return best

    async def _manifest(
        self, site: _Site, path: str, reference: str, creds: Credentials
    ) -> ResolvedManifest:
        repository = site.repository(path)
        what = f"manifest {reference}"

        async def attempt() -> tuple[bytes, str, str]:
            url = f"/v2/{path}/manifests/{reference}"
            async with self._get(site, path, url, creds, {"Accept": _ACCEPT}) as response:
                await _raise_for_status(response, repository, what, ManifestUnknown)
                raw = await _read(response, _MANIFEST_MAX, f"{repository}: {what}")
                content_type = response.headers.get("content-type", "").partition(";")[0]
                return raw, content_type.strip(), response.headers.get("docker-content-digest", "")

        raw, content_type, header_digest = await self._with_retries(repository, attempt)
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        if reference.startswith("sha256:") and digest != reference:
            raise BadContent(f"{repository}: {what} arrived with digest {digest}")
        if header_digest.startswith("sha256:") and header_digest != digest:
            raise BadContent(
                f"{repository}: {what} arrived with digest {digest}, the registry says "
                f"{header_digest}"
            )
        if content_type in _SCHEMA1:
            raise _schema1(repository, reference)
        try:
            manifest = json.loads(raw)
        except ValueError:
            raise BadContent(f"{repository}: {what} is not valid JSON") from None
        if not isinstance(manifest, dict):
            raise BadContent(f"{repository}: {what} is not a JSON object")
        if manifest.get("schemaVersion") == 1:
            raise _schema1(repository, reference)
        return ResolvedManifest(digest, _media_type(content_type, manifest), raw, manifest)

    async def _with_retries(self, repository: str, attempt: Callable[[], Awaitable[T]]) -> T:
        failures = 0
        while True:
            try:
                return await attempt()
            except _Transient as exc:
                failures += 1
                if failures > self.retries:
                    raise Unreachable(
                        f"{repository}: {exc} (gave up after {failures} attempts)"
                    ) from None
                log.info("registry request retried", repository=repository, error=str(exc))
                await asyncio.sleep(self.backoff_s * 2 ** (failures - 1))

    @contextlib.asynccontextmanager
    async def _get(
        self,
        site: _Site,
        path: str,
        url: str,
        creds: Credentials,
        headers: dict[str, str],
        *,
        redirects: bool = False,
    ) -> AsyncIterator[httpx.Response]:
        """A streamed GET, authenticated the way the registry's challenge asks."""
        scope = f"repository:{path}:pull"
        key = (site.host, scope, creds)
        response = await self._send(site, url, headers, self._auth.get(key), redirects)
        if response.status_code == 401:
            challenge = response.headers.get("www-authenticate", "")
            await response.aclose()
            self._auth[key] = await self._authorize(site, path, scope, challenge, creds)
            response = await self._send(site, url, headers, self._auth[key], redirects)
        try:
            yield response
        finally:
            await response.aclose()

    async def _send(
        self,
        site: _Site,
        url: str,
        headers: dict[str, str],
        authorization: str | None,
        redirects: bool,
    ) -> httpx.Response:
        if authorization:
            headers = {**headers, "Authorization": authorization}
        request = site.client.build_request("GET", site.base_url + url, headers=headers)
        try:
            return await site.client.send(request, stream=True, follow_redirects=redirects)
        except httpx.TransportError as exc:
            raise _Transient(_describe(exc)) from None

    async def _authorize(
        self, site: _Site, path: str, scope: str, challenge: str, creds: Credentials
    ) -> str:
        repository = site.repository(path)
        scheme, _, rest = challenge.partition(" ")
        params = {m[1].lower(): m[2] or m[3] for m in _CHALLENGE_PARAM.finditer(rest)}
        if scheme.lower() == "basic":
            if not creds.username:
                raise Unauthorized(f"{repository}: the registry requires credentials")
            return _basic(creds)
        if scheme.lower() != "bearer":
            raise Unauthorized(f"{repository}: unsupported authentication {scheme or '(none)'}")
        if creds.registry_token:
            return f"Bearer {creds.registry_token}"
        realm = params.get("realm", "")
        if not realm.startswith(("https://", "http://")):
            raise Unauthorized(f"{repository}: the registry's token realm {realm!r} is unusable")
        return "Bearer " + await self._token(repository, realm, params, scope, creds)

    async def _token(
        self,
        repository: str,
        realm: str,
        params: dict[str, str],
        scope: str,
        creds: Credentials,
    ) -> str:
        url = httpx.URL(realm)
        client = await self._client(url.scheme, url.netloc.decode(), insecure=False)
        service = {"service": params["service"]} if "service" in params else {}
        try:
            if creds.identity_token:
                form = {
                    "grant_type": "refresh_token",
                    "refresh_token": creds.identity_token,
                    "client_id": "moorage",
                    "scope": scope,
                    **service,
                }
                response = await client.post(url, data=form)
            else:
                auth = {"Authorization": _basic(creds)} if creds.username else {}
                query = {"scope": scope, **service}
                response = await client.get(url, params=query, headers=auth)
        except httpx.TransportError as exc:
            raise _Transient(f"token server {url.host}: {_describe(exc)}") from None
        if response.status_code in (401, 403):
            raise Unauthorized(f"{repository}: the token server refused the credentials")
        if response.status_code == 429 or response.status_code >= 500:
            raise _Transient(f"token server {url.host} answered HTTP {response.status_code}")
        if response.status_code >= 400:
            raise RegistryError(
                f"{repository}: the token server answered HTTP {response.status_code}"
            )
        try:
            answer = response.json()
            token = answer.get("token") or answer.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise RegistryError(f"{repository}: the token server's answer holds no token")
        return token

    async def _site(self, endpoint: Endpoint) -> _Site:
        host = endpoint.location
        insecure = endpoint.insecure or _is_local(host)
        scheme = "https"
        if insecure:
            scheme = self._schemes.get(host) or await self._probe(host)
        client = await self._client(scheme, host, insecure)
        return _Site(host, f"{scheme}://{host}", client)

    async def _probe(self, host: str) -> str:
        """Plain http first for an insecure registry; a TLS one on that port answers oddly."""
        client = await self._client("http", host, insecure=True)
        try:
            response = await client.get(f"http://{host}/v2/")
        except (httpx.RemoteProtocolError, httpx.ReadError):
            scheme = "https"
        except httpx.TransportError:
            # Nothing listens, or not yet: decide next time rather than guess now.
            return "http"
        else:
            # Go's TLS servers answer plain http with 400; registries say 200 or 401 to /v2/.
            scheme = "https" if response.status_code == 400 else "http"
        self._schemes[host] = scheme
        return scheme

    async def _client(self, scheme: str, host: str, insecure: bool) -> httpx.AsyncClient:
        key = (scheme, host, insecure)
        async with self._clients_lock:
            client = self._clients.get(key)
            if client is None:
                # Loading the system CAs costs tens of ms: only a verified https client needs them.
                verify: ssl.SSLContext | bool = False
                if scheme == "https" and not insecure:
                    verify = await asyncio.to_thread(self._ssl_context, host)
                _read_a_mebibyte_per_call()
                client = httpx.AsyncClient(verify=verify, timeout=self.timeout_s)
                self._clients[key] = client
            return client

    def _ssl_context(self, host: str) -> ssl.SSLContext:
        """The system's CAs, plus the CAs and client certificates in certs.d/<host>/."""
        context = ssl.create_default_context()
        directory = self.certs_dir / host
        if not directory.is_dir():
            return context
        try:
            for ca in sorted(directory.glob("*.crt")):
                context.load_verify_locations(cafile=ca)
            for cert in sorted(directory.glob("*.cert")):
                key = cert.with_suffix(".key")
                if not key.exists():
                    raise RegistryError(f"{cert}: the client certificate has no {key.name}")
                context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise RegistryError(f"{directory}: {exc}") from None
        return context


async def _raise_for_status(
    response: httpx.Response, repository: str, what: str, unknown: type[RegistryError]
) -> None:
    status = response.status_code
    if status < 300:
        return
    if status == 429 or status >= 500:
        raise _Transient(f"{what}: the registry answered HTTP {status}")
    try:
        errors = json.loads(await _read(response, _ERROR_BODY_MAX, what)).get("errors") or []
        codes = {e.get("code") for e in errors}
        detail = "; ".join(str(e.get("message") or e.get("code")) for e in errors)
    except (ValueError, AttributeError, TypeError, RegistryError, httpx.HTTPError):
        codes, detail = set(), ""
    if status in (401, 403):
        raise Unauthorized(f"{repository}: {what}: access denied (HTTP {status})")
    if status == 404 or codes & {"MANIFEST_UNKNOWN", "NAME_UNKNOWN", "BLOB_UNKNOWN"}:
        raise unknown(f"{repository}: {what} not found")
    raise RegistryError(f"{repository}: {what}: HTTP {status}" + (f": {detail}" if detail else ""))


async def _read(response: httpx.Response, limit: int, what: str) -> bytes:
    body = bytearray()
    try:
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > limit:
                raise BadContent(f"{what} is larger than {limit} bytes")
    except httpx.TransportError as exc:
        raise _Transient(f"{what}: {_describe(exc)}") from None
    return bytes(body)


async def _download(  # noqa: PLR0917
    response: httpx.Response,
    dest: Path,
    repository: str,
    digest: str,
    size: int,
    report: Callable[[int], None] | None,
) -> None:
    hasher = hashlib.sha256()
    written = 0
    out = await asyncio.to_thread(dest.open, "wb")

    def store(data: bytes, total: int) -> None:
        # hashlib and file writes release the GIL for buffers this size, so the event loop
        # receives the next batch meanwhile.
        hasher.update(data)
        out.write(data)
        out.flush()
        if report:
            report(total)

    if report:
        report(0)
    batch: list[bytes] = []
    batched = 0
    storing: asyncio.Future[None] | None = None
    try:
        async for chunk in response.aiter_raw():
            written += len(chunk)
            if written > size:
                raise BadContent(f"{repository}: blob {digest} is larger than {size} bytes")
            batch.append(chunk)
            batched += len(chunk)
            if batched >= _WRITE_BATCH:
                if storing:
                    await asyncio.shield(storing)
                storing = asyncio.ensure_future(asyncio.to_thread(store, b"".join(batch), written))
                batch, batched = [], 0
        if storing:
            await asyncio.shield(storing)
        storing = asyncio.ensure_future(asyncio.to_thread(store, b"".join(batch), written))
        await asyncio.shield(storing)
        await asyncio.to_thread(os.fsync, out.fileno())
    except httpx.TransportError as exc:
        raise _Transient(f"blob {digest}: {_describe(exc)}") from None
    finally:
        if storing:
            # Shielded above, the write goes on when the download stops; a retry reopens dest,
            # so no write of this attempt may still be under way then.
            await _settled(storing)
        out.close()
    if written != size:
        raise BadContent(f"{repository}: blob {digest} has {written} bytes, expected {size}")
    if "sha256:" + hasher.hexdigest() != digest:
        raise BadContent(f"{repository}: blob {digest} arrived with a different digest")


async def _settled(work: asyncio.Future[None]) -> None:
    """Wait until work has ended, even when the caller is cancelled; its own error is the
    caller's to have seen already."""
    try:
        await asyncio.shield(work)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await work
        raise
    except Exception:
        return


def _platform_rank(wanted: Platform, candidate: Any) -> int:
    """How well an index entry's platform fits: 0 not at all, 1 no variant given, 2 exact."""
    if not isinstance(candidate, dict):
        return 0
    if candidate.get("os") != wanted.os or candidate.get("architecture") != wanted.architecture:
        return 0
    variant = candidate.get("variant") or ""
    # amd64 images carry microarchitecture levels as variants; every one runs here.
    if wanted.architecture == "amd64" or variant == wanted.variant:
        return 2
    return 1 if not variant else 0


def _basic(creds: Credentials) -> str:
    pair = f"{creds.username}:{creds.password}".encode()
    return "Basic " + base64.b64encode(pair).decode()


def _media_type(content_type: str, manifest: dict[str, Any]) -> str:
    declared = manifest.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    if content_type in _INDEXES | _IMAGES:
        return content_type
    # The OCI types may leave mediaType out; the shape then tells them apart.
    if "manifests" in manifest:
        return OCI_INDEX
    return OCI_MANIFEST if "layers" in manifest else ""


def _schema1(repository: str, reference: str) -> BadContent:
    return BadContent(
        f"{repository}: {reference} is a schema 1 manifest; schema 1 manifests are not "
        "supported, push the image again with a current client"
    )


def _is_local(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 or host.startswith("[") else host
    name = name.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _describe(exc: httpx.TransportError) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


@functools.cache
def _read_a_mebibyte_per_call() -> None:
    """httpcore asks the socket for at most 64 KiB per read, and each read costs the event
    loop a round of anyio and selector calls: for a blob download that overhead, not the
    bytes, was what kept the loop busy. The socket hands over what it has, so small bodies
    are unchanged. The agent's only HTTP client is this one, so the process-wide setting is
    ours to make."""
    import httpcore  # noqa: PLC0415 - loaded with httpx, on the first client

    httpcore.AsyncHTTP11Connection.READ_NUM_BYTES = 1 << 20
