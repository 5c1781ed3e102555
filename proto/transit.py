"""The transit policy (pure): which switches relay traffic between two others, and whether a fabric's cabling
lets every pair of switches that exchange traffic do so without a non-transit relay.

One rule for the route computation (client.routes) and the config check (proto.configtopo): a switch
*relays* when it forwards traffic between two other switches. One whose `transit` is false (by default
ToRs and borders: `routing.transit_roles`, overridable per switch) or that is drained relays only as a
last resort: leaving it costs a penalty larger than any path (`relay_costs`), so the route computation
uses a path through it only when no path through transit switches alone exists. A switch always sends
its own traffic.

The config check (`transit_gap`, `transit_warning`) asks, with every link up and nothing drained, that each
ToR originating prefixes reach every other switch originating prefixes (ToRs, borders, any other role with
`prefixes`) over a path whose switches in between all relay freely: a config whose healthy fabric needs
the last resort (a ToR cabled only to another ToR) sends a rack's traffic through another rack's uplinks by
design. It works (the route computation uses the last resort), so it is a warning, not a refusal.
Borders need not reach each other (they exchange no traffic), nor do the loopbacks need transit-free paths
(on a multi-plane Clos an agg reaches another plane's aggs only through ToRs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import TYPE_CHECKING, Any

from proto.disjoint import DisjointSets

if TYPE_CHECKING:
    from proto.fabricmodel import Switch

__all__ = ["TransitGap", "relay_costs", "transit_gap", "transit_warning"]

_ROLE_PLURAL = {"tor": "ToRs", "border": "borders", "agg": "aggs", "spine": "spines"}


def relay_costs(transit: Sequence[bool], penalty: int, drained: Iterable[int] = (),
                src: int | None = None) -> list[int]:
    """Per switch (by position), the cost added to a path for leaving it: 0 where it relays freely,
    `penalty` where it may relay only as a last resort (its `transit` is false, or it is in `drained`).
    The path's source `src` pays nothing: a switch always sends its own traffic."""
    cost = [0 if ok else penalty for ok in transit]
    for x in drained:
        cost[x] = penalty
    if src is not None:
        cost[src] = 0
    return cost


@dataclass(frozen=True, slots=True)
class TransitGap:
    """A pair that must exchange traffic and has no transit-free path (switches by position).

    `switch` is the less connected end (the one to fix), `other` the end it cannot reach. `stranded`: the
    switch relays nothing itself and none of its neighbours may relay (`relays` are then its neighbours);
    otherwise `relays` are the non-transit switches that alone join the two (empty when only chains of
    two or more of them do)."""

    switch: int
    other: int
    stranded: bool
    relays: tuple[int, ...]


def transit_gap(switches: Sequence[Switch], ends: Sequence[tuple[int, int]]) -> TransitGap | None:
    """The first pair (see the module docstring) without a transit-free path, or None. `ends`: each link's
    two switch positions. O(links) when the fabric passes, plus the pairs of distinct neighbourhoods (a
    Clos has a handful); a failure costs one more pass over the links."""
    n = len(switches)
    free = [c == 0 for c in relay_costs([bool(s.transit) for s in switches], 1)]
    sets = DisjointSets(n)
    find = sets.find

    origins = [i for i, s in enumerate(switches) if s.prefixes or s.role.value == "border"]
    is_origin = bytearray(n)
    for i in origins:
        is_origin[i] = 1
    fixed: list[tuple[int, int]] = []           # (non-free origin, free neighbour)
    direct: set[tuple[int, int]] = set()        # links between two non-free origins
    for a, b in ends:
        fa, fb = free[a], free[b]
        if fa and fb:
            sets.union(a, b)
        elif fa:
            if is_origin[b]:
                fixed.append((b, a))
        elif fb:
            if is_origin[a]:
                fixed.append((a, b))
        elif is_origin[a] and is_origin[b]:
            direct.add((a, b) if a < b else (b, a))
    # each origin's transit parts: its own, or those of its transit neighbours
    parts: dict[int, set[int]] = {i: ({find(i)} if free[i] else set()) for i in origins}
    for o, nb in fixed:
        parts[o].add(find(nb))
    if not origins:
        return None
    common = set(parts[origins[0]])
    for i in origins[1:]:
        common &= parts[i]
        if not common:
            break
    if common:                                  # one part touches every origin: every pair passes
        return None
    tor = [switches[i].role.value == "tor" and bool(switches[i].prefixes) for i in range(n)]
    groups: dict[frozenset[int], list[int]] = {}
    for i in origins:
        groups.setdefault(frozenset(parts[i]), []).append(i)
    keys = list(groups)
    tors = [[i for i in groups[k] if tor[i]] for k in keys]
    # Every pair looked at below is one that must pass, and passes only over a direct link: the loops stop at
    # the first failure or after at most one pair per such link.
    for gi, ka in enumerate(keys):
        for gj in range(gi, len(keys)):
            kb = keys[gj]
            if ka & kb:
                continue
            if gi == gj:                            # the group touching no transit switch: each pair once
                pairs = ((x, y) for x in tors[gi] for y in groups[ka] if y != x and not (tor[y] and y < x))
            else:                                   # a ToR of either side with anything of the other, once
                pairs = chain(((x, y) for x in tors[gi] for y in groups[kb]),
                              ((x, y) for x in tors[gj] for y in groups[ka] if not tor[y]))
            for x, y in pairs:
                if ((x, y) if x < y else (y, x)) not in direct:
                    return _explain(x, y, parts, free, ends, find)
    return None


def _explain(x: int, y: int, parts: dict[int, set[int]], free: list[bool], ends: Sequence[tuple[int, int]],
             find: Callable[[int], int]) -> TransitGap:
    """The gap between x and y: which one to fix, and the non-transit switches that join them."""
    touched = {x: parts[x], y: parts[y]}
    # the less connected end is the one to fix: a stranded one, else the one touching fewer parts; ties: the later
    weight = {k: (not free[k] and not v, -len(v), k) for k, v in touched.items()}
    x, y = sorted((x, y), key=lambda k: weight[k], reverse=True)
    near: dict[int, set[int]] = {x: set(), y: set()}
    neighbours: list[int] = []
    for a, b in ends:
        for u, v in ((a, b), (b, a)):
            if v == x and u not in neighbours:
                neighbours.append(u)
            if free[u] or u in (x, y):
                continue
            for end in (x, y):
                if v == end or (free[v] and find(v) in touched[end]):
                    near[end].add(u)
    stranded = not free[x] and not touched[x]
    relays = tuple(sorted(neighbours)) if stranded else tuple(sorted(near[x] & near[y]))
    return TransitGap(x, y, stranded, relays)


def transit_warning(fabric: Any) -> str | None:
    """Why the healthy `fabric` needs the route computation's last resort (see `transit_gap`): the switch to
    fix, the other end, the relays and the fix; None when it does not."""
    switches = fabric.switches
    index = {s.name: i for i, s in enumerate(switches)}
    gap = transit_gap(switches, [(index[k.a.switch], index[k.b.switch]) for k in fabric.links])
    if gap is None:
        return None
    sw, other = switches[gap.switch], switches[gap.other]
    relays = [switches[i] for i in gap.relays]
    shown = ", ".join(r.name for r in relays[:5]) + (f" and {len(relays) - 5} more" if len(relays) > 5 else "")
    roles = fabric.routing.transit_roles
    if gap.stranded and relays:
        why = f"it reaches the fabric only through {shown}, and {_no_transit(relays, roles)}"
    elif relays:
        why = f"the two are joined only through {shown}, and {_no_transit(relays, roles)}"
    else:
        why = "the two are joined only through chains of switches that do not carry transit traffic"
    fix = f"cable {sw.name} to a transit switch" + (f" or set transit: true on {relays[0].name}" if relays else "")
    return (f"{sw.role.value} {sw.name} has no path to {other.role.value} {other.name} through switches that "
            f"carry transit traffic: {why}; the route computation relays through such a switch only as a last "
            f"resort (so their traffic shares that switch's links): {fix}")


def _no_transit(relays: list[Any], roles: Sequence[str]) -> str:
    """Why these switches relay no traffic: their role is not a transit role, or their `transit: false`."""
    by_role = [r.role.value for r in relays if r.role.value not in roles]
    override = [r.name for r in relays if r.role.value in roles]
    parts = []
    if by_role:
        names = [_ROLE_PLURAL.get(role, role + "s") for role in dict.fromkeys(by_role)]
        listed = f"routing.transit_roles: {', '.join(roles)}" if roles else "routing.transit_roles is empty"
        parts.append(f"{' and '.join(names)} do not carry transit traffic ({listed})")
    if override:
        parts.append(f"{', '.join(override[:5])} {'has' if len(override) == 1 else 'have'} transit: false")
    return "; ".join(parts)
