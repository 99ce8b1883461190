"""Throwaway local registries (Debian's docker-registry, plain HTTP) and pushing layouts to them.

Pushing goes through skopeo with --preserve-digests: without it skopeo would gzip the `plain`
image's uncompressed layer on the way, and the pushed manifest would no longer be the layout's.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.netutil import free_port
from tests.waiting import wait_until

REGISTRY_BIN = "/usr/bin/docker-registry"
REPO_PREFIX = "moorage-test"
REQUIRED_BINARIES = ("docker-registry", "skopeo", "htpasswd")
STARTUP_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
MANIFEST_ACCEPT = ", ".join(
    (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)


class RegistryError(RuntimeError):
    pass


@dataclass
class LocalRegistry:
    address: str  # "127.0.0.1:PORT"
    process: subprocess.Popen[bytes]
    storage: Path  # config, htpasswd, log and blob storage; removed by stop()
    username: str = ""  # set only for a registry with Basic auth
    password: str = ""

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    @property
    def auth(self) -> tuple[str, str] | None:
        return (self.username, self.password) if self.username else None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.storage, ignore_errors=True)


def missing_binaries() -> list[str]:
    return [name for name in REQUIRED_BINARIES if shutil.which(name) is None]


def _config(storage: Path, address: str, htpasswd: Path | None) -> str:
    auth = (
        f"auth:\n  htpasswd:\n    realm: moorage-test\n    path: {htpasswd}\n" if htpasswd else ""
    )
    return (
        "version: 0.1\n"
        "log:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {storage / 'data'}\n"
        "  delete:\n    enabled: true\n"
        f"http:\n  addr: {address}\n"
        f"{auth}"
    )


def _write_htpasswd(path: Path, username: str, password: str) -> None:
    # docker-registry only accepts bcrypt entries.
    line = subprocess.run(
        ["htpasswd", "-Bbn", username, password], capture_output=True, text=True, check=True
    ).stdout
    path.write_text(line.strip() + "\n")


def _answers(registry: LocalRegistry) -> bool:
    try:
        return httpx.get(f"{registry.url}/v2/", timeout=1.0).status_code in (200, 401)
    except httpx.TransportError:
        return False  # not listening yet


def _wait_until_serving(registry: LocalRegistry) -> None:
    # An exit ends the wait too: the log then says why, and waiting on would not help.
    if not wait_until(
        lambda: registry.process.poll() is not None or _answers(registry), STARTUP_TIMEOUT
    ):
        raise RegistryError(f"docker-registry on {registry.address} did not answer /v2/ in time")
    if registry.process.poll() is not None:
        log = (registry.storage / "registry.log").read_text(errors="replace")
        raise RegistryError(f"docker-registry exited {registry.process.returncode}: {log}")


def _launch(auth: bool) -> LocalRegistry:
    storage = Path(tempfile.mkdtemp(prefix="moorage-registry-"))
    address = f"127.0.0.1:{free_port()}"
    username, password, htpasswd = "", "", None
    if auth:
        username, password, htpasswd = "moorage", secrets.token_hex(8), storage / "htpasswd"
        _write_htpasswd(htpasswd, username, password)
    config = storage / "config.yml"
    config.write_text(_config(storage, address, htpasswd))
    with open(storage / "registry.log", "wb") as log:
        process = subprocess.Popen(
            [REGISTRY_BIN, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
    return LocalRegistry(address, process, storage, username, password)


def start_registry(auth: bool = False) -> LocalRegistry:
    """A registry on a free loopback port, answering /v2/ by the time this returns."""
    registry = _launch(auth)
    try:
        _wait_until_serving(registry)
    except BaseException:
        registry.stop()
        raise
    return registry


def push(registry: LocalRegistry, layout: Path, name: str, tag: str = "latest") -> str:
    """Copy the layout's "latest" (every platform of an index) to name:tag; return its digest."""
    with tempfile.NamedTemporaryFile("r") as digest_file:
        command = [
            "skopeo",
            "--insecure-policy",
            "copy",
            "--all",
            "--preserve-digests",
            "--dest-tls-verify=false",
            "--digestfile",
            digest_file.name,
        ]
        if registry.username:
            command += ["--dest-creds", f"{registry.username}:{registry.password}"]
        command += [f"oci:{layout}:latest", f"docker://{registry.address}/{name}:{tag}"]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RegistryError(f"skopeo copy {layout} failed: {result.stderr}")
        return digest_file.read().strip()


def manifest_digest(registry: LocalRegistry, name: str, reference: str) -> str:
    """The registry's own Docker-Content-Digest for name:reference."""
    response = httpx.head(
        f"{registry.url}/v2/{name}/manifests/{reference}",
        headers={"Accept": MANIFEST_ACCEPT},
        auth=registry.auth,
    )
    response.raise_for_status()
    return response.headers["Docker-Content-Digest"]


def push_test_images(registry: LocalRegistry, images: dict[str, Path]) -> None:
    """Every image as moorage-test/<name>:latest, and single again as moorage-test/alias:v1."""
    for name, layout in images.items():
        push(registry, layout, f"{REPO_PREFIX}/{name}")
    push(registry, images["single"], f"{REPO_PREFIX}/alias", "v1")
