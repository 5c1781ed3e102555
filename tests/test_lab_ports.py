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


def test_port_ranges():
    assert port_ranges([28003, 20001, 20002, 20003, 28001]) == "20001-20003,28001,28003"
    assert port_ranges([]) == ""


def test_nd_timers_that_cannot_be_sustained_are_warned_about_with_timers_that_fit():
    # The case: an 11-switch 3-tier fabric at the default ND 10/30 ms on a 2-core machine.
    fast = clos_fabric(pods=2, aggs_per_pod=2, tors_per_pod=2, spines=2, border_pods=1, masters=1)
    warning = nd_load_warning(fast, cores=2)
    assert warning is not None and "ND every 10 ms" in warning and "nd_interval_ms:" in warning
    fit = int(warning.split("nd_interval_ms: ")[1].split(",")[0])
    assert fit > 10
    # The lab's defaults on the 2-spine x 4-leaf fabric fit.
    lab_timers = clos_fabric(pods=0, leaves=4, spines=2, masters=1, timers=LAB_DEFAULT_TIMERS)
    assert nd_load_warning(lab_timers, cores=2) is None
