"""A switch's routes as its client computed them next to what OVS holds, with differences marked (pure).

Input: the route table of the `RouteComputer` (prefix -> next-hop ports), the planner's group id per
port set, the ports excluded by local repair, and the flows and groups read back from the switch
(`OfDriver.dump_state`). Output: one JSON-ready row per prefix (`route_rows`):

    {"prefix": "10.0.3.0/24",
     "computed": {"group": 4043309058, "next_hops": [{"port": 1, "neighbour": "agg-1-1", "neighbour_port": 3}]}
                 | null,
     "installed": {"group": 4043309058, "type": "select",
                   "buckets": [{"port": 1, "neighbour": "agg-1-1", "weight": 1, "watch_port": 1}]} | null,
     "status": "ok" | "missing" | "extra" | "differs" | "excluded" | "no_group",
     "detail": "..."}

`status`: ok = OVS forwards to exactly the computed next hops; missing = computed, no flow in OVS;
extra = a firepath route flow in OVS that the client does not compute; differs = other next hops;
excluded = differs only by ports that local repair took out (a port that stopped being usable before
the LSD said so: expected, transient); no_group = the flow points to a group OVS does not have.
Only firepath's own route flows count (cookie COOKIE_ROUTE, table 0), and on an eBGP border its external
route flows (COOKIE_EXTERNAL: a prefix the border sends to the outside itself, e.g. 0.0.0.0/0): their
computed next hops are the providing peers' external ports (`"external": true`, neighbour "eBGP <peer>"),
compared with the external group's buckets the same way. A read taken while the client
is programming a new LSD version (`lsd_version` ahead of `programmed_version` in the answer) can show that
round half done: read again.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from ipaddress import IPv4Network
from typing import Any

from client.ofmsg import GroupAction, InstalledFlow, InstalledGroup, Output
from client.ofplan import COOKIE_EXTERNAL, COOKIE_ROUTE, ROUTE_BASE, TABLE_ID
from proto.config import Fabric


def installed_routes(flows: Iterable[InstalledFlow], external: set[IPv4Network] | None = None
                     ) -> dict[IPv4Network, int | None]:
    """prefix -> group id of firepath's route flows (None: a route flow without a group action, a drop),
    eBGP external route flows included; `external`, if given, collects the prefixes of the latter."""
    out: dict[IPv4Network, int | None] = {}
    for f in flows:
        if f.cookie not in (COOKIE_ROUTE, COOKIE_EXTERNAL) or f.table_id != TABLE_ID \
                or not ROUTE_BASE <= f.priority <= ROUTE_BASE + 32:
            continue
        plen = f.priority - ROUTE_BASE
        dst = dict(f.match).get("ipv4_dst")
        addr = "0.0.0.0" if dst is None else dst[0] if isinstance(dst, tuple) else dst
        prefix = IPv4Network(f"{addr}/{plen}", strict=False)
        gids = [a.group_id for a in f.actions if isinstance(a, GroupAction)]
        out[prefix] = gids[0] if gids else None
        if external is not None and f.cookie == COOKIE_EXTERNAL:
            external.add(prefix)
    return out


def _bucket_ports(group: InstalledGroup) -> list[tuple[int | None, int, int]]:
    """(output port, weight, watch_port) per bucket."""
    out = []
    for b in group.buckets:
        ports = [a.port for a in b.actions if isinstance(a, Output)]
        out.append((ports[0] if ports else None, b.weight, b.watch_port))
    return out


def route_rows(fabric: Fabric, switch: str, computed: Mapping[IPv4Network, Collection[int]],
               group_of: Mapping[frozenset[int], int], excluded: Collection[int],
               flows: Iterable[InstalledFlow] | None, groups: Iterable[InstalledGroup] | None,
               prefix: IPv4Network | None = None,
               external: Mapping[IPv4Network, Collection[tuple[int, str]]] | None = None) -> list[dict[str, Any]]:
    """Rows sorted by prefix (see module docstring). `flows`/`groups` None: OVS could not be read (every
    row's `installed` is None and `status` "unknown"). With `prefix`, only the route that forwards it: the
    longest computed or installed prefix containing it. `external`: an eBGP border's external routes
    (prefix -> (external port, peer MAC) hops, client.ofplan.OfPlanner.external_routes); they override the
    fabric route of the same prefix."""
    ext_installed: set[IPv4Network] = set()
    installed = installed_routes(flows, ext_installed) if flows is not None else {}
    by_gid = {g.group_id: g for g in groups or ()}
    external = dict(external or {})
    computed = {**computed, **{p: frozenset(port for port, _mac in hops) for p, hops in external.items()}}
    sw = fabric.switch(switch)
    ext_peer = {p.port: str(p.address) for p in sw.bgp.peers} if sw.bgp is not None else {}
    prefixes = set(computed) | set(installed)
    if prefix is not None:
        covering = [p for p in prefixes if prefix.subnet_of(p)]
        prefixes = {max(covering, key=lambda p: p.prefixlen)} if covering else set()
    excluded = set(excluded)

    def hop(port: int) -> dict[str, Any]:
        if port in ext_peer:
            return {"port": port, "neighbour": f"eBGP {ext_peer[port]}", "neighbour_port": None}
        peer = fabric.peer_of(switch, port)
        return {"port": port, "neighbour": peer.switch if peer else None,
                "neighbour_port": peer.port if peer else None}

    rows = []
    for p in sorted(prefixes, key=lambda n: (int(n.network_address), n.prefixlen)):
        ports = computed.get(p)
        is_ext = p in external
        comp = None if ports is None else {"group": None if is_ext else group_of.get(frozenset(ports)),
                                           "next_hops": [hop(x) for x in sorted(ports)]}
        if comp is not None and is_ext:
            comp["external"] = True
        inst = None
        status, detail = "ok", ""
        if flows is None:
            status, detail = "unknown", "OVS not read"
        elif p not in installed:
            status, detail = "missing", "computed, but OVS has no flow for it"
        else:
            gid = installed[p]
            group = by_gid.get(gid) if gid is not None else None
            if group is None:
                inst = {"group": gid, "type": None, "buckets": []}
                status, detail = "no_group", f"the flow points to group {gid}, which OVS does not have"
            else:
                buckets = _bucket_ports(group)
                inst = {"group": gid, "type": group.type.name.lower(),
                        "buckets": [{**hop(port), "weight": w, "watch_port": watch} if port is not None
                                    else {"port": None, "neighbour": None, "weight": w, "watch_port": watch}
                                    for port, w, watch in buckets]}
                have = {port for port, _w, _watch in buckets}
                if ports is None:
                    status, detail = "extra", "in OVS, not computed by the client"
                elif is_ext != (p in ext_installed):
                    status = "differs"
                    detail = ("OVS routes it into the fabric, the client sends it to its eBGP peers" if is_ext
                              else "OVS sends it to eBGP peers, the client routes it into the fabric")
                elif have != set(ports):
                    missing, extra = set(ports) - have, have - set(ports)
                    if not extra and missing <= excluded:
                        status = "excluded"
                        detail = f"port(s) {sorted(missing)} taken out by local repair"
                    else:
                        status = "differs"
                        detail = "; ".join(x for x in (
                            f"not in OVS: port(s) {sorted(missing)}" if missing else "",
                            f"only in OVS: port(s) {sorted(extra)}" if extra else "") if x)
                elif comp is not None and comp["group"] is not None and comp["group"] != gid:
                    status, detail = "differs", f"group {gid} in OVS, {comp['group']} planned"
        rows.append({"prefix": str(p), "computed": comp, "installed": inst, "status": status, "detail": detail})
    return rows
