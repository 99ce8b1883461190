"""CNI mode without root: configuration loading, the invocation protocol, results and the cache.

The plugins here are small executable Python scripts written into tmp_path: they record their
environment and stdin and print a canned answer, which is how the protocol is checked without
touching the kernel. /proc/self/ns/net stands in for a pod's netns where one must exist.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from network.cni import CniNetwork, CniPluginError, CniSettings
from network.cni_cache import CACHE_KIND, cache_file_name
from network.cni_config import CniConfigError, load_first_config, parse_config_list
from network.cni_plugin import (
    format_cni_args,
    plugin_stdin,
    pod_cni_args,
    pod_ips,
    port_mappings,
)
from network.errors import InvalidNetworkRequest, NetworkError, NetworkNotReady
from network.types import HostPort, PodNetwork, PodNetworkRequest

LIVE_NETNS = "/proc/self/ns/net"

RESULT_1_0_0: dict[str, Any] = {
    "cniVersion": "1.0.0",
    "interfaces": [
        {"name": "cni0", "mac": "aa:00:00:00:00:01"},
        {"name": "veth1", "mac": "aa:00:00:00:00:02"},
        {"name": "eth0", "mac": "aa:00:00:00:00:03", "sandbox": LIVE_NETNS},
    ],
    "ips": [
        {"interface": 2, "address": "fd00::5/64", "gateway": "fd00::1"},
        {"interface": 0, "address": "10.9.0.1/24"},
        {"interface": 2, "address": "10.9.0.5/24", "gateway": "10.9.0.1"},
    ],
    "routes": [{"dst": "0.0.0.0/0"}],
    "dns": {},
}


# ---------------------------------------------------------------- fake plugins


@dataclass
class PluginBench:
    """A conf dir, a bin dir of fake plugins, a cache dir, and the log the plugins write."""

    root: Path
    conf_dir: Path
    bin_dir: Path
    cache_dir: Path
    calls_log: Path

    @property
    def settings(self) -> CniSettings:
        return CniSettings(
            conf_dir=self.conf_dir,
            bin_dirs=(self.root / "no-such-bin", self.bin_dir),
            cache_dir=self.cache_dir,
            plugin_timeout_s=5.0,
        )

    def plugin(
        self,
        name: str,
        *,
        result: dict[str, Any] | None = None,
        fail: dict[str, Any] | None = None,
        exit_status: int = 1,
        stderr: str = "",
        sleep_s: float = 0.0,
    ) -> None:
        """A plugin that logs its call; on ADD prints `result` (else its prevResult);
        for the commands in `fail` prints that CNI error (or nothing) and exits non-zero."""
        behaviour = {
            "name": name,
            "result": result,
            "fail": fail or {},
            "exit_status": exit_status,
            "stderr": stderr,
            "sleep_s": sleep_s,
        }
        script = self.bin_dir / name
        script.write_text(
            f"#!{sys.executable}\n"
            "import json, os, sys, time\n"
            f"behaviour = json.loads({json.dumps(json.dumps(behaviour))})\n"
            f"log_path = {str(self.calls_log)!r}\n"
            "data = sys.stdin.read()\n"
            "record = {'plugin': behaviour['name'], 'env': dict(os.environ),\n"
            "          'stdin': json.loads(data) if data else None}\n"
            "with open(log_path, 'a') as log:\n"
            "    log.write(json.dumps(record) + '\\n')\n"
            "command = os.environ.get('CNI_COMMAND')\n"
            "time.sleep(behaviour['sleep_s'])\n"
            "if command in behaviour['fail']:\n"
            "    error = behaviour['fail'][command]\n"
            "    if error:\n"
            "        print(json.dumps(error))\n"
            "    sys.stderr.write(behaviour['stderr'])\n"
            "    sys.exit(behaviour['exit_status'])\n"
            "if command == 'ADD':\n"
            "    result = behaviour['result']\n"
            "    if result is None:\n"
            "        result = json.loads(data).get('prevResult', {})\n"
            "    print(json.dumps(result))\n"
        )
        script.chmod(0o755)

    def conflist(
        self, file_name: str, plugins: list[dict[str, Any]], version: str = "1.0.0", **extra: Any
    ) -> Path:
        path = self.conf_dir / file_name
        document = {"cniVersion": version, "name": "testnet", "plugins": plugins, **extra}
        path.write_text(json.dumps(document))
        return path

    def calls(self) -> list[dict[str, Any]]:
        if not self.calls_log.exists():
            return []
        return [json.loads(line) for line in self.calls_log.read_text().splitlines()]

    def clear_calls(self) -> None:
        self.calls_log.unlink(missing_ok=True)


@pytest.fixture
def bench(tmp_path: Path) -> Iterator[PluginBench]:
    for name in ("conf", "bin", "cache"):
        (tmp_path / name).mkdir()
    yield PluginBench(
        tmp_path, tmp_path / "conf", tmp_path / "bin", tmp_path / "cache", tmp_path / "calls.log"
    )


def pod(sandbox_id: str = "sb1", netns: str = LIVE_NETNS, **kwargs: Any) -> PodNetworkRequest:
    return PodNetworkRequest(
        sandbox_id=sandbox_id,
        pod_name="web",
        pod_namespace="shop",
        pod_uid="0b5e-11",
        netns_path=netns,
        **kwargs,
    )


def standard_chain(bench: PluginBench, version: str = "1.0.0", **extra: Any) -> None:
    """fake-bridge (gives RESULT_1_0_0) followed by fake-portmap (passes prevResult on)."""
    bench.plugin("fake-bridge", result=RESULT_1_0_0)
    bench.plugin("fake-portmap")
    bench.conflist(
        "10-test.conflist",
        [
            {"type": "fake-bridge", "bridge": "cni0"},
            {"type": "fake-portmap", "capabilities": {"portMappings": True}, "snat": True},
        ],
        version=version,
        **extra,
    )


# ---------------------------------------------------------------- configuration


def test_the_first_config_file_by_name_is_used_and_other_suffixes_are_ignored(
    bench: PluginBench,
) -> None:
    bench.conflist("20-b.conflist", [{"type": "b"}])
    (bench.conf_dir / "10-a.conf").write_text(
        json.dumps({"cniVersion": "0.4.0", "name": "a-net", "type": "a"})
    )
    (bench.conf_dir / "00-notes.txt").write_text("not a config")
    (bench.conf_dir / "05-dir.conflist").mkdir()

    config, problem = load_first_config(bench.conf_dir)

    assert problem == ""
    assert config is not None
    assert config.name == "a-net"
    assert config.source.endswith("10-a.conf")


def test_conflist_is_preferred_by_name_not_by_suffix(bench: PluginBench) -> None:
    (bench.conf_dir / "20-z.json").write_text(
        json.dumps({"cniVersion": "1.0.0", "name": "z", "type": "z"})
    )
    bench.conflist("15-list.conflist", [{"type": "x"}])

    config, _ = load_first_config(bench.conf_dir)

    assert config is not None and config.name == "testnet"


def test_a_single_plugin_conf_is_wrapped_into_a_list_as_libcni_does() -> None:
    plugin = {"cniVersion": "0.3.1", "name": "single", "type": "bridge", "bridge": "br9"}

    config = parse_config_list(json.dumps(plugin).encode(), "x.conf", single=True)

    assert config.name == "single"
    assert config.cni_version == "0.3.1"
    assert config.plugins == (plugin,)
    assert json.loads(config.raw) == {"cniVersion": "0.3.1", "name": "single", "plugins": [plugin]}
    # The wrapped list reads back the same, as DEL reads it from the cache.
    assert parse_config_list(config.raw).plugins == config.plugins


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"cniVersion": "1.0.0", "plugins": [{"type": "a"}]}', "no network name"),
        (
            '{"cniVersion": "1.0.0", "name": "../up", "plugins": [{"type": "a"}]}',
            "invalid network name",
        ),
        ('{"name": "n", "plugins": [{"type": "a"}]}', "no cniVersion"),
        ('{"cniVersion": "one", "name": "n", "plugins": [{"type": "a"}]}', "not of the form"),
        ('{"cniVersion": "2.0.0", "name": "n", "plugins": [{"type": "a"}]}', "newer than"),
        ('{"cniVersion": "1.0.0", "name": "n", "plugins": []}', "no plugins"),
        ('{"cniVersion": "1.0.0", "name": "n", "plugins": [{"bridge": "x"}]}', "has no type"),
        (
            '{"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "../../bin/sh"}]}',
            "invalid type",
        ),
        (
            '{"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "a", "capabilities": []}]}',
            "capabilities is not an object",
        ),
        (
            '{"cniVersion": "1.0.0", "name": "n", "disableCheck": 3, "plugins": [{"type": "a"}]}',
            "disableCheck",
        ),
    ],
)
def test_an_invalid_config_is_refused_with_its_reason(text: str, reason: str) -> None:
    with pytest.raises(CniConfigError, match=reason):
        parse_config_list(text.encode(), "x.conflist")


def test_invalid_files_are_skipped_with_a_logged_reason(bench: PluginBench) -> None:
    (bench.conf_dir / "00-broken.conflist").write_text("{")
    (bench.conf_dir / "01-notype.conf").write_text(json.dumps({"cniVersion": "1.0.0", "name": "n"}))
    bench.conflist("10-good.conflist", [{"type": "a"}])

    with capture_logs() as logs:
        config, _ = load_first_config(bench.conf_dir)

    assert config is not None and config.source.endswith("10-good.conflist")
    skipped = [entry for entry in logs if entry["event"] == "cni config skipped"]
    assert [Path(e["path"]).name for e in skipped] == ["00-broken.conflist", "01-notype.conf"]
    assert "not valid JSON" in skipped[0]["reason"]
    assert "no type" in skipped[1]["reason"]


def test_cni_versions_list_picks_the_newest_version_this_driver_knows() -> None:
    text = json.dumps(
        {"cniVersions": ["0.4.0", "1.1.0", "9.0.0"], "name": "n", "plugins": [{"type": "a"}]}
    )

    assert parse_config_list(text.encode()).cni_version == "1.1.0"


def test_no_config_makes_the_network_not_ready_naming_the_conf_dir(bench: PluginBench) -> None:
    network = CniNetwork(bench.settings)

    readiness = network.readiness()

    assert not readiness.ready
    assert readiness.reason == "NetworkPluginNotReady"
    assert str(bench.conf_dir) in readiness.message


async def test_attach_without_config_fails_as_not_ready_naming_the_conf_dir(
    bench: PluginBench,
) -> None:
    network = CniNetwork(replace(bench.settings, conf_dir=bench.root / "missing"))

    with pytest.raises(NetworkNotReady, match=str(bench.root / "missing")):
        await network.attach(pod())


def test_a_config_naming_a_missing_plugin_is_not_ready(bench: PluginBench) -> None:
    bench.plugin("present")
    bench.conflist("10.conflist", [{"type": "present"}, {"type": "absent-plugin"}])

    readiness = CniNetwork(bench.settings).readiness()

    assert not readiness.ready
    assert readiness.reason == "NetworkPluginNotReady"
    assert "absent-plugin" in readiness.message
    assert str(bench.bin_dir) in readiness.message


async def test_a_conflist_dropped_in_later_is_used_without_a_new_driver(
    bench: PluginBench,
) -> None:
    network = CniNetwork(bench.settings)
    assert not network.readiness().ready

    standard_chain(bench)

    assert network.readiness().ready
    status = await network.attach(pod())
    assert status.ips == ["10.9.0.5", "fd00::5"]


def test_a_rewritten_config_is_read_again(bench: PluginBench) -> None:
    bench.plugin("a")
    bench.conflist("10.conflist", [{"type": "a"}])
    network = CniNetwork(bench.settings)
    first = network.current_config()

    path = bench.conflist("10.conflist", [{"type": "a", "extra": 1}])
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1_000_000))

    second = network.current_config()
    assert first is not None and second is not None
    assert second.plugins[0].get("extra") == 1


def test_a_plugin_installed_later_makes_the_network_ready(bench: PluginBench) -> None:
    """Regression (issue 19): the plugin lookup is kept between calls, not redone per Status,
    so installing the plugin must drop it."""
    bench.conflist("10.conflist", [{"type": "late"}])
    network = CniNetwork(bench.settings)
    assert not network.readiness().ready
    assert not network.readiness().ready

    bench.plugin("late")

    assert network.readiness().ready


def test_a_config_removed_makes_the_network_not_ready_at_the_next_call(
    bench: PluginBench,
) -> None:
    standard_chain(bench)
    network = CniNetwork(bench.settings)
    assert network.readiness().ready

    for path in bench.conf_dir.iterdir():
        path.unlink()

    assert not network.readiness().ready


def test_the_driver_implements_pod_network(bench: PluginBench) -> None:
    network: PodNetwork = CniNetwork(bench.settings)
    assert network.readiness().reason == "NetworkPluginNotReady"


# ---------------------------------------------------------------- what goes to a plugin


def test_runtime_config_carries_only_the_capabilities_a_plugin_declares() -> None:
    config = parse_config_list(
        json.dumps({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "a"}]}).encode()
    )
    mappings = [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""}]
    args = {"portMappings": mappings, "bandwidth": {"ingressRate": 1}}

    def stdin_for(plugin: dict[str, Any]) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(plugin_stdin(config, plugin, None, args))
        return document

    declared = stdin_for({"type": "portmap", "capabilities": {"portMappings": True}})
    assert declared["runtimeConfig"] == {"portMappings": mappings}
    assert "runtimeConfig" not in stdin_for({"type": "bridge"})
    assert "runtimeConfig" not in stdin_for({"type": "p", "capabilities": {"portMappings": False}})
    assert "runtimeConfig" not in stdin_for({"type": "p", "capabilities": {"ips": True}})


def test_plugin_config_gets_the_list_name_version_and_prev_result() -> None:
    config = parse_config_list(
        json.dumps(
            {"cniVersion": "0.4.0", "name": "outer", "plugins": [{"type": "a", "name": "inner"}]}
        ).encode()
    )

    document = json.loads(plugin_stdin(config, config.plugins[0], {"ips": []}, None))

    assert document == {
        "type": "a",
        "name": "outer",
        "cniVersion": "0.4.0",
        "prevResult": {"ips": []},
    }


def test_port_mappings_skip_host_port_zero() -> None:
    ports = [
        HostPort("tcp", 80, 8080),
        HostPort("udp", 53, 0),
        HostPort("udp", 53, 5353, "192.0.2.2"),
    ]

    assert port_mappings(ports) == [
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""},
        {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "192.0.2.2"},
    ]


def test_cni_args_name_the_pod_as_kubernetes_runtimes_do() -> None:
    assert format_cni_args(pod_cni_args(pod("abc123"))) == (
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web;"
        "K8S_POD_INFRA_CONTAINER_ID=abc123;K8S_POD_UID=0b5e-11"
    )


async def test_add_runs_the_plugins_in_order_with_the_cni_environment(bench: PluginBench) -> None:
    standard_chain(bench)
    network = CniNetwork(bench.settings)

    status = await network.attach(pod("sb1", host_ports=[HostPort("tcp", 80, 8080)]))

    assert status.ips == ["10.9.0.5", "fd00::5"]
    calls = bench.calls()
    assert [c["plugin"] for c in calls] == ["fake-bridge", "fake-portmap"]
    for call in calls:
        cni_env = {k: v for k, v in call["env"].items() if k.startswith("CNI_")}
        assert cni_env == {
            "CNI_COMMAND": "ADD",
            "CNI_CONTAINERID": "sb1",
            "CNI_NETNS": LIVE_NETNS,
            "CNI_IFNAME": "eth0",
            "CNI_PATH": f"{bench.root / 'no-such-bin'}:{bench.bin_dir}",
            "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web;"
            "K8S_POD_INFRA_CONTAINER_ID=sb1;K8S_POD_UID=0b5e-11",
        }
        assert call["env"]["PATH"]
        assert call["stdin"]["name"] == "testnet"
        assert call["stdin"]["cniVersion"] == "1.0.0"
    bridge, portmap = (c["stdin"] for c in calls)
    assert "prevResult" not in bridge and "runtimeConfig" not in bridge
    assert portmap["prevResult"] == RESULT_1_0_0
    assert portmap["runtimeConfig"] == {
        "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""}]
    }


async def test_the_result_is_cached_per_attachment_with_config_and_result(
    bench: PluginBench,
) -> None:
    standard_chain(bench)
    network = CniNetwork(bench.settings)

    await network.attach(pod("sb1", host_ports=[HostPort("tcp", 80, 8080)]))

    assert cache_file_name("testnet", "sb1", "eth0") == "testnet-sb1-eth0"
    assert [p.name for p in bench.cache_dir.iterdir()] == ["testnet-sb1-eth0"]
    cached = json.loads((bench.cache_dir / "testnet-sb1-eth0").read_text())
    assert cached["kind"] == CACHE_KIND
    assert cached["containerId"] == "sb1"
    assert cached["netns"] == LIVE_NETNS
    assert cached["result"] == RESULT_1_0_0
    assert cached["config"] == (bench.conf_dir / "10-test.conflist").read_text()
    assert cached["capabilityArgs"]["portMappings"][0]["hostPort"] == 8080


# ---------------------------------------------------------------- DEL, CHECK, STATUS


async def test_del_runs_in_reverse_with_the_cached_config_result_and_port_mappings(
    bench: PluginBench,
) -> None:
    standard_chain(bench)
    network = CniNetwork(bench.settings)
    await network.attach(pod("sb1", host_ports=[HostPort("tcp", 80, 8080)]))
    bench.clear_calls()
    # The config changes after ADD: DEL still uses the one ADD used.
    bench.plugin("other")
    (bench.conf_dir / "10-test.conflist").unlink()
    bench.conflist("05-new.conflist", [{"type": "other"}])

    await network.detach(pod("sb1"))

    calls = bench.calls()
    assert [c["plugin"] for c in calls] == ["fake-portmap", "fake-bridge"]
    assert all(c["env"]["CNI_COMMAND"] == "DEL" for c in calls)
    assert all(c["stdin"]["prevResult"] == RESULT_1_0_0 for c in calls)
    assert calls[0]["stdin"]["runtimeConfig"]["portMappings"][0]["hostPort"] == 8080
    assert list(bench.cache_dir.iterdir()) == []


async def test_del_without_a_cache_uses_the_current_config_and_no_prev_result(
    bench: PluginBench,
) -> None:
    standard_chain(bench)
    network = CniNetwork(bench.settings)

    await network.detach(pod("never-added"))
    await network.detach(pod("never-added"))

    calls = bench.calls()
    assert [c["plugin"] for c in calls] == ["fake-portmap", "fake-bridge"] * 2
    assert all("prevResult" not in c["stdin"] for c in calls)


async def test_del_of_a_version_before_0_4_0_passes_no_prev_result(bench: PluginBench) -> None:
    standard_chain(bench, version="0.3.1")
    network = CniNetwork(bench.settings)
    await network.attach(pod())
    bench.clear_calls()

    await network.detach(pod())

    assert all("prevResult" not in c["stdin"] for c in bench.calls())


async def test_a_failed_add_removes_the_whole_list_and_names_the_plugin(bench: PluginBench) -> None:
    bench.plugin("fake-bridge", result=RESULT_1_0_0)
    bench.plugin(
        "fake-broken",
        fail={"ADD": {"cniVersion": "1.0.0", "code": 11, "msg": "boom", "details": "why"}},
    )
    bench.conflist("10.conflist", [{"type": "fake-bridge"}, {"type": "fake-broken"}])
    network = CniNetwork(bench.settings)

    with pytest.raises(CniPluginError, match="fake-broken") as failure:
        await network.attach(pod("sb1"))

    assert "boom: why (CNI error code 11)" in str(failure.value)
    commands = [(c["plugin"], c["env"]["CNI_COMMAND"]) for c in bench.calls()]
    assert commands == [
        ("fake-bridge", "ADD"),
        ("fake-broken", "ADD"),
        ("fake-broken", "DEL"),
        ("fake-bridge", "DEL"),
    ]
    assert list(bench.cache_dir.iterdir()) == []


async def test_a_plugin_failing_without_error_json_is_reported_with_its_stderr(
    bench: PluginBench,
) -> None:
    bench.plugin("fake-crash", fail={"ADD": None}, exit_status=2, stderr="panic: nil map")
    bench.conflist("10.conflist", [{"type": "fake-crash"}])

    with pytest.raises(CniPluginError, match="exit status 2: panic: nil map"):
        await CniNetwork(bench.settings).attach(pod())


async def test_a_result_without_an_address_is_refused_and_undone(bench: PluginBench) -> None:
    bench.plugin("fake-empty", result={"cniVersion": "1.0.0", "interfaces": [], "ips": []})
    bench.conflist("10.conflist", [{"type": "fake-empty"}])

    with pytest.raises(NetworkError, match="no IP address"):
        await CniNetwork(bench.settings).attach(pod())

    assert [c["env"]["CNI_COMMAND"] for c in bench.calls()] == ["ADD", "DEL"]
    assert list(bench.cache_dir.iterdir()) == []


async def test_a_missing_plugin_fails_add_before_anything_runs(bench: PluginBench) -> None:
    bench.plugin("fake-bridge", result=RESULT_1_0_0)
    bench.conflist("10.conflist", [{"type": "fake-bridge"}, {"type": "gone-plugin"}])

    with pytest.raises(CniPluginError, match=r"gone-plugin.*not found in"):
        await CniNetwork(bench.settings).attach(pod())

    assert bench.calls() == []


async def test_a_hanging_plugin_is_killed_after_the_timeout(bench: PluginBench) -> None:
    bench.plugin("fake-hang", sleep_s=30)
    bench.conflist("10.conflist", [{"type": "fake-hang"}])
    network = CniNetwork(replace(bench.settings, plugin_timeout_s=0.5))

    started = time.monotonic()
    with pytest.raises(CniPluginError, match=r"timed out after 0\.5s"):
        await network.attach(pod())

    # ADD and the clean-up DEL each time out once.
    assert time.monotonic() - started < 5


async def test_del_failures_raise_while_the_netns_exists_and_are_only_logged_when_it_is_gone(
    bench: PluginBench,
) -> None:
    bench.plugin("fake-bridge", result=RESULT_1_0_0, fail={"DEL": {"code": 999, "msg": "stuck"}})
    bench.plugin("fake-portmap")
    bench.conflist("10.conflist", [{"type": "fake-bridge"}, {"type": "fake-portmap"}])
    network = CniNetwork(bench.settings)
    await network.attach(pod("sb1"))
    bench.clear_calls()

    with pytest.raises(NetworkError, match="stuck"):
        await network.detach(pod("sb1"))
    # Every plugin was still asked, and the cache stays for another try.
    assert [c["plugin"] for c in bench.calls()] == ["fake-portmap", "fake-bridge"]
    assert (bench.cache_dir / "testnet-sb1-eth0").exists()

    bench.clear_calls()
    await network.detach(pod("sb1", netns=""))
    assert all(c["env"]["CNI_NETNS"] == "" for c in bench.calls())
    assert list(bench.cache_dir.iterdir()) == []


async def test_a_netns_path_that_no_longer_exists_is_passed_as_empty(
    bench: PluginBench, tmp_path: Path
) -> None:
    standard_chain(bench)
    network = CniNetwork(bench.settings)
    await network.attach(pod("sb1"))
    bench.clear_calls()

    await network.detach(pod("sb1", netns=str(tmp_path / "gone-pin")))

    assert [c["env"]["CNI_NETNS"] for c in bench.calls()] == ["", ""]


async def test_status_is_a_no_op_before_1_1_0(bench: PluginBench) -> None:
    standard_chain(bench, version="1.0.0")

    await CniNetwork(bench.settings).status()

    assert bench.calls() == []


async def test_status_asks_every_plugin_from_1_1_0_and_a_failure_makes_the_node_not_ready(
    bench: PluginBench,
) -> None:
    bench.plugin("fake-ok")
    bench.plugin("fake-down", fail={"STATUS": {"code": 50, "msg": "daemon not running"}})
    bench.conflist("10.conflist", [{"type": "fake-ok"}, {"type": "fake-down"}], version="1.1.0")
    network = CniNetwork(bench.settings)

    with pytest.raises(NetworkNotReady, match="daemon not running"):
        await network.status()

    calls = bench.calls()
    assert [c["env"]["CNI_COMMAND"] for c in calls] == ["STATUS", "STATUS"]
    assert all("CNI_CONTAINERID" not in c["env"] for c in calls)
    assert calls[0]["stdin"] == {"type": "fake-ok", "name": "testnet", "cniVersion": "1.1.0"}
    readiness = network.readiness()
    assert not readiness.ready and "daemon not running" in readiness.message


# ---------------------------------------------------------------- results


def test_pod_ips_are_the_sandbox_interface_addresses_ipv4_first_without_prefix() -> None:
    assert pod_ips(RESULT_1_0_0, LIVE_NETNS) == ["10.9.0.5", "fd00::5"]


def test_pod_ips_are_all_addresses_when_no_interface_is_in_the_sandbox() -> None:
    result = {"cniVersion": "0.3.1", "ips": [{"version": "4", "address": "10.1.2.3/16"}]}

    assert pod_ips(result, "/run/x") == ["10.1.2.3"]


def test_pod_ips_never_include_loopback() -> None:
    result = {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "lo", "sandbox": "/ns"}, {"name": "eth0", "sandbox": "/ns"}],
        "ips": [
            {"interface": 0, "address": "127.0.0.1/8"},
            {"interface": 1, "address": "10.0.0.7/24"},
        ],
    }

    assert pod_ips(result, "/ns") == ["10.0.0.7"]


def test_pod_ips_from_a_0_2_0_result() -> None:
    result = {
        "cniVersion": "0.2.0",
        "ip4": {"ip": "10.22.0.9/16", "gateway": "10.22.0.1"},
        "ip6": {"ip": "fd22::9/64"},
        "dns": {},
    }

    assert pod_ips(result, LIVE_NETNS) == ["10.22.0.9", "fd22::9"]


async def test_a_0_2_0_plugin_result_gives_the_pod_ip(bench: PluginBench) -> None:
    bench.plugin("fake-old", result={"cniVersion": "0.2.0", "ip4": {"ip": "10.3.0.4/24"}})
    bench.conflist("10.conflist", [{"type": "fake-old"}], version="0.2.0")

    assert (await CniNetwork(bench.settings).attach(pod())).ips == ["10.3.0.4"]


# ---------------------------------------------------------------- bad requests, reconcile


@pytest.mark.parametrize(
    "request_",
    [
        pod("../../etc/passwd"),
        pod("ok", netns=""),
        replace(pod(), pod_name="a;b"),
        pod(host_ports=[HostPort("icmp", 80, 8080)]),
        pod(host_ports=[HostPort("tcp", 80, 70000)]),
        pod(host_ports=[HostPort("tcp", 80, 8080, "not-an-ip")]),
    ],
)
async def test_a_malformed_request_is_refused_before_any_plugin_runs(
    bench: PluginBench, request_: PodNetworkRequest
) -> None:
    standard_chain(bench)

    with pytest.raises(InvalidNetworkRequest):
        await CniNetwork(bench.settings).attach(request_)

    assert bench.calls() == []


def test_an_invalid_interface_name_is_refused(bench: PluginBench) -> None:
    with pytest.raises(InvalidNetworkRequest, match="interface name"):
        CniNetwork(replace(bench.settings, ifname="eth0/../x"))


async def test_reconcile_releases_attachments_of_gone_sandboxes_only(
    bench: PluginBench, tmp_path: Path
) -> None:
    standard_chain(bench)
    network = CniNetwork(bench.settings)
    await network.attach(pod("alive"))
    await network.attach(pod("gone", netns=LIVE_NETNS))
    (bench.cache_dir / "garbage").write_text("{")
    (bench.cache_dir / ".testnet-x-eth0.tmp").write_text("half")
    bench.clear_calls()

    fixed = await network.reconcile([pod("alive")])

    assert sorted(p.name for p in bench.cache_dir.iterdir()) == ["testnet-alive-eth0"]
    assert [(c["plugin"], c["env"]["CNI_CONTAINERID"]) for c in bench.calls()] == [
        ("fake-portmap", "gone"),
        ("fake-bridge", "gone"),
    ]
    assert len(fixed) == 3
    assert any("gone" in line and "released" in line for line in fixed)
    assert await network.reconcile([pod("alive")]) == []


async def test_reconcile_passes_an_empty_netns_when_the_pin_is_gone(
    bench: PluginBench, tmp_path: Path
) -> None:
    standard_chain(bench)
    network = CniNetwork(bench.settings)
    pin = tmp_path / "pin"
    pin.touch()
    await network.attach(pod("stale", netns=str(pin)))
    pin.unlink()
    bench.clear_calls()

    await network.reconcile([])

    assert [c["env"]["CNI_NETNS"] for c in bench.calls()] == ["", ""]
    assert list(bench.cache_dir.iterdir()) == []
