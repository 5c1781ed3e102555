"""The desired and installed OpenFlow state of one switch, and the make-before-break diff between them (pure).

Constants of the flow table the planner (client.ofplan) builds: cookies (high 16 bits FIREPATH_COOKIE =
"ours", so flows of other controllers are never touched), priorities (longest prefix wins: ROUTE_BASE +
prefix length; host routes above; ND punt on top), the group- and meter-id ranges that are ours (groups and
meters carry no cookie). `OfState` holds flows, groups and meters keyed for diffing, canonicalised so that
a read-back compares equal to what was planned; `plan(desired, installed)` returns the messages that take
a switch from one to the other, make-before-break: add/modify meters, groups, then flows, then delete stale
flows, then unused groups (deleting a group deletes its flows in OVS, so never earlier) and meters, then one
Barrier. `bucket_weights` is the per-hop capacity rule of weighted ECMP; `nd_meter_rate` sizes the ND punt
meters (control-plane protection). The design of the whole table is in client.ofplan's docstring.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from ipaddress import IPv4Network
from typing import TYPE_CHECKING, Any

from client.ofmsg import (
    Action,
    Barrier,
    Bucket,
    FlowCommand,
    FlowMod,
    GroupCommand,
    GroupMod,
    GroupType,
    InstalledFlow,
    InstalledGroup,
    InstalledMeter,
    MatchFields,
    MeterCommand,
    MeterMod,
    OfMessage,
    Selection,
    SetField,
    match,
)

if TYPE_CHECKING:  # pragma: no cover - typing only
    pass


TABLE_ID = 0
#: High 16 bits of every firepath cookie ("F1BE" ~ "fire"); the low bits say what kind of flow it is.
FIREPATH_COOKIE = 0xF1BE << 48
COOKIE_MASK = 0xFFFF << 48
COOKIE_ND = FIREPATH_COOKIE | 1
COOKIE_ARP = FIREPATH_COOKIE | 2
COOKIE_HOST = FIREPATH_COOKIE | 3
COOKIE_ROUTE = FIREPATH_COOKIE | 4
COOKIE_LOCAL = FIREPATH_COOKIE | 5
COOKIE_EXTERNAL = FIREPATH_COOKIE | 6

PRIORITY_ND = 65535
PRIORITY_ARP = 40000
ROUTE_BASE = 1000  # route priority = ROUTE_BASE + prefix length (1000..1032)
PRIORITY_HOST = ROUTE_BASE + 33

#: An eBGP border's next hop towards the outside (issue #13): (external OpenFlow port, the peer's MAC).
ExternalHop = tuple[int, str]

#: OVS's selection method for every SELECT group: a datapath hash of the L4 5-tuple (UDP ports
#: included), with the switch's hash basis as its parameter (see `client.ofmsg.Selection`).
SELECTION_METHOD = "dp_hash"
MAX_BUCKET_WEIGHT = 0xFFFF  # OpenFlow bucket weights are 16-bit

GROUP_ID_MIN = 0xF1000000
GROUP_ID_MAX = 0xF1FFFFFF  # below OFPG_MAX (0xFFFFFF00)

#: Meter ids of ours (meters carry no cookie): METER_ID_MIN + port for a fabric port's ND punt.
METER_ID_MIN = 0x10000
METER_ID_MAX = 0x1FFFF  # OVS's userspace datapath allows 262,144 meters

ETH_TYPE_IPV4 = 0x0800
ETH_TYPE_ARP = 0x0806
ETH_TYPE_ND = 0x88B5
ARP_REQUEST = 1
ARP_REPLY = 2

#: A flow's identity in a table: OpenFlow identifies a flow by (table, priority, match).
FlowKey = tuple[int, int, MatchFields]

#: ND punt meters: headroom over the expected rate (one frame per nd_interval, plus frames sent at once
#: on a change), a floor for slow ND, and the smallest burst (packets).
ND_METER_HEADROOM = 4
ND_METER_MIN_PPS = 50
ND_METER_MIN_BURST = 10


def nd_meter_id(port: int) -> int:
    return METER_ID_MIN + port


def nd_meter_rate(nd_interval: float) -> int:
    """Packets/s a fabric port may punt: ND_METER_HEADROOM x the ND rate, at least ND_METER_MIN_PPS
    (10 ms ND -> 400 pps; 1 s ND -> 50 pps)."""
    return max(ND_METER_MIN_PPS, round(ND_METER_HEADROOM / nd_interval))


class PlanError(ValueError):
    """Bad input to the planner (unknown switch, a route through a port without a fabric link, ...)."""


_NETMASKS = [str(IPv4Network(f"0.0.0.0/{n}").netmask) for n in range(33)]


def prefix_match(prefix: IPv4Network) -> MatchFields:
    """The canonical IPv4 match of a prefix: no ipv4_dst for /0, a plain address for /32, else (addr, mask)."""
    plen = prefix.prefixlen
    if plen == 0:
        return (("eth_type", ETH_TYPE_IPV4),)
    if plen == 32:
        return (("eth_type", ETH_TYPE_IPV4), ("ipv4_dst", str(prefix.network_address)))
    return (("eth_type", ETH_TYPE_IPV4), ("ipv4_dst", (str(prefix.network_address), _NETMASKS[plen])))


_FULL_MASKS = {"255.255.255.255", "ff:ff:ff:ff:ff:ff"}
_ZERO_MASKS = {"0.0.0.0", "00:00:00:00:00:00"}


def canonical_match(fields: Iterable[tuple[str, Any]]) -> MatchFields:
    """Normalise a match read back from a switch to the form this module builds.

    A full mask becomes a plain value, an all-zero mask drops the field (wildcard), MACs are lower-case.
    """
    if isinstance(fields, tuple):
        try:
            return _canonical_cached(fields)
        except TypeError:  # an unhashable value (a list): convert first
            pass
    fields = tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in fields)
    try:
        return _canonical_cached(fields)
    except TypeError:  # still unhashable: no caching
        return _canonical(fields)


@lru_cache(maxsize=1 << 17)
def _canonical_cached(fields: MatchFields) -> MatchFields:
    return _canonical(fields)


def _canonical(fields: Iterable[tuple[str, Any]]) -> MatchFields:
    out: dict[str, Any] = {}
    for name, value in fields:
        if isinstance(value, tuple | list) and len(value) == 2:
            v, m = value
            if isinstance(m, str) and m.lower() in _ZERO_MASKS:
                continue
            if isinstance(m, str) and m.lower() in _FULL_MASKS:
                value = v
            else:
                value = (v.lower() if isinstance(v, str) else v, m.lower() if isinstance(m, str) else m)
        if isinstance(value, str):
            value = value.lower()
        out[name] = value
    return match(**out)


def canonical_actions(actions: Iterable[Action]) -> tuple[Action, ...]:
    """Actions as a tuple, set-field string values (MACs) lower-case."""
    actions = tuple(actions)
    if not any(type(a) is SetField for a in actions):
        return actions
    return tuple(
        SetField(a.field, a.value.lower()) if isinstance(a, SetField) and isinstance(a.value, str) else a for a in actions
    )


@dataclass(slots=True)
class OfState:
    """Flows and groups of one switch: desired, or installed (read back / modelled)."""

    flows: dict[FlowKey, InstalledFlow] = field(default_factory=dict)
    groups: dict[int, InstalledGroup] = field(default_factory=dict)
    meters: dict[int, InstalledMeter] = field(default_factory=dict)

    @classmethod
    def from_installed(
        cls,
        flows: Iterable[InstalledFlow],
        groups: Iterable[InstalledGroup],
        table_id: int = TABLE_ID,
        meters: Iterable[InstalledMeter] = (),
        selection: Selection | None = None,
    ) -> OfState:
        """Keep only what is ours: our table and cookie, our group- and meter-id ranges; matches
        canonicalised.

        A SELECT group read back without its selection method (OpenFlow 1.3 can neither set nor show
        it) is taken to have `selection`: what cannot be read cannot be corrected either."""
        state = cls()
        state.meters = {m.meter_id: m for m in meters if METER_ID_MIN <= m.meter_id <= METER_ID_MAX}
        for f in flows:
            if f.table_id != table_id or f.cookie & COOKIE_MASK != FIREPATH_COOKIE:
                continue
            m = canonical_match(f.match)
            state.flows[(f.table_id, f.priority, m)] = InstalledFlow(
                f.table_id, f.priority, m, canonical_actions(f.actions), f.cookie
            )
        for g in groups:
            if GROUP_ID_MIN <= g.group_id <= GROUP_ID_MAX:
                buckets = tuple(
                    Bucket(canonical_actions(b.actions), b.weight, b.watch_port, b.watch_group) for b in g.buckets
                )
                gtype = GroupType(g.type)
                sel = g.selection
                if gtype is GroupType.SELECT and sel is None:
                    sel = selection
                state.groups[g.group_id] = InstalledGroup(
                    g.group_id, gtype, buckets, sel if gtype is GroupType.SELECT else None
                )
        return state

    def copy(self) -> OfState:
        return OfState(dict(self.flows), dict(self.groups), dict(self.meters))


def plan(
    desired: OfState,
    installed: OfState,
    flow_keys: Iterable[FlowKey] | None = None,
    group_ids: Iterable[int] | None = None,
) -> list[OfMessage]:
    """Messages turning `installed` into `desired`, make-before-break, ending with one Barrier.

    `flow_keys` / `group_ids` restrict the diff to those keys (incremental plans); by default everything
    in either state is compared, meters included (only full plans touch meters). Flow messages follow
    the order of `flow_keys` (default: desired order, then stale installed flows); groups and meters go
    by id. Meters are added first and deleted last (deleting a meter deletes the flows that use it).
    Returns [] when nothing differs.
    """
    meter_adds: list[OfMessage] = []
    meter_dels: list[OfMessage] = []
    if flow_keys is None and group_ids is None:
        for mid in sorted(set(desired.meters) | set(installed.meters)):
            want_m, have_m = desired.meters.get(mid), installed.meters.get(mid)
            if want_m is not None:
                if have_m is None:
                    meter_adds.append(MeterMod(MeterCommand.ADD, mid, want_m.rate_pps, want_m.burst))
                elif have_m != want_m:
                    meter_adds.append(MeterMod(MeterCommand.MODIFY, mid, want_m.rate_pps, want_m.burst))
            elif have_m is not None:
                meter_dels.append(MeterMod(MeterCommand.DELETE, mid))
    if flow_keys is None:
        fkeys: Iterable[FlowKey] = list(desired.flows) + [k for k in installed.flows if k not in desired.flows]
    else:
        fkeys = dict.fromkeys(flow_keys)
    gids = set(desired.groups) | set(installed.groups) if group_ids is None else set(group_ids)
    group_adds: list[OfMessage] = []
    group_dels: list[OfMessage] = []
    for gid in sorted(gids):
        want, have = desired.groups.get(gid), installed.groups.get(gid)
        if want is not None:
            if have is None:
                group_adds.append(GroupMod(GroupCommand.ADD, gid, want.type, want.buckets, want.selection))
            elif (
                have.type != want.type
                or tuple(have.buckets) != tuple(want.buckets)
                or have.selection != want.selection
            ):
                group_adds.append(GroupMod(GroupCommand.MODIFY, gid, want.type, want.buckets, want.selection))
        elif have is not None:
            group_dels.append(GroupMod(GroupCommand.DELETE, gid, have.type))
    flow_adds: list[OfMessage] = []
    flow_dels: list[OfMessage] = []
    for key in fkeys:
        want, have = desired.flows.get(key), installed.flows.get(key)
        table_id, priority, m = key
        if want is not None:
            if have is None or have.cookie != want.cookie:
                # ADD also replaces a flow with the same table/priority/match (and its cookie) atomically.
                flow_adds.append(FlowMod(FlowCommand.ADD, priority, m, want.actions, table_id, want.cookie))
            elif tuple(have.actions) != tuple(want.actions):
                flow_adds.append(
                    FlowMod(FlowCommand.MODIFY_STRICT, priority, m, want.actions, table_id, want.cookie, COOKIE_MASK)
                )
        elif have is not None:
            flow_dels.append(FlowMod(FlowCommand.DELETE_STRICT, priority, m, (), table_id, FIREPATH_COOKIE, COOKIE_MASK))
    msgs = meter_adds + group_adds + flow_adds + flow_dels + group_dels + meter_dels
    if msgs:
        msgs.append(Barrier())
    return msgs


def bucket_weights(capacities: Sequence[float | None]) -> tuple[int, ...]:
    """Bucket weights of a next-hop set from the capacities (Gbit/s) of its links, in order.

    The rule (per-hop capacity, WCMP's first step): each next hop gets a share proportional to the
    capacity of the local link to it, so a 100G and a 40G uplink split 5:2. Weights are the smallest
    integers in those ratios (capacities are read to 0.001 Gbit/s), so equal capacities give today's
    equal buckets (all 1); if any link of the set has no `capacity`, every bucket gets 1 (unknown
    capacities are not guessed). Weights above OVS's 16-bit limit are scaled down (each at least 1).
    Pure function of the capacities: the same weighted set always gives the same group (dedup holds).
    """
    if not capacities or any(c is None for c in capacities):
        return (1,) * len(capacities)
    milli = [max(1, round(c * 1000)) for c in capacities]  # type: ignore[operator]
    g = 0
    for m in milli:
        g = math.gcd(g, m)
    weights = [m // g for m in milli]
    top = max(weights)
    if top > MAX_BUCKET_WEIGHT:
        weights = [max(1, round(w * MAX_BUCKET_WEIGHT / top)) for w in weights]
    return tuple(weights)


def prefix_order(p: IPv4Network) -> tuple[int, int]:
    return (-p.prefixlen, int(p.network_address))
