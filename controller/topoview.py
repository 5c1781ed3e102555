"""What the topology page draws (pure): a compact form of the fabric, its groups, and each link's display state.

- `build_view(fabric)` → `FabricView`: switches and links as parallel arrays (the JSON the page loads once
  per fabric digest), plus the **groups** the page aggregates a large fabric by:
  * ``pod``: a connected set of ToRs and aggregation switches (the ToR–agg links of a 3-tier Clos); in a
    two-tier fabric every leaf is alone, so leaves are chunked by `leaf_chunk` in config order;
  * ``plane``: spines with the same set of neighbours (a spine plane of a multi-plane Clos: every spine of
    plane k connects to agg k of every pod; one plane in a single-plane or two-tier fabric);
  * ``border``: every border switch (drawn aside).
  The groups are derived from the links, not from switch names, so any config that `proto.config` accepts
  gets them.
- `link_status(lsd_state, a, b)` → the display state of a link: the LSD says up, down or drained; a DOWN
  link is refined with the last port reports of its two ends (when both switches are alive): ``miscabled``
  if ND found an unexpected peer on either end, ``one-way`` if both PHYs are up but ND does not confirm the
  link both ways (the ND two-way check, see client/nd.py: a failure of either direction, or of both with
  the carrier up), else ``down``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from proto.config import Fabric
from proto.config import Role as SwitchRole
from proto.disjoint import DisjointSets
from proto.lsd import LinkState
from proto.messages import PortStatus

# Display states of a link: the three LSD states keep their LSD codes.
DOWN, UP, DRAINED, MISCABLED, ONE_WAY = 0, 1, 2, 3, 4
STATUS_NAMES = ("down", "up", "drained", "miscabled", "one-way")
ROLE_CODES = {SwitchRole.TOR: 0, SwitchRole.AGG: 1, SwitchRole.SPINE: 2, SwitchRole.BORDER: 3}
ROLE_NAMES = ("tor", "agg", "spine", "border")


def link_status(lsd_state: int, a: PortStatus | None, b: PortStatus | None) -> int:
    """Display state of a link from its LSD state and the latest port status reported by each end (None:
    unknown — the switch has not reported to this replica, or is dead). Returns one of the codes above."""
    if lsd_state == LinkState.UP:
        return UP
    if lsd_state == LinkState.DRAINED:
        return DRAINED
    if lsd_state == LinkState.DRAINED_DOWN and not any(p is not None and not p.usable for p in (a, b)):
        return DRAINED              # drained on its own (out of use), not failed: no end says it does not work
    if (a is not None and a.miscabled_by is not None) or (b is not None and b.miscabled_by is not None):
        return MISCABLED
    if a is not None and b is not None and a.phy and b.phy and a.admin and b.admin and not (a.nd and b.nd):
        return ONE_WAY
    return DOWN


@dataclass(frozen=True, slots=True)
class Group:
    name: str
    kind: str                      # "pod" | "plane" | "border"
    members: tuple[int, ...]       # switch indices (positions in fabric.switches)


@dataclass(frozen=True, slots=True, eq=False)
class FabricView:
    fabric: Fabric
    roles: tuple[int, ...]             # per switch: ROLE_CODES
    group_of: tuple[int, ...]          # per switch: index into groups
    groups: tuple[Group, ...]
    link_a: tuple[int, ...]            # per link: switch index of end a
    link_b: tuple[int, ...]
    index_of: dict[str, int]           # switch name -> index

    def to_json(self) -> dict[str, Any]:
        """The page's fabric document (static for a digest): parallel arrays, roles and groups by code."""
        f = self.fabric
        return {
            "fabric": f.name, "digest": f.digest,
            "masters": [{"id": m.id, "address": str(m.address), "rest_port": m.rest_port} for m in f.masters],
            "roles": list(ROLE_NAMES),
            "switches": {"name": [s.name for s in f.switches], "role": list(self.roles),
                         "group": list(self.group_of)},
            "groups": [{"name": g.name, "kind": g.kind} for g in self.groups],
            "links": {"a": list(self.link_a), "ap": [link.a.port for link in f.links],
                      "b": list(self.link_b), "bp": [link.b.port for link in f.links],
                      "w": [link.weight for link in f.links]},
        }


def _components(n: int, edges: list[tuple[int, int]], keep: Callable[[int], bool]) -> list[list[int]]:
    """Connected components (sorted member lists, ordered by smallest member) of the kept vertices."""
    sets = DisjointSets(n)
    for a, b in edges:
        sets.union(a, b)
    comps: dict[int, list[int]] = {}
    for v in range(n):
        if keep(v):
            comps.setdefault(sets.find(v), []).append(v)
    return sorted(comps.values(), key=lambda c: c[0])


def build_view(fabric: Fabric, leaf_chunk: int = 32) -> FabricView:
    """The page's view of `fabric` (see the module docstring). O(switches + links)."""
    index_of = {s.name: i for i, s in enumerate(fabric.switches)}
    roles = tuple(ROLE_CODES[s.role] for s in fabric.switches)
    link_a = tuple(index_of[link.a.switch] for link in fabric.links)
    link_b = tuple(index_of[link.b.switch] for link in fabric.links)
    n = len(roles)
    tor, agg, spine, border = (ROLE_CODES[r] for r in (SwitchRole.TOR, SwitchRole.AGG, SwitchRole.SPINE,
                                                        SwitchRole.BORDER))
    lower = (tor, agg)
    pod_edges = [(a, b) for a, b in zip(link_a, link_b, strict=True) if roles[a] in lower and roles[b] in lower]
    groups: list[Group] = []
    group_of = [0] * n

    def add(name: str, kind: str, members: list[int]) -> None:
        for m in members:
            group_of[m] = len(groups)
        groups.append(Group(name, kind, tuple(members)))

    neighbours: list[set[int]] = [set() for _ in range(n)]
    for a, b in zip(link_a, link_b, strict=True):
        neighbours[a].add(b)
        neighbours[b].add(a)
    planes: dict[frozenset[int], list[int]] = {}
    for v in range(n):
        if roles[v] == spine:
            planes.setdefault(frozenset(neighbours[v]), []).append(v)
    for k, members in enumerate(sorted(planes.values(), key=lambda m: m[0]), start=1):
        add(f"plane {k}", "plane", members)

    pods = _components(n, pod_edges, lambda v: roles[v] in lower)
    pod_no = 0
    loose: list[int] = []        # lone ToRs (two-tier leaves): chunked in config order

    def flush_loose() -> None:
        for start in range(0, len(loose), leaf_chunk):
            chunk = loose[start:start + leaf_chunk]
            first, last = fabric.switches[chunk[0]].name, fabric.switches[chunk[-1]].name
            add(first if len(chunk) == 1 else f"{first} … {last}", "pod", chunk)
        loose.clear()

    for comp in pods:
        if len(comp) == 1 and roles[comp[0]] == tor:
            loose.append(comp[0])
            continue
        flush_loose()
        pod_no += 1
        add(f"pod {pod_no}", "pod", comp)
    flush_loose()
    borders = [v for v in range(n) if roles[v] == border]
    if borders:
        add("borders", "border", borders)
    return FabricView(fabric, roles, tuple(group_of), tuple(groups), link_a, link_b, index_of)
