"""Transit policy of the route computation against a brute-force reference on random irregular fabrics.

The rule (client/routes.py): a switch whose `transit` is false (by default ToRs and borders) or that is
drained (every link DRAINED) relays traffic between two other switches only as a last resort: among all
paths to a destination, the ones with the fewest such relays win, then the shortest. A drained switch
stays reachable over its drained links (soft drain), and a switch always sends its own traffic.
The reference enumerates every simple path; the route computer must agree, fully and incrementally.
"""

from __future__ import annotations

import dataclasses
import random
from ipaddress import IPv4Network
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client.routes import RouteComputer
from proto.config import Distribution, Endpoint, Fabric, Link, LsdSettings, Role, Security, Switch, Timers
from proto.lsd import LinkState
from proto.transit import relay_costs, transit_gap
from tests.fakes import build_clos, switch_mac

UP, DOWN, DRAINED, DRAINED_DOWN = (int(LinkState.UP), int(LinkState.DOWN), int(LinkState.DRAINED),
                                  int(LinkState.DRAINED_DOWN))
ROLES = (Role.TOR, Role.AGG, Role.SPINE, Role.BORDER)


def irregular_fabric(rng: random.Random) -> Fabric:
    """2..7 switches of random roles, random cables (parallel ones, partitions, cross links), random
    weights, and sometimes a `transit` override against the role default."""
    n = rng.randint(2, 7)
    switches = []
    for i in range(n):
        role = rng.choice(ROLES)
        transit = None if rng.random() < 0.8 else rng.random() < 0.5
        prefixes = (IPv4Network(f"10.{i}.0.0/24"),) if role is Role.TOR else ()
        if role is Role.BORDER:
            prefixes = (IPv4Network("0.0.0.0/0"),)  # anycast: every border originates it
        switches.append(
            Switch(
                name=f"s{i}", id=i + 1, role=role, prefixes=prefixes, loopback=IPv4Network(f"10.255.0.{i + 1}/32"),
                mac=switch_mac(i + 1), gateway=None, hosts=(), ovs=None, rest_port=None, transit=transit,
            )
        )
    links = []
    ports = [0] * n
    for _ in range(rng.randint(1, 3 * n)):
        a, b = rng.sample(range(n), 2)
        ports[a] += 1
        ports[b] += 1
        w = rng.choice((1, 1, 1, 2, 3))
        links.append(Link(len(links), Endpoint(f"s{a}", ports[a]), Endpoint(f"s{b}", ports[b]), w))
    return Fabric(
        name="irregular", source="<test>", switches=tuple(switches), links=tuple(links), masters=(),
        config_timers=Timers(), security=Security(Path("k"), None), distribution=Distribution(), lsd=LsdSettings(),
    )


def random_states(rng: random.Random, fabric: Fabric) -> bytearray:
    states = bytearray(rng.choice((UP, UP, UP, DOWN, DRAINED, DRAINED_DOWN)) for _ in fabric.links)
    if rng.random() < 0.4:  # drain a whole switch
        sw = rng.choice(fabric.switches).name
        for li in fabric.links_of(sw):
            states[li] = DRAINED
    return states


def brute_force(fabric: Fabric, switch: str, states: bytes) -> dict[IPv4Network, frozenset[int]]:
    """Every simple path from `switch`, ranked by (relays by non-transit or drained switches, weight)."""
    return brute_force_costs(fabric, switch, states)[0]


def brute_force_costs(
    fabric: Fabric, switch: str, states: bytes
) -> tuple[dict[IPv4Network, frozenset[int]], dict[IPv4Network, tuple[int, int]], dict[str, bool]]:
    """`brute_force`, plus each prefix's best (relays, weight) and which switches relay freely."""
    drained = {
        sw.name for sw in fabric.switches
        if fabric.links_of(sw.name) and all(states[li] in (DRAINED, DRAINED_DOWN) for li in fabric.links_of(sw.name))
    }
    relay = {sw.name: bool(sw.transit) and sw.name not in drained for sw in fabric.switches}

    def usable(li: int) -> bool:
        lk = fabric.links[li]
        return states[li] == UP or (states[li] == DRAINED and (lk.a.switch in drained or lk.b.switch in drained))

    best: dict[str, tuple[tuple[int, int], set[int]]] = {}  # destination -> (cost, first-hop ports)

    def walk(node: str, visited: set[str], first_port: int, violations: int, weight: int) -> None:
        cost = (violations, weight)
        if node not in best or cost < best[node][0]:
            best[node] = (cost, {first_port})
        elif cost == best[node][0]:
            best[node][1].add(first_port)
        pay = 0 if relay[node] else 1  # going on from here makes `node` relay
        for li in fabric.links_of(node):
            if not usable(li):
                continue
            lk = fabric.links[li]
            peer = lk.b.switch if lk.a.switch == node else lk.a.switch
            if peer not in visited:
                walk(peer, visited | {peer}, first_port, violations + pay, weight + lk.weight)

    for li in fabric.links_of(switch):
        if not usable(li):
            continue
        lk = fabric.links[li]
        mine, peer = (lk.a, lk.b) if lk.a.switch == switch else (lk.b, lk.a)
        walk(peer.switch, {switch, peer.switch}, mine.port, 0, lk.weight)

    origins: dict[IPv4Network, list[str]] = {}
    for sw in fabric.switches:
        pfx = list(sw.prefixes) + [sw.loopback]
        for p in pfx:
            origins.setdefault(p, []).append(sw.name)
    routes: dict[IPv4Network, frozenset[int]] = {}
    costs: dict[IPv4Network, tuple[int, int]] = {}
    for prefix, orgs in origins.items():
        if switch in orgs:
            continue
        reached = [best[o] for o in orgs if o in best]
        if not reached:
            continue
        live = [best[o] for o in orgs if o in best and o not in drained]    # anycast: drained origins last
        if live and len(orgs) > 1:
            reached = live
        cost = min(c for c, _p in reached)
        routes[prefix] = frozenset(p for c, ports in reached if c == cost for p in ports)
        costs[prefix] = cost
    return routes, costs, relay


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_full_computation_matches_brute_force(seed: int) -> None:
    rng = random.Random(seed)
    fabric = irregular_fabric(rng)
    states = bytes(random_states(rng, fabric))
    for sw in fabric.switches:
        assert RouteComputer(fabric, sw.name).compute(states) == brute_force(fabric, sw.name, states), sw.name


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(1, 15))
def test_incremental_matches_brute_force(seed: int, steps: int) -> None:
    rng = random.Random(seed)
    fabric = irregular_fabric(rng)
    states = random_states(rng, fabric)
    computers = [RouteComputer(fabric, sw.name) for sw in fabric.switches]
    for rc in computers:
        rc.FEW_LOCAL_LINKS = 0  # exercise the incremental path even for the switch's own links
        rc.compute(bytes(states))
    for _ in range(steps):
        if rng.random() < 0.2:  # drain or undrain a whole switch
            sw = rng.choice(fabric.switches).name
            value = rng.choice((UP, DRAINED))
            changed = list(fabric.links_of(sw))
            for li in changed:
                states[li] = value
        else:
            changed = rng.sample(range(len(fabric.links)), min(len(fabric.links), rng.choice((1, 1, 2))))
            for li in changed:
                states[li] = rng.choice((UP, UP, DOWN, DRAINED, DRAINED_DOWN))
        for rc in computers:
            rc.update(bytes(states), changed)
            assert dict(rc.routes) == brute_force(fabric, rc.switch_name, bytes(states)), rc.switch_name


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_forwarding_is_transit_free_hop_by_hop(seed: int) -> None:
    """Following every switch's own tables (as packets do), every ECMP branch towards a destination that
    some transit-free path reaches never passes through a switch that must not relay, and never loops."""
    rng = random.Random(seed)
    fabric = irregular_fabric(rng)
    states = bytes(random_states(rng, fabric))
    tables = {sw.name: RouteComputer(fabric, sw.name).compute(states) for sw in fabric.switches}
    origins: dict[IPv4Network, set[str]] = {}
    for sw in fabric.switches:
        for p in (*sw.prefixes, sw.loopback):
            origins.setdefault(p, set()).add(sw.name)
    for sw in fabric.switches:
        _routes, costs, relay = brute_force_costs(fabric, sw.name, states)
        for prefix, (violations, _w) in costs.items():
            stack = [(sw.name, (sw.name,))]
            while stack:
                node, path = stack.pop()
                if node in origins[prefix]:
                    continue
                if node != sw.name and violations == 0:
                    assert relay[node], f"{prefix} from {sw.name} relayed by {node}: {path}"
                ports = tables[node].get(prefix)
                assert ports, f"black hole for {prefix} at {node} (path {path})"
                for port in ports:
                    peer = fabric.peer_of(node, port)
                    assert peer is not None and peer.switch not in path, f"loop for {prefix}: {path}"
                    stack.append((peer.switch, (*path, peer.switch)))


def test_clos_routes_never_cross_a_tor_when_a_fabric_path_exists() -> None:
    """3-tier Clos with one ToR dual-homed across pods (irregular): agg-0-0 must not reach agg-1-0
    through that ToR although it is as short as via a spine."""
    fabric = build_clos(pods=2, tors=2, aggs=1, spines_per_plane=1)
    # add a cross link tor-0-0 -- agg-1-0 (a ToR dual-homed to aggs of two pods)
    extra = Link(len(fabric.links), Endpoint("tor-0-0", 50), Endpoint("agg-1-0", 50))
    fabric = Fabric(
        name=fabric.name, source=fabric.source, switches=fabric.switches, links=(*fabric.links, extra),
        masters=(), config_timers=fabric.config_timers, security=fabric.security, distribution=fabric.distribution, lsd=fabric.lsd,
    )
    states = bytes([UP]) * len(fabric.links)
    routes = RouteComputer(fabric, "agg-0-0").compute(states)
    spine_port = next(p for p in fabric.fabric_ports("agg-0-0") if fabric.peer_of("agg-0-0", p).switch.startswith("spine"))
    assert routes[fabric.switch("agg-1-0").loopback] == {spine_port}  # not via tor-0-0 (also 2 hops)
    assert routes[IPv4Network("10.1.0.0/24")] == {spine_port}
    # without the spine, the ToR is the last resort: reachable, not black-holed
    cut = bytearray(states)
    cut[fabric.link_at("agg-0-0", spine_port).index] = DOWN
    tor_port = next(p for p in fabric.fabric_ports("agg-0-0") if fabric.peer_of("agg-0-0", p).switch == "tor-0-0")
    rc = RouteComputer(fabric, "agg-0-0")
    rc.compute(states)
    rc.update(bytes(cut), [fabric.link_at("agg-0-0", spine_port).index])
    assert rc.routes[fabric.switch("agg-1-0").loopback] == {tor_port}


def test_drained_spine_is_reachable_but_relays_nothing() -> None:
    fabric = build_clos(pods=2, tors=1, aggs=1, spines_per_plane=2)
    states = bytearray([UP]) * len(fabric.links)
    for li in fabric.links_of("spine-0-0"):
        states[li] = DRAINED
    rc = RouteComputer(fabric, "agg-0-0")
    routes = rc.compute(bytes(states))
    via = {p: fabric.peer_of("agg-0-0", p).switch for p in fabric.fabric_ports("agg-0-0")}
    assert {via[p] for p in routes[IPv4Network("10.1.0.0/24")]} == {"spine-0-1"}
    assert {via[p] for p in routes[fabric.switch("spine-0-0").loopback]} == {"spine-0-0"}
    assert rc.drained_switches == {"spine-0-0"} and not rc.relays("spine-0-0") and rc.relays("spine-0-1")


# ---------------------------------------------------------------------------------- the config check's rule


def origin_fabric(rng: random.Random) -> Fabric:
    """`irregular_fabric`, but each origin of traffic with a prefix of its own (borders too, and sometimes an
    agg or a spine), and sometimes a ToR without one: so that every pair's best path can be told apart."""
    fabric = irregular_fabric(rng)
    switches = []
    for i, sw in enumerate(fabric.switches):
        prefixes: tuple[IPv4Network, ...] = ()
        if sw.role is Role.TOR and rng.random() < 0.85:
            prefixes = (IPv4Network(f"10.{i}.0.0/24"),)
        elif sw.role is Role.BORDER:
            prefixes = (IPv4Network(f"192.0.2.{i}/32"),)
        elif rng.random() < 0.15:
            prefixes = (IPv4Network(f"172.16.{i}.0/24"),)
        switches.append(dataclasses.replace(sw, prefixes=prefixes))
    return dataclasses.replace(fabric, switches=tuple(switches))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_the_config_check_refuses_exactly_what_the_route_computation_relays_by_last_resort(seed: int) -> None:
    """proto.transit.transit_gap (the config check) against the routes' reference: with every link up, a ToR
    with a prefix whose best path to another origin (any ToR's, border's, other prefix) has a non-transit relay
    is a gap, and only such pairs are (borders and other non-ToRs among themselves do not count)."""
    rng = random.Random(seed)
    fabric = origin_fabric(rng)
    index = {sw.name: i for i, sw in enumerate(fabric.switches)}
    ends = [(index[lk.a.switch], index[lk.b.switch]) for lk in fabric.links]
    up = bytes([UP]) * len(fabric.links)
    origins = [sw for sw in fabric.switches if sw.prefixes]
    bad: set[frozenset[str]] = set()
    for x in origins:
        if x.role is not Role.TOR:
            continue
        costs = brute_force_costs(fabric, x.name, up)[1]
        for y in origins:
            if y is not x and (y.prefixes[0] not in costs or costs[y.prefixes[0]][0] > 0):
                bad.add(frozenset((x.name, y.name)))
    gap = transit_gap(fabric.switches, ends)
    assert (gap is None) == (not bad), (gap, bad)
    if gap is not None:
        pair = frozenset((fabric.switches[gap.switch].name, fabric.switches[gap.other].name))
        assert pair in bad
        relays = {fabric.switches[i] for i in gap.relays}
        assert all(not r.transit for r in relays) and not {r.name for r in relays} & pair


def test_the_route_computer_and_the_config_check_share_the_relay_rule() -> None:
    assert relay_costs([True, False, True, False], 9, drained=[2], src=1) == [0, 0, 9, 9]
    fabric = build_clos(pods=1, tors=2, aggs=1, spines_per_plane=1)
    rc = RouteComputer(fabric, "tor-0-0")
    assert rc._penalties(frozenset()) == relay_costs([sw.transit for sw in fabric.switches], rc.penalty,
                                                     src=rc.src)
