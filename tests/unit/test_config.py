from __future__ import annotations

import re
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest

import cri.config
from cri.config import Config, ConfigError, config_as_dict, load_config, parse_config, render_config
from runtime.containers.model import SeccompKind
from runtime.settings import ImageSettings, RuntimeHandlerSettings, RuntimeSettings


def _parse(text: str) -> Config:
    return parse_config(tomllib.loads(text))


def _customised() -> Config:
    return Config(
        socket=Path("/run/other dir/crï.sock"),
        log_level="debug",
        shutdown_grace_s=2.5,
        runtime=RuntimeSettings(
            root_dir=Path("/data/moorage"),
            run_dir=Path("/run/m"),
            default_handler="kata",
            handlers={
                "kata": RuntimeHandlerSettings("kata", Path("/opt/kata/bin/kata-runtime")),
                "runc-v2": RuntimeHandlerSettings("runc-v2", Path("/usr/local/sbin/runc")),
            },
            conmon_path=Path("/usr/local/bin/conmon"),
            seccomp_profile=Path('/etc/seccomp/"quoted".json'),
            default_seccomp=SeccompKind.RUNTIME_DEFAULT,
            cgroup_driver="systemd",
            default_cgroup_parent="kubepods.slice",
            infra_command=("/pause", "--name", "with space", "back\\slash"),
            shm_size_bytes=1 << 20,
            pod_cidr="10.244.0.0/16",
            images=ImageSettings(
                registries_conf=Path("/etc/m/registries.conf"),
                certs_dir=Path("/etc/m/certs.d"),
                max_concurrent_downloads=5,
                max_layer_bytes=1 << 30,
                pull_retries=0,
                pinned_images=("registry.k8s.io/pause:3.9",),
            ),
        ),
    )


# --- loading -------------------------------------------------------------------------------


def test_no_file_and_no_default_file_gives_the_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cri.config, "DEFAULT_CONFIG_PATH", tmp_path / "absent.toml")

    assert load_config(None) == Config()


def test_default_file_is_read_when_present(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    default = tmp_path / "moorage.toml"
    default.write_text('log_level = "debug"\n')
    monkeypatch.setattr(cri.config, "DEFAULT_CONFIG_PATH", default)

    assert load_config(None) == Config(log_level="debug")


def test_explicit_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[runtime]\ncgroup_driver = "systemd"\n')

    assert load_config(path).runtime.cgroup_driver == "systemd"


def test_explicit_missing_file_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "missing.toml"

    with pytest.raises(ConfigError, match="cannot read config file") as raised:
        load_config(path)
    assert str(path) in str(raised.value)


def test_invalid_toml_is_an_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("log_level = \n")

    with pytest.raises(ConfigError, match="not valid TOML") as raised:
        load_config(path)
    assert str(path) in str(raised.value)


# Regression: a non-UTF-8 config file raised UnicodeDecodeError, a traceback for the operator.
def test_config_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'socket = "/run/caf\xe9.sock"\n')

    with pytest.raises(ConfigError):
        load_config(path)


def test_errors_in_a_file_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("colour = 1\n")

    with pytest.raises(ConfigError, match=re.escape(f"{path}: unknown key colour")):
        load_config(path)


def test_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.toml"
    path.write_text("")

    assert load_config(path) == Config()


# --- unknown keys --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("colour = 1", "colour"),
        ("[metrics]\nport = 1", "metrics.port"),
        ("[runtime]\nroot_dir = '/x'", "runtime.root_dir"),
        ("[runtime]\nconmon = '/x'", "runtime.conmon"),
        ("[network]\ncidr = '10.0.0.0/8'", "network.cidr"),
        ("[images]\nmirrors = []", "images.mirrors"),
        ("[runtime.handlers.crun]\npath = '/x'\nroot = '/y'", "runtime.handlers.crun.root"),
    ],
)
def test_unknown_key_is_an_error_naming_it(text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=f"unknown key {key}$"):
        _parse(text)


# --- types ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("socket = 1", "socket"),
        ("root_dir = ['/x']", "root_dir"),
        ("log_level = 3", "log_level"),
        ("shutdown_grace_s = '10s'", "shutdown_grace_s"),
        ("[runtime]\nconmon_path = 1", "runtime.conmon_path"),
        ("[runtime]\nshm_size_bytes = '64M'", "runtime.shm_size_bytes"),
        ("[runtime]\nshm_size_bytes = 1.5", "runtime.shm_size_bytes"),
        ("[runtime]\ninfra_command = '/pause'", "runtime.infra_command"),
        ("[runtime]\ninfra_command = ['/pause', 1]", r"runtime.infra_command\[\]"),
        ("[runtime]\ndefault_handler = 1", "runtime.default_handler"),
        ("[network]\npod_cidr = 10", "network.pod_cidr"),
        ("[runtime]\nhandlers = 'crun'", "runtime.handlers"),
        ("[runtime.handlers]\ncrun = '/usr/bin/crun'", "runtime.handlers.crun"),
        ("[runtime.handlers.crun]\npath = 1", "runtime.handlers.crun.path"),
        ("[images]\nregistries_conf = 1", "images.registries_conf"),
        ("[images]\nmax_concurrent_downloads = '3'", "images.max_concurrent_downloads"),
        ("[images]\npinned_images = 'pause'", "images.pinned_images"),
        ("[images]\npinned_images = [1]", r"images.pinned_images\[\]"),
    ],
)
def test_value_of_the_wrong_type_is_an_error_naming_the_key(text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=f"{key} has the wrong type"):
        _parse(text)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("shutdown_grace_s = true", "shutdown_grace_s"),
        ("[runtime]\nshm_size_bytes = true", "runtime.shm_size_bytes"),
        ("socket = false", "socket"),
    ],
)
def test_boolean_is_refused_where_a_number_or_string_is_expected(text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=f"{key} must not be a boolean"):
        _parse(text)


# Regression: a [runtime]/[network] value that is not a table raised ValueError/TypeError.
@pytest.mark.parametrize("text", ["runtime = 'crun'", "runtime = 5", "network = 1"])
def test_section_that_is_not_a_table_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError):
        _parse(text)


def test_integer_grace_period_is_taken_as_seconds() -> None:
    config = _parse("shutdown_grace_s = 3")

    assert config.shutdown_grace_s == 3.0
    assert isinstance(config.shutdown_grace_s, float)


def test_paths_and_lists_are_converted() -> None:
    config = _parse(
        'root_dir = "/data"\n[runtime]\nconmon_path = "/c"\ninfra_command = ["/pause", "-v"]\n'
    )

    assert config.runtime.root_dir == Path("/data")
    assert config.runtime.conmon_path == Path("/c")
    assert config.runtime.infra_command == ("/pause", "-v")


# --- values --------------------------------------------------------------------------------


@pytest.mark.parametrize("level", ["debug", "info", "warning", "error"])
def test_known_log_levels_are_accepted(level: str) -> None:
    assert _parse(f'log_level = "{level}"').log_level == level


@pytest.mark.parametrize("level", ["trace", "INFO", "warn", ""])
def test_unknown_log_level_is_refused(level: str) -> None:
    with pytest.raises(ConfigError, match="log_level"):
        _parse(f'log_level = "{level}"')


@pytest.mark.parametrize("driver", ["systemd", "cgroupfs"])
def test_known_cgroup_drivers_are_accepted(driver: str) -> None:
    assert _parse(f'[runtime]\ncgroup_driver = "{driver}"').runtime.cgroup_driver == driver


def test_unknown_cgroup_driver_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"runtime\.cgroup_driver 'cgroupv2'"):
        _parse('[runtime]\ncgroup_driver = "cgroupv2"')


def test_default_handler_must_be_among_the_handlers() -> None:
    with pytest.raises(ConfigError, match="default_handler 'kata' is not among") as raised:
        _parse('[runtime]\ndefault_handler = "kata"')
    assert "crun, runc" in str(raised.value)


def test_handlers_table_replaces_the_default_handlers() -> None:
    config = _parse(
        '[runtime]\ndefault_handler = "kata"\n[runtime.handlers.kata]\npath = "/opt/kata"\n'
    )

    assert config.runtime.handlers == {"kata": RuntimeHandlerSettings("kata", Path("/opt/kata"))}


def test_handlers_table_without_the_default_handler_is_refused() -> None:
    with pytest.raises(ConfigError, match="default_handler 'crun'"):
        _parse('[runtime.handlers.kata]\npath = "/opt/kata"\n')


def test_empty_handlers_table_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"runtime\.handlers is empty"):
        _parse("[runtime.handlers]\n")


def test_handler_without_a_path_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"runtime\.handlers\.crun\.path is missing"):
        _parse("[runtime.handlers.crun]\n")


def test_unset_seccomp_profiles_are_unconfined_by_default() -> None:
    assert Config().runtime.default_seccomp is SeccompKind.UNCONFINED


def test_a_node_may_make_runtime_default_the_default_seccomp() -> None:
    config = _parse('[security]\ndefault_seccomp = "runtime/default"')

    assert config.runtime.default_seccomp is SeccompKind.RUNTIME_DEFAULT


@pytest.mark.parametrize("word", ["localhost/x.json", "RuntimeDefault", ""])
def test_another_default_seccomp_is_refused_naming_the_choices(word: str) -> None:
    choices = r"security\.default_seccomp .* unconfined or runtime/default"
    with pytest.raises(ConfigError, match=choices):
        _parse(f'[security]\ndefault_seccomp = "{word}"')


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[runtime]\ninfra_command = []", "infra_command is empty"),
        ("[runtime]\nshm_size_bytes = 0", "shm_size_bytes must be positive"),
        ("[runtime]\nshm_size_bytes = -1", "shm_size_bytes must be positive"),
        ("shutdown_grace_s = -0.5", "shutdown_grace_s must not be negative"),
        ("[images]\nmax_concurrent_downloads = 0", "max_concurrent_downloads must be at least 1"),
        ("[images]\nmax_layer_bytes = 0", "max_layer_bytes must be positive"),
        ("[images]\npull_retries = -1", "pull_retries must not be negative"),
    ],
)
def test_out_of_range_values_are_refused(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _parse(text)


def test_parse_does_not_change_the_callers_table() -> None:
    raw = tomllib.loads('log_level = "debug"\n[runtime.handlers.crun]\npath = "/c"\n')
    before = repr(raw)

    parse_config(raw)

    assert repr(raw) == before


# --- rendering -----------------------------------------------------------------------------


@pytest.mark.parametrize("config", [Config(), _customised()], ids=["defaults", "customised"])
def test_rendered_config_parses_back_to_the_same_config(config: Config) -> None:
    rendered = render_config(config)

    assert parse_config(tomllib.loads(rendered)) == config


@pytest.mark.parametrize("config", [Config(), _customised()], ids=["defaults", "customised"])
def test_every_rendered_key_has_a_comment(config: Config) -> None:
    lines = render_config(config).splitlines()
    key_lines = [line for line in lines if "=" in line and not line.startswith("[")]

    # 5 top-level, 8 [runtime], 8 [network], 6 [images], 1 [metrics], 1 [security],
    # 1 [streaming] keys, and one path per handler.
    assert len(key_lines) == 30 + len(config.runtime.handlers)
    for line in key_lines:
        value_and_comment = line.split(" = ", 1)[1]
        assert "  # " in value_and_comment, line
        assert value_and_comment.rsplit("  # ", 1)[1].strip(), line


def test_rendered_config_names_every_section() -> None:
    lines = render_config(Config()).splitlines()

    assert "[runtime]" in lines
    assert "[network]" in lines
    assert "[images]" in lines
    assert "[runtime.handlers.crun]" in lines
    assert "[runtime.handlers.runc]" in lines


def test_config_as_dict_holds_the_effective_values() -> None:
    data = config_as_dict(_customised())

    assert data["log_level"] == "debug"
    assert data["runtime"]["cgroup_driver"] == "systemd"
    assert data["runtime"]["handlers"]["kata"] == {"path": "/opt/kata/bin/kata-runtime"}
    assert data["network"]["pod_cidr"] == "10.244.0.0/16"
    assert data["network"]["mode"] == "bridge"


# Regression: characters outside the BMP were rendered as JSON surrogate pairs TOML rejects.
def test_path_with_a_character_outside_the_bmp_round_trips() -> None:
    config = Config(socket=Path("/run/\U0001f600/moorage.sock"))

    assert parse_config(tomllib.loads(render_config(config))) == config


# Regression: a handler name with a dot was rendered unquoted, as nested tables.
def test_handler_name_with_a_dot_round_trips() -> None:
    config = _parse('[runtime]\ndefault_handler = "a.b"\n[runtime.handlers."a.b"]\npath = "/x"\n')

    assert parse_config(tomllib.loads(render_config(config))) == config


def test_replaced_runtime_settings_render_their_values() -> None:
    config = replace(Config(), runtime=replace(RuntimeSettings(), shm_size_bytes=123))

    assert "shm_size_bytes = 123  #" in render_config(config)


def test_network_keys_reach_the_bridge_settings() -> None:
    config = _parse(
        '[network]\nmode = "bridge"\nbridge = "mrtest0"\nmtu = 1400\nchain_prefix = "MRT"\n'
        'pod_cidr = "10.9.0.0/24,fd09::/64"\n'
    )

    assert config.runtime.bridge.bridge == "mrtest0"
    assert config.runtime.bridge.mtu == 1400
    assert config.runtime.bridge.chain_prefix == "MRT"
    assert config.runtime.pod_cidr == "10.9.0.0/24,fd09::/64"
    assert parse_config(tomllib.loads(render_config(config))) == config


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('mode = "calico"', "network.mode"),
        ('pod_cidr = "10.0.0.0/33"', "network.pod_cidr"),
        ('pod_cidr = "10.0.0.0/16,10.0.1.0/24"', "network.pod_cidr"),
        ('bridge = "a-bridge-name-too-long"', "network.bridge"),
        ("mtu = 100", "network.mtu"),
        ('chain_prefix = "lowercase"', "network.chain_prefix"),
    ],
)
def test_bad_network_settings_are_refused_naming_the_key(text: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        _parse(f"[network]\n{text}\n")


@pytest.mark.parametrize("address", ["127.0.0.1:9777", "[::1]:0", "localhost:80", ""])
def test_metrics_address_accepts_host_port_or_nothing(address: str) -> None:
    config = parse_config({"metrics": {"address": address}})

    assert config.metrics_address == address


@pytest.mark.parametrize("address", ["9777", "127.0.0.1", "::1:80", "host:port"])
def test_metrics_address_must_be_host_and_port(address: str) -> None:
    with pytest.raises(ConfigError, match=r"metrics\.address"):
        parse_config({"metrics": {"address": address}})


@pytest.mark.parametrize("address", ["127.0.0.1:0", "[::1]:10010", "0.0.0.0:10250"])
def test_streaming_address_accepts_host_port(address: str) -> None:
    assert parse_config({"streaming": {"address": address}}).streaming_address == address


@pytest.mark.parametrize("address", ["", "10010", "host:port"])
def test_streaming_address_must_be_host_and_port(address: str) -> None:
    with pytest.raises(ConfigError, match=r"streaming\.address"):
        parse_config({"streaming": {"address": address}})


def test_streaming_listens_on_loopback_with_any_free_port_by_default() -> None:
    assert parse_config({}).streaming_address == "127.0.0.1:0"
