"""Link liveness on real OVS: two switch clients on one link, no masters (ports, OAM and ND only).

    [bridge leaf-1] 1 --veth-- 1 [bridge spine-1]      (private OVS in its own namespace, names oamt-<tok>)

- liveness: oam with a working OVSDB: the clients configure CFM (MPID = switch id << 16 | port), ND runs at
  the identity cadence, a silent drop (nftables) makes the port unusable at both ends through the CFM
  fault, and the repair brings it back;
- liveness: oam with an OVSDB that cannot be reached: one fallback per client, counted, and the port runs
  software ND heartbeats, which catch the silent drop;
- liveness: nd: software ND as before; a cable looped into the same switch (its two ports cabled to each
  other) is miscabled, not down.

Groups at both ends and miscabling on a full fabric: tests/test_lab_e2e.py (it runs with liveness: oam).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Iterator

import pytest

from client.daemon import ClientDaemon
from client.oam import mpid
from lab import netns, nft
from lab.ovs import OvsInstance
from proto.auth import KeyRing
from proto.clos import clos_fabric
from tests.harness.ovsns import ovs_in_netns

pytestmark = pytest.mark.ovs

OF_PORT = 21001


@pytest.fixture
def ovs_pair() -> Iterator[tuple[str, OvsInstance, str]]:
    with ovs_in_netns("oamt") as got:
        yield got


def _clients(tok: str, ovs: OvsInstance, ns: str, liveness: str, ovsdb: str | None) -> tuple[list, list[str]]:
    # masters on an unused loopback port range: reports go nowhere (no master), nothing else listens there
    fabric = clos_fabric(pods=0, leaves=1, spines=1, masters=1, liveness=liveness,
                         master_base_port=52000 + os.getpid() % 5000, hosts_per_tor=0,
                         timers=(("oam_interval_ms", 10), ("nd_interval_ms", 50), ("nd_dead_ms", 250)))
    names = ["leaf-1", "spine-1"]
    ifaces = []
    for i, name in enumerate(names):
        sw = fabric.switch(name)
        ovs.add_bridge(f"oamt-{tok}-b{i}", sw.id, listen_port=OF_PORT + i)
    a, b = f"oamt-{tok}-a", f"oamt-{tok}-b"
    netns.create_veth(a, b, netns_a=ns, netns_b=ns)
    for i, ifname in enumerate((a, b)):
        ovs.add_port(f"oamt-{tok}-b{i}", ifname, 1)
        # the ND punt flow (client.ofplan), which the programmer installs only once it has an LSD
        ovs.add_flow(f"oamt-{tok}-b{i}", "priority=65535,dl_type=0x88b5,actions=CONTROLLER:65535")
        ifaces.append(ifname)
    keyring = KeyRing.from_secret(secrets.token_bytes(32))
    daemons = [ClientDaemon(fabric, name, keyring, ovs_target=f"tcp:127.0.0.1:{OF_PORT + i}", netns=ns,
                            ovsdb=ovsdb) for i, name in enumerate(names)]
    for d in daemons:
        d.start()
    return daemons, ifaces


def _port(d: ClientDaemon) -> dict:
    return d.status()["ports"][0]


def _wait(pred, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.01)
    return pred()


def _silent_drop_and_repair(daemons: list, ifaces: list[str], ns: str, tok: str, mechanism: str) -> float:
    table = f"oamt_{tok}_drop"
    t0 = time.monotonic()
    nft.drop_link(table, [(ns, i) for i in ifaces])
    try:
        assert _wait(lambda: not any(_port(d)["usable"] for d in daemons), 3.0), [_port(d) for d in daemons]
        detected = time.monotonic() - t0
        if mechanism == "oam":
            # CFM took it out: OFPPS_LIVE cleared (PortStatus, often first) and cfm_fault through the OVSDB
            # monitor, which may follow a few ms later
            assert _wait(lambda: all(_port(d)["oam"] == "fault" for d in daemons), 2.0), \
                [_port(d) for d in daemons]
        else:
            for d in daemons:
                p = _port(d)
                assert p["nd"] == "down" and p["phy"], p   # carrier up: ND heartbeats took it out
    finally:
        nft.remove(table, ns)
    assert _wait(lambda: all(_port(d)["usable"] for d in daemons), 5.0), [_port(d) for d in daemons]
    return detected


def test_oam_configures_cfm_and_takes_a_silent_drop_out(ovs_pair) -> None:
    tok, ovs, ns = ovs_pair
    daemons, ifaces = _clients(tok, ovs, ns, "oam", ovs.db_target)
    try:
        assert _wait(lambda: all(_port(d)["usable"] for d in daemons), 10.0), [_port(d) for d in daemons]
        for d, ifname in zip(daemons, ifaces, strict=True):
            p = _port(d)
            assert p["oam"] == "up" and p["nd_mode"] == "identity" and p["nd"] == "up", p
            assert int(ovs.vsctl("get", "interface", ifname, "cfm_mpid")) == mpid(d.core.switch.id, 1)
            assert ovs.vsctl("get", "interface", ifname, "other_config:cfm_extended").strip() == '"true"'
            assert d.core.counters["oam_fallback_ports"] == 0
            # the OVSDB monitor is narrowed to the client's own bridge (of two), its 2 ports (fabric + local)
            # and their interfaces
            assert _wait(lambda d=d: d.liveness.replicated == (1, 2, 2), 2.0), d.liveness.replicated
        detected = _silent_drop_and_repair(daemons, ifaces, ns, tok, "oam")
        print(f"\nsilent drop out of use at both ends after {detected * 1000:.0f} ms (CFM, 10 ms)")
        # identity ND is slow: a handful of frames in a second, not 20 heartbeats (50 ms)
        sent = [d.core.counters["nd_sent"] for d in daemons]
        time.sleep(1.0)
        assert all(d.core.counters["nd_sent"] - s <= 10 for d, s in zip(daemons, sent, strict=True))
        # carrier down for longer than restart_after: CFM removed from the port at both ends; the carrier
        # back: CFM configured afresh, the link usable again only after CFM heard the peer (client.oam)
        subprocess.run(["ip", "-n", ns, "link", "set", ifaces[0], "down"], check=True)
        try:
            assert _wait(lambda: not any(_port(d)["usable"] for d in daemons), 3.0)
            assert _wait(lambda: all(ovs.vsctl("get", "interface", i, "cfm_mpid").strip() == "[]"
                                     for i in ifaces), 5.0)
            assert all(_port(d)["oam"] == "fault" for d in daemons), [_port(d) for d in daemons]
        finally:
            subprocess.run(["ip", "-n", ns, "link", "set", ifaces[0], "up"], check=True)
        assert _wait(lambda: all(_port(d)["usable"] for d in daemons), 5.0), [_port(d) for d in daemons]
        for d, ifname in zip(daemons, ifaces, strict=True):
            assert _port(d)["oam"] == "up"
            assert int(ovs.vsctl("get", "interface", ifname, "cfm_mpid")) == mpid(d.core.switch.id, 1)
            assert d.status()["counters"]["oam_cfm_restarts"] == 1
        # a silent failure longer than restart_after: CFM removed too, back afresh with ND identity
        table = f"oamt_{tok}_long"
        nft.drop_link(table, [(ns, i) for i in ifaces])
        try:
            assert _wait(lambda: not any(_port(d)["usable"] for d in daemons), 3.0)
            assert _wait(lambda: all(ovs.vsctl("get", "interface", i, "cfm_mpid").strip() == "[]"
                                     for i in ifaces), 5.0)
            time.sleep(0.3)
            assert not any(_port(d)["usable"] for d in daemons), [_port(d) for d in daemons]
        finally:
            nft.remove(table, ns)
        assert _wait(lambda: all(_port(d)["usable"] for d in daemons), 5.0), [_port(d) for d in daemons]
        for d, ifname in zip(daemons, ifaces, strict=True):
            assert int(ovs.vsctl("get", "interface", ifname, "cfm_mpid")) == mpid(d.core.switch.id, 1)
            assert d.status()["counters"]["oam_cfm_restarts"] == 2
    finally:
        for d in daemons:
            d.stop()


@pytest.mark.parametrize("liveness", ["oam-without-ovsdb", "nd"])
def test_software_nd_liveness_when_oam_is_missing_or_off(ovs_pair, liveness: str) -> None:
    tok, ovs, ns = ovs_pair
    if liveness == "nd":
        daemons, ifaces = _clients(tok, ovs, ns, "nd", ovs.db_target)
    else:
        daemons, ifaces = _clients(tok, ovs, ns, "oam", f"unix:/tmp/oamt-{tok}/missing.sock")
    try:
        assert _wait(lambda: all(_port(d)["usable"] for d in daemons), 10.0), [_port(d) for d in daemons]
        for d, ifname in zip(daemons, ifaces, strict=True):
            p = _port(d)
            assert p["nd_mode"] == "heartbeat", p
            if liveness == "nd":
                assert p["oam"] == "off" and d.core.counters["oam_fallback_ports"] == 0
            else:
                assert p["oam"] == "failed" and d.core.counters["oam_fallback_ports"] == 1
            assert ovs.vsctl("get", "interface", ifname, "cfm_mpid").strip() == "[]"    # CFM untouched
        _silent_drop_and_repair(daemons, ifaces, ns, tok, "nd")
    finally:
        for d in daemons:
            d.stop()


def test_nd_a_cable_looped_into_the_same_switch_is_miscabled(ovs_pair) -> None:
    """liveness: nd, leaf-1's two fabric ports cabled to each other (one veth pair, both ends on its bridge).

    Tester finding: the ports showed *down* (the codec dropped every frame from the local switch), where
    link OAM says miscabled for the same loop. Each port is MISCABLED by the other, never usable."""
    tok, ovs, ns = ovs_pair
    fabric = clos_fabric(pods=0, leaves=1, spines=2, masters=1, liveness="nd",
                         master_base_port=52000 + os.getpid() % 5000, hosts_per_tor=0,
                         timers=(("nd_interval_ms", 50), ("nd_dead_ms", 250)))
    bridge = f"oamt-{tok}-b0"
    ovs.add_bridge(bridge, fabric.switch("leaf-1").id, listen_port=OF_PORT)
    a, b = f"oamt-{tok}-a", f"oamt-{tok}-b"
    netns.create_veth(a, b, netns_a=ns, netns_b=ns)
    ovs.add_port(bridge, a, 1)
    ovs.add_port(bridge, b, 2)
    ovs.add_flow(bridge, "priority=65535,dl_type=0x88b5,actions=CONTROLLER:65535")   # the ND punt flow
    d = ClientDaemon(fabric, "leaf-1", KeyRing.from_secret(secrets.token_bytes(32)),
                     ovs_target=f"tcp:127.0.0.1:{OF_PORT}", netns=ns, ovsdb=ovs.db_target)
    d.start()
    try:
        def ports() -> dict[int, dict]:
            return {p["port"]: p for p in d.status()["ports"]}
        assert _wait(lambda: all(p["nd"] == "miscabled" for p in ports().values()), 10.0), ports()
        time.sleep(1.0)       # it stays so: the heartbeats keep coming back through the loop
        got = ports()
        for port, other in ((1, 2), (2, 1)):
            p = got[port]
            assert p["nd"] == "miscabled" and p["phy"] and not p["usable"], p
            assert p["miscabled_by"] == f"leaf-1:{other}" and p["oam"] == "off", p
        assert d.core.codec.rejected["wrong_sender"] == 0, d.core.codec.rejected
    finally:
        d.stop()
