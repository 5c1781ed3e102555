"""OfDriver (client/of/driver.py) against a real private OVS, plus translation checks without a switch.

OVS runs in its own lab namespace; the drivers connect from this (root-namespace) process into it with
`netns=`, so nothing listens or appears in the root namespace. Topology:

    [b1]  1 ---veth--- 1  [b2]
    [b1]  2 ---veth--- q2 (spare end, used to take port 2's carrier down)
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from client import ofmsg as M
from client.of.driver import OfDriver
from client.of.events import (
    BarrierDone,
    Connected,
    Disconnected,
    DriverEvent,
    NotConnected,
    OfError,
    PacketIn,
    PortStatusChanged,
)
from client.of.sockets import parse_target
from client.of.translate import to_osken
from lab import netns
from lab.ovs import OvsInstance

ND_ETHERTYPE = 0x88B5
OF_PORT_B1, OF_PORT_B2 = 16653, 16654  # inside the lab namespace: its loopback is private
COOKIE = 0xF1F1


class EventLog:
    """Thread-safe record of driver events with bounded waits."""

    def __init__(self) -> None:
        self.events: list[tuple[float, DriverEvent]] = []
        self.cond = threading.Condition()

    def __call__(self, ev: DriverEvent) -> None:
        with self.cond:
            self.events.append((time.monotonic(), ev))
            self.cond.notify_all()

    def wait_for(
        self, pred: Callable[[DriverEvent], bool], timeout: float = 5.0, since: int = 0
    ) -> tuple[float, DriverEvent]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for ts, ev in self.events[since:]:
                    if pred(ev):
                        return ts, ev
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"no matching event within {timeout}s; got {[e for _, e in self.events[since:]]}"
                    )
                self.cond.wait(left)

    def mark(self) -> int:
        with self.cond:
            return len(self.events)


@dataclass
class Rig:
    tok: str
    ns: str
    ovs: OvsInstance
    b1: str
    b2: str
    q2: str
    d1: OfDriver
    log1: EventLog
    d2: OfDriver
    log2: EventLog
    connect_time: float
    version: int  # expected negotiated OpenFlow version
    host: str  # netns of a host attached to b1 port 10 (10.77.0.1/24)


@pytest.fixture(scope="module", params=["OpenFlow13", "OpenFlow13,OpenFlow15"], ids=["of13", "of15"])
def rig(request: pytest.FixtureRequest) -> Iterator[Rig]:
    protocols = request.param
    tok = secrets.token_hex(2)
    ns = f"fpovs-{tok}-of"
    run_dir = Path(f"/tmp/fpovs-{tok}-of")
    ovs = OvsInstance(run_dir, netns=ns)
    drivers: list[OfDriver] = []
    try:
        netns.create_netns(ns)
        ovs.start()
        b1, b2 = f"fpovs-{tok}-b1", f"fpovs-{tok}-b2"
        ovs.add_bridge(b1, 0x65, listen_port=OF_PORT_B1, protocols=protocols)
        ovs.add_bridge(b2, 0x66, listen_port=OF_PORT_B2, protocols=protocols)
        l1, l2, p2, q2 = (f"fpovs-{tok}-{s}" for s in ("l1", "l2", "p2", "q2"))
        netns.create_veth(l1, l2, netns_a=ns, netns_b=ns)
        netns.create_veth(p2, q2, netns_a=ns, netns_b=ns)
        ovs.add_port(b1, l1, 1)
        ovs.add_port(b1, p2, 2)
        ovs.add_port(b2, l2, 1)
        host = f"fpovs-{tok}-h"
        netns.create_netns(host)
        netns.create_veth(f"fpovs-{tok}-h1", "eth0", netns_a=ns, netns_b=host)
        ovs.add_port(b1, f"fpovs-{tok}-h1", 10)
        netns.add_address("eth0", "10.77.0.1/24", host)
        netns.add_neighbor("10.77.0.2", "02:00:00:00:00:02", "eth0", host)
        log1, log2 = EventLog(), EventLog()
        d1 = OfDriver(f"tcp:127.0.0.1:{OF_PORT_B1}", log1, netns=ns)
        d2 = OfDriver(f"tcp:127.0.0.1:{OF_PORT_B2}", log2, netns=ns)
        drivers += [d1, d2]
        t0 = time.monotonic()
        d1.start()
        ts, _ = log1.wait_for(lambda e: isinstance(e, Connected))
        d2.start()
        log2.wait_for(lambda e: isinstance(e, Connected))
        version = 0x06 if "OpenFlow15" in protocols else 0x04
        yield Rig(tok, ns, ovs, b1, b2, q2, d1, log1, d2, log2, ts - t0, version, host)
    finally:
        for d in drivers:
            d.stop()
        ovs.teardown(remove_run_dir=True)
        netns.cleanup(f"fpovs-{tok}")


def _group(group_id: int, ports: tuple[int, ...]) -> M.GroupMod:
    return M.GroupMod(
        M.GroupCommand.ADD,
        group_id,
        M.GroupType.SELECT,
        tuple(
            M.Bucket(
                (
                    M.SetField("eth_src", "0e:00:00:00:00:65"),
                    M.SetField("eth_dst", f"0e:00:00:00:00:{p:02x}"),
                    M.DecNwTtl(),
                    M.Output(p),
                ),
                watch_port=p,
            )
            for p in ports
        ),
    )


def _flow(prio: int, dst: str, mask: str | None, group_id: int) -> M.FlowMod:
    value = dst if mask is None else (dst, mask)
    return M.FlowMod(
        M.FlowCommand.ADD,
        prio,
        M.match(eth_type=0x0800, ipv4_dst=value),
        (M.GroupAction(group_id),),
        cookie=COOKIE,
    )


def _installed(f: M.FlowMod) -> M.InstalledFlow:
    return M.InstalledFlow(f.table_id, f.priority, f.match, f.actions, f.cookie)


def _installed_group(g: M.GroupMod, version: int) -> M.InstalledGroup:
    """What reading `g` back gives: on OpenFlow 1.5 a SELECT group shows its selection (the group-mod's,
    or the driver's default dp_hash with parameter 0); OpenFlow 1.3 cannot show it (None)."""
    selection = None
    if version == 0x06 and g.type is M.GroupType.SELECT:
        selection = g.selection or M.Selection("dp_hash", 0)
    return M.InstalledGroup(g.group_id, g.type, g.buckets, selection)


# ---------------------------------------------------------------- no switch needed


def test_parse_target() -> None:
    assert parse_target("tcp:127.0.0.1:16001") == ("127.0.0.1", 16001)
    assert parse_target("127.0.0.1:6653") == ("127.0.0.1", 6653)
    for bad in ("unix:/x", "tcp:localhost:1", "tcp:127.0.0.1", "tcp:127.0.0.1:0", "tcp:127.0.0.1:70000",
                "tcp:127.0.0.1:\u00b2", "tcp:127.0.0.1:\u2460",    # str.isdigit() but not int(): int's message
                "tcp:1.2.3:5", "tcp:127.1:6653", "tcp:0x7f.0.0.1:6653"):  # inet_aton's shorthands: not the config's
        with pytest.raises(ValueError, match="expected tcp:IP:PORT|is not an IPv4 address"):
            parse_target(bad)


def test_translation_serialises_every_message_kind() -> None:
    from os_ken.ofproto import ofproto_protocol, ofproto_v1_3

    dp = ofproto_protocol.ProtocolDesc(ofproto_v1_3.OFP_VERSION)
    msgs: list[M.OfMessage] = [
        _group(3, (1, 2)),
        _flow(124, "10.1.1.0", "255.255.255.0", 3),
        M.FlowMod(M.FlowCommand.DELETE_STRICT, 5, M.match(in_port=3), cookie=1, cookie_mask=0xFFFF),
        M.FlowMod(M.FlowCommand.ADD, 9, M.match(eth_type=ND_ETHERTYPE), (M.Output(M.OFPP_CONTROLLER),)),
        M.MeterMod(M.MeterCommand.ADD, 0x10001, 400, 100),
        M.FlowMod(M.FlowCommand.ADD, 9, M.match(in_port=1), (M.Meter(0x10001), M.Output(M.OFPP_CONTROLLER))),
        M.MeterMod(M.MeterCommand.DELETE, 0x10001),
        M.GroupMod(M.GroupCommand.DELETE, 3),
        M.Barrier(),
        M.PacketOut(2, b"\x01" * 60),
    ]
    for m in msgs:
        osk = to_osken(m, dp)
        osk.serialize()
        assert len(osk.buf) >= 8
    with pytest.raises(TypeError):
        to_osken(object(), dp)  # type: ignore[arg-type]


def test_wire_cache_bytes_are_osken_bytes_with_a_fresh_xid() -> None:
    """client.of.wire: a cached value's bytes equal os-ken's serialization of the same message with the xid
    of this send; uncacheable kinds (PacketOut, PortMod) come back as os-ken messages."""
    from os_ken.ofproto import ofproto_protocol, ofproto_v1_3, ofproto_v1_5

    from client.of.wire import WireCache

    class Dp(ofproto_protocol.ProtocolDesc):
        xid = 0

        def set_xid(self, msg):     # os-ken Datapath.set_xid
            self.xid = (self.xid + 1) & self.ofproto.MAX_XID
            msg.set_xid(self.xid)
            return self.xid

    msgs: list[M.OfMessage] = [
        _group(3, (1, 2)),
        _flow(124, "10.1.1.0", "255.255.255.0", 3),
        M.MeterMod(M.MeterCommand.ADD, 0x10001, 400, 100),
        M.GroupMod(M.GroupCommand.DELETE, 3),
        M.Barrier(),
    ]
    for version in (ofproto_v1_3.OFP_VERSION, ofproto_v1_5.OFP_VERSION):
        dp, ref = Dp(version), Dp(version)
        cache = WireCache(dp, "dp_hash")
        for _ in range(3):                      # a miss, then hits
            for m in msgs:
                data, xid = cache.encode(m)
                expected = to_osken(m, ref, select_method="dp_hash")
                assert ref.set_xid(expected) == xid
                expected.serialize()
                assert data == bytes(expected.buf)
        assert cache.misses == len(msgs) and cache.hits == 2 * len(msgs)
        out, xid = cache.encode(M.PacketOut(2, b"\x01" * 60))
        assert not isinstance(out, bytes) and out.xid == xid == dp.xid
        out, _ = cache.encode(M.PortMod(7, True), {7: "02:00:00:00:00:07"})
        assert not isinstance(out, bytes)
    small = WireCache(Dp(ofproto_v1_3.OFP_VERSION), None, maxsize=2)
    for gid in range(5):
        small.encode(M.GroupMod(M.GroupCommand.DELETE, gid))
    assert len(small._bytes) == 2


def test_port_mod_translates_for_both_versions() -> None:
    """Border link-state tracking (client.border.ExternalPorts): PortMod sets or clears OFPPC_PORT_DOWN
    with the port's hardware address (from the port description; without one it is refused)."""
    from os_ken.ofproto import ofproto_protocol, ofproto_v1_3, ofproto_v1_5

    for version in (ofproto_v1_3.OFP_VERSION, ofproto_v1_5.OFP_VERSION):
        dp = ofproto_protocol.ProtocolDesc(version)
        for down in (True, False):
            osk = to_osken(M.PortMod(7, down), dp, hw_addrs={7: "02:00:00:00:00:07"})
            osk.serialize()
            assert (osk.port_no, osk.hw_addr, osk.mask) == (7, "02:00:00:00:00:07", dp.ofproto.OFPPC_PORT_DOWN)
            assert osk.config == (dp.ofproto.OFPPC_PORT_DOWN if down else 0)
        with pytest.raises(ValueError, match="port 8 unknown"):
            to_osken(M.PortMod(8, True), dp, hw_addrs={7: "02:00:00:00:00:07"})


def test_send_without_connection_raises() -> None:
    d = OfDriver("tcp:127.0.0.1:9", lambda e: None)
    with pytest.raises(NotConnected):
        d.send([M.Barrier()])
    with pytest.raises(NotConnected):
        d.dump_state(timeout=0.1)


# ---------------------------------------------------------------- real OVS


@pytest.mark.ovs
def test_connected_reports_dpid_and_ports(rig: Rig) -> None:
    _, ev = rig.log1.wait_for(lambda e: isinstance(e, Connected))
    assert isinstance(ev, Connected)
    assert ev.dpid == 0x65
    assert ev.version == rig.version
    assert ev.ports == {1: True, 2: True, 10: True}
    assert ev.names == {1: f"fpovs-{rig.tok}-l1", 2: f"fpovs-{rig.tok}-p2", 10: f"fpovs-{rig.tok}-h1"}
    print(f"\nconnect -> Connected: {rig.connect_time * 1000:.1f} ms")


@pytest.mark.ovs
def test_send_groups_and_flows_then_read_back_identical(rig: Rig) -> None:
    group = _group(7, (1, 2))
    flows = [_flow(116, "10.7.0.0", "255.255.0.0", 7), _flow(132, "10.7.1.1", None, 7)]
    mark = rig.log1.mark()
    batch = rig.d1.send([group, *flows, M.Barrier()])
    rig.log1.wait_for(lambda e: e == BarrierDone(batch), since=mark)
    installed_flows, installed_groups = rig.d1.dump_state()
    assert _installed_group(group, rig.version) in installed_groups
    ours = {f for f in installed_flows if f.cookie == COOKIE}
    assert {_installed(f) for f in flows} <= ours
    # what ovs-ofctl sees agrees
    dump = "\n".join(rig.ovs.dump_groups(rig.b1))
    assert "group_id=7,type=select" in dump and "watch_port:1" in dump and "watch_port:2" in dump
    if rig.version == 0x06:  # OpenFlow 1.5: our selection method is set (and read back)
        assert rig.d1.last_selection_methods[7] == "dp_hash"
        assert "selection_method=dp_hash" in "\n".join(rig.ovs.dump_groups(rig.b1, protocol="OpenFlow15"))
    else:
        assert rig.d1.last_selection_methods[7] == ""
    # MODIFY replaces the buckets; DELETE removes the group and the flows that point to it
    mark = rig.log1.mark()
    modified = M.GroupMod(M.GroupCommand.MODIFY, 7, M.GroupType.SELECT, _group(7, (2,)).buckets)
    batch = rig.d1.send([modified, M.Barrier()])
    rig.log1.wait_for(lambda e: e == BarrierDone(batch), since=mark)
    _, groups = rig.d1.dump_state()
    assert _installed_group(modified, rig.version) in groups
    assert rig.d1.last_selection_methods[7] == ("dp_hash" if rig.version == 0x06 else "")
    batch = rig.d1.send([M.GroupMod(M.GroupCommand.DELETE, 7), M.Barrier()])
    rig.log1.wait_for(lambda e: e == BarrierDone(batch), since=mark)
    flows_after, groups_after = rig.d1.dump_state()
    assert all(g.group_id != 7 for g in groups_after)
    assert not {_installed(f) for f in flows} & set(flows_after)


@pytest.mark.ovs
def test_every_group_type_and_action_round_trips(rig: Rig) -> None:
    """ALL/INDIRECT/FF groups too (OF1.3 needs weight 0 on their buckets; the driver handles it)."""
    groups = [
        M.GroupMod(M.GroupCommand.ADD, 201, M.GroupType.INDIRECT, (M.Bucket((M.Output(1),)),)),
        M.GroupMod(
            M.GroupCommand.ADD, 202, M.GroupType.ALL, (M.Bucket((M.Output(1),)), M.Bucket((M.Output(2),)))
        ),
        M.GroupMod(M.GroupCommand.ADD, 203, M.GroupType.SELECT, (M.Bucket((M.Output(1),), weight=5),)),
        M.GroupMod(M.GroupCommand.ADD, 204, M.GroupType.FF, (M.Bucket((M.Output(1),), watch_port=1),)),
    ]
    flows = [
        M.FlowMod(
            M.FlowCommand.ADD,
            13,
            M.match(eth_type=0x806, arp_op=1, arp_tpa="10.1.1.1"),
            (M.Output(M.OFPP_IN_PORT),),
        ),
        M.FlowMod(
            M.FlowCommand.ADD,
            12,
            # dec_ttl needs an IP match (else OFPBAC_MATCH_INCONSISTENT)
            M.match(eth_dst="0e:00:00:00:00:aa", eth_type=0x800),
            (M.SetField("eth_dst", "0e:00:00:00:00:bb"), M.DecNwTtl(), M.GroupAction(201)),
            cookie=COOKIE,
        ),
        M.FlowMod(M.FlowCommand.ADD, 1, M.match(in_port=2), (), cookie=COOKIE),  # drop
    ]
    mark = rig.log1.mark()
    batch = rig.d1.send([*groups, *flows, M.Barrier()])
    rig.log1.wait_for(lambda e: e == BarrierDone(batch), since=mark)
    assert [e for _, e in rig.log1.events[mark:] if isinstance(e, OfError)] == []
    installed_flows, installed_groups = rig.d1.dump_state()
    assert {_installed_group(g, rig.version) for g in groups} <= set(installed_groups)
    assert {_installed(f) for f in flows} <= set(installed_flows)
    batch = rig.d1.send(
        [M.FlowMod(M.FlowCommand.DELETE_STRICT, f.priority, f.match) for f in flows]
        + [M.GroupMod(M.GroupCommand.DELETE, g.group_id) for g in groups]
        + [M.Barrier()]
    )
    rig.log1.wait_for(lambda e: e == BarrierDone(batch), since=mark)


@pytest.mark.ovs
def test_match_values_come_back_in_ovs_canonical_form(rig: Rig) -> None:
    """What a reconciler must know: OVS drops full masks, zeroes host bits and lower-cases MACs."""
    sent = [
        M.FlowMod(
            M.FlowCommand.ADD,
            31,
            M.match(eth_type=0x800, ipv4_dst=("10.3.1.5", "255.255.255.255")),
            cookie=COOKIE,
        ),
        M.FlowMod(
            M.FlowCommand.ADD,
            32,
            M.match(eth_type=0x800, ipv4_dst=("10.3.2.5", "255.255.255.0")),
            cookie=COOKIE,
        ),
        M.FlowMod(M.FlowCommand.ADD, 33, M.match(eth_dst="0E:00:00:00:00:AA"), cookie=COOKIE),
    ]
    mark = rig.log1.mark()
    batch = rig.d1.send([*sent, M.Barrier()])
    rig.log1.wait_for(lambda e: e == BarrierDone(batch), since=mark)
    flows, _ = rig.d1.dump_state()
    got = {f.priority: f.match for f in flows if f.priority in (31, 32, 33)}
    assert got == {
        31: M.match(eth_type=0x800, ipv4_dst="10.3.1.5"),
        32: M.match(eth_type=0x800, ipv4_dst=("10.3.2.0", "255.255.255.0")),
        33: M.match(eth_dst="0e:00:00:00:00:aa"),
    }
    batch = rig.d1.send(
        [M.FlowMod(M.FlowCommand.DELETE_STRICT, f.priority, f.match) for f in sent] + [M.Barrier()]
    )
    rig.log1.wait_for(lambda e: e == BarrierDone(batch), since=mark)
    flows, _ = rig.d1.dump_state()
    assert not {f.priority for f in flows} & {31, 32, 33}


@pytest.mark.ovs
def test_rejected_message_reports_error_with_its_batch(rig: Rig) -> None:
    mark = rig.log1.mark()
    batch = rig.d1.send([_flow(100, "10.9.9.9", None, 4242), M.Barrier()])  # group 4242 does not exist
    _, ev = rig.log1.wait_for(lambda e: isinstance(e, OfError), since=mark)
    assert isinstance(ev, OfError) and ev.batch_id == batch and "BAD_OUT_GROUP" in ev.text
    rig.log1.wait_for(lambda e: e == BarrierDone(batch), since=mark)


@pytest.mark.ovs
def test_error_flood_beyond_osken_queues_is_delivered_in_full(rig: Rig) -> None:
    """500 rejected flow-mods: more than os-ken's 128-event app queue and 16-message send queue."""
    bad = [_flow(100, f"10.8.{i // 250}.{i % 250}", None, 4343) for i in range(500)]
    mark = rig.log1.mark()
    batch = rig.d1.send([*bad, M.Barrier()])
    rig.log1.wait_for(lambda e: e == BarrierDone(batch), timeout=30, since=mark)
    errors = [e for _, e in rig.log1.events[mark:] if isinstance(e, OfError)]
    assert len(errors) == 500 and {e.batch_id for e in errors} == {batch}


@pytest.mark.ovs
def test_port_status_on_carrier_down_and_up(rig: Rig) -> None:
    """Carrier loss: the port stops being live at once (OVS may say LIVE off before LINK_DOWN, in two
    PortStatus messages), then has no carrier; carrier back: carrier and liveness return."""
    name = f"fpovs-{rig.tok}-p2"
    mark = rig.log1.mark()
    t0 = time.monotonic()
    netns.set_link(rig.q2, False, rig.ns)
    try:
        ts, ev = rig.log1.wait_for(lambda e: isinstance(e, PortStatusChanged) and e.port == 2, since=mark)
        assert (ev.live, ev.name, ev.deleted) == (False, name, False)
        print(f"\ncarrier down -> PortStatus: {(ts - t0) * 1000:.1f} ms")
        _, ev = rig.log1.wait_for(lambda e: isinstance(e, PortStatusChanged) and e.port == 2
                                  and e.carrier is False, since=mark)
        assert ev == PortStatusChanged(2, False, name, carrier=False)
    finally:
        mark = rig.log1.mark()
        netns.set_link(rig.q2, True, rig.ns)
    _, ev = rig.log1.wait_for(lambda e: isinstance(e, PortStatusChanged) and e.port == 2 and e.live, since=mark)
    assert ev == PortStatusChanged(2, True, name, carrier=True)


@pytest.mark.ovs
def test_packet_out_and_packet_in_across_two_bridges(rig: Rig) -> None:
    punt = M.FlowMod(
        M.FlowCommand.ADD, 1000, M.match(eth_type=ND_ETHERTYPE), (M.Output(M.OFPP_CONTROLLER),), cookie=COOKIE
    )
    mark2 = rig.log2.mark()
    batch = rig.d2.send([punt, M.Barrier()])
    rig.log2.wait_for(lambda e: e == BarrierDone(batch), since=mark2)
    frame = (
        bytes.fromhex("0180c200000e0e0000000065") + ND_ETHERTYPE.to_bytes(2, "big") + secrets.token_bytes(80)
    )
    rtts = []
    for _ in range(5):
        mark2 = rig.log2.mark()
        t0 = time.monotonic()
        rig.d1.packet_out(1, frame)
        ts, ev = rig.log2.wait_for(lambda e: isinstance(e, PacketIn), since=mark2)
        rtts.append(ts - t0)
        assert ev == PacketIn(port=1, data=frame, cookie=COOKIE)
    print(f"\nPacketOut(b1) -> PacketIn(b2): median {sorted(rtts)[2] * 1000:.2f} ms")


@pytest.mark.ovs
def test_big_batch_programming(rig: Rig) -> None:
    """100 select groups + 1000 flows in one batch; reads back complete. Timing is printed, not asserted."""
    groups = [_group(1000 + i, (1, 2) if i % 2 else (2, 1)) for i in range(100)]
    flows = [_flow(132, f"10.{100 + i // 250}.{i % 250}.1", None, 1000 + i % 100) for i in range(1000)]
    mark = rig.log1.mark()
    t0 = time.monotonic()
    batch = rig.d1.send([*groups, *flows, M.Barrier()])
    ts, _ = rig.log1.wait_for(lambda e: e == BarrierDone(batch), timeout=30, since=mark)
    t_dump = time.monotonic()
    installed_flows, installed_groups = rig.d1.dump_state(timeout=30)
    t_end = time.monotonic()
    assert {_installed_group(g, rig.version) for g in groups} <= set(installed_groups)
    assert {_installed(f) for f in flows} <= set(installed_flows)
    assert not any(isinstance(e, OfError) for _, e in rig.log1.events[mark:])
    print(
        f"\n100 groups + 1000 flows: programmed {(ts - t0) * 1000:.0f} ms, dump_state {(t_end - t_dump) * 1000:.0f} ms"
    )
    # clean up (deleting the groups deletes the flows)
    batch = rig.d1.send([M.GroupMod(M.GroupCommand.DELETE, g.group_id) for g in groups] + [M.Barrier()])
    rig.log1.wait_for(lambda e: e == BarrierDone(batch), timeout=30, since=mark)


@pytest.mark.ovs
def test_no_listening_socket(rig: Rig) -> None:
    ss = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    assert f"pid={os.getpid()}," not in ss  # os-ken's listener never started (root namespace)


@pytest.mark.ovs
def test_inline_events_come_from_the_receive_thread_and_an_idle_send_from_the_caller(rig: Rig) -> None:
    """issue #20: with `inline_events`, switch messages reach `on_event` on the connection's receive thread
    (of-connect serves it), not through the app queue and the of-dispatch thread, still in wire order (the
    error before its batch's barrier reply); a batch sent while nothing else is being sent is written by the
    calling thread, not handed to of-send, in one write."""
    log = EventLog()
    threads: list[tuple[str, type]] = []

    def on_event(ev: DriverEvent) -> None:
        threads.append((threading.current_thread().name, type(ev)))
        log(ev)

    d = OfDriver(f"tcp:127.0.0.1:{OF_PORT_B2}", on_event, netns=rig.ns, inline_events=True)
    d.start()
    try:
        log.wait_for(lambda e: isinstance(e, Connected), timeout=10)
        mark = log.mark()
        direct, queued, writes = d.sent_direct, d.sent_queued, d.batch_writes
        assert d._dp is not None
        sends = d._dp.direct_sends
        written: list[tuple[str, bytes]] = []
        dp_send = d._dp.send

        def recording(buf: bytes, close_socket: bool = False) -> bool:     # what reaches the socket, and by whom
            written.append((threading.current_thread().name, bytes(buf)))
            return dp_send(buf, close_socket)

        d._dp.send = recording  # type: ignore[method-assign]
        batch = d.send([_flow(100, "10.9.9.8", None, 4244), M.Barrier()])  # group 4244 does not exist
        assert (d.sent_direct, d.sent_queued) == (direct + 1, queued)
        assert d.batch_writes == writes + 1
        assert d._dp.direct_sends > sends                                # by _Datapath.send itself
        # The whole batch in one write on this thread: a FLOW_MOD then an 8-byte BARRIER_REQUEST (OpenFlow types
        # 14 and 20; header: version, type, length); echo requests and replies may be written too.
        ours = [buf for name, buf in written if name == threading.current_thread().name]
        assert len(ours) == 1, ours
        first_len = int.from_bytes(ours[0][2:4], "big")
        assert (ours[0][1], ours[0][first_len + 1], len(ours[0])) == (14, 20, first_len + 8)
        log.wait_for(lambda e: e == BarrierDone(batch), since=mark)
        kinds = [type(e) for _, e in log.events[mark:]]
        assert kinds == [OfError, BarrierDone]
        assert {name for name, kind in threads} == {"of-connect"}
    finally:
        d.stop()


@pytest.mark.ovs
def test_ovs_restart_disconnects_and_reconnects(rig: Rig) -> None:
    """Must run last in this module: restarting OVS flushes the tables."""
    mark = rig.log1.mark()
    mark2 = rig.log2.mark()
    rig.ovs.stop()
    rig.log1.wait_for(lambda e: isinstance(e, Disconnected), since=mark)
    with pytest.raises(NotConnected):
        rig.d1.send([M.Barrier()])
    rig.ovs.start()
    _, ev = rig.log1.wait_for(lambda e: isinstance(e, Connected), timeout=10, since=mark)
    assert isinstance(ev, Connected) and ev.dpid == 0x65 and ev.ports == {1: True, 2: True, 10: True}
    rig.log2.wait_for(lambda e: isinstance(e, Connected), timeout=10, since=mark2)  # d2 is back too
    mark = rig.log1.mark()
    batch = rig.d1.send([M.Barrier()])
    rig.log1.wait_for(lambda e: e == BarrierDone(batch), since=mark)


@pytest.mark.ovs
def test_stop_ends_every_driver_thread(rig: Rig) -> None:
    log = EventLog()
    d = OfDriver(f"tcp:127.0.0.1:{OF_PORT_B2}", log, netns=rig.ns)
    before = set(threading.enumerate())
    d.start()
    log.wait_for(lambda e: isinstance(e, Connected), timeout=10)
    d.stop()
    d.stop()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and set(threading.enumerate()) - before:
        time.sleep(0.01)
    assert not set(threading.enumerate()) - before


@pytest.mark.ovs
def test_select_group_spreads_udp_flows_only_with_of15_dp_hash(rig: Rig) -> None:
    """64 UDP flows (same addresses, different source ports) through a 2-bucket select group.

    OpenFlow 1.5 + selection_method=dp_hash spreads them over both buckets; OVS's default for groups
    made over OpenFlow 1.3 hashes UDP by addresses only, so all 64 take one bucket.
    """
    group = M.GroupMod(
        M.GroupCommand.ADD,
        90,
        M.GroupType.SELECT,
        (M.Bucket((M.Output(1),), watch_port=1), M.Bucket((M.Output(2),), watch_port=2)),
    )
    flow = M.FlowMod(
        M.FlowCommand.ADD, 500, M.match(in_port=10, eth_type=0x0800), (M.GroupAction(90),), cookie=COOKIE
    )
    mark = rig.log1.mark()
    batch = rig.d1.send([group, flow, M.Barrier()])
    rig.log1.wait_for(lambda e: e == BarrierDone(batch), since=mark)
    code = (
        "import socket\n"
        "for port in range(20000, 20064):\n"
        "    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "    s.bind(('10.77.0.1', port))\n"
        "    s.sendto(b'x' * 20, ('10.77.0.2', 5000))\n"
        "    s.close()\n"
    )
    subprocess.run(["ip", "netns", "exec", rig.host, "python3", "-c", code], check=True, timeout=30)
    deadline = time.monotonic() + 5
    counts: list[int] = []
    while time.monotonic() < deadline:
        stats = rig.ovs.ofctl(rig.b1, "dump-group-stats", "group_id=90")
        # "... bucket0:packet_count=28,byte_count=...,bucket1:packet_count=36,..."
        counts = [int(x.split("packet_count=")[1].split(",")[0]) for x in stats.split("bucket")[1:]]
        if sum(counts) >= 64:
            break
        time.sleep(0.02)
    assert sum(counts) >= 64, counts
    if rig.version == 0x06:
        assert min(counts) > 0, f"dp_hash should use both buckets: {counts}"
    else:
        assert min(counts) == 0, f"OF1.3 default hash is expected to ignore UDP ports: {counts}"
    batch = rig.d1.send([M.GroupMod(M.GroupCommand.DELETE, 90), M.Barrier()])
    rig.log1.wait_for(lambda e: e == BarrierDone(batch), since=mark)


def test_programmer_and_daemon_do_not_load_osken() -> None:
    """The driver split's point: only client.of.driver (and what it imports) loads os-ken."""
    code = (
        "import sys, client.daemon, client.programmer, client.of, client.of.events\n"
        "assert not [m for m in sys.modules if m.startswith('os_ken')], 'os-ken loaded'\n"
        "import client.of.driver\n"
        "assert 'os_ken' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_selection_translates_both_ways_without_a_switch() -> None:
    """A SELECT group-mod carries its Selection (method + hash basis) on OpenFlow 1.5, and a group-desc
    entry's NTR property reads back into the same Selection; 1.3 carries none and reads back None."""
    from os_ken.ofproto import ofproto_protocol, ofproto_v1_3, ofproto_v1_5
    from os_ken.ofproto import ofproto_v1_3_parser as p13
    from os_ken.ofproto import ofproto_v1_5_parser as p15

    from client.of.translate import group_from_stats, selection_method_property

    sel = M.Selection("dp_hash", 0x9E3779B1)
    mod = M.GroupMod(M.GroupCommand.MODIFY, 5, M.GroupType.SELECT, _group(5, (1, 2)).buckets, sel)
    dp15 = ofproto_protocol.ProtocolDesc(ofproto_v1_5.OFP_VERSION)
    osk = to_osken(mod, dp15, select_method="dp_hash")
    osk.serialize()
    (prop,) = osk.properties
    assert group_from_stats(p15.OFPGroupDescStats(type_=1, group_id=5, buckets=[], properties=[prop])).selection == sel
    default = to_osken(dataclasses.replace(mod, selection=None), dp15, select_method="dp_hash")
    assert group_from_stats(
        p15.OFPGroupDescStats(type_=1, group_id=5, buckets=[], properties=default.properties)
    ).selection == M.Selection("dp_hash", 0)
    assert group_from_stats(p15.OFPGroupDescStats(type_=1, group_id=5, buckets=[], properties=[])).selection == M.Selection("", 0)
    assert selection_method_property("dp_hash", 7, p15).data[-1] == 7
    dp13 = ofproto_protocol.ProtocolDesc(ofproto_v1_3.OFP_VERSION)
    to_osken(mod, dp13).serialize()  # 1.3 has no place for it: sent without
    assert group_from_stats(p13.OFPGroupDescStats(type_=1, group_id=5, buckets=[])).selection is None


@pytest.mark.ovs
def test_meter_and_metered_flow_round_trip(rig: Rig) -> None:
    """A pktps meter and a flow through it (an instruction in OF1.3, an action in OF1.5) read back as
    sent; MODIFY changes the band; DELETE of the meter takes its flow with it (OVS semantics)."""
    meter = M.MeterMod(M.MeterCommand.ADD, 0x10005, rate_pps=400, burst=100)
    flow = M.FlowMod(
        M.FlowCommand.ADD, 300, M.match(in_port=2, eth_type=ND_ETHERTYPE),
        (M.Meter(0x10005), M.Output(M.OFPP_CONTROLLER)), cookie=COOKIE,
    )
    mark = rig.log1.mark()
    batch = rig.d1.send([meter, flow, M.Barrier()])
    rig.log1.wait_for(lambda e: e == BarrierDone(batch), since=mark)
    assert [e for _, e in rig.log1.events[mark:] if isinstance(e, OfError)] == []
    assert M.InstalledMeter(0x10005, 400, 100) in rig.d1.dump_meters()
    assert _installed(flow) in rig.d1.dump_state()[0]
    batch = rig.d1.send([M.MeterMod(M.MeterCommand.MODIFY, 0x10005, 50, 10), M.Barrier()])
    rig.log1.wait_for(lambda e: e == BarrierDone(batch), since=mark)
    assert M.InstalledMeter(0x10005, 50, 10) in rig.d1.dump_meters()
    batch = rig.d1.send([M.MeterMod(M.MeterCommand.DELETE, 0x10005), M.Barrier()])
    rig.log1.wait_for(lambda e: e == BarrierDone(batch), since=mark)
    assert all(m.meter_id != 0x10005 for m in rig.d1.dump_meters())
    assert _installed(flow) not in rig.d1.dump_state()[0]
