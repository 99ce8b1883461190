"""`moorage check` in CNI mode: the configuration, its plugins and their CNI STATUS."""

from __future__ import annotations

from runtime.host.checks import check_cni
from tests.unit import test_cni_config
from tests.unit.test_cni_config import PluginBench, standard_chain

bench = test_cni_config.bench


def test_a_usable_configuration_passes_and_is_named(bench: PluginBench) -> None:
    standard_chain(bench)

    check = check_cni(bench.settings)

    assert (check.name, check.ok, check.required) == ("cni network", True, True)
    assert "'testnet' (CNI 1.0.0)" in check.detail
    assert "fake-bridge fake-portmap" in check.detail
    assert bench.calls() == []


def test_a_plugin_whose_status_fails_fails_the_check_with_its_words(bench: PluginBench) -> None:
    bench.plugin("fake-ok")
    bench.plugin("fake-down", fail={"STATUS": {"code": 50, "msg": "daemon not running"}})
    bench.conflist("10.conflist", [{"type": "fake-ok"}, {"type": "fake-down"}], version="1.1.0")

    check = check_cni(bench.settings)

    assert not check.ok
    assert "daemon not running" in check.detail
    assert str(bench.conf_dir) in check.fix
    assert [c["env"]["CNI_COMMAND"] for c in bench.calls()] == ["STATUS", "STATUS"]


def test_no_configuration_fails_the_check(bench: PluginBench) -> None:
    check = check_cni(bench.settings)

    assert not check.ok
    assert "no usable CNI network configuration" in check.detail
