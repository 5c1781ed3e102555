"""The OpenFlow plan, checked through a fake OpenFlow table per switch (see tests/fakes/oftable.py)."""

from __future__ import annotations

import dataclasses
import random
from ipaddress import IPv4Network

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
    InstalledFlow,
    InstalledGroup,
    Output,
    Selection,
    SetField,
    match,
)
from client.ofplan import (
    COOKIE_MASK,
    FIREPATH_COOKIE,
    GROUP_ID_MAX,
    GROUP_ID_MIN,
    PRIORITY_ND,
    ROUTE_BASE,
    OfPlanner,
    OfState,
    PlanError,
    bucket_weights,
    canonical_match,
    plan,
    prefix_match,
)
from client.routes import RouteComputer, RouteDelta
from proto.clos import clos_fabric
from proto.config import Fabric, default_hash_basis
from proto.lsd import LinkState
from tests.fakes import build_clos
from tests.fakes.oftable import FakeOFTable

UP, DOWN = int(LinkState.UP), int(LinkState.DOWN)


class Net:
    """One route computer, planner and fake table per switch, programmed from a link-state string."""

    def __init__(self, fabric: Fabric, states: bytes | None = None) -> None:
        self.fabric = fabric
        self.states = bytearray(states if states is not None else bytes([UP]) * len(fabric.links))
        self.rc = {s.name: RouteComputer(fabric, s.name) for s in fabric.switches}
        self.planner = {s.name: OfPlanner(fabric, s.name) for s in fabric.switches}
        self.table = {s.name: FakeOFTable() for s in fabric.switches}
        for name in self.rc:
            self.table[name].apply_all(self.planner[name].set_routes(self.rc[name].compute(bytes(self.states))))

    def change(self, changes: dict[int, int]) -> dict[str, list]:
        """Apply link changes; returns every switch's plan (not yet applied to the tables)."""
        for li, s in changes.items():
            self.states[li] = s
        return {name: self.planner[name].update(rc.update(bytes(self.states), changes)) for name, rc in self.rc.items()}

    def walk(self, src_host: str, dst_ip: str, ttl: int = 64) -> list[tuple[str, int, dict]]:
        """Send an IPv4 packet from a host; follow every ECMP branch. Returns the host deliveries as
        (switch, port, fields); asserts no loop, no black hole, correct per-hop MAC rewrite."""
        host = next(h for h in self.fabric.hosts if h.name == src_host)
        start = (host.tor, host.port, {"eth_src": host.mac, "eth_dst": self.fabric.switch(host.tor).mac, "ip_ttl": ttl})
        stack = [(start, (host.tor,))]
        delivered = []
        steps = 0
        while stack:
            (sw, in_port, fields), path = stack.pop()
            steps += 1
            assert steps < 10_000
            outs = self.table[sw].forward(
                dst_ip, in_port=in_port, ttl=fields["ip_ttl"], eth_src=fields["eth_src"], eth_dst=fields["eth_dst"]
            )
            assert outs, f"packet to {dst_ip} dropped at {sw} (path {path})"
            for d in outs:
                peer = self.fabric.peer_of(sw, d.port)
                assert d.fields["eth_src"] == self.fabric.switch(sw).mac
                if peer is None:  # a host port
                    delivered.append((sw, d.port, d.fields))
                    continue
                assert d.fields["eth_dst"] == self.fabric.switch(peer.switch).mac
                assert peer.switch not in path, f"loop: {path + (peer.switch,)}"
                stack.append(((peer.switch, peer.port, d.fields), path + (peer.switch,)))
        return delivered


def small(**kw) -> Fabric:
    return build_clos(**({"pods": 2, "tors": 2, "aggs": 2, "spines_per_plane": 2, "hosts_per_tor": 2} | kw))


def test_every_host_reaches_every_host_hop_by_hop() -> None:
    fabric = small(borders=1)
    net = Net(fabric)
    for src in fabric.hosts:
        for dst in fabric.hosts:
            if src is dst:
                continue
            delivered = net.walk(src.name, str(dst.ip))
            assert delivered
            for sw, port, fields in delivered:
                assert (sw, port) == (dst.tor, dst.port)
                assert fields["eth_dst"] == dst.mac
                assert fields["eth_src"] == fabric.switch(dst.tor).mac
                hops = 1 if src.tor == dst.tor else (3 if src.tor.split("-")[1] == dst.tor.split("-")[1] else 5)
                assert fields["ip_ttl"] == 64 - hops  # every router decrements, the last one included


def test_ecmp_buckets_and_dedup_on_a_tor() -> None:
    fabric = small()
    net = Net(fabric)
    table, planner = net.table["tor-0-0"], net.planner["tor-0-0"]
    uplinks = fabric.fabric_ports("tor-0-0")
    assert sorted(d.port for d in table.forward("10.1.1.10")) == list(uplinks)
    routes = net.rc["tor-0-0"].routes
    assert len(table.groups) == len(set(routes.values()))  # one group per distinct next-hop set
    gid = planner.group_id(uplinks)
    assert gid is not None and GROUP_ID_MIN <= gid <= GROUP_ID_MAX
    users = [f for f in table.flows.values() if f.actions == (GroupAction(gid),)]
    assert len(users) == sum(1 for ports in routes.values() if ports == frozenset(uplinks)) > 1
    g = table.groups[gid]
    assert g.type is GroupType.SELECT
    for port, bucket in zip(uplinks, g.buckets, strict=True):
        peer = fabric.peer_of("tor-0-0", port)
        assert bucket.watch_port == port
        assert bucket.actions == (
            SetField("eth_src", fabric.switch("tor-0-0").mac),
            SetField("eth_dst", fabric.switch(peer.switch).mac),
            DecNwTtl(),
            Output(port),
        )


def test_flow_priorities_cookies_and_nd_punt() -> None:
    fabric = small(borders=1)
    net = Net(fabric)
    for name, table in net.table.items():
        assert all(f.cookie & COOKIE_MASK == FIREPATH_COOKIE for f in table.flows.values())
        nd = table.best_flow({"eth_type": 0x88B5, "in_port": 1})
        assert nd is not None and nd.priority == PRIORITY_ND == max(f.priority for f in table.flows.values())
        assert nd.actions == (Output(OFPP_CONTROLLER, 0xFFFF),)
        for (_t, priority, m), f in table.flows.items():
            if f.actions and isinstance(f.actions[0], GroupAction):
                fields = dict(m)
                v = fields.get("ipv4_dst")
                plen = 0 if v is None else (32 if isinstance(v, str) else IPv4Network(f"0.0.0.0/{v[1]}").prefixlen)
                assert priority == ROUTE_BASE + plen, name
    # longest prefix wins: the border's default does not catch a ToR subnet
    tor = net.table["tor-0-0"]
    dflt = tor.best_flow({"eth_type": 0x0800, "ipv4_dst": "192.0.2.1", "in_port": 100})
    assert dflt is not None and dflt.priority == ROUTE_BASE
    assert tor.best_flow({"eth_type": 0x0800, "ipv4_dst": "10.1.1.10", "in_port": 100}).priority == ROUTE_BASE + 24


def test_own_subnet_unused_address_is_dropped_not_defaulted() -> None:
    net = Net(small(borders=1))
    table = net.table["tor-0-0"]
    assert table.forward("192.0.2.1", in_port=100)  # default route exists
    assert table.forward("10.0.0.200", in_port=100) == []  # no such host in our own /24: dropped
    assert table.forward(str(net.fabric.switch("tor-0-0").loopback.network_address), in_port=100) == []


def test_host_delivery_and_ttl() -> None:
    fabric = small()
    net = Net(fabric)
    tor = net.table["tor-0-0"]
    h0, h1 = fabric.switch("tor-0-0").hosts
    (d,) = tor.forward(str(h1.ip), in_port=h0.port, ttl=5)
    assert d.port == h1.port and d.fields["eth_dst"] == h1.mac and d.fields["ip_ttl"] == 4
    assert d.fields["eth_src"] == fabric.switch("tor-0-0").mac
    assert tor.forward(str(h1.ip), in_port=h0.port, ttl=1) == []  # TTL expiry drops
    # with TTL 3 a 5-hop path expires on the way: nothing is delivered
    with pytest.raises(AssertionError, match="dropped"):
        net.walk(h0.name, str(fabric.switch("tor-1-1").hosts[0].ip), ttl=3)


def test_arp_replies_for_gateway_and_other_hosts() -> None:
    fabric = small(hosts_per_tor=3)
    net = Net(fabric)
    sw = fabric.switch("tor-1-0")
    tor = net.table["tor-1-0"]
    h0 = sw.hosts[0]
    for target in [sw.gateway] + [h.ip for h in sw.hosts[1:]]:
        (d,) = tor.lookup(h0.port, eth_type=0x0806, arp_op=1, arp_spa=str(h0.ip), arp_tpa=str(target),
                          eth_src=h0.mac, eth_dst="ff:ff:ff:ff:ff:ff", arp_sha=h0.mac, arp_tha="00:00:00:00:00:00")
        assert d.port == h0.port  # OFPP_IN_PORT resolved by the table
        f = d.fields
        assert (f["eth_dst"], f["eth_src"], f["arp_op"]) == (h0.mac, sw.mac, 2)
        assert (f["arp_sha"], f["arp_spa"], f["arp_tha"], f["arp_tpa"]) == (sw.mac, str(target), h0.mac, str(h0.ip))
    flows = [f for f in tor.flows.values() if dict(f.match).get("eth_type") == 0x0806]
    assert len(flows) == 3 * 3  # 3 hosts x (gateway + 2 other hosts)
    assert all(f.actions[-1] == Output(OFPP_IN_PORT) for f in flows)
    # a request from the wrong port, a foreign sender, or for its own address gets no reply
    assert tor.lookup(sw.hosts[1].port, eth_type=0x0806, arp_op=1, arp_spa=str(h0.ip), arp_tpa=str(sw.gateway)) == []
    assert tor.lookup(h0.port, eth_type=0x0806, arp_op=1, arp_spa="10.9.9.9", arp_tpa=str(sw.gateway)) == []
    assert tor.lookup(h0.port, eth_type=0x0806, arp_op=1, arp_spa=str(h0.ip), arp_tpa=str(h0.ip)) == []
    assert not [f for f in net.table["agg-0-0"].flows.values() if dict(f.match).get("eth_type") == 0x0806]


def check_step_by_step(before: FakeOFTable, msgs: list, prefixes: list[IPv4Network], expected_after: OfState) -> None:
    """Apply `msgs` one at a time: no rejection, no dangling group reference, and no prefix routed both
    before and after is ever dropped in between (make-before-break). Ends in the desired state."""
    def routed(t: FakeOFTable, p: IPv4Network) -> bool:
        return bool(t.forward(str(p.network_address), in_port=1))

    keep = [p for p in prefixes if routed(before, p) and expected_after.flows.get((0, ROUTE_BASE + p.prefixlen, prefix_match(p)))
            and expected_after.groups.get(expected_after.flows[(0, ROUTE_BASE + p.prefixlen, prefix_match(p))].actions[0].group_id).buckets]
    if msgs:
        assert isinstance(msgs[-1], Barrier) and sum(isinstance(m, Barrier) for m in msgs) == 1
    for m in msgs:
        before.apply(m)  # strict: raises on any rejection
        assert not before.dangling()
        for p in keep:
            assert routed(before, p), f"{p} dropped mid-plan after {m}"
    assert OfState.from_installed(before.installed_flows(), before.installed_groups()).flows == expected_after.flows
    assert OfState.from_installed(before.installed_flows(), before.installed_groups()).groups == expected_after.groups


def phase_order(msgs: list) -> list[int]:
    def phase(m) -> int:
        if isinstance(m, GroupMod):
            return 0 if m.command is not GroupCommand.DELETE else 3
        if isinstance(m, FlowMod):
            return 1 if m.command in (FlowCommand.ADD, FlowCommand.MODIFY_STRICT, FlowCommand.MODIFY) else 2
        return 4

    return [phase(m) for m in msgs]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(1, 5))
def test_plans_are_make_before_break_at_every_step(seed: int, steps: int) -> None:
    rng = random.Random(seed)
    fabric = build_clos(pods=2, tors=2, aggs=rng.randint(1, 3), spines_per_plane=rng.randint(1, 2),
                        hosts_per_tor=1, borders=rng.randint(0, 1), parallel=rng.randint(1, 2))
    net = Net(fabric)
    prefixes = sorted({p for rc in net.rc.values() for p in rc.routes}, key=str)
    for _ in range(steps):
        changes = {li: rng.choice((UP, DOWN, DOWN)) for li in rng.sample(range(len(fabric.links)), rng.randint(1, 3))}
        plans = net.change(changes)
        for name, msgs in plans.items():
            assert phase_order(msgs) == sorted(phase_order(msgs))
            check_step_by_step(net.table[name], msgs, prefixes, net.planner[name].desired)
            # the planner's model equals the switch, and a fresh planner agrees: nothing to do
            assert net.planner[name].reconcile(net.table[name].installed_flows(), net.table[name].installed_groups()) == []
            fresh = OfPlanner(fabric, name)
            fresh.desired_from_routes(net.rc[name].routes)
            assert fresh.reconcile(net.table[name].installed_flows(), net.table[name].installed_groups()) == []


def test_update_equals_full_replan() -> None:
    fabric = small(borders=1)
    net = Net(fabric)
    li = fabric.link_at("spine-0-0", 1).index
    net.change({li: DOWN})
    for name, planner in net.planner.items():
        fresh = OfPlanner(fabric, name)
        fresh.desired_from_routes(net.rc[name].routes)
        ours, theirs = planner.desired, fresh.desired
        assert ours.flows.keys() == theirs.flows.keys()
        assert sorted(map(repr, (g.buckets for g in ours.groups.values()))) == sorted(
            map(repr, (g.buckets for g in theirs.groups.values()))
        )


def test_group_ids_are_stable_and_not_reused_within_a_plan() -> None:
    fabric = small()
    net = Net(fabric)
    planner = net.planner["tor-0-0"]
    up_all = frozenset(fabric.fabric_ports("tor-0-0"))
    gid = planner.group_id(up_all)
    far = fabric.link_at("spine-1-1", 2).index  # a far link: the ToR's main group keeps its id
    msgs = net.change({far: DOWN})["tor-0-0"]
    assert planner.group_id(up_all) == gid
    net.table["tor-0-0"].apply_all(msgs)
    # a port set split between two new sets: neither new group may take the id being deleted
    p1, p2 = IPv4Network("10.9.0.0/24"), IPv4Network("10.9.2.0/24")
    tor = OfPlanner(fabric, "tor-0-0")
    tor.set_routes({p1: frozenset({1}), p2: frozenset({1})})
    g1 = tor.group_id({1})
    msgs = tor.update(RouteDelta({p1: frozenset({2}), p2: frozenset({1, 2})}, frozenset()))
    assert g1 not in (tor.group_id({2}), tor.group_id({1, 2}))
    assert [type(m).__name__ + ":" + m.command.name for m in msgs if not isinstance(m, Barrier)] == [
        "GroupMod:ADD", "GroupMod:ADD", "FlowMod:MODIFY_STRICT", "FlowMod:MODIFY_STRICT", "GroupMod:DELETE"]
    assert msgs[-2] == GroupMod(GroupCommand.DELETE, g1)
    msgs = tor.update(RouteDelta({IPv4Network("10.9.1.0/24"): frozenset({1})}, frozenset()))
    assert tor.group_id({1}) == g1  # freed by an earlier plan: may be reused now
    assert [m.group_id for m in msgs if isinstance(m, GroupMod) and m.command is GroupCommand.ADD] == [g1]


def test_a_set_replaced_whole_by_a_new_set_is_one_group_modify() -> None:
    """A link at a switch goes down: every route using the old next-hop set moves to the same new set.
    The group is modified in place — no flow is rewritten, no group added or deleted
    (was: a new group, a FlowMod per prefix and a DELETE: 35 messages at a leaf of 4 x 16)."""
    fabric = clos_fabric(pods=0, leaves=4, spines=3, masters=1)
    net = Net(fabric)
    name = "leaf-1"
    table, planner = net.table[name], net.planner[name]
    up_all = frozenset(fabric.fabric_ports(name))
    gid = planner.group_id(up_all)
    users = [p for p, s in net.rc[name].routes.items() if s == up_all]
    assert len(users) > 2
    port = min(up_all)
    li = fabric.link_at(name, port).index
    prefixes = sorted({p for rc in net.rc.values() for p in rc.routes}, key=str)
    for state in (DOWN, UP):
        plans = net.change({li: state})
        msgs = plans[name]
        if state == DOWN:
            assert GroupMod(GroupCommand.MODIFY, gid, GroupType.SELECT, planner.desired.groups[gid].buckets,
                            planner.selection) in msgs
            assert not [m for m in msgs if isinstance(m, FlowMod) and m.match in {prefix_match(p) for p in users}]
            assert not [m for m in msgs if isinstance(m, GroupMod) and m.group_id == gid
                        and m.command is not GroupCommand.MODIFY]
            assert planner.group_id(up_all - {port}) == gid
        check_step_by_step(table, msgs, prefixes, planner.desired)
        for n, other in plans.items():
            if n != name:
                net.table[n].apply_all(other)
        for h in fabric.hosts:
            assert len(net.walk(fabric.hosts[0].name, str(h.ip))) >= 1
        assert (port in {b.watch_port for g in table.groups.values() for b in g.buckets}) == (state == UP)
    # back up, the spine's loopback splits off the set again: not in place (a new group and FlowMods)
    assert planner.reconcile(table.installed_flows(), table.installed_groups()) == []


def test_local_repair_then_the_lsd_sends_nothing_for_the_repaired_group() -> None:
    """At an end of a failed link, local repair already took the port out of the group; when the LSD
    confirms the failure, the routes that used the old set need no message at all."""
    fabric = clos_fabric(pods=0, leaves=4, spines=3, masters=1)
    net = Net(fabric)
    name = "leaf-1"
    table, planner = net.table[name], net.planner[name]
    up_all = frozenset(fabric.fabric_ports(name))
    users = {prefix_match(p) for p, s in net.rc[name].routes.items() if s == up_all}
    port = min(up_all)
    table.apply_all(planner.local_port_down(port))
    msgs = net.change({fabric.link_at(name, port).index: DOWN})[name]
    assert not [m for m in msgs if isinstance(m, GroupMod) and m.group_id == planner.group_id(up_all - {port})]
    assert not [m for m in msgs if isinstance(m, FlowMod) and m.match in users]
    table.apply_all(msgs)
    assert planner.reconcile(table.installed_flows(), table.installed_groups()) == []


def test_reconcile_partially_wrong_switch_gives_a_minimal_plan() -> None:
    fabric = small(borders=1)
    net = Net(fabric)
    name = "tor-0-0"
    table, planner = net.table[name], net.planner[name]
    good_flows, good_groups = len(table.flows), len(table.groups)
    desired = planner.desired
    gid_all = planner.group_id(fabric.fabric_ports(name))
    # damage: one route flow gone, one group with a wrong bucket list, one stale flow of ours,
    # one route flow pointing at the wrong group, plus a foreign flow and a foreign group
    route_keys = [k for k, f in desired.flows.items() if f.actions and isinstance(f.actions[0], GroupAction)]
    gone = route_keys[0]
    table.apply(FlowMod(FlowCommand.DELETE_STRICT, gone[1], gone[2]))
    table.apply(GroupMod(GroupCommand.MODIFY, gid_all, GroupType.SELECT, table.groups[gid_all].buckets[:1]))
    other = next(g for g in table.groups if g != gid_all)
    wrong = next(k for k in route_keys[1:] if desired.flows[k].actions[0].group_id == gid_all)
    table.apply(FlowMod(FlowCommand.MODIFY_STRICT, wrong[1], wrong[2], (GroupAction(other),)))
    table.apply(FlowMod(FlowCommand.ADD, 1999, match(eth_type=0x0800, ipv4_dst="10.200.0.1"), (), cookie=FIREPATH_COOKIE | 4))
    table.apply(FlowMod(FlowCommand.ADD, 5, match(eth_type=0x0800, ipv4_dst="10.200.0.2"), (Output(3),), cookie=0x1234))
    table.apply(GroupMod(GroupCommand.ADD, 7, GroupType.ALL, (Bucket((Output(1),)),)))
    table.apply(GroupMod(GroupCommand.ADD, GROUP_ID_MIN + 500, GroupType.SELECT, ()))  # a stale group of ours
    restarted = OfPlanner(fabric, name)
    restarted.desired_from_routes(net.rc[name].routes)
    msgs = restarted.reconcile(table.installed_flows(), table.installed_groups())
    summary = sorted(f"{type(m).__name__}:{m.command.name}" for m in msgs if not isinstance(m, Barrier))
    assert summary == sorted([
        "GroupMod:MODIFY",  # buckets restored
        "FlowMod:ADD",  # the missing flow
        "FlowMod:MODIFY_STRICT",  # pointed back at the right group
        "FlowMod:DELETE_STRICT",  # the stale flow of ours
        "GroupMod:DELETE",  # the stale group of ours
    ])
    assert all(m.cookie_mask == COOKIE_MASK for m in msgs if isinstance(m, FlowMod) and m.command is FlowCommand.DELETE_STRICT)
    for m in msgs:
        table.apply(m)
        assert not table.dangling()
    assert len(table.groups) == good_groups + 1 and 7 in table.groups  # the foreign group survived
    assert len(table.flows) == good_flows + 1  # the foreign flow survived
    assert restarted.reconcile(table.installed_flows(), table.installed_groups()) == []


def test_reconcile_adopts_ids_after_restart_with_a_different_history() -> None:
    fabric = small()
    net = Net(fabric)
    name = "agg-0-0"
    for li in (fabric.link_at("spine-0-0", 2).index, fabric.link_at("tor-0-1", 1).index):
        for n, msgs in net.change({li: DOWN}).items():
            net.table[n].apply_all(msgs)
    restarted = OfPlanner(fabric, name)
    restarted.desired_from_routes(net.rc[name].routes)
    assert restarted.reconcile(net.table[name].installed_flows(), net.table[name].installed_groups()) == []


def test_local_port_down_repairs_groups_only_and_lsd_restores() -> None:
    fabric = small(borders=1)
    net = Net(fabric)
    name = "tor-0-0"
    table, planner = net.table[name], net.planner[name]
    port = fabric.fabric_ports(name)[0]
    msgs = planner.local_port_down(port)
    assert msgs and all(isinstance(m, GroupMod) and m.command is GroupCommand.MODIFY for m in msgs[:-1])
    assert isinstance(msgs[-1], Barrier)
    table.apply_all(msgs)
    assert planner.local_port_down(port) == []  # idempotent
    assert port not in {d.port for d in table.forward("10.1.1.10")}
    assert all(b.watch_port != port for g in table.groups.values() for b in g.buckets)
    # the LSD catches up (link down): routes stop using the port, which is then forgotten locally
    li = fabric.link_at(name, port).index
    plans = net.change({li: DOWN})
    table.apply_all(plans[name])
    assert planner.down_ports == frozenset()
    # the LSD says the link is up again: the port returns to the groups
    table.apply_all(net.change({li: UP})[name])
    assert port in {d.port for d in table.forward("10.1.1.10")}
    assert planner.reconcile(table.installed_flows(), table.installed_groups()) == []


def test_local_port_down_empties_a_single_port_group_and_port_up_restores() -> None:
    fabric = small(borders=1)
    net = Net(fabric)
    name = "agg-0-0"
    table, planner = net.table[name], net.planner[name]
    tor_port = next(p for p in fabric.fabric_ports(name) if fabric.peer_of(name, p).switch == "tor-0-1")
    table.apply_all(planner.local_port_down(tor_port))
    # 10.0.1.0/24 had only this port: its group is empty and the traffic is dropped here rather than
    # falling through to the border's default route
    assert table.forward("10.0.1.10") == []
    assert table.best_flow({"eth_type": 0x0800, "ipv4_dst": "10.0.1.10"}).priority == ROUTE_BASE + 24
    # an LSD update that still uses the port (the master has not reacted) keeps it excluded
    far = fabric.link_at("spine-1-1", 2).index
    table.apply_all(net.change({far: DOWN})[name])
    assert table.forward("10.0.1.10") == [] and planner.down_ports == {tor_port}
    msgs = planner.local_port_up(tor_port)  # flapped back before the master saw it
    table.apply_all(msgs)
    assert [d.port for d in table.forward("10.0.1.10")] == [tor_port]
    assert planner.local_port_up(tor_port) == []


def test_update_with_explicit_down_ports() -> None:
    fabric = small()
    net = Net(fabric)
    name = "tor-1-1"
    planner, table = net.planner[name], net.table[name]
    p1, p2 = fabric.fabric_ports(name)
    table.apply_all(planner.update(RouteDelta(), down_ports={p1}))
    assert {d.port for d in table.forward("10.0.0.10")} == {p2}
    table.apply_all(planner.update(RouteDelta(), down_ports=set()))
    assert {d.port for d in table.forward("10.0.0.10")} == {p1, p2}


def test_plan_of_identical_states_is_empty_and_errors() -> None:
    fabric = small()
    planner = OfPlanner(fabric, "tor-0-0")
    state = planner.desired_from_routes({IPv4Network("10.1.0.0/24"): frozenset({1, 2})})
    assert plan(state, state.copy()) == []
    with pytest.raises(PlanError, match="without a fabric link"):
        planner.set_routes({IPv4Network("10.1.0.0/24"): frozenset({100})})
    with pytest.raises(PlanError, match="nope"):
        OfPlanner(fabric, "nope")


def test_canonical_match_and_state_filtering() -> None:
    assert canonical_match([("eth_type", 0x0800), ("ipv4_dst", ("10.0.0.1", "255.255.255.255"))]) == prefix_match(
        IPv4Network("10.0.0.1/32"))
    assert canonical_match([("eth_type", 0x0800), ("ipv4_dst", ("0.0.0.0", "0.0.0.0"))]) == prefix_match(
        IPv4Network("0.0.0.0/0"))
    assert canonical_match([("eth_dst", "AA:BB:CC:DD:EE:FF")]) == (("eth_dst", "aa:bb:cc:dd:ee:ff"),)
    state = OfState.from_installed(
        [InstalledFlow(0, 5, (), (), 0x77), InstalledFlow(1, 5, (), (), FIREPATH_COOKIE), InstalledFlow(0, 6, (), (), FIREPATH_COOKIE)],
        [InstalledGroup(3, GroupType.SELECT, ()), InstalledGroup(GROUP_ID_MIN, GroupType.SELECT, ())],
    )
    assert list(state.flows) == [(0, 6, ())] and list(state.groups) == [GROUP_ID_MIN]


def test_runtime_flow_two_phase_commit_and_whole_table_plan() -> None:
    """The programmer's sequence: load_installed, plan(whole table, excluded), commit after the barrier."""
    fabric = small(borders=1)
    net = Net(fabric)
    name = "tor-0-0"
    table = net.table[name]
    planner = OfPlanner(fabric, name, auto_commit=False)  # a restarted client
    planner.load_installed(table.installed_flows(), table.installed_groups())
    assert planner.plan(net.rc[name].routes) == []  # adopted everything: nothing to do
    planner.commit()
    li = fabric.link_at("tor-1-0", 1).index  # tor-1-0 -- agg-1-0: half of our paths to tor-1-0 go
    for n, msgs in net.change({li: DOWN}).items():  # the other planners follow too; ours gets the whole table
        if n != name:
            net.table[n].apply_all(msgs)
    first = planner.plan(net.rc[name].routes)
    assert first and planner.installed.flows == OfState.from_installed(table.installed_flows(), table.installed_groups()).flows
    # the batch is lost (no barrier): the next plan carries its changes again, plus the new ones
    port = fabric.fabric_ports(name)[0]
    second = planner.plan(net.rc[name].routes, {port})
    assert {m for m in first if isinstance(m, FlowMod)} <= set(second)
    assert {m.group_id for m in first if isinstance(m, GroupMod)} <= {m.group_id for m in second if isinstance(m, GroupMod)}
    check_step_by_step(table, second, [], planner.desired)
    planner.commit()
    assert planner.plan(net.rc[name].routes, {port}) == []
    assert planner.group_count == len(table.groups)
    li2 = fabric.link_at("spine-1-1", 2).index
    for n, msgs in net.change({li2: DOWN}).items():
        if n != name:
            net.table[n].apply_all(msgs)
    msgs = planner.plan(net.rc[name].routes, {port})
    table.apply_all(msgs)
    planner.commit()
    assert OfState.from_installed(table.installed_flows(), table.installed_groups()).flows == planner.desired.flows


def test_exclude_ports_before_any_routes_repairs_the_installed_groups() -> None:
    fabric = small()
    net = Net(fabric)
    name = "tor-0-0"
    table = net.table[name]
    port = fabric.fabric_ports(name)[0]
    restarted = OfPlanner(fabric, name)
    restarted.load_installed(table.installed_flows(), table.installed_groups())
    msgs = restarted.exclude_ports({port})
    assert msgs and all(isinstance(m, GroupMod) and m.command is GroupCommand.MODIFY for m in msgs[:-1])
    table.apply_all(msgs)
    assert port not in {d.port for d in table.forward("10.1.1.10")}
    assert table.forward("10.1.1.10")
    # routes arrive: the port stays excluded; the full plan only touches what differs
    assert restarted.plan(net.rc[name].routes, {port}) == []
    table.apply_all(restarted.plan(net.rc[name].routes, set()))
    assert port in {d.port for d in table.forward("10.1.1.10")}


def select_mods(msgs: list) -> list[GroupMod]:
    return [
        m for m in msgs
        if isinstance(m, GroupMod) and m.type is GroupType.SELECT and m.command is not GroupCommand.DELETE
    ]


def test_every_select_group_mod_carries_the_switch_hash_basis() -> None:
    """add (first plan), modify (LSD update, local repair, port back), reconcile after a restart,
    and local repair before any routes: each SELECT group ADD/MODIFY carries Selection(dp_hash, basis)."""
    fabric = small(borders=1)
    net = Net(fabric)
    name = "tor-0-0"
    basis = fabric.switch(name).hash_basis
    want = Selection("dp_hash", basis)
    assert basis == default_hash_basis(fabric.switch(name).id) and basis != fabric.switch("agg-0-0").hash_basis
    first = OfPlanner(fabric, name).set_routes(net.rc[name].routes)
    seen = select_mods(first)
    seen += select_mods(net.change({fabric.link_at("tor-1-0", 1).index: DOWN})[name])
    planner = net.planner[name]
    port = fabric.fabric_ports(name)[0]
    seen += select_mods(planner.local_port_down(port)) + select_mods(planner.local_port_up(port))
    assert seen and {m.selection for m in seen} == {want}
    assert {g.selection for g in planner.desired.groups.values()} == {want}
    # a restarted client facing groups of another basis (an older client, or one set by hand) fixes them
    table = net.table[name]
    table.apply_all(planner.set_routes(net.rc[name].routes))
    for gid, g in list(table.groups.items()):
        table.apply(GroupMod(GroupCommand.MODIFY, gid, g.type, g.buckets, Selection("dp_hash", 0)))
    restarted = OfPlanner(fabric, name)
    restarted.desired_from_routes(net.rc[name].routes)
    msgs = restarted.reconcile(table.installed_flows(), table.installed_groups())
    assert len(select_mods(msgs)) == len(table.groups) and {m.selection for m in select_mods(msgs)} == {want}
    table.apply_all(msgs)
    assert restarted.reconcile(table.installed_flows(), table.installed_groups()) == []
    # an OpenFlow 1.3 read-back cannot show the selection: taken as right, no churn
    blind = [InstalledGroup(g.group_id, g.type, g.buckets, None) for g in table.installed_groups()]
    of13 = OfPlanner(fabric, name)
    of13.desired_from_routes(net.rc[name].routes)
    assert of13.reconcile(table.installed_flows(), blind) == []
    # local repair before any routes (restarted, no LSD yet) keeps the basis on the groups it modifies
    early = OfPlanner(fabric, name)
    early.load_installed(table.installed_flows(), table.installed_groups())
    assert {m.selection for m in select_mods(early.local_port_down(port))} == {want}


def test_bucket_weights_rule() -> None:
    assert bucket_weights([None, 100.0]) == (1, 1)  # an unknown capacity: equal buckets
    assert bucket_weights([40.0, 40.0, 40.0]) == (1, 1, 1)
    assert bucket_weights([100.0, 40.0]) == (5, 2)
    assert bucket_weights([2.5, 10.0]) == (1, 4)
    assert bucket_weights([]) == ()
    big = bucket_weights([0.001, 1000.0])  # 1:1,000,000 does not fit in 16 bits: scaled, each >= 1
    assert big == (1, 65535)


def test_weighted_groups_follow_capacity_and_dedup_holds() -> None:
    base = small()
    caps = {"tor-0-0:1": 100.0, "tor-0-0:2": 40.0}
    links = tuple(dataclasses.replace(lk, capacity=caps.get(str(lk.a), caps.get(str(lk.b)))) for lk in base.links)
    fabric = dataclasses.replace(base, links=links)
    net = Net(fabric)
    planner = net.planner["tor-0-0"]
    uplinks = frozenset(fabric.fabric_ports("tor-0-0"))
    groups = planner.desired.groups
    both = groups[planner.group_id(uplinks)]
    assert [(b.watch_port, b.weight) for b in both.buckets] == [(1, 5), (2, 2)]
    # dedup: every route over both uplinks uses that one weighted group
    users = {f.actions[0].group_id for f in planner.desired.flows.values()
             if f.actions and isinstance(f.actions[0], GroupAction) and f.actions[0].group_id == both.group_id}
    assert users == {both.group_id}
    assert len(groups) == len({tuple(g.buckets) for g in groups.values()})  # same weighted set -> same group
    # local repair keeps the survivor's weight reduced to lowest terms
    planner.local_port_down(1)
    assert [(b.watch_port, b.weight) for b in planner.desired.groups[both.group_id].buckets] == [(2, 1)]
    # an equal-capacity fabric gives today's equal buckets (weight 1)
    agg = net.planner["agg-0-0"].desired.groups.values()
    assert {b.weight for g in agg for b in g.buckets} == {1}
