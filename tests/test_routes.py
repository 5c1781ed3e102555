"""Route computation against a brute-force reference (all-pairs Floyd–Warshall on small fabrics)."""

from __future__ import annotations

import random
from ipaddress import IPv4Network

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client.routes import RouteComputer, RouteDelta, RouteError
from proto.config import Fabric, Role
from proto.lsd import LinkState
from tests.fakes import build_clos

UP, DOWN, DRAINED, DRAINED_DOWN = (int(LinkState.UP), int(LinkState.DOWN), int(LinkState.DRAINED),
                                  int(LinkState.DRAINED_DOWN))
INF = float("inf")


def all_up(fabric: Fabric) -> bytes:
    return bytes([UP]) * len(fabric.links)


def usable_links(fabric: Fabric, states: bytes) -> tuple[set[int], set[str]]:
    """Links routing may use and the drained switches: UP links, plus the DRAINED links of a switch whose
    links are all DRAINED or DRAINED_DOWN (a drained switch stays reachable but never relays: soft drain;
    a drained link that failed is never used)."""
    drained = {
        sw.name
        for sw in fabric.switches
        if fabric.links_of(sw.name)
        and all(states[li] in (DRAINED, DRAINED_DOWN) for li in fabric.links_of(sw.name))
    }
    usable = {
        lk.index
        for lk in fabric.links
        if states[lk.index] == UP
        or (states[lk.index] == DRAINED and (lk.a.switch in drained or lk.b.switch in drained))
    }
    return usable, drained


def penalty(fabric: Fabric) -> int:
    return sum(lk.weight for lk in fabric.links) + 1


def all_pairs(fabric: Fabric, states: bytes) -> tuple[dict[str, int], list[list[float]]]:
    """d[u][v]: cost of the best path u -> v when *every* node on it relays, so leaving a node that must
    not relay (transit: false, or drained) costs PENALTY on top of the link weight (Floyd–Warshall)."""
    names = {sw.name: i for i, sw in enumerate(fabric.switches)}
    usable, drained = usable_links(fabric, states)
    pen = [0 if sw.transit and sw.name not in drained else penalty(fabric) for sw in fabric.switches]
    n = len(names)
    d = [[0 if i == j else INF for j in range(n)] for i in range(n)]
    for link in fabric.links:
        if link.index not in usable:
            continue
        a, b = names[link.a.switch], names[link.b.switch]
        if a != b:
            d[a][b] = min(d[a][b], link.weight + pen[a])
            d[b][a] = min(d[b][a], link.weight + pen[b])
    for k in range(n):
        dk = d[k]
        for i in range(n):
            dik = d[i][k]
            if dik == INF:
                continue
            di = d[i]
            for j in range(n):
                if dik + dk[j] < di[j]:
                    di[j] = dik + dk[j]
    return names, d


def origins(fabric: Fabric) -> dict[IPv4Network, list[str]]:
    out: dict[IPv4Network, list[str]] = {}
    for sw in fabric.switches:
        pfx = list(sw.prefixes) + ([sw.loopback] if sw.loopback else [])
        if sw.role is Role.BORDER and not sw.prefixes:
            pfx.append(IPv4Network("0.0.0.0/0"))
        for p in pfx:
            out.setdefault(p, []).append(sw.name)
    return out


def reference_routes(fabric: Fabric, switch: str, states: bytes) -> dict[IPv4Network, frozenset[int]]:
    """Local link l = (switch, v, w) is an ECMP next hop towards origin o iff w + d(v, o) is the minimum
    over the switch's links (the switch itself pays no penalty for sending its own traffic)."""
    names, d = all_pairs(fabric, states)
    usable, drained = usable_links(fabric, states)
    hops: list[tuple[int, int, int]] = []  # (port, peer index, weight)
    for li in fabric.links_of(switch):
        link = fabric.links[li]
        if li not in usable or link.a.switch == link.b.switch:
            continue
        mine, peer = (link.a, link.b) if link.a.switch == switch else (link.b, link.a)
        hops.append((mine.port, names[peer.switch], link.weight))
    routes: dict[IPv4Network, frozenset[int]] = {}
    for prefix, orgs in origins(fabric).items():
        if switch in orgs:
            continue
        cost = {o: min((w + d[v][names[o]] for _p, v, w in hops), default=INF) for o in orgs}
        live = [o for o in orgs if o not in drained and cost[o] != INF]      # anycast: drained origins last
        if live and len(orgs) > 1:
            orgs = live
        best = min(cost[o] for o in orgs)
        if best == INF:
            continue
        ports = {p for o in orgs if cost[o] == best for p, v, w in hops if w + d[v][names[o]] == best}
        routes[prefix] = frozenset(ports)
    return routes


@st.composite
def fabrics(draw: st.DrawFn) -> Fabric:
    seed = draw(st.integers(0, 2**32 - 1))
    rng = random.Random(seed)
    weighted = draw(st.booleans())
    skip_p = draw(st.sampled_from([0.0, 0.0, 0.15, 0.4]))
    return build_clos(
        pods=draw(st.integers(1, 3)),
        tors=draw(st.integers(1, 3)),
        aggs=draw(st.integers(1, 3)),
        spines_per_plane=draw(st.integers(1, 2)),
        borders=draw(st.integers(0, 2)),
        parallel=draw(st.integers(1, 2)),
        weight=(lambda _i: rng.choice((1, 1, 2, 3))) if weighted else None,
        skip=(lambda _i: rng.random() < skip_p) if skip_p else None,
    )


def random_states(rng: random.Random, n: int, p_down: float) -> bytes:
    return bytes(
        UP if rng.random() >= p_down else rng.choice((DOWN, DRAINED)) for _ in range(n)
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fabric=fabrics(), seed=st.integers(0, 2**32 - 1), p_down=st.sampled_from([0.0, 0.1, 0.3, 0.7]))
def test_full_matches_reference_on_every_switch(fabric: Fabric, seed: int, p_down: float) -> None:
    states = random_states(random.Random(seed), len(fabric.links), p_down)
    for sw in fabric.switches:
        got = RouteComputer(fabric, sw.name).compute(states)
        assert got == reference_routes(fabric, sw.name, states), sw.name


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fabric=fabrics(),
    seed=st.integers(0, 2**32 - 1),
    steps=st.integers(1, 25),
    batch=st.sampled_from([1, 1, 2, 5]),
)
def test_incremental_equals_full_after_random_changes(fabric: Fabric, seed: int, steps: int, batch: int) -> None:
    rng = random.Random(seed)
    n = len(fabric.links)
    if n == 0:
        return
    names = [sw.name for sw in fabric.switches]
    computers = [RouteComputer(fabric, name) for name in rng.sample(names, min(3, len(names)))]
    if rng.random() < 0.3:  # exercise the give-up-and-recompute path too
        computers[0].BUDGET_MIN = 0
        computers[0].BUDGET_FRACTION = 0.0
    states = bytearray(random_states(rng, n, 0.2))
    tables = [rc.compute(bytes(states)) for rc in computers]
    for _ in range(steps):
        changed = rng.sample(range(n), min(batch, n))
        for li in changed:
            states[li] = rng.choice((UP, UP, DOWN, DRAINED))
        for k, rc in enumerate(computers):
            if rng.random() < 0.1:  # a full recomputation in between must keep the incremental state exact
                tables[k] = rc.compute(bytes(states))
            hint = changed if rng.random() < 0.9 else changed[:1]  # sometimes an incomplete hint
            delta = rc.update(bytes(states), hint)
            expected = RouteComputer(fabric, rc.switch_name).compute(bytes(states))
            assert dict(rc.routes) == expected
            table = dict(tables[k])
            for p in delta.removed:
                del table[p]
            table.update(delta.changed)
            assert table == expected
            assert not set(delta.changed) & delta.removed
            tables[k] = table


def walk_all(fabric: Fabric, tables: dict[str, dict], start: str, prefix: IPv4Network, goal: set[str]) -> None:
    """Follow every ECMP branch from `start`; each must reach an origin of `prefix` without looping."""
    stack = [(start, (start,))]
    steps = 0
    while stack:
        node, path = stack.pop()
        steps += 1
        assert steps < 100_000
        if node in goal:
            continue
        ports = tables[node].get(prefix)
        assert ports, f"black hole for {prefix} at {node} (path {path})"
        for port in ports:
            peer = fabric.peer_of(node, port)
            assert peer is not None
            assert peer.switch not in path, f"loop for {prefix}: {path + (peer.switch,)}"
            stack.append((peer.switch, path + (peer.switch,)))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fabric=fabrics(), seed=st.integers(0, 2**32 - 1), p_down=st.sampled_from([0.0, 0.2, 0.5]))
def test_next_hops_never_loop_and_reach_the_destination(fabric: Fabric, seed: int, p_down: float) -> None:
    states = random_states(random.Random(seed), len(fabric.links), p_down)
    tables = {sw.name: RouteComputer(fabric, sw.name).compute(states) for sw in fabric.switches}
    names, d = all_pairs(fabric, states)
    for prefix, orgs in origins(fabric).items():
        for sw in fabric.switches:
            if sw.name in orgs:
                continue
            reachable = any(d[names[sw.name]][names[o]] < INF for o in orgs)
            assert (prefix in tables[sw.name]) == reachable  # unreachable -> absent, never black-holed
            if reachable:
                walk_all(fabric, tables, sw.name, prefix, set(orgs))


def test_clos_ecmp_and_parallel_links() -> None:
    fabric = build_clos(pods=2, tors=2, aggs=2, spines_per_plane=2, parallel=2, borders=1)
    rc = RouteComputer(fabric, "agg-0-0")
    routes = rc.compute(all_up(fabric))
    uplinks = frozenset(p for p in fabric.fabric_ports("agg-0-0") if fabric.peer_of("agg-0-0", p).switch.startswith("spine"))
    assert len(uplinks) == 4  # 2 spines x 2 parallel cables, each counted separately
    assert routes[IPv4Network("10.1.0.0/24")] == uplinks
    assert routes[IPv4Network("0.0.0.0/0")] == uplinks
    tor_port = next(p for p in fabric.fabric_ports("agg-0-0") if fabric.peer_of("agg-0-0", p).switch == "tor-0-1")
    assert routes[IPv4Network("10.0.1.0/24")] == {tor_port}
    assert rc.own_prefixes == {fabric.switch("agg-0-0").loopback}
    assert fabric.switch("agg-0-0").loopback not in routes


def test_own_prefixes_are_not_routed() -> None:
    fabric = build_clos(borders=2)
    tor = RouteComputer(fabric, "tor-0-0").compute(all_up(fabric))
    assert IPv4Network("10.0.0.0/24") not in tor and IPv4Network("10.0.1.0/24") in tor
    border = RouteComputer(fabric, "border-0").compute(all_up(fabric))
    assert IPv4Network("0.0.0.0/0") not in border  # originated here, even though border-1 has it too


def test_partitioned_tor_is_withdrawn_then_restored() -> None:
    fabric = build_clos()
    rc = RouteComputer(fabric, "tor-1-0")
    states = bytearray(all_up(fabric))
    rc.compute(bytes(states))
    cut = fabric.links_of("tor-0-0")
    for li in cut:
        states[li] = DOWN
    delta = rc.update(bytes(states), cut)
    assert IPv4Network("10.0.0.0/24") in delta.removed
    assert IPv4Network("10.0.0.0/24") not in rc.routes
    assert not rc.last_was_full
    for li in cut:
        states[li] = UP
    delta = rc.update(bytes(states), cut)
    assert IPv4Network("10.0.0.0/24") in delta.changed
    assert not delta.removed


def test_drained_links_do_not_count() -> None:
    fabric = build_clos(pods=1, tors=1, aggs=2, spines_per_plane=1)
    rc = RouteComputer(fabric, "tor-0-0")
    states = bytearray(all_up(fabric))
    states[fabric.link_at("tor-0-0", 1).index] = DRAINED
    routes = rc.compute(bytes(states))
    assert all(ports == {2} for ports in routes.values())


def test_update_without_changes_and_incomplete_hint() -> None:
    fabric = build_clos(pods=2, tors=2, aggs=2, spines_per_plane=2)
    rc = RouteComputer(fabric, "tor-0-0")
    states = bytearray(all_up(fabric))
    first = rc.update(bytes(states), [])  # no previous state: a full computation, everything "changed"
    assert first.changed == rc.compute(bytes(states)) and not first.removed
    assert not rc.update(bytes(states), [0, 1])
    far = fabric.link_at("agg-1-0", fabric.fabric_ports("agg-1-0")[-1]).index
    states[far] = DOWN
    rc.update(bytes(states), [])  # the caller forgot to say which link changed: still exact
    assert dict(rc.routes) == RouteComputer(fabric, "tor-0-0").compute(bytes(states))


def test_single_spine_link_down_is_incremental_and_local() -> None:
    fabric = build_clos(pods=3, tors=3, aggs=2, spines_per_plane=3)
    rc = RouteComputer(fabric, "tor-0-0")
    states = bytearray(all_up(fabric))
    before = rc.compute(bytes(states))
    li = fabric.link_at("spine-0-0", 2).index  # spine-0-0 <-> agg-1-0
    states[li] = DOWN
    delta = rc.update(bytes(states), [li])
    assert not rc.last_was_full
    assert dict(rc.routes) == reference_routes(fabric, "tor-0-0", bytes(states))
    assert set(delta.changed) <= set(before)  # nothing new appears, nothing is withdrawn
    assert not delta.removed


def test_bad_input_raises_route_error() -> None:
    fabric = build_clos(pods=1, tors=1, aggs=1, spines_per_plane=1)
    with pytest.raises(RouteError, match="nope"):
        RouteComputer(fabric, "nope")
    rc = RouteComputer(fabric, "tor-0-0")
    with pytest.raises(RouteError, match="link states"):
        rc.compute(b"\x01")
    rc.compute(all_up(fabric))
    with pytest.raises(RouteError, match="out of range"):
        rc.update(all_up(fabric), [len(fabric.links)])
    with pytest.raises(RouteError, match="bytes"):
        rc.compute([1] * len(fabric.links))  # type: ignore[arg-type]


def test_route_delta_between() -> None:
    a, b, c = (IPv4Network(f"10.0.{i}.0/24") for i in range(3))
    delta = RouteDelta.between({a: frozenset({1}), b: frozenset({2})}, {a: frozenset({1}), c: frozenset({3})})
    assert delta.changed == {c: frozenset({3})} and delta.removed == {b}
    assert not RouteDelta()


def test_real_clos_generator_matches_reference() -> None:
    from proto.clos import clos_fabric

    fabric = clos_fabric(spines=4, pods=2, aggs_per_pod=2, tors_per_pod=2, planes=2, border_pods=1, uplinks=2)
    rng = random.Random(5)
    for p_down in (0.0, 0.2):
        states = random_states(rng, len(fabric.links), p_down)
        for sw in fabric.switches:
            assert RouteComputer(fabric, sw.name).compute(states) == reference_routes(fabric, sw.name, states)


def test_route_keys_behave_like_plain_networks() -> None:
    import pickle

    fabric = build_clos()
    routes = RouteComputer(fabric, "tor-0-0").compute(all_up(fabric))
    key = next(p for p in routes if p == IPv4Network("10.1.1.0/24"))
    assert isinstance(key, IPv4Network) and hash(key) == hash(IPv4Network("10.1.1.0/24"))
    assert repr(key) == "IPv4Network('10.1.1.0/24')"
    assert pickle.loads(pickle.dumps(key)) == key
    assert routes[IPv4Network("10.1.1.0/24")] == routes[key]


def test_link_usable_follows_the_soft_drain() -> None:
    fabric = build_clos(pods=1, tors=2, aggs=2, spines_per_plane=1)
    rc = RouteComputer(fabric, "tor-0-0")
    states = bytearray(all_up(fabric))
    one = fabric.link_at("tor-0-1", 1).index
    states[one] = DRAINED  # one drained link of a switch that is not drained: not usable
    assert not rc.link_usable(bytes(states), one)
    for li in fabric.links_of("tor-0-1"):
        states[li] = DRAINED  # the whole switch drained: its links stay usable (reachable, no transit)
    assert all(rc.link_usable(bytes(states), li) for li in fabric.links_of("tor-0-1"))
    states[one] = DOWN
    assert not rc.link_usable(bytes(states), one)
    assert rc.link_usable(bytes(states), fabric.link_at("tor-0-0", 1).index)
    # a drained switch whose link failed (the master says DRAINED_DOWN): the failed link is never used, the
    # switch stays drained and reachable over its other drained links
    states[one] = DRAINED_DOWN
    other = fabric.link_at("tor-0-1", 2).index
    assert not rc.link_usable(bytes(states), one) and rc.link_usable(bytes(states), other)
    routes = RouteComputer(fabric, "agg-0-1").compute(bytes(states))
    prefix = next(p for p in routes if str(p) == str(fabric.switch("tor-0-1").prefixes[0]))
    port = next(e.port for e in (fabric.links[other].a, fabric.links[other].b) if e.switch == "agg-0-1")
    assert routes[prefix] == {port}


def test_a_drained_border_gives_its_default_route_share_to_the_other_borders() -> None:
    """Tester: draining a border moved none of its egress traffic (the soft drain keeps a drained switch's own
    prefixes routed to it, and a border's is the default route). An anycast prefix goes to the nearest origins
    not drained while one is reachable; to a drained one only when it is the last."""
    fabric = build_clos(borders=2)
    default = IPv4Network("0.0.0.0/0")
    rc = RouteComputer(fabric, "tor-0-0")
    spine = next(sw.name for sw in fabric.switches if sw.role is Role.SPINE)
    spine_rc = RouteComputer(fabric, spine)
    states = bytearray(all_up(fabric))
    to_border = {b: {p for p in fabric.fabric_ports(spine) if fabric.peer_of(spine, p).switch == b}
                 for b in ("border-0", "border-1")}
    assert all(to_border.values())
    assert spine_rc.compute(bytes(states))[default] == to_border["border-0"] | to_border["border-1"]
    rc.compute(bytes(states))
    for li in fabric.links_of("border-0"):
        states[li] = DRAINED
    assert spine_rc.compute(bytes(states))[default] == to_border["border-1"]
    rc.update(bytes(states), fabric.links_of("border-0"))                 # the incremental path agrees
    assert rc.routes[default] == reference_routes(fabric, "tor-0-0", bytes(states))[default]
    for li in fabric.links_of("border-1"):                  # border-1 cut off: the drained one is the last way out
        states[li] = DOWN
    assert spine_rc.compute(bytes(states))[default] == to_border["border-0"]
