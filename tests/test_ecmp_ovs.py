"""ECMP spread on real Open vSwitch: per-switch hash basis, capacity weights, and a restart without churn.

Three bridges of a 2-pod Clos (tor-0-0 and its two aggs, each agg with two spine uplinks) are programmed
by the real planner (routes of the real route computer) through the real OpenFlow 1.5 driver; a host on
tor-0-0 sends UDP flows (one packet each, distinct source ports) to a host of pod 1; the select groups'
bucket counters are read with `ovs-ofctl -O OpenFlow15 dump-group-stats`. The spine ends of the agg
uplinks are bare veth ends: packets leave the aggs and are counted, then go nowhere.
"""

from __future__ import annotations

import dataclasses
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from client import ofmsg as M
from client.of.driver import OfDriver
from client.of.events import BarrierDone, Connected, DriverEvent
from client.ofplan import OfPlanner
from client.routes import RouteComputer
from lab import netns
from lab.ovs import OvsInstance, ovs_missing
from proto.config import Fabric
from tests.fakes import build_clos

pytestmark = [pytest.mark.ovs, pytest.mark.timeout(180)]

SWITCHES = ("tor-0-0", "agg-0-0", "agg-0-1")
BASE_PORT = 16700  # OpenFlow listeners inside the rig's own namespace


def fabric_with(capacity: dict[str, float] | None = None) -> Fabric:
    """2 pods x (1 ToR + 2 aggs), 2 spines per plane; `capacity` maps "switch:port" to Gbit/s."""
    f = build_clos(pods=2, tors=1, aggs=2, spines_per_plane=2, name="ecmp-ovs")
    if not capacity:
        return f
    links = tuple(
        dataclasses.replace(lk, capacity=capacity.get(str(lk.a), capacity.get(str(lk.b)))) for lk in f.links
    )
    return dataclasses.replace(f, links=links)


class Waiter:
    def __init__(self) -> None:
        self.events: list[DriverEvent] = []
        self.cond = threading.Condition()

    def __call__(self, ev: DriverEvent) -> None:
        with self.cond:
            self.events.append(ev)
            self.cond.notify_all()

    def wait(self, pred, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        with self.cond:
            while not any(pred(e) for e in self.events):
                left = deadline - time.monotonic()
                assert left > 0, f"timed out; events {self.events}"
                self.cond.wait(left)


class Rig:
    def __init__(self, tok: str, fabric: Fabric) -> None:
        self.tok = tok
        self.ns = f"fpecmp-{tok}"
        self.host_ns = f"fpecmp-{tok}-h"
        self.ovs = OvsInstance(Path(f"/tmp/fpecmp-{tok}"), netns=self.ns)
        self.fabric = fabric
        self.drivers: dict[str, OfDriver] = {}
        self.waiters: dict[str, Waiter] = {}

    def ifname(self, switch: str, port: int) -> str:
        return f"e{self.tok}{self.fabric.switches.index(self.fabric.switch(switch))}p{port}"

    def bridge(self, switch: str) -> str:
        return f"e{self.tok}b{self.fabric.switch(switch).id}"

    def build(self) -> None:
        netns.create_netns(self.ns)
        self.ovs.start()
        for k, name in enumerate(SWITCHES):
            self.ovs.add_bridge(self.bridge(name), self.fabric.switch(name).id, listen_port=BASE_PORT + k)
        for name in SWITCHES:
            for port in self.fabric.fabric_ports(name):
                peer = self.fabric.peer_of(name, port)
                assert peer is not None
                mine, theirs = self.ifname(name, port), self.ifname(peer.switch, peer.port)
                if peer.switch in SWITCHES and peer.switch < name:
                    continue  # created from the other end
                netns.create_veth(mine, theirs, netns_a=self.ns, netns_b=self.ns)
                self.ovs.add_port(self.bridge(name), mine, port)
                if peer.switch in SWITCHES:
                    self.ovs.add_port(self.bridge(peer.switch), theirs, peer.port)
        host = self.fabric.switch("tor-0-0").hosts[0]
        netns.create_netns(self.host_ns)
        netns.create_veth(f"e{self.tok}h", "eth0", netns_a=self.ns, netns_b=self.host_ns)
        self.ovs.add_port(self.bridge("tor-0-0"), f"e{self.tok}h", host.port)
        netns.set_mac("eth0", host.mac, self.host_ns)
        netns.add_address("eth0", f"{host.ip}/24", self.host_ns)
        gateway = self.fabric.switch("tor-0-0").gateway
        netns.add_route("10.1.0.0/16", via=str(gateway), netns=self.host_ns)
        for k, name in enumerate(SWITCHES):
            w = self.waiters[name] = Waiter()
            d = self.drivers[name] = OfDriver(f"tcp:127.0.0.1:{BASE_PORT + k}", w, netns=self.ns)
            d.start()
            w.wait(lambda e: isinstance(e, Connected) and e.version == 0x06)

    def send(self, name: str, msgs: list[M.OfMessage]) -> None:
        if msgs:
            batch = self.drivers[name].send(msgs)
            self.waiters[name].wait(lambda e, b=batch: e == BarrierDone(b))

    def program(self, fabric: Fabric, basis: dict[str, int] | None = None) -> dict[str, OfPlanner]:
        """Program the three switches from scratch (routes with every link up); `basis` overrides the
        hash basis per switch (the old behaviour: the same basis everywhere)."""
        planners = {}
        states = bytes([1]) * len(fabric.links)
        for name in SWITCHES:
            sel = None if basis is None else M.Selection("dp_hash", basis[name])
            planner = planners[name] = OfPlanner(fabric, name, selection=sel)
            planner.load_installed(*self.drivers[name].dump_state())
            self.send(name, planner.set_routes(RouteComputer(fabric, name).compute(states)))
        return planners

    def route_group(self, planner: OfPlanner, prefix: str) -> int:
        flow = next(f for f in planner.desired.flows.values() if ("ipv4_dst", (prefix, "255.255.255.0")) in f.match)
        action = flow.actions[0]
        assert isinstance(action, M.GroupAction)
        return action.group_id

    def bucket_counts(self, switch: str, group_id: int) -> list[int]:
        out = self.ovs.ofctl(self.bridge(switch), "dump-group-stats", f"group_id={group_id}", protocol="OpenFlow15")
        return [int(x.split("packet_count=")[1].split(",")[0]) for x in out.split("bucket")[1:]]

    def send_flows(self, n: int, first_port: int) -> None:
        """n UDP flows of one packet each from the pod-0 host to the pod-1 host (distinct source ports)."""
        dst = str(self.fabric.switch("tor-1-0").hosts[0].ip)
        code = (
            "import socket, time\n"
            f"for port in range({first_port}, {first_port + n}):\n"
            "    time.sleep(0.001)  # every new flow is an upcall in OVS: do not overrun its queue\n"
            "    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "    s.bind(('', port))\n"
            f"    s.sendto(b'x' * 20, ('{dst}', 5000))\n"
            "    s.close()\n"
        )
        subprocess.run(["ip", "netns", "exec", self.host_ns, "python3", "-c", code], check=True, timeout=60)

    def teardown(self) -> None:
        for d in self.drivers.values():
            d.stop()
        self.ovs.teardown(remove_run_dir=True)
        netns.delete_netns(self.host_ns)
        netns.cleanup(f"e{self.tok}")
        netns.delete_netns(self.ns)


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    if not netns.is_root() or ovs_missing():
        pytest.fail("this test needs root and Open vSwitch: run `make test` (it installs them)")
    r = Rig(secrets.token_hex(2), fabric_with())
    try:
        r.build()
        yield r
    finally:
        r.teardown()


def spread(rig: Rig, planners: dict[str, OfPlanner], flows: int, first_port: int) -> dict[str, list[int]]:
    """Per switch, the packets per bucket of the group routing to pod 1, after `flows` new flows."""
    groups = {name: rig.route_group(p, "10.1.0.0") for name, p in planners.items()}
    before = {name: rig.bucket_counts(name, gid) for name, gid in groups.items()}
    rig.send_flows(flows, first_port)
    # Group counters of packets that went through an upcall are pushed by OVS's revalidators, so tiers
    # catch up at different times: wait until every tier has them all, or nothing moved for 2 s.
    deadline = time.monotonic() + 20
    last, stable_since = None, time.monotonic()
    while True:
        now = {name: rig.bucket_counts(name, gid) for name, gid in groups.items()}
        delta = {name: [a - b for a, b in zip(now[name], before[name], strict=True)] for name in now}
        t = time.monotonic()
        if delta != last:
            last, stable_since = delta, t
        done = sum(delta["tor-0-0"]) >= flows and sum(delta["agg-0-0"]) + sum(delta["agg-0-1"]) >= flows
        if done or t - stable_since > 2.0 or t > deadline:
            # a loaded machine may drop a few upcalls: the shares are over what was counted
            assert sum(delta["tor-0-0"]) >= 0.9 * flows, delta
            return delta
        time.sleep(0.05)


def test_per_switch_basis_spreads_at_both_tiers(rig: Rig) -> None:
    same = rig.program(rig.fabric, basis=dict.fromkeys(SWITCHES, 0))  # before: one basis everywhere
    polarized = spread(rig, same, 128, 20000)
    assert all(0 in polarized[a] for a in ("agg-0-0", "agg-0-1")), f"expected polarization: {polarized}"

    planners = rig.program(rig.fabric)  # after: each switch hashes with its own basis (from its id)
    for name, p in planners.items():
        assert p.selection == M.Selection("dp_hash", rig.fabric.switch(name).hash_basis)
    counts = spread(rig, planners, 128, 21000)
    assert sum(counts["agg-0-0"]) + sum(counts["agg-0-1"]) == sum(counts["tor-0-0"])
    for name, c in counts.items():
        assert len(c) == 2 and 0.4 <= c[0] / sum(c) <= 0.6, f"{name}: {c} (all: {counts})"


def test_restarted_client_keeps_basis_and_weights_without_churn(rig: Rig) -> None:
    fabric = fabric_with({"tor-0-0:1": 30, "tor-0-0:2": 10, "agg-0-0:3": 40, "agg-0-0:4": 40})
    planners = rig.program(fabric)
    tor_group = rig.route_group(planners["tor-0-0"], "10.1.0.0")
    installed = {g.group_id: g for g in rig.drivers["tor-0-0"].dump_state()[1]}
    assert [b.weight for b in installed[tor_group].buckets] == [3, 1]
    assert installed[tor_group].selection == M.Selection("dp_hash", fabric.switch("tor-0-0").hash_basis)
    for name in SWITCHES:  # a restarted client reads the switch back: nothing to reprogram
        restarted = OfPlanner(fabric, name)
        restarted.load_installed(*rig.drivers[name].dump_state())
        states = bytes([1]) * len(fabric.links)
        assert restarted.set_routes(RouteComputer(fabric, name).compute(states)) == [], name
    # a switch left with another basis (e.g. by an older client) gets exactly its select groups fixed
    other = OfPlanner(fabric, "agg-0-1", selection=M.Selection("dp_hash", 7))
    other.load_installed(*rig.drivers["agg-0-1"].dump_state())
    msgs = other.set_routes(RouteComputer(fabric, "agg-0-1").compute(bytes([1]) * len(fabric.links)))
    mods = [m for m in msgs if isinstance(m, M.GroupMod)]
    assert mods and all(m.command is M.GroupCommand.MODIFY and m.selection == M.Selection("dp_hash", 7) for m in mods)
    assert all(isinstance(m, M.GroupMod | M.Barrier) for m in msgs)


def test_weighted_buckets_follow_capacity(rig: Rig) -> None:
    fabric = fabric_with({"tor-0-0:1": 30, "tor-0-0:2": 10})
    planners = rig.program(fabric)
    counts = spread(rig, planners, 1024, 30000)
    tor = counts["tor-0-0"]
    assert abs(tor[0] / sum(tor) - 0.75) <= 0.10 * 0.75, f"3:1 buckets carried {tor}"
    for name in ("agg-0-0", "agg-0-1"):  # equal capacities: equal buckets
        c = counts[name]
        assert 0.4 <= c[0] / sum(c) <= 0.6, f"{name}: {c}"


