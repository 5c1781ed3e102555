"""What a drain would cost, before anything changes (pure): per ToR pair, ECMP width, paths, capacity.

Input: the fabric, the LSD's link states (one byte per link; only UP links carry traffic) and the links
the drain would take out. Every switch's route table is computed with the switches' own code
(`client.routes.RouteComputer`) for the LSD as it is and as it would be, and for each ordered pair of
ToRs (source ToR, destination ToR's first prefix, or its loopback) we report:

- `width`: the ECMP width at the source ToR (next-hop ports for the destination's prefix);
- `paths`: how many distinct shortest paths the switches' next hops make together;
- `capacity`: the most traffic the pair can send, in units of one link, when every switch splits it
  equally over its next hops (as the select groups' equal-weight buckets do): 1 / the largest share of
  the pair's traffic that any one link carries. All links count as equal (the config has no speeds);
- `lost`: 1 - capacity after / capacity before; a pair that loses its last path is `disconnected`;
- `via_drained`: the drained switches the pair's traffic still crosses after the drain.

A switch drain is soft (client.routes' transit policy: a switch whose every link is DRAINED stays
reachable and relays traffic between others only when nothing else reaches the destination), so
draining a switch that is some pair's only way leaves that traffic on it: `via_drained` says so, and
the CLI warns. A link drain takes its link out of use (DRAINED_DOWN, never a way to a drained switch),
so one that takes a pair's last usable link disconnects it.

A pair's capacity is its own, alone in the fabric: a spine drain in a Clos whose ToR uplinks are the
bottleneck halves the paths but costs a single pair nothing; the fabric-wide figure is `links_lost`
(the share of UP links the drain takes out).

Cost: two route computations per switch (`len(fabric.switches)` * ~1 ms for a few hundred switches;
the Jupiter preset would take minutes), then one pass over the next-hop DAG per pair.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from ipaddress import IPv4Network
from typing import Any

from client.routes import RouteComputer
from proto.config import Fabric

_UP = 1            # proto.lsd.LinkState.UP
_DOWN, _DRAINED, _DRAINED_DOWN = 0, 2, 3        # proto.lsd.LinkState


@dataclass(frozen=True, slots=True)
class PairImpact:
    src: str
    dst: str
    width_before: int
    width_after: int
    paths_before: int
    paths_after: int
    capacity_before: float        # in links
    capacity_after: float
    via_drained: tuple[str, ...] = ()   # drained switches still relaying this pair's traffic (after)

    @property
    def lost(self) -> float:
        """Share of the pair's capacity the drain takes (0..1)."""
        if self.capacity_before <= 0:
            return 0.0
        return max(0.0, 1.0 - self.capacity_after / self.capacity_before)

    @property
    def disconnected(self) -> bool:
        return self.paths_before > 0 and self.paths_after == 0

    @property
    def changed(self) -> bool:
        return (self.width_before, self.paths_before, self.capacity_before) != (
            self.width_after, self.paths_after, self.capacity_after)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "via_drained": list(self.via_drained), "lost": round(self.lost, 6),
                "disconnected": self.disconnected}


@dataclass(frozen=True, slots=True)
class Impact:
    drained: tuple[int, ...]          # link indices the drain takes out
    newly_out: tuple[int, ...]        # of those, the ones that are UP now
    up_links: int                     # UP links before
    pairs: tuple[PairImpact, ...]
    drained_switches: tuple[str, ...] = ()    # switches drained after (every link DRAINED)

    @property
    def still_relaying(self) -> dict[str, list[PairImpact]]:
        """Drained switch -> the pairs whose traffic still crosses it (its drain could not move it)."""
        out: dict[str, list[PairImpact]] = {}
        for p in self.pairs:
            for sw in p.via_drained:
                out.setdefault(sw, []).append(p)
        return out

    @property
    def disconnected(self) -> list[PairImpact]:
        return [p for p in self.pairs if p.disconnected]

    @property
    def links_lost(self) -> float:
        return len(self.newly_out) / self.up_links if self.up_links else 0.0

    @property
    def worst(self) -> PairImpact | None:
        return max(self.pairs, key=lambda p: p.lost, default=None)


def tor_destinations(fabric: Fabric) -> dict[str, IPv4Network]:
    """ToR name -> the prefix that stands for it (its first prefix, else its loopback)."""
    out = {}
    for sw in fabric.switches:
        if str(sw.role) != "tor":
            continue
        p = sw.prefixes[0] if sw.prefixes else sw.loopback
        if p is not None:
            out[sw.name] = p
    return out


def _tables(fabric: Fabric, states: bytes) -> tuple[dict[str, Mapping[IPv4Network, frozenset[int]]], frozenset[str]]:
    """Every switch's route table for `states`, and the drained switches (as the route code sees them)."""
    tables, drained = {}, frozenset()
    for sw in fabric.switches:
        rc = RouteComputer(fabric, sw.name)
        tables[sw.name] = rc.compute(states)
        drained = rc.drained_switches
    return tables, drained


class _Towards:
    """Every switch's next hops towards one destination prefix, in topological order (sources first)."""

    def __init__(self, fabric: Fabric, tables: Mapping[str, Mapping[IPv4Network, frozenset[int]]],
                 prefix: IPv4Network, dst: str) -> None:
        self.dst = dst
        succ: dict[str, list[tuple[int, str]]] = {}
        indeg: dict[str, int] = {}
        for u, table in tables.items():
            hops = []
            for port in sorted(table.get(prefix, ())):
                link = fabric.link_at(u, port)
                peer = fabric.peer_of(u, port)
                if link is not None and peer is not None:
                    hops.append((link.index, peer.switch))
                    indeg[peer.switch] = indeg.get(peer.switch, 0) + 1
            succ[u] = hops
        order, queue = [], [u for u in succ if indeg.get(u, 0) == 0]
        while queue:                      # Kahn: the next hops of shortest paths form a DAG
            u = queue.pop()
            order.append(u)
            for _li, v in succ[u]:
                indeg[v] -= 1
                if indeg[v] == 0:
                    queue.append(v)
        if len(order) != len(succ):
            raise ValueError(f"next hops towards {prefix} form a loop")
        self.succ = succ
        self.order = order
        self.pos = {u: i for i, u in enumerate(order)}

    def figures(self, src: str) -> tuple[int, int, float, set[str]]:
        """(width, paths, capacity, relays) from `src`: push its traffic (1.0) down the DAG, split equally;
        relays = the switches other than src and the destination that carry some of it."""
        width = len(self.succ[src])
        if not width:
            return 0, 0, 0.0, set()
        share = {src: 1.0}
        count = {src: 1}
        load: dict[int, float] = {}
        for u in self.order[self.pos[src]:]:
            x = share.get(u)
            if x is None:
                continue                  # not reached from src
            hops = self.succ[u]
            if not hops:
                continue                  # the destination (or a switch without a route: traffic lost)
            part, n = x / len(hops), count[u]
            for li, v in hops:
                load[li] = load.get(li, 0.0) + part
                share[v] = share.get(v, 0.0) + part
                count[v] = count.get(v, 0) + n
        paths = count.get(self.dst, 0)
        relays = set(share) - {src, self.dst}
        if not paths:
            return width, 0, 0.0, relays
        return width, paths, 1.0 / max(load.values()), relays


def drain_impact(fabric: Fabric, states: bytes, drain: Iterable[int],
                 pairs: Iterable[tuple[str, str]] | None = None, alone: bool = False) -> Impact:
    """The impact of draining the links `drain` on top of the LSD `states` (see module docstring).
    `pairs`: the (source ToR, destination ToR) pairs to report; default every ordered pair. `alone`: a
    link drain (its link out of use, DRAINED_DOWN), not a switch drain (DRAINED: soft)."""
    drain = tuple(sorted(set(drain)))
    if len(states) == len(fabric.links) and fabric.external_slots:
        # eBGP borders' external slots (issue #13) do not change paths between ToRs: take them as provided
        states = bytes(states) + bytes([1]) * len(fabric.external_slots)
    if len(states) != fabric.lsd_size:
        raise ValueError(f"{len(states)} link states for a fabric of {len(fabric.links)} links")
    after = bytearray(states)
    for i in drain:
        # as the master derives it (controller.linkstate): a link drained on its own, or drained and down,
        # is DRAINED_DOWN (never used)
        after[i] = _DRAINED_DOWN if alone or states[i] in (_DOWN, _DRAINED_DOWN) else _DRAINED
    before_t, _ = _tables(fabric, bytes(states))
    after_t, drained_after = _tables(fabric, bytes(after))
    dests = tor_destinations(fabric)
    if pairs is None:
        pairs = [(a, b) for a in dests for b in dests if a != b]
    pairs = list(pairs)
    towards: dict[str, tuple[_Towards, _Towards]] = {}
    out = []
    for a, b in pairs:
        if b not in towards:              # one DAG per destination and state, shared by every source
            towards[b] = (_Towards(fabric, before_t, dests[b], b), _Towards(fabric, after_t, dests[b], b))
        wb, pb, cb, _ = towards[b][0].figures(a)
        wa, pa, ca, relays = towards[b][1].figures(a)
        out.append(PairImpact(a, b, wb, wa, pb, pa, cb, ca, tuple(sorted(relays & drained_after))))
    newly = tuple(i for i in drain if states[i] == _UP)
    # links only: the external prefix slots after them are not links (tester finding 9)
    up_links = sum(1 for s in states[:len(fabric.links)] if s == _UP)
    return Impact(drain, newly, up_links, tuple(out), tuple(sorted(drained_after)))
