"""Image references, normalised the way docker's ParseNormalizedNamed does it.

`busybox` and `docker.io/library/busybox:latest` name the same image; kubelet, the image store
and the registry client must all agree on one spelling, and this module is where it is made.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DOCKER_DOMAIN = "docker.io"
_LEGACY_DOCKER_DOMAIN = "index.docker.io"
_NAME_MAX = 255

# The grammar of github.com/distribution/reference.
_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_DOMAIN = re.compile(
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
)
_TAG = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_ANY_DIGEST = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}")
_IMAGE_ID = re.compile(r"(?:sha256:)?[0-9a-f]{64}")


class InvalidReference(ValueError):
    pass


@dataclass(frozen=True)
class Reference:
    domain: str
    path: str
    tag: str
    digest: str

    @property
    def repository(self) -> str:
        return f"{self.domain}/{self.path}"

    @property
    def name_with_tag(self) -> str:
        return f"{self.repository}:{self.tag}" if self.tag else ""

    @property
    def name_with_digest(self) -> str:
        return f"{self.repository}@{self.digest}" if self.digest else ""

    def __str__(self) -> str:
        text = self.repository
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def has_domain(text: str) -> bool:
    """Whether the first component names a registry rather than a Docker Hub namespace."""
    first, slash, _ = text.partition("/")
    return bool(slash) and (any(c in first for c in ".:") or first == "localhost")


def parse_reference(text: str, default_domain: str = DOCKER_DOMAIN) -> Reference:
    if not text:
        raise InvalidReference("the image reference is empty")
    if _IMAGE_ID.fullmatch(text):
        raise InvalidReference(f"{text!r} is an image id, not a reference to pull")
    name, at, digest = text.partition("@")
    if at:
        _check_digest(text, digest)
    tag = ""
    colon = name.rfind(":")
    if colon > name.rfind("/"):
        name, tag = name[:colon], name[colon + 1 :]
        if not _TAG.fullmatch(tag):
            raise InvalidReference(
                f"invalid tag {tag!r} in {text!r}: a tag is up to 128 letters, digits, "
                "'_', '.' and '-', not starting with '.' or '-'"
            )
    if has_domain(name):
        domain, _, path = name.partition("/")
    else:
        domain, path = default_domain, name
    if domain == _LEGACY_DOCKER_DOMAIN:
        domain = DOCKER_DOMAIN
    if domain == DOCKER_DOMAIN and "/" not in path:
        path = f"library/{path}"
    _check_name(text, domain, path)
    if not tag and not digest:
        tag = "latest"
    return Reference(domain=domain, path=path, tag=tag, digest=digest)


def _check_digest(text: str, digest: str) -> None:
    if _DIGEST.fullmatch(digest):
        return
    if _ANY_DIGEST.fullmatch(digest) and not digest.startswith("sha256:"):
        algorithm = digest.partition(":")[0]
        raise InvalidReference(
            f"unsupported digest algorithm {algorithm!r} in {text!r}: only sha256 is supported"
        )
    raise InvalidReference(
        f"invalid digest {digest!r} in {text!r}: expected sha256: and 64 lowercase hex digits"
    )


def _check_name(text: str, domain: str, path: str) -> None:
    if not _DOMAIN.fullmatch(domain):
        raise InvalidReference(f"invalid registry {domain!r} in {text!r}")
    if path.lower() != path:
        raise InvalidReference(f"invalid reference {text!r}: the repository must be lowercase")
    for component in path.split("/"):
        if not _PATH_COMPONENT.fullmatch(component):
            raise InvalidReference(
                f"invalid repository {path!r} in {text!r}: each path component is lowercase "
                "letters and digits, separated by '.', '_', '__' or dashes"
            )
    if len(domain) + 1 + len(path) > _NAME_MAX:
        raise InvalidReference(f"invalid reference {text!r}: longer than {_NAME_MAX} characters")
