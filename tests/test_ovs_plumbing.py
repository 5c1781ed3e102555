"""Real-OVS tests of the lab plumbing: private OVS instance, netns/veth helpers, nftables silent drop.

Topology (all names start with `fpovs-<token>`; OVS runs inside its own lab namespace):

    [h1 netns] eth --veth-- b1:10  [bridge b1] b1:1 --veth-- b2:1 [bridge b2]  b2:10 --veth-- eth [h2 netns]
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lab import netns, nft
from lab.ovs import OvsInstance, dpid_hex
from lab.state import proc_starttime

pytestmark = pytest.mark.ovs

H1_IP, H2_IP = "10.99.0.1", "10.99.0.2"


@dataclass
class Lab:
    tok: str
    ns: str  # OVS namespace
    h1: str
    h2: str
    ovs: OvsInstance
    b1: str
    b2: str
    link1: str  # b1 side of the b1-b2 link
    link2: str  # b2 side
    start_time: float


def _ping(src_ns: str, dst: str, count: int = 1, wait: float = 1.0) -> int:
    """Number of echo replies received."""
    proc = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            src_ns,
            "ping",
            "-n",
            "-q",
            "-c",
            str(count),
            "-i",
            "0.05",
            "-W",
            str(wait),
            dst,
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    for line in proc.stdout.splitlines():
        if "received" in line:
            return int(line.split(",")[1].split()[0])
    return 0


def _wait_ping(src_ns: str, dst: str, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _ping(src_ns, dst, count=1, wait=0.3) == 1:
            return True
    return False


def _build(tok: str, run_dir: Path) -> Lab:
    ns, h1, h2 = f"fpovs-{tok}-lab", f"fpovs-{tok}-h1", f"fpovs-{tok}-h2"
    for name in (ns, h1, h2):
        netns.create_netns(name)
    ovs = OvsInstance(run_dir, netns=ns)
    start_time = ovs.start()
    b1, b2 = f"fpovs-{tok}-b1", f"fpovs-{tok}-b2"
    ovs.add_bridge(b1, 1)
    ovs.add_bridge(b2, 2)
    link1, link2 = f"fpovs-{tok}-l1", f"fpovs-{tok}-l2"
    netns.create_veth(link1, link2, netns_a=ns, netns_b=ns)
    ovs.add_port(b1, link1, 1)
    ovs.add_port(b2, link2, 1)
    for host, bridge, ip in ((h1, b1, H1_IP), (h2, b2, H2_IP)):
        port = f"{bridge}h"
        netns.create_veth(port, "eth0", netns_a=ns, netns_b=host)
        netns.add_address("eth0", f"{ip}/24", host)
        ovs.add_port(bridge, port, 10)
        ovs.add_flow(bridge, "priority=10,in_port=10,actions=output:1")
        ovs.add_flow(bridge, "priority=10,in_port=1,actions=output:10")
    return Lab(tok, ns, h1, h2, ovs, b1, b2, link1, link2, start_time)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    tok = secrets.token_hex(2)
    run_dir = Path(f"/tmp/fpovs-{tok}")  # short: unix socket paths are limited
    built = None
    try:
        built = _build(tok, run_dir)
        yield built
    finally:
        OvsInstance(run_dir).teardown(remove_run_dir=True)
        netns.cleanup(f"fpovs-{tok}")


def test_ovs_start_and_bridges(lab: Lab) -> None:
    assert lab.ovs.running()
    assert set(lab.ovs.bridges()) == {lab.b1, lab.b2}
    assert lab.ovs.vsctl("get", "bridge", lab.b1, "datapath_type").strip() == "netdev"
    assert lab.ovs.vsctl("get", "bridge", lab.b1, "fail_mode").strip() == "secure"
    assert lab.ovs.vsctl("get", "bridge", lab.b2, "other-config:datapath-id").strip().strip('"') == dpid_hex(
        2
    )
    assert "dpid:0000000000000002" in lab.ovs.ofctl(lab.b2, "show")
    # Nothing of the lab in the root namespace: the ports live in the OVS namespace.
    assert netns.list_links(None, f"fpovs-{lab.tok}") == []
    assert set(netns.list_links(lab.ns, f"fpovs-{lab.tok}")) >= {lab.link1, lab.link2}
    print(f"\nOVS start: {lab.start_time * 1000:.1f} ms")


def test_ping_across_two_bridges(lab: Lab) -> None:
    assert _wait_ping(lab.h1, H2_IP)
    assert _ping(lab.h2, H1_IP, count=3) == 3


def test_carrier_down_stops_traffic_and_is_reversible(lab: Lab) -> None:
    assert _wait_ping(lab.h1, H2_IP)
    netns.set_link(lab.link2, False, lab.ns)
    try:
        # the far end loses its carrier, OVS sees the link down on both bridges
        assert not lab.ovs.port_state(lab.b1, 1).link_up
        b2_state = lab.ovs.port_state(lab.b2, lab.link2)
        assert not (b2_state.admin_up and b2_state.link_up)
        assert _ping(lab.h1, H2_IP, count=3, wait=0.3) == 0
    finally:
        netns.set_link(lab.link2, True, lab.ns)
    assert _wait_ping(lab.h1, H2_IP)
    assert lab.ovs.port_state(lab.b1, 1).link_up


def test_nft_silent_drop_both_directions_and_reversible(lab: Lab) -> None:
    table = f"fpovs_{lab.tok}_silent"
    assert _wait_ping(lab.h1, H2_IP)
    nft.drop_link(table, [(lab.ns, lab.link1), (lab.ns, lab.link2)])
    try:
        assert nft.table_name(table) in nft.tables(lab.ns)
        # silent: carrier and admin state stay up on both sides
        for bridge in (lab.b1, lab.b2):
            state = lab.ovs.port_state(bridge, 1)
            assert state.link_up and state.admin_up
        assert _ping(lab.h1, H2_IP, count=3, wait=0.3) == 0
        assert _ping(lab.h2, H1_IP, count=3, wait=0.3) == 0
        # idempotent
        nft.drop_link(table, [(lab.ns, lab.link1), (lab.ns, lab.link2)])
        assert nft.tables(lab.ns).count(nft.table_name(table)) == 1
    finally:
        assert nft.remove(table, lab.ns)
    assert not nft.remove(table, lab.ns)  # already gone
    assert _wait_ping(lab.h1, H2_IP)


def test_nft_link_cut_is_timed_without_a_process(lab: Lab) -> None:
    """drop_link/remove_link go through libnftables in the namespace's thread: the returned time is right
    before the change, which is done within a few ms (the nft process took 17-19 ms), and a bad script is
    a clear NftError naming the namespace."""
    assert nft._libnftables() is not None, "libnftables (Debian libnftables1) must be loadable"
    table = f"fpovs_{lab.tok}_timed"
    t0 = time.monotonic()
    at = nft.drop_link(table, [(lab.ns, lab.link1), (lab.ns, lab.link2)])
    t1 = time.monotonic()
    try:
        assert t0 <= at <= t1 and t1 - at < 0.010, (at - t0, t1 - at)
        assert nft.table_name(table) in nft.tables(lab.ns)
        assert _ping(lab.h1, H2_IP, count=2, wait=0.3) == 0
    finally:
        t0 = time.monotonic()
        at = nft.remove_link(table, [lab.ns])
        assert t0 <= at <= time.monotonic()
    assert nft.table_name(table) not in nft.tables(lab.ns)
    assert _wait_ping(lab.h1, H2_IP)
    with pytest.raises(nft.NftError, match=lab.ns):
        nft._apply(lab.ns, "add rule netdev nosuchtable nosuchchain drop\n")


def test_nft_one_direction_egress_only(lab: Lab) -> None:
    """An egress drop on one end cuts exactly the direction OVS transmits on that end."""
    table = f"fpovs_{lab.tok}_oneway"
    assert _wait_ping(lab.h1, H2_IP)
    nft.drop_interface(table, lab.link1, lab.ns, hooks=("egress",))
    try:
        assert _ping(lab.h1, H2_IP, count=3, wait=0.3) == 0  # h1 -> h2 leaves b1 through link1: dropped
    finally:
        nft.remove(table, lab.ns)
    assert _wait_ping(lab.h1, H2_IP)


def test_nft_ingress_on_ovs_port_does_not_hide_frames_from_ovs(lab: Lab) -> None:
    """The measured gotcha: OVS reads ports with AF_PACKET, which taps frames before the ingress hook."""
    table = f"fpovs_{lab.tok}_ingress"
    assert _wait_ping(lab.h1, H2_IP)
    nft.drop_interface(table, lab.link1, lab.ns, hooks=("ingress",))
    try:
        assert _ping(lab.h1, H2_IP, count=3) == 3
    finally:
        nft.remove(table, lab.ns)


def test_netns_helpers_are_idempotent(lab: Lab) -> None:
    name = f"fpovs-{lab.tok}-tmp"
    netns.create_netns(name)
    netns.create_netns(name)
    assert netns.netns_exists(name)
    netns.create_veth("fpx0", "fpx1", netns_a=name, netns_b=name)
    netns.create_veth("fpx0", "fpx1", netns_a=name, netns_b=name)
    info = netns.link_info("fpx0", name)
    assert info is not None and info.admin_up and info.carrier
    netns.set_link("fpx1", False, name)
    info = netns.link_info("fpx0", name)
    assert info is not None and info.admin_up and not info.carrier  # carrier down on the peer
    netns.delete_link("fpx0", name)
    netns.delete_link("fpx0", name)
    assert not netns.link_exists("fpx1", name)
    netns.delete_netns(name)
    netns.delete_netns(name)
    assert not netns.netns_exists(name)
    with pytest.raises(ValueError):
        netns.check_ifname("x" * 16)
    with pytest.raises(ValueError):
        netns.cleanup("fp")


def test_private_ovs_in_root_namespace_stop_is_idempotent(tmp_path: Path) -> None:
    tok = secrets.token_hex(2)
    ovs = OvsInstance(Path(f"/tmp/fpovs-{tok}-root"))
    try:
        ovs.start()
        ovs.add_bridge(f"fpovs-{tok}-r", 0x1234, listen_port=None)
        ovs.add_bridge(f"fpovs-{tok}-r", 0x1234)  # may-exist
        assert ovs.bridges() == [f"fpovs-{tok}-r"]
        pids = [ovs.pid(d) for d in ("ovsdb-server", "ovs-vswitchd")]
        assert all(pids)
        ovs.stop()
        assert not ovs.running()
        ovs.start()  # restart on the same run dir keeps the bridge (and its persistent tap device)
        assert ovs.bridges() == [f"fpovs-{tok}-r"]
        pids = [ovs.pid(d) for d in ("ovsdb-server", "ovs-vswitchd")]
    finally:
        ovs.teardown(remove_run_dir=True)
        ovs.teardown()
    assert not ovs.running()
    assert not ovs.run_dir.exists()
    assert netns.list_links(None, f"fpovs-{tok}") == []  # the bridge's tap device is gone too
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or _zombie(pid)


def _zombie(pid: int) -> bool:
    return proc_starttime(pid) is None


def test_teardown_leaves_nothing(tmp_path: Path) -> None:
    """A whole mini lab built and torn down: no daemons, namespaces or veths remain."""
    tok = secrets.token_hex(2)
    run_dir = Path(f"/tmp/fpovs-{tok}")
    built = _build(tok, run_dir)
    pids = [built.ovs.pid(d) for d in ("ovsdb-server", "ovs-vswitchd")]
    assert all(pids)
    assert _wait_ping(built.h1, H2_IP)
    built.ovs.teardown(remove_run_dir=True)
    removed = netns.cleanup(f"fpovs-{tok}")
    assert {f"netns:{built.ns}", f"netns:{built.h1}", f"netns:{built.h2}"} <= set(removed)
    assert not [n for n in netns.list_netns() if n.startswith(f"fpovs-{tok}")]
    assert netns.list_links(None, f"fpovs-{tok}") == []
    for pid in pids:
        assert pid is not None and (not Path(f"/proc/{pid}").exists() or _zombie(pid))
    assert os.path.exists(run_dir) is False
