"""The `moorage` command line: version, config, check, and config file errors."""

from __future__ import annotations

import re
import subprocess
import tempfile
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.e2e.agent import MOORAGE
from tests.e2e.kernel import mounts

EXPECTED_CHECKS = [
    "oci runtime crun",
    "oci runtime runc",
    "conmon",
    "cgroups",
    "overlayfs",
    "iptables",
    "seccomp profile",
    "namespaces",
    "infra process",
]
# key = value  # comment
_KEY_LINE = re.compile(r"^(?P<key>[A-Za-z_][A-Za-z0-9_]*) = (?P<value>.+?)  # (?P<doc>\S.*)$")


def moorage(*args: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MOORAGE), *args], capture_output=True, text=True, timeout=timeout_s, check=False
    )


def _write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "moorage.toml"
    path.write_text(text)
    return path


def test_version_prints_the_package_version() -> None:
    result = moorage("version")

    assert result.returncode == 0, result.stderr
    assert "moorage" in result.stdout
    assert version("moorage") in result.stdout.split()


def test_config_prints_toml_with_a_comment_on_every_key(tmp_path: Path) -> None:
    config = _write_config(tmp_path, '[runtime]\ndefault_cgroup_parent = "/e2e-cli"\n')

    result = moorage("config", "--config", str(config))

    assert result.returncode == 0, result.stderr
    parsed = tomllib.loads(result.stdout)
    assert parsed["runtime"]["default_cgroup_parent"] == "/e2e-cli"
    key_lines = [
        line for line in result.stdout.splitlines() if line.strip() and not line.startswith("[")
    ]
    assert len(key_lines) >= 10
    for line in key_lines:
        assert _KEY_LINE.match(line), f"not `key = value  # comment`: {line!r}"


def test_config_prints_every_key_of_every_table(tmp_path: Path) -> None:
    result = moorage("config", "--config", str(_write_config(tmp_path, "")))
    parsed = tomllib.loads(result.stdout)

    assert {"socket", "root_dir", "run_dir", "log_level", "shutdown_grace_s"} <= set(parsed)
    assert {
        "default_handler",
        "conmon_path",
        "cgroup_driver",
        "default_cgroup_parent",
        "infra_command",
        "shm_size_bytes",
    } <= set(parsed["runtime"])
    assert parsed["runtime"]["handlers"]["crun"]["path"]
    assert parsed["runtime"]["handlers"]["runc"]["path"]
    assert parsed["network"]["pod_cidr"]
    assert parsed["runtime"]["shm_size_bytes"] == 64 * 1024 * 1024


def test_config_output_reflects_command_line_flags(tmp_path: Path) -> None:
    result = moorage(
        "config",
        "--config",
        str(_write_config(tmp_path, "")),
        "--socket",
        "/tmp/e2e-cli.sock",
        "--root",
        "/tmp/e2e-cli-root",
        "--run-dir",
        "/tmp/e2e-cli-run",
        "--log-level",
        "DEBUG",
    )
    parsed = tomllib.loads(result.stdout)

    assert parsed["socket"] == "/tmp/e2e-cli.sock"
    assert parsed["root_dir"] == "/tmp/e2e-cli-root"
    assert parsed["run_dir"] == "/tmp/e2e-cli-run"
    assert parsed["log_level"] == "debug"
    assert not Path("/tmp/e2e-cli-root").exists()


def test_config_output_is_a_valid_config_file(tmp_path: Path) -> None:
    first = moorage("config", "--config", str(_write_config(tmp_path, "")))
    rendered = tmp_path / "rendered.toml"
    rendered.write_text(first.stdout)

    second = moorage("config", "--config", str(rendered))

    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout


@pytest.mark.parametrize("command", ["serve", "config", "check"])
def test_a_missing_explicit_config_file_is_an_error_naming_it(tmp_path: Path, command: str) -> None:
    missing = tmp_path / "no-such-moorage.toml"

    result = moorage(
        command,
        "--config",
        str(missing),
        "--socket",
        str(tmp_path / "s.sock"),
        "--root",
        str(tmp_path / "root"),
        "--run-dir",
        str(tmp_path / "run"),
    )

    assert result.returncode != 0
    assert str(missing) in result.stderr
    assert not (tmp_path / "root").exists()


def test_a_config_file_that_is_not_toml_is_an_error_naming_it(tmp_path: Path) -> None:
    config = _write_config(tmp_path, "[runtime\nbroken = \n")

    result = moorage("config", "--config", str(config))

    assert result.returncode != 0
    assert str(config) in result.stderr
    assert "TOML" in result.stderr


def test_an_unknown_config_key_is_an_error_naming_it(tmp_path: Path) -> None:
    config = _write_config(tmp_path, "[runtime]\ndefault_cgroup_parnet = '/typo'\n")

    result = moorage("config", "--config", str(config))

    assert result.returncode != 0
    assert "runtime.default_cgroup_parnet" in result.stderr


def test_a_config_value_of_the_wrong_type_is_an_error_naming_it(tmp_path: Path) -> None:
    config = _write_config(tmp_path, "[runtime]\nshm_size_bytes = 'big'\n")

    result = moorage("config", "--config", str(config))

    assert result.returncode != 0
    assert "runtime.shm_size_bytes" in result.stderr


def test_an_unknown_log_level_is_an_error(tmp_path: Path) -> None:
    result = moorage("config", "--config", str(_write_config(tmp_path, "")), "--log-level", "loud")

    assert result.returncode != 0
    assert "loud" in result.stderr


def test_check_passes_on_this_host_with_one_ok_line_per_check() -> None:
    result = moorage("check")

    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert all(line.startswith("OK ") for line in lines), result.stdout
    names = [line.removeprefix("OK").strip().split(":", 1)[0] for line in lines]
    assert len(names) == len(set(names)), names
    assert set(EXPECTED_CHECKS) <= set(names), names
    # The probe's scratch mounts and dirs are gone when it returns.
    assert [point for _, point, _, _ in mounts() if "moorage-check-" in point] == []
    assert list(Path(tempfile.gettempdir()).glob("moorage-check-*")) == []
