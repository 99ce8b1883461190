"""The README states what the code does: its config reference is `moorage config`'s output and
its status-code table covers every CRI call."""

from __future__ import annotations

import re
from pathlib import Path

from cri.config import Config, render_config
from cri.proto import api_pb2 as pb

README = Path(__file__).resolve().parents[2] / "README.md"


def section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def test_the_configuration_reference_is_the_rendered_default_config() -> None:
    reference = section("Configuration reference")
    block = re.search(r"```toml\n(.*?)```", reference, re.DOTALL)

    assert block is not None
    assert block.group(1) == render_config(Config())


def test_the_status_code_table_names_every_rpc() -> None:
    table = section("Status codes")
    named = set(re.findall(r"`([A-Z][A-Za-z]+)`", table))
    rpcs = {
        method.name
        for service in ("RuntimeService", "ImageService")
        for method in pb.DESCRIPTOR.services_by_name[service].methods
    }

    assert rpcs - named == set()
