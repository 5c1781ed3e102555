"""Shortest-path ECMP route computation for one switch, full and incremental (pure).

`RouteComputer(fabric, switch)` turns the LSD (`LinkStateDB.states()`: one byte per link index, only
UP links count) into this switch's forwarding table: destination prefix -> the set of local OpenFlow
ports whose link lies on *some* shortest path to it (ECMP; parallel links count separately).

Destinations are every other switch's originated prefixes and loopback; border switches originate
their configured external prefixes (0.0.0.0/0 when they list none). A prefix originated by several
switches (anycast, e.g. the default route of several borders) is routed towards the nearest origins:
the union of their next hops at the minimum distance — among the origins not drained, while one of those
is reachable (draining a border moves its share of the default route to the others).
The own switch's prefixes are not routed through the fabric at all (local delivery is the OpenFlow
plan's job). Unreachable prefixes are absent from the table — never black-holed.

Transit policy (valley-free routing: RFC 7938's AS-path rules, RIFT, the IS-IS overload bit, Open/R's
node overload; the rule itself is proto.transit's `relay_costs`, which the config check shares). A switch
*relays* when it forwards traffic between two other switches. A switch whose
`transit` is false (by default ToRs and borders: `routing.transit_roles` in the config, overridable
per switch) or that is *drained* (every one of its links DRAINED or DRAINED_DOWN in the LSD, what an
operator's switch drain produces) relays only as a last resort. The rule: leaving such a node (other than the source)
costs PENALTY on top of the link weight, PENALTY being more than the sum of all link weights, so paths
are ranked by (number of such relays, distance): a destination that a transit-free path reaches is
routed over the shortest transit-free paths only; one that only relays reach (e.g. on a 4-plane Clos,
an agg's loopback seen from an agg of another plane) is routed over the paths with the fewest of them
(never disconnected). The ranking is loop-free: a next hop's own cost to the destination is strictly
lower (it does not pay for relaying its own traffic). A drained switch stays reachable over its drained
links (soft drain) but relays nothing unless nothing else reaches the destination. Because the penalty
is a per-node cost on a directed graph, the full and incremental computations below apply unchanged
with `dist[u] + pen[u] + w` as the cost of a hop from u; the BFS fast path (all weights 1) expands no
non-transit node and falls back to Dial's algorithm only when it leaves a live node unreached.

Data layout, chosen for speed in pure Python:
- switches are integers (their position in `fabric.switches`), adjacency is a per-node tuple of
  `(link index, neighbour)` pairs, weights a per-link list;
- the link states are kept as a `bytes` of 0/1 (`states.translate(...)`, C speed);
- the first-hop port set of every node is a *bitmask* over this switch's local links (bit i = i-th
  local link), so the ECMP union over predecessors is one integer OR. Masks are turned into
  `frozenset`s of ports only at the end, through a cache (a Clos has few distinct sets).

- route-table keys are `IPv4Network`s with a cached hash (`_Prefix`; equal to and hashing like the
  plain network), and the table is built with C-level `dict(zip(...))`.

Full computation: BFS when every weight is 1, Dial's bucket queue (Dijkstra for small integer
weights) otherwise; both are level-synchronous, so a node's mask is the OR of the masks of all its
tight predecessors (dist[u] + w == dist[v]). The BFS stops as soon as every node that has an UP link
has been found (a per-node UP-degree count is maintained), which skips scanning the last level.
Full and single-link update costs on the Jupiter preset: BENCHMARKS.md (`bench_routes`).

Incremental update (`update`): we keep the shortest-path DAG implicitly (dist + mask per node).
1. links that went down and were tight (on the DAG) make their far end a candidate; in increasing
   distance order, a candidate with no remaining tight predecessor outside the orphan set becomes an
   orphan and its tight successors become candidates (Ramalingam–Reps). Only orphans can get longer.
2. orphans get an upper bound from their non-orphan neighbours, links that came up lower their far
   end; a Dijkstra seeded with exactly these nodes settles every distance that decreases.
3. masks are recomputed, in distance order, for the nodes whose distance changed, their neighbours
   and the endpoints of the changed links; a node whose mask changes pushes its tight successors.
   Propagation stops wherever a mask does not change, which in a Clos is almost immediately.
4. only the prefixes originated by nodes whose distance or mask changed are re-evaluated.
A change on one of the own links of a switch with few links (every mask may lose or gain that bit),
a large batch, or a region growing past a budget falls back to the full computation plus a table
diff — cheaper than a whole-graph incremental pass. If the `changed` hint misses links, the exact set
is found by a C-speed diff of the state strings, so the result never depends on the hint.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from types import MappingProxyType
from typing import TYPE_CHECKING

from proto.transit import relay_costs

if TYPE_CHECKING:  # pragma: no cover - typing only
    from proto.config import Fabric

#: LinkState.UP (proto.lsd); kept as a literal so this pure module does not depend on the wire code.
_UP = 1
#: bytes.translate table: UP -> 1, anything else (DOWN, DRAINED, unknown) -> 0.
_UP_TABLE = bytes(1 if i == _UP else 0 for i in range(256))
_INF = 1 << 62
_NONZERO = re.compile(rb"[^\x00]")
_DRAINED = re.compile(rb"[\x02\x03]")  # LinkState.DRAINED, DRAINED_DOWN: part of a drain
_DRAINED_BYTE = b"\x02"                 # LinkState.DRAINED: a drained link that works
_DRAINED_DOWN = 3                       # LinkState.DRAINED_DOWN: drained and failed or drained alone, never used
DEFAULT_ROUTE = IPv4Network("0.0.0.0/0")

Routes = dict[IPv4Network, frozenset[int]]


class _Prefix(IPv4Network):
    """An IPv4Network whose hash is computed once.

    `IPv4Network.__hash__` is pure Python (~1 µs); building a 60k-entry route table hashes every key,
    which alone cost ~70 ms of the 200 ms budget. Equal to, and hashing like, the plain IPv4Network.
    """

    __slots__ = ("_hash",)

    def __init__(self, address: object, strict: bool = True) -> None:
        super().__init__(address, strict)  # type: ignore[arg-type]
        self._hash = super().__hash__()

    def __hash__(self) -> int:
        return self._hash

    @classmethod
    def of(cls, net: IPv4Network) -> _Prefix:
        """Wrap a network (from the integer form: no string parsing, ~10x faster than from text)."""
        return net if type(net) is cls else cls((int(net.network_address), net.prefixlen))

    def __repr__(self) -> str:
        return f"IPv4Network({str(self)!r})"


class RouteError(ValueError):
    """Bad input to the route computer (unknown switch, states of the wrong length, ...)."""


@dataclass(frozen=True, slots=True)
class RouteDelta:
    """The difference between two route tables.

    changed: prefix -> its new next-hop port set (new or different prefixes);
    removed: prefixes that became unreachable (to be withdrawn, never black-holed).
    """

    changed: Mapping[IPv4Network, frozenset[int]] = field(default_factory=dict)
    removed: frozenset[IPv4Network] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.changed) or bool(self.removed)

    @staticmethod
    def between(old: Mapping[IPv4Network, frozenset[int]], new: Mapping[IPv4Network, frozenset[int]]) -> RouteDelta:
        """The delta that turns route table `old` into `new`."""
        changed = {p: ports for p, ports in new.items() if old.get(p) != ports}
        removed = frozenset(p for p in old if p not in new)
        return RouteDelta(changed, removed)


class RouteComputer:
    """Routes of one switch; `compute` once, then `update` per LSD delta (see module docstring).

    Not thread-safe; holds the last computed state (distances, masks, routes) between calls.
    """

    #: Incremental passes that touch more than this fraction of the nodes give up and recompute.
    BUDGET_FRACTION = 0.1
    BUDGET_MIN = 64
    #: On a switch with at most this many links, one of them changing changes (nearly) every route:
    #: go straight to the full computation (on a ToR, an uplink carries 1/4 of everything).
    FEW_LOCAL_LINKS = 8
    #: Batches with more changed links than this go straight to a full computation.
    MAX_INCREMENTAL_LINKS = 256

    def __init__(self, fabric: Fabric, switch_name: str) -> None:
        index = {sw.name: i for i, sw in enumerate(fabric.switches)}
        if switch_name not in index:
            raise RouteError(f"route computer: switch {switch_name!r} is not in fabric {fabric.name!r}")
        self.fabric = fabric
        self.switch_name = switch_name
        self.src = src = index[switch_name]
        n = len(fabric.switches)
        self.n_nodes = n
        self.n_links = len(fabric.links)
        #: LSD entries: the links, then the borders' external slots (issue #13, `Fabric.external_slots`)
        self.n_entries = fabric.lsd_size

        adj: list[list[tuple[int, int]]] = [[] for _ in range(n)]
        ends: list[tuple[int, int, int]] = []
        local_bit: dict[int, int] = {}  # link index -> bit mask (only links of this switch)
        bit_ports: list[int] = []  # bit position -> local OpenFlow port
        uniform = True
        for pos, link in enumerate(fabric.links):
            if link.index != pos:
                raise RouteError(f"fabric {fabric.name!r}: link {link.name} has index {link.index} at position {pos}")
            a, b, w = index[link.a.switch], index[link.b.switch], link.weight
            if w < 1:
                raise RouteError(f"fabric {fabric.name!r}: link {link.name}: weight {w} must be >= 1")
            ends.append((a, b, w))
            if a == b:  # a loop cable never lies on a shortest path
                continue
            uniform = uniform and w == 1
            adj[a].append((pos, b))
            adj[b].append((pos, a))
            if src in (a, b):
                local_bit[pos] = 1 << len(bit_ports)
                bit_ports.append(link.a.port if a == src else link.b.port)
        self._adj = [tuple(x) for x in adj]
        self._ends = ends
        self._wt = [w for _a, _b, w in ends]
        self._degree = [len(x) for x in adj]
        # Transit policy: leaving a node that may not relay costs PENALTY, more than any path without
        # one, so paths are ranked (relays by non-transit nodes, distance) - see the module docstring.
        self.penalty = sum(self._wt) + 1
        self._transit = [bool(sw.transit) for sw in fabric.switches]
        self._drained: frozenset[int] = frozenset()
        self._pen = self._penalties(self._drained)
        self._local_bit = local_bit
        self._bit_ports = bit_ports
        self.uniform_weights = uniform

        # prefix -> origin nodes; prefixes this switch originates are never routed through the fabric.
        own: set[IPv4Network] = set()
        origins: dict[IPv4Network, list[int]] = {}
        for i, sw in enumerate(fabric.switches):
            dynamic = getattr(sw, "bgp", None) is not None    # its external prefixes follow its LSD slots
            pfx = [] if dynamic else list(sw.prefixes)
            if sw.loopback is not None:
                pfx.append(sw.loopback)
            if str(sw.role) == "border" and not sw.prefixes and not dynamic:
                pfx.append(DEFAULT_ROUTE)  # a border that lists no external prefix originates the default
            for p in dict.fromkeys(map(_Prefix.of, pfx)):
                if i == src:
                    own.add(p)
                else:
                    origins.setdefault(p, []).append(i)
        # Dynamic external prefixes (issue #13): prefix -> ((LSD slot or None for a static origin, node), ...).
        # Routed towards the nearest origins whose slot is UP; a border's own slots are left out (it reaches
        # the outside itself while it has the prefix: the border runtime's job, client.border).
        dyn: dict[IPv4Network, list[tuple[int | None, int]]] = {}
        for k, (name, prefix) in enumerate(getattr(fabric, "external_slots", ())):
            node = index[name]
            entry = dyn.setdefault(_Prefix.of(prefix), [])
            if node != src:
                entry.append((self.n_links + k, node))
        for p, entry in dyn.items():
            entry.extend((None, o) for o in origins.pop(p, ()))
        self._dyn: dict[IPv4Network, tuple[tuple[int | None, int], ...]] = {
            p: tuple(e) for p, e in dyn.items() if p not in own}
        self._slots = bytes(self.n_entries - self.n_links)
        self._own_prefixes = frozenset(own)
        self._prefix_origins: dict[IPv4Network, tuple[int, ...]] = {}
        self._single: list[tuple[IPv4Network, int]] = []
        self._multi: list[tuple[IPv4Network, tuple[int, ...]]] = []
        node_prefixes: list[list[IPv4Network]] = [[] for _ in range(n)]
        for p, org in origins.items():
            if p in own:
                continue
            self._prefix_origins[p] = tuple(org)
            if len(org) == 1:
                self._single.append((p, org[0]))
            else:
                self._multi.append((p, tuple(org)))
            for i in org:
                node_prefixes[i].append(p)
        self._node_prefixes = [tuple(x) for x in node_prefixes]
        self._single_prefix = [p for p, _o in self._single]
        self._single_origin = [o for _p, o in self._single]

        self._mask_sets: dict[int, frozenset[int]] = {}
        self._updeg: list[int] = []
        self._n_live = 0
        self._up: bytes | None = None
        self._dist: list[int] = []
        self._mask: list[int] = []
        self._routes: Routes = {}
        self.last_was_full = True  # for tests/benchmarks: did the last call fall back to a full pass?

    # ----------------------------------------------------------------------------------------- public

    @property
    def own_prefixes(self) -> frozenset[IPv4Network]:
        """Prefixes originated by this switch itself (not in the route table)."""
        return self._own_prefixes

    @property
    def routes(self) -> Mapping[IPv4Network, frozenset[int]]:
        """The current route table (read-only view; empty before the first computation)."""
        return MappingProxyType(self._routes)

    def ports_of_mask(self, mask: int) -> frozenset[int]:
        """The local ports of a first-hop bitmask (cached: a Clos has few distinct sets)."""
        s = self._mask_sets.get(mask)
        if s is None:
            ports = self._bit_ports
            s = frozenset(ports[i] for i in range(mask.bit_length()) if mask >> i & 1)
            self._mask_sets[mask] = s
        return s

    @property
    def drained_switches(self) -> frozenset[str]:
        """Switches the last LSD showed drained (every link DRAINED or DRAINED_DOWN): reachable over the
        working ones, never relays."""
        names = self.fabric.switches
        return frozenset(names[i].name for i in self._drained)

    def link_usable(self, states: bytes, index: int) -> bool:
        """Whether routing may use link `index` under `states`: UP, or DRAINED with an end whose every
        link is DRAINED or DRAINED_DOWN (a drained switch stays reachable: soft drain). O(degree of its two
        ends)."""
        state = states[index]
        if state == _UP:
            return True
        if state != _DRAINED_BYTE[0]:
            return False
        a, b, _w = self._ends[index]
        return any(all(states[li] in (state, _DRAINED_DOWN) for li, _v in self._adj[x]) for x in (a, b))

    def relays(self, switch: str) -> bool:
        """Whether `switch` relays traffic between two other switches without a penalty (policy + drain)."""
        i = next(k for k, sw in enumerate(self.fabric.switches) if sw.name == switch)
        return self._pen[i] == 0 or i == self.src

    def compute(self, states: bytes) -> dict[IPv4Network, frozenset[int]]:
        """Full computation from all link states; returns a new dict prefix -> next-hop ports."""
        up, drained = self._check_states(states)
        self._set_drained(drained)
        if self._up is None:
            self._init_degrees(up)
        else:
            self._move_degrees(*_changed_links(self._up, up))
        self._full(up)
        self._route_dynamic()
        self.last_was_full = True
        return dict(self._routes)

    def update(self, states: bytes, changed: Iterable[int]) -> RouteDelta:
        """Bring the routes up to `states`, given the LSD entries that changed since the last call.

        Returns the route delta (relative to the previous `compute`/`update` result). `changed` is a
        hint for speed: if the states differ from the last ones anywhere else too (a caller that lost
        track), the exact set of changed links is found by a C-speed diff, so the result stays exact.
        Before any computation this is a full computation and every route is "changed". External slots
        (entries after the links) only re-evaluate the dynamic prefixes (a handful)."""
        if not self._dyn:
            return self._update_links(states, changed)
        changed = set(changed)
        for li in changed:
            if not isinstance(li, int) or not 0 <= li < self.n_entries:
                raise RouteError(f"route update: LSD index {li!r} out of range 0..{self.n_entries - 1}")
        routes_before = self._routes
        before = {p: routes_before.get(p) for p in self._dyn}
        delta = self._update_links(states, [li for li in changed if li < self.n_links])
        self._route_dynamic()
        out_changed = {p: v for p, v in delta.changed.items() if p not in self._dyn}
        out_removed = {p for p in delta.removed if p not in self._dyn}
        for p, old in before.items():
            new = self._routes.get(p)
            if new != old:
                if new is None:
                    out_removed.add(p)
                else:
                    out_changed[p] = new
        return RouteDelta(out_changed, frozenset(out_removed))

    def _route_dynamic(self) -> None:
        """(Re)set the routes of the dynamic external prefixes from the distances and the slot states."""
        if not self._dyn:
            return
        slots, base, routes = self._slots, self.n_links, self._routes
        for p, entry in self._dyn.items():
            live = tuple(o for slot, o in entry if slot is None or slots[slot - base] == _UP)
            m = self._multi_mask(live) if live and self._dist else 0
            if m:
                routes[p] = self.ports_of_mask(m)
            else:
                routes.pop(p, None)

    def _update_links(self, states: bytes, changed: Iterable[int]) -> RouteDelta:
        """`update` for the links alone (all of it for a fabric without external slots)."""
        up, drained = self._check_states(states)
        changed = set(changed)
        n_links = self.n_links
        for li in changed:
            if not isinstance(li, int) or not 0 <= li < n_links:
                raise RouteError(f"route update: link index {li!r} out of range 0..{n_links - 1}")
        old_up = self._up
        if drained != self._drained:  # a switch (un)drained: the relay policy of a node changed
            self._set_drained(drained)
            if old_up is not None:
                self._move_degrees(*_changed_links(old_up, up))
                return self._full_with_delta(up)
        if old_up is None:
            self._init_degrees(up)
            self._full(up)
            self.last_was_full = True
            return RouteDelta(dict(self._routes), frozenset())
        if up == old_up:
            self.last_was_full = False
            return RouteDelta()
        went_down: list[int] = []
        went_up: list[int] = []
        patched = bytearray(old_up)
        for li in changed:
            if up[li] != old_up[li]:
                (went_up if up[li] else went_down).append(li)
                patched[li] = up[li]
        if bytes(patched) != up:  # the hint missed some links: find them all (C-speed diff)
            went_down, went_up = _changed_links(old_up, up)
        self._move_degrees(went_down, went_up)
        local = self._local_bit
        if len(went_down) + len(went_up) > self.MAX_INCREMENTAL_LINKS or (
            len(local) <= self.FEW_LOCAL_LINKS and (any(li in local for li in went_down) or any(li in local for li in went_up))
        ):
            return self._full_with_delta(up)
        self._up = up
        delta = self._incremental(up, went_down, went_up)
        if delta is None:  # region grew past the budget
            return self._full_with_delta(up)
        self.last_was_full = False
        return delta

    # ---------------------------------------------------------------------------------------- private

    def _check_states(self, states: bytes) -> tuple[bytes, frozenset[int]]:
        """The 0/1 usability string (UP links, plus the DRAINED links of a drained switch: soft drain; never
        a DRAINED_DOWN one) and the drained nodes."""
        if not isinstance(states, bytes | bytearray | memoryview):
            raise RouteError(f"route states: expected bytes, got {type(states).__name__}")
        if len(states) != self.n_entries:
            slots = self.n_entries - self.n_links
            raise RouteError(f"route states: {len(states)} link states for a fabric of {self.n_links} links"
                             + (f" and {slots} external slots" if slots else ""))
        states = bytes(states)
        if self.n_entries != self.n_links:
            self._slots = states[self.n_links:]
            states = states[:self.n_links]
        up = states.translate(_UP_TABLE)
        drained = self._drained_in(states)
        if drained:
            patched = bytearray(up)
            working = _DRAINED_BYTE[0]
            for i in drained:
                for li, _v in self._adj[i]:
                    if states[li] == working:
                        patched[li] = 1
            up = bytes(patched)
        return up, drained

    def _drained_in(self, states: bytes) -> frozenset[int]:
        """Nodes whose every link is DRAINED or DRAINED_DOWN (what an operator's switch drain produces)."""
        if _DRAINED_BYTE not in states:
            return frozenset()
        count: dict[int, int] = {}
        ends = self._ends
        for m in _DRAINED.finditer(states):
            a, b, _w = ends[m.start()]
            if a != b:
                count[a] = count.get(a, 0) + 1
                count[b] = count.get(b, 0) + 1
        deg = self._degree
        return frozenset(x for x, c in count.items() if c == deg[x])

    def _penalties(self, drained: frozenset[int]) -> list[int]:
        return relay_costs(self._transit, self.penalty, drained, self.src)  # the rule the config check uses too

    def _set_drained(self, drained: frozenset[int]) -> None:
        if drained != self._drained:
            self._drained = drained
            self._pen = self._penalties(drained)

    def _init_degrees(self, up: bytes) -> None:
        """Per-node count of UP links, and how many nodes have at least one (see `_full`)."""
        deg = [0] * self.n_nodes
        ends = self._ends
        for li in _NONZERO.finditer(up):
            a, b, _w = ends[li.start()]
            if a != b:
                deg[a] += 1
                deg[b] += 1
        self._updeg = deg
        self._n_live = self.n_nodes - deg.count(0)

    def _move_degrees(self, went_down: Iterable[int], went_up: Iterable[int]) -> None:
        deg, ends = self._updeg, self._ends
        for li in went_down:
            a, b, _w = ends[li]
            if a != b:
                for x in (a, b):
                    deg[x] -= 1
                    if deg[x] == 0:
                        self._n_live -= 1
        for li in went_up:
            a, b, _w = ends[li]
            if a != b:
                for x in (a, b):
                    deg[x] += 1
                    if deg[x] == 1:
                        self._n_live += 1

    def _full_with_delta(self, up: bytes) -> RouteDelta:
        old = self._routes
        self._full(up)
        self.last_was_full = True
        return RouteDelta.between(old, self._routes)

    def _full(self, up: bytes) -> None:
        n = self.n_nodes
        dist = [_INF] * n
        mask = [0] * n
        src = self.src
        dist[src] = 0
        adj = self._adj
        local = self._local_bit
        pen = self._pen
        found = 0
        if self.uniform_weights:
            frontier = []
            for li, v in adj[src]:
                if up[li]:
                    if dist[v] == _INF:
                        dist[v] = 1
                        frontier.append(v)
                    mask[v] |= local[li]
            d = 1
            inf = _INF
            found = 1 + len(frontier)
            live = self._n_live
            while frontier and found < live:
                # (once every node with an UP link is found, the frontier can reach nothing new: in a Clos
                # this skips the last level, the ~30k far ToRs and their uplinks, ~45% of the edges)
                d1 = d + 1
                nxt = []
                push = nxt.append
                for u in frontier:
                    if pen[u]:
                        continue  # found, but relays nothing (transit policy); see the Dial pass below
                    mu = mask[u]
                    for li, v in adj[u]:
                        if up[li]:
                            dv = dist[v]
                            if dv == inf:
                                dist[v] = d1
                                mask[v] = mu
                                push(v)
                            elif dv == d1:
                                mv = mask[v]
                                if mv is not mu:  # siblings share their parent's mask object: skip the OR
                                    mask[v] = mv | mu
                found += len(nxt)
                frontier = nxt
                d = d1
        if not self.uniform_weights or (found < self._n_live and any(pen)):
            # Weighted links, or a node that only a non-transit relay reaches (the last resort): Dial.
            dist = [_INF] * n
            mask = [0] * n
            dist[src] = 0
            # Dial's algorithm: buckets per distance, a heap of the distinct bucket keys.
            buckets: dict[int, list[int]] = {}
            keys: list[int] = []
            wt = self._wt
            for li, v in adj[src]:
                if up[li]:
                    w = wt[li]
                    if w < dist[v]:
                        dist[v] = w
                        mask[v] = local[li]
                        if w not in buckets:
                            buckets[w] = []
                            heapq.heappush(keys, w)
                        buckets[w].append(v)
                    elif w == dist[v]:
                        mask[v] |= local[li]
            while keys:
                d = heapq.heappop(keys)
                for u in buckets.pop(d):
                    if dist[u] != d:
                        continue  # stale entry: u was later found closer
                    mu = mask[u]
                    pu = d + pen[u]
                    for li, v in adj[u]:
                        if up[li]:
                            nd = pu + wt[li]
                            dv = dist[v]
                            if nd < dv:
                                dist[v] = nd
                                mask[v] = mu
                                b = buckets.get(nd)
                                if b is None:
                                    buckets[nd] = [v]
                                    heapq.heappush(keys, nd)
                                else:
                                    b.append(v)
                            elif nd == dv:
                                mask[v] |= mu
        self._up = up
        self._dist = dist
        self._mask = mask
        # The table is built with C-level map/zip (a Python loop over 60k prefixes costs ~20 ms).
        cache = self._mask_sets
        masks = list(map(mask.__getitem__, self._single_origin))
        for m in set(masks).difference(cache):
            self.ports_of_mask(m)
        routes: Routes = dict(zip(self._single_prefix, map(cache.__getitem__, masks), strict=True))
        if dist.count(_INF):  # some switches are unreachable: withdraw their prefixes
            origins = self._prefix_origins
            for x in [i for i, d in enumerate(dist) if d == _INF]:
                for p in self._node_prefixes[x]:
                    if len(origins[p]) == 1:
                        del routes[p]
        sets = self.ports_of_mask
        for p, org in self._multi:
            m = self._multi_mask(org)
            if m:
                routes[p] = sets(m)
        self._routes = routes

    def _multi_mask(self, org: tuple[int, ...]) -> int:
        """Next hops of a prefix several switches originate: towards the nearest origins — the nearest of
        those not drained while one is reachable (a drained border's default route must move to the other
        borders: soft drain keeps a drained switch reachable, not preferred)."""
        dist, mask, drained = self._dist, self._mask, self._drained
        if drained:
            live = tuple(o for o in org if o not in drained and dist[o] != _INF)
            if live:
                org = live
        best = min(dist[o] for o in org)
        if best == _INF:
            return 0
        m = 0
        for o in org:
            if dist[o] == best:
                m |= mask[o]
        return m

    def _incremental(self, up: bytes, went_down: list[int], went_up: list[int]) -> RouteDelta | None:
        dist, mask, adj, ends, src = self._dist, self._mask, self._adj, self._ends, self.src
        local, wt, pen = self._local_bit, self._wt, self._pen
        budget = max(self.BUDGET_MIN, int(self.n_nodes * self.BUDGET_FRACTION))
        heappush, heappop = heapq.heappush, heapq.heappop

        # 1. orphans: nodes that lost every tight predecessor (their distance can only grow).
        cand: list[tuple[int, int]] = []
        for li in went_down:
            a, b, w = ends[li]
            if a == b:
                continue
            da, db = dist[a], dist[b]
            if da != _INF and da + pen[a] + w == db:
                heappush(cand, (db, b))
            if db != _INF and db + pen[b] + w == da:
                heappush(cand, (da, a))
        orphan: set[int] = set()
        seen: set[int] = set()
        while cand:
            d, x = heappop(cand)
            if x in seen or x == src:
                continue
            seen.add(x)
            supported = False
            for li, y in adj[x]:
                if up[li] and y not in orphan and dist[y] + pen[y] + wt[li] == d:
                    supported = True
                    break
            if supported:
                continue
            orphan.add(x)
            if len(orphan) > budget:
                return None
            dx = d + pen[x]
            for li, z in adj[x]:
                if up[li] and dx + wt[li] == dist[z]:
                    heappush(cand, (dist[z], z))

        # 2. new distances: orphans from their non-orphan neighbours, far ends of links that came up.
        old_dist = {x: dist[x] for x in orphan}
        for x in orphan:
            dist[x] = _INF
        heap: list[tuple[int, int]] = []
        for x in orphan:
            best = _INF
            for li, y in adj[x]:
                if up[li] and y not in orphan:
                    dy = dist[y] + pen[y] + wt[li]
                    if dy < best:
                        best = dy
            if best < _INF:
                dist[x] = best
                heap.append((best, x))
        heapq.heapify(heap)
        for li in went_up:
            a, b, w = ends[li]
            if a == b:
                continue
            for u, v in ((a, b), (b, a)):
                du = dist[u]
                if du != _INF and du + pen[u] + w < dist[v]:
                    if v not in old_dist:
                        old_dist[v] = dist[v]
                    dist[v] = du + pen[u] + w
                    heappush(heap, (dist[v], v))
        while heap:
            d, x = heappop(heap)
            if d != dist[x]:
                continue
            dx = d + pen[x]
            for li, y in adj[x]:
                if up[li] and dx + wt[li] < dist[y]:
                    if y not in old_dist:
                        old_dist[y] = dist[y]
                        if len(old_dist) > budget:
                            return None
                    dist[y] = dx + wt[li]
                    heappush(heap, (dist[y], y))
        dist_changed = [x for x, od in old_dist.items() if dist[x] != od]

        # 3. masks, in distance order, from the nodes whose tight predecessor set may have changed.
        queued: set[int] = set()
        work: list[tuple[int, int]] = []

        def enqueue(x: int) -> None:
            if x not in queued and x != src and dist[x] != _INF:
                queued.add(x)
                heappush(work, (dist[x], x))

        touched: set[int] = set(dist_changed)
        for li in went_down + went_up:
            a, b, _w = ends[li]
            enqueue(a)
            enqueue(b)
        for x in dist_changed:
            if dist[x] == _INF:
                mask[x] = 0
            enqueue(x)
            for li, y in adj[x]:
                if up[li]:
                    enqueue(y)
        while work:
            d, x = heappop(work)
            m = 0
            for li, y in adj[x]:
                if up[li] and dist[y] + pen[y] + wt[li] == d:
                    m |= local[li] if y == src else mask[y]
            if m != mask[x]:
                mask[x] = m
                touched.add(x)
                if len(touched) > budget:
                    return None
                dx = d + pen[x]
                for li, z in adj[x]:
                    if up[li] and dx + wt[li] == dist[z]:
                        enqueue(z)

        # 4. routes of the prefixes originated by touched nodes.
        routes = self._routes
        changed: dict[IPv4Network, frozenset[int]] = {}
        removed: set[IPv4Network] = set()
        sets = self.ports_of_mask
        node_prefixes, origins = self._node_prefixes, self._prefix_origins
        for x in touched:
            for p in node_prefixes[x]:
                org = origins[p]
                if len(org) == 1:
                    m = mask[x] if dist[x] != _INF else 0
                else:
                    m = self._multi_mask(org)
                if m:
                    ports = sets(m)
                    if routes.get(p) != ports:
                        routes[p] = ports
                        changed[p] = ports
                elif p in routes:
                    del routes[p]
                    removed.add(p)
        return RouteDelta(changed, frozenset(removed))


def _changed_links(old: bytes, new: bytes) -> tuple[list[int], list[int]]:
    """Indices of the links that went down / came up between two 0/1 state strings (C-speed XOR + scan)."""
    x = int.from_bytes(old, "little") ^ int.from_bytes(new, "little")
    if not x:
        return [], []
    idx = [m.start() for m in _NONZERO.finditer(x.to_bytes(len(old), "little"))]
    return [i for i in idx if not new[i]], [i for i in idx if new[i]]
