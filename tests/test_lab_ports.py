"""Lab ports and timers without root: assigned `ovs:` targets and REST ports, clashes refused, the
reserved-ports list, and the warning when software ND cannot be sustained on this machine."""

from __future__ import annotations

import pytest

from lab.fabric import (
    LAB_DEFAULT_TIMERS,
    OVS_BASE_PORT,
    REST_BASE_PORT,
    LabError,
    LabPorts,
    nd_load_warning,
    port_ranges,
)
from proto.clos import ClosParams, clos_fabric, generate_clos_yaml
from proto.config import load_fabric


def _fabric(tmp_path, **params):
    (tmp_path / "k").write_text("ab" * 32 + "\n")
    path = tmp_path / "f.yaml"
    path.write_text(generate_clos_yaml(ClosParams(name="t", key_file="k", **params)))
    return load_fabric(path)


def test_missing_ovs_targets_and_rest_ports_are_assigned_outside_the_ephemeral_range(tmp_path):
    fabric = _fabric(tmp_path, spines=2, pods=0, leaves=4, masters=1)     # no ovs:, no rest_port
    ports = LabPorts(fabric)
    assert sorted(ports.assigned_ovs) == sorted(s.name for s in fabric.switches) == sorted(ports.assigned_rest)
    for sw in fabric.switches:
        assert ports.ovs_target(sw.name) == f"tcp:127.0.0.1:{OVS_BASE_PORT + sw.id}"
        assert ports.rest[sw.name] == REST_BASE_PORT + sw.id
    assert max(ports.all) < 32768                 # below Linux's default ephemeral range (32768-60999)


def test_configured_ports_are_kept_and_a_clash_is_refused(tmp_path):
    fabric = _fabric(tmp_path, spines=1, pods=0, leaves=2, masters=1, ovs_base_port=16000,
                     rest_base_port=9000)
    ports = LabPorts(fabric)
    assert not ports.assigned_ovs and not ports.assigned_rest
    assert ports.rest["leaf-1"] == 9000 + fabric.switch("leaf-1").id
    clash = _fabric(tmp_path, spines=1, pods=0, leaves=2, masters=1, ovs_base_port=16000, rest_base_port=16000)
    with pytest.raises(LabError, match="used twice"):
        LabPorts(clash)


def test_an_assigned_port_out_of_range_or_clashing_names_the_switch_id_and_the_fix(tmp_path):
    """A switch id the lab's port bases do not fit (a valid config: ids go to 2^31-1) was refused as
    'switch X ovs (assigned): port 80000 out of range', or two assigned ports clashed (an id 8007 OVS port
    and id 7's REST port), without saying where the port came from or what to write (tester finding)."""
    import re

    base = _fabric(tmp_path, spines=1, pods=0, leaves=2, masters=1)
    spine = base.switches[0]
    path = tmp_path / "f.yaml"
    far = path.read_text().replace(f"id: {spine.id}\n", "id: 60000\n", 1)
    path.write_text(far)
    with pytest.raises(LabError) as e:
        LabPorts(load_fabric(path))
    assert str(e.value) == (f"switch {spine.name} ovs (assigned): port 80000 out of range 1..65535 (the lab assigns "
                            f"{OVS_BASE_PORT} + id 60000: give {spine.name} its own `ovs: tcp:127.0.0.1:PORT` in the config)")
    leaf = base.switches[1]
    path.write_text(far.replace("id: 60000\n", f"id: {REST_BASE_PORT - OVS_BASE_PORT + leaf.id}\n", 1))
    with pytest.raises(LabError) as e:
        LabPorts(load_fabric(path))
    msg = str(e.value)
    assert re.match(rf"TCP port {REST_BASE_PORT + leaf.id} is used twice in the lab: ", msg), msg
    assert f"give {spine.name} its own `ovs: tcp:127.0.0.1:PORT`" in msg
    assert f"give {leaf.name} its own `rest_port: PORT`" in msg


def test_a_udp_and_a_tcp_port_of_one_number_do_not_clash_two_of_one_protocol_do(tmp_path):
    """A tester: `lab up` refused a config whose master UDP client port had the number of a switch's TCP REST
    port, which is no clash (two sockets of different protocols); two TCP listeners still are, named with their
    protocol (two of a master's own ports are refused by the config loader already)."""
    base = _fabric(tmp_path, spines=1, pods=0, leaves=2, masters=1)
    m = base.masters[0]
    path = tmp_path / "f.yaml"
    text = path.read_text()
    leaf = base.switches[1]
    ok = text.replace(f"client_port: {m.client_port}", f"client_port: {REST_BASE_PORT + leaf.id}", 1)
    assert ok != text
    path.write_text(ok)
    ports = LabPorts(load_fabric(path))
    assert ports.rest[leaf.name] == REST_BASE_PORT + leaf.id and REST_BASE_PORT + leaf.id in ports.all
    path.write_text(text.replace(f"rest_port: {m.rest_port}", f"rest_port: {REST_BASE_PORT + leaf.id}", 1))
    with pytest.raises(LabError, match=f"TCP port {REST_BASE_PORT + leaf.id} is used twice"):
        LabPorts(load_fabric(path))


def test_port_ranges():
    assert port_ranges([28003, 20001, 20002, 20003, 28001]) == "20001-20003,28001,28003"
    assert port_ranges([]) == ""


def test_nd_timers_that_cannot_be_sustained_are_warned_about_with_timers_that_fit():
    # The case: an 11-switch 3-tier fabric at the default ND 10/30 ms on a 2-core machine.
    fast = clos_fabric(pods=2, aggs_per_pod=2, tors_per_pod=2, spines=2, border_pods=1, masters=1, liveness="nd")
    warning = nd_load_warning(fast, cores=2)
    assert warning is not None and "ND every 10 ms" in warning and "nd_interval_ms:" in warning
    fit = int(warning.split("nd_interval_ms: ")[1].split(",")[0])
    assert fit > 10
    # The lab's defaults on the 2-spine x 4-leaf fabric fit.
    lab_timers = clos_fabric(pods=0, leaves=4, spines=2, masters=1, timers=LAB_DEFAULT_TIMERS)
    assert nd_load_warning(lab_timers, cores=2) is None
    # With OAM (the default) CFM is the heartbeat and ND only checks identity: no ND warning (tester: it said
    # links would flap while ND ran once a second)
    assert nd_load_warning(clos_fabric(pods=2, aggs_per_pod=2, tors_per_pod=2, spines=2, border_pods=1,
                                       masters=1), cores=2) is None


def test_cfm_interval_is_sized_to_the_fabric_with_a_warning(tmp_path):
    from lab.fabric import generate_config
    from lab.sizing import oam_interval_fit, oam_load_warning

    # 2 x 4 (16 link ends) and the 10-switch 3-tier (32) keep the default 10 ms; 4 x 16 (128) does not fit.
    assert oam_interval_fit(16) == 10 and oam_interval_fit(32) == 10
    assert oam_interval_fit(128) == 40 and oam_interval_fit(288) == 90
    big = clos_fabric(pods=0, leaves=16, spines=4, masters=1, timers=LAB_DEFAULT_TIMERS)
    warning = oam_load_warning(big)
    assert warning is not None and "CFM every 10 ms on 128 link ends" in warning and "oam_interval_ms: 40" in warning
    assert oam_load_warning(clos_fabric(pods=0, leaves=4, spines=2, masters=1, timers=LAB_DEFAULT_TIMERS)) is None
    # The lab's generated config takes the interval that fits, and says so; explicit timers are kept.
    said: list[str] = []
    sized = load_fabric(generate_config(tmp_path / "big", "big", log=said.append, pods=0, leaves=16, spines=4))
    assert sized.timers.oam_interval == 0.040 and oam_load_warning(sized) is None
    assert len(said) == 1 and "using oam_interval_ms: 40" in said[0]
    assert sized.timers.nd_interval == dict(LAB_DEFAULT_TIMERS)["nd_interval_ms"] / 1000
    small = load_fabric(generate_config(tmp_path / "small", "small", log=said.append, pods=0, leaves=4))
    assert small.timers.oam_interval == 0.010 and len(said) == 1
    kept = load_fabric(generate_config(tmp_path / "kept", "kept", pods=0, leaves=16, spines=4,
                                       timers=(("oam_interval_ms", 10),)))
    assert kept.timers.oam_interval == 0.010 and oam_load_warning(kept) is not None
    other = load_fabric(generate_config(tmp_path / "other", "other", log=said.append, pods=0, leaves=16, spines=4,
                                        timers=(("nd_dead_ms", 300),)))
    assert other.timers.oam_interval == 0.040 and other.timers.nd_dead == 0.300 and len(said) == 2


def test_lab_daemons_share_a_bytecode_cache(tmp_path, monkeypatch):
    from pathlib import Path

    from lab.pyenv import python_env

    monkeypatch.setenv("HOME", str(tmp_path))
    env = python_env(Path("/repo"), {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": "/x"})
    assert env["PYTHONPYCACHEPREFIX"] == str(tmp_path / ".cache/firepath/pycache")
    assert (tmp_path / ".cache/firepath/pycache").is_dir()
    assert "PYTHONDONTWRITEBYTECODE" not in env and env["PYTHONPATH"] == "/repo:/x"
