"""controller.ops.dryrun against an independent brute force (Floyd-Warshall + enumeration of every shortest path) on an
irregular fabric: parallel links, weights 1-3, a ToR with one uplink, agg-agg and spine-spine cables."""

from __future__ import annotations

import random

import pytest

from controller.ops.dryrun import drain_impact, tor_destinations
from proto.clos import clos_fabric
from proto.config import Fabric, parse_fabric
from proto.lsd import LinkState

UP, DOWN = LinkState.UP, LinkState.DOWN
INF = float("inf")


def irregular_yaml() -> str:
    """3 spines, 3 aggs, 4 ToRs cabled unevenly (t1 has two parallel links to a2, t4 one uplink)."""
    sw = []
    i = 0
    def add(name, role, prefix=None):
        nonlocal i
        i += 1
        s = f"  - {{name: {name}, id: {i}, role: {role}, loopback: 10.255.0.{i}/32"
        if prefix:
            s += f", prefixes: [{prefix}]"
        sw.append(s + "}")
    for n in ("s1", "s2", "s3"):
        add(n, "spine")
    for n in ("a1", "a2", "a3"):
        add(n, "agg")
    for k, n in enumerate(("t1", "t2", "t3", "t4")):
        add(n, "tor", f"10.0.{k}.0/24")
    links = ["t1:1 a1:1", "t1:2 a2:1", "t1:3 a2:2", "t2:1 a2:3", "t2:2 a3:1 2", "t3:1 a3:2", "t3:2 a1:2",
             "t4:1 a1:3", "a1:10 s1:1", "a1:11 s2:1", "a2:10 s1:2", "a2:11 s3:1", "a3:10 s2:2", "a3:11 s3:2 3",
             "a1:12 a3:12 2", "s1:9 s2:9"]
    ls = []
    for spec in links:
        p = spec.split()
        w = f", weight: {p[2]}" if len(p) > 2 else ""
        ls.append(f'  - {{a: "{p[0]}", b: "{p[1]}"{w}}}')
    return ("name: irregular\nsecurity:\n  key_file: k.key\nmasters:\n"
            "  - {id: m1, address: 127.0.0.1, client_port: 6601, peer_port: 6701, rest_port: 6801}\n"
            "switches:\n" + "\n".join(sw) + "\nlinks:\n" + "\n".join(ls) + "\n")


def next_hops_brute(fabric: Fabric, states: bytes) -> dict[tuple[str, str], set[tuple[int, str]]]:
    """(switch, destination) -> first hops of its best paths, by enumerating every simple path.

    The transit policy of client.routes, restated: a switch is drained when every one of its links is
    DRAINED or DRAINED_DOWN; usable links are UP ones and the DRAINED links of a drained switch (soft
    drain), never a DRAINED_DOWN one; a path costs
    (how many of its intermediate switches are non-transit or drained, total weight), compared in that
    order; the first hops of the cheapest paths are the next hops."""
    names = [s.name for s in fabric.switches]
    links_of = {n: [fabric.links[i] for i in fabric.links_of(n)] for n in names}
    drained = {n for n in names if links_of[n]
               and all(states[lk.index] in (LinkState.DRAINED, LinkState.DRAINED_DOWN) for lk in links_of[n])}
    usable = [lk for lk in fabric.links if lk.a.switch != lk.b.switch and (
        states[lk.index] == UP or (states[lk.index] == LinkState.DRAINED
                                   and (lk.a.switch in drained or lk.b.switch in drained)))]
    adj: dict[str, list[tuple[int, str, int]]] = {n: [] for n in names}
    for lk in usable:
        adj[lk.a.switch].append((lk.index, lk.b.switch, lk.weight))
        adj[lk.b.switch].append((lk.index, lk.a.switch, lk.weight))
    penalised = {s.name for s in fabric.switches if not s.transit} | drained
    tors = set(tor_destinations(fabric))
    out: dict[tuple[str, str], set[tuple[int, str]]] = {}
    for src in names:
        best: dict[str, tuple[int, int]] = {}
        hops: dict[str, set[tuple[int, str]]] = {}

        def dfs(u: str, first: tuple[int, str] | None, relays: int, dist: int, seen: set[str],
                src: str = src, best: dict = best, hops: dict = hops) -> None:
            if u != src and u in tors:
                cost = (relays, dist)
                if u not in best or cost < best[u]:
                    best[u], hops[u] = cost, {first}
                elif cost == best[u]:
                    hops[u].add(first)
            for li, v, w in adj[u]:
                if v not in seen:
                    seen.add(v)
                    r = relays + (1 if u != src and u in penalised else 0)
                    dfs(v, first or (li, v), r, dist + w, seen)
                    seen.discard(v)

        dfs(src, None, 0, 0, {src})
        for d, h in hops.items():
            out[src, d] = h
    return out


def brute_force(fabric: Fabric, states: bytes, src: str, dst: str) -> tuple[int, int, float, set[str]]:
    """(width, paths, capacity, relays): every switch's brute-force next hops, followed from `src`, every
    walk enumerated with its share of the traffic."""
    nh = next_hops_brute(fabric, states)
    load: dict[int, float] = {}
    relays: set[str] = set()
    paths = 0

    def walk(u: str, share: float) -> None:
        nonlocal paths
        if u == dst:
            paths += 1
            return
        if u != src:
            relays.add(u)
        hops = nh.get((u, dst), set())
        for li, v in hops:
            load[li] = load.get(li, 0.0) + share / len(hops)
            walk(v, share / len(hops))

    first = nh.get((src, dst), set())
    if not first:
        return 0, 0, 0.0, set()
    walk(src, 1.0)
    return len(first), paths, (1.0 / max(load.values())) if paths else 0.0, relays


def check(fabric: Fabric, states: bytes, drain: tuple[int, ...], alone: bool = False) -> None:
    impact = drain_impact(fabric, states, drain, alone=alone)
    after = bytearray(states)
    for i in drain:      # the master's rule: a link drained on its own, or drained and down, is DRAINED_DOWN
        after[i] = (LinkState.DRAINED_DOWN if alone or states[i] in (LinkState.DOWN, LinkState.DRAINED_DOWN)
                    else LinkState.DRAINED)
    assert len(impact.pairs) == len(tor_destinations(fabric)) * (len(tor_destinations(fabric)) - 1)
    drained_after = set(impact.drained_switches)
    for p in impact.pairs:
        for when, st in (("before", states), ("after", bytes(after))):
            want = brute_force(fabric, st, p.src, p.dst)
            got = (getattr(p, f"width_{when}"), getattr(p, f"paths_{when}"), getattr(p, f"capacity_{when}"))
            assert got[:2] == want[:2] and got[2] == pytest.approx(want[2]), (p.src, p.dst, when, drain)
        assert set(p.via_drained) == want[3] & drained_after, (p.src, p.dst, drain)
        assert p.disconnected == (want[1] == 0 and brute_force(fabric, states, p.src, p.dst)[1] > 0)


@pytest.fixture(scope="module")
def irregular() -> Fabric:
    return parse_fabric(irregular_yaml(), source="<irregular>")


def test_every_single_link_and_switch_drain_matches_brute_force(irregular: Fabric) -> None:
    f = irregular
    states = bytes([UP]) * len(f.links)
    for i in range(len(f.links)):
        check(f, states, (i,), alone=True)
        check(f, states, (i,))
    for sw in f.switches:
        check(f, states, f.links_of(sw.name))


def test_random_drains_on_a_partly_failed_fabric_match_brute_force(irregular: Fabric) -> None:
    f = irregular
    rng = random.Random(7)
    for _ in range(12):
        states = bytes(rng.choice([UP, UP, UP, DOWN]) for _ in f.links)
        check(f, states, tuple(rng.sample(range(len(f.links)), rng.randint(1, 3))), alone=rng.random() < 0.5)


def test_figures_a_reader_can_check(irregular: Fabric) -> None:
    f = irregular
    states = bytes([UP]) * len(f.links)
    # t4 drained (its only link, as a switch drain): a drained switch, still reachable over it (soft drain)
    only = f.link_at("t4", 1).index
    impact = drain_impact(f, states, (only,))
    assert not impact.disconnected and not [p for p in impact.pairs if p.changed]
    assert impact.drained_switches == ("t4",)
    # the same link drained on its own: out of use, t4 is cut off (tester R1: was accepted as "1 link out"
    # and changed nothing, the link stayed in use)
    impact = drain_impact(f, states, (only,), alone=True)
    assert sorted((p.src, p.dst) for p in impact.disconnected) == sorted(
        [("t4", x) for x in ("t1", "t2", "t3")] + [(x, "t4") for x in ("t1", "t2", "t3")])
    # t3's uplink to a3 is down; draining the one to a1 takes its last usable link: t3 is cut off both ways
    down = bytearray(states)
    down[f.link_at("t3", 1).index] = DOWN
    impact = drain_impact(f, bytes(down), (f.link_at("t3", 2).index,))
    assert sorted((p.src, p.dst) for p in impact.disconnected) == sorted(
        [("t3", x) for x in ("t1", "t2", "t4")] + [(x, "t3") for x in ("t1", "t2", "t4")])
    assert all(p.lost == 1.0 for p in impact.disconnected) and impact.links_lost == pytest.approx(1 / 15)
    # t1 -> t2: two parallel links to a2 (width 2, 2 paths), then a2's single link to t2 carries it all
    (p,) = drain_impact(f, states, (), pairs=[("t1", "t2")]).pairs
    assert (p.width_before, p.paths_before, p.capacity_before) == (2, 2, pytest.approx(1.0))
    # a regular Clos: draining a spine halves the paths between pods, the ToR uplinks stay the bottleneck
    clos = clos_fabric(pods=2, spines=2, aggs_per_pod=2, tors_per_pod=2, masters=1)
    up = bytes([UP]) * len(clos.links)
    impact = drain_impact(clos, up, clos.links_of("spine-1"))
    (q,) = [x for x in impact.pairs if (x.src, x.dst) == ("tor-1-1", "tor-2-1")]
    assert (q.width_before, q.width_after, q.paths_before, q.paths_after) == (2, 2, 8, 4)
    assert q.lost == pytest.approx(0.0) and not impact.disconnected and not impact.still_relaying
    # both aggs of pod 1 drained: nothing else reaches pod 1, so its traffic stays on them (soft drain)
    both = drain_impact(clos, up, [*clos.links_of("agg-1-1"), *clos.links_of("agg-1-2")])
    assert not both.disconnected and not [x for x in both.pairs if x.changed]
    relaying = both.still_relaying
    assert set(relaying) == {"agg-1-1", "agg-1-2"}
    assert ("tor-1-1", "tor-1-2") in {(x.src, x.dst) for x in relaying["agg-1-1"]}
    assert ("tor-2-1", "tor-2-2") not in {(x.src, x.dst) for x in relaying["agg-1-1"]}


@pytest.mark.parametrize("with_slots", [False, True])
def test_external_prefix_slots_are_not_counted_as_links(with_slots: bool) -> None:
    """Tester finding 9: on a fabric with eBGP borders the LSD has one entry per link and then one per
    external prefix slot; the dry run counted the slots as UP links (wrong "N of M UP links out")."""
    from tests.test_border_ofplan import setup as border_setup

    f = border_setup()[0]
    assert f.external_slots and f.lsd_size > len(f.links)
    states = bytes([LinkState.UP]) * (f.lsd_size if with_slots else len(f.links))
    spine = next(s.name for s in f.switches if str(s.role) == "spine")
    drain = f.links_of(spine)
    imp = drain_impact(f, states, drain)
    assert imp.up_links == len(f.links)
    assert imp.links_lost == pytest.approx(len(drain) / len(f.links))
