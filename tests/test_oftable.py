"""The fake OpenFlow table itself: OVS semantics the plan tests rely on."""

from __future__ import annotations

import pytest

from client.ofmsg import (
    OFPP_CONTROLLER,
    OFPP_IN_PORT,
    Barrier,
    Bucket,
    DecNwTtl,
    FlowCommand,
    FlowMod,
    GroupAction,
    GroupCommand,
    GroupMod,
    GroupType,
    Output,
    SetField,
    match,
)
from tests.fakes.oftable import FakeOFTable, OFError

IP = 0x0800
NET24 = ("10.1.2.0", "255.255.255.0")
NET16 = ("10.1.0.0", "255.255.0.0")


def add(priority: int, m, actions=(), cookie: int = 0) -> FlowMod:
    return FlowMod(FlowCommand.ADD, priority, m, tuple(actions), cookie=cookie)


def group(gid: int, *ports: int, command: GroupCommand = GroupCommand.ADD) -> GroupMod:
    buckets = tuple(Bucket((SetField("eth_dst", f"02:00:00:00:00:{p:02x}"), DecNwTtl(), Output(p)), watch_port=p) for p in ports)
    return GroupMod(command, gid, GroupType.SELECT, buckets)


def test_flow_to_missing_group_is_rejected_and_table_unchanged() -> None:
    t = FakeOFTable()
    with pytest.raises(OFError, match="bad_out_group"):
        t.apply(add(10, match(eth_type=IP), [GroupAction(7)]))
    assert not t.flows
    lenient = FakeOFTable(strict=False)
    lenient.apply(add(10, match(eth_type=IP), [GroupAction(7)]))
    assert not lenient.flows and lenient.errors[0].kind == "bad_out_group"


def test_deleting_a_group_deletes_its_flows() -> None:
    t = FakeOFTable()
    t.apply_all([group(1, 1, 2), group(2, 3), add(10, match(eth_type=IP, ipv4_dst=NET24), [GroupAction(1)])])
    t.apply(add(11, match(eth_type=IP, ipv4_dst="10.1.2.3"), [GroupAction(2)]))
    t.apply(GroupMod(GroupCommand.DELETE, 1))
    assert [f.priority for f in t.flows.values()] == [11]
    assert not t.dangling()
    t.apply(GroupMod(GroupCommand.DELETE, 99))  # deleting a missing group is a no-op


def test_group_errors() -> None:
    t = FakeOFTable()
    t.apply(group(1, 1))
    with pytest.raises(OFError, match="group_exists"):
        t.apply(group(1, 2))
    with pytest.raises(OFError, match="unknown_group"):
        t.apply(group(2, 2, command=GroupCommand.MODIFY))
    t.apply(group(1, 3, 4, command=GroupCommand.MODIFY))
    assert [b.watch_port for b in t.groups[1].buckets] == [3, 4]


def test_add_replaces_modify_never_adds_and_keeps_cookie() -> None:
    t = FakeOFTable()
    m = match(eth_type=IP, ipv4_dst=NET24)
    t.apply(add(10, m, [Output(1)], cookie=5))
    t.apply(add(10, m, [Output(2)], cookie=6))
    assert len(t.flows) == 1 and next(iter(t.flows.values())).cookie == 6
    t.apply(FlowMod(FlowCommand.MODIFY_STRICT, 10, m, (Output(3),), cookie=1))
    assert next(iter(t.flows.values())).cookie == 6
    t.apply(FlowMod(FlowCommand.MODIFY_STRICT, 11, m, (Output(4),)))  # no such flow: nothing added
    assert len(t.flows) == 1 and next(iter(t.flows.values())).actions == (Output(3),)
    t.apply(FlowMod(FlowCommand.MODIFY, 0, match(eth_type=IP), (Output(9),)))  # non-strict: covers it
    assert next(iter(t.flows.values())).actions == (Output(9),)


def test_strict_and_non_strict_delete_with_cookie_mask() -> None:
    t = FakeOFTable()
    ours, theirs = 0xAB << 56, 0xCD << 56
    t.apply(add(10, match(eth_type=IP, ipv4_dst=NET24), [Output(1)], cookie=ours | 1))
    t.apply(add(9, match(eth_type=IP, ipv4_dst=NET16), [Output(1)], cookie=ours | 2))
    t.apply(add(10, match(eth_type=IP, ipv4_dst="10.1.2.3"), [Output(1)], cookie=theirs))
    mask = 0xFF << 56
    t.apply(FlowMod(FlowCommand.DELETE_STRICT, 9, match(eth_type=IP, ipv4_dst=NET24), cookie=ours, cookie_mask=mask))
    assert len(t.flows) == 3  # strict: priority must match too
    t.apply(FlowMod(FlowCommand.DELETE, 0, match(eth_type=IP, ipv4_dst=NET16), cookie=ours, cookie_mask=mask))
    assert [f.cookie for f in t.flows.values()] == [theirs]  # covers /24 and /16 of ours, not theirs
    t.apply(FlowMod(FlowCommand.DELETE, 0, (), out_port=2))
    assert len(t.flows) == 1  # out_port filter: no flow outputs to 2
    t.apply(FlowMod(FlowCommand.DELETE, 0, ()))
    assert not t.flows


def test_prerequisites_enforced() -> None:
    t = FakeOFTable()
    with pytest.raises(OFError, match="bad_prereq"):
        t.apply(add(1, match(ipv4_dst="10.0.0.1"), [Output(1)]))
    with pytest.raises(OFError, match="bad_prereq"):
        t.apply(add(1, match(eth_type=IP, arp_op=1), [Output(1)]))


def test_lookup_longest_prefix_ecmp_liveness_ttl() -> None:
    t = FakeOFTable()
    t.apply_all([group(1, 1, 2), group(2, 3), group(3)])
    t.apply(add(1016, match(eth_type=IP, ipv4_dst=NET16), [GroupAction(1)]))
    t.apply(add(1024, match(eth_type=IP, ipv4_dst=NET24), [GroupAction(2)]))
    t.apply(add(1032, match(eth_type=IP, ipv4_dst="10.1.9.9"), [GroupAction(3)]))
    t.apply(add(65535, match(eth_type=0x88B5), [Output(OFPP_CONTROLLER)]))
    t.apply(Barrier())
    assert t.barriers == 1
    assert sorted(d.port for d in t.forward("10.1.5.5")) == [1, 2]
    assert [d.port for d in t.forward("10.1.2.7")] == [3]
    (d,) = t.forward("10.1.2.7", ttl=9)
    assert d.fields["ip_ttl"] == 8 and d.fields["eth_dst"] == "02:00:00:00:00:03"
    assert t.forward("10.1.2.7", ttl=1) == []  # TTL expires: dropped
    assert t.forward("10.1.9.9") == []  # empty select group drops
    assert t.forward("10.2.0.1") == []  # table miss
    t.live_ports = {2, 3}
    assert [d.port for d in t.forward("10.1.5.5")] == [2]  # watch_port skips the dead bucket
    assert [d.port for d in t.lookup(4, eth_type=0x88B5)] == [OFPP_CONTROLLER]


def test_output_in_port() -> None:
    t = FakeOFTable()
    t.apply(add(5, match(in_port=7, eth_type=0x0806), [SetField("arp_op", 2), Output(OFPP_IN_PORT)]))
    (d,) = t.lookup(7, eth_type=0x0806, arp_op=1)
    assert d.port == 7 and d.fields["arp_op"] == 2
    assert t.lookup(8, eth_type=0x0806, arp_op=1) == []


def test_readback_round_trip() -> None:
    t = FakeOFTable()
    t.apply_all([group(1, 1), add(10, match(eth_type=IP), [GroupAction(1)], cookie=3)])
    (f,) = t.installed_flows()
    assert (f.priority, f.cookie, f.actions) == (10, 3, (GroupAction(1),))
    (g,) = t.installed_groups()
    assert g.group_id == 1 and g.buckets[0].watch_port == 1
