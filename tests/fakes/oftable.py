"""A fake OpenFlow 1.3 switch table with Open vSwitch semantics, for unit tests of the OpenFlow plan.

It applies `client.ofmsg` messages and answers "where does this packet go": `lookup(in_port, **fields)`
returns every (port, rewritten fields) the packet may leave by — one per live bucket of a select group,
so the result is the ECMP set — and `forward(dst_ip)` is the IPv4 shortcut.

Semantics mirrored from OVS (see /work/shared/OSKEN-OVS-NOTES.md):
- a flow whose actions point to a missing group is rejected (OFPBAC_BAD_OUT_GROUP), table unchanged;
- deleting a group deletes every flow that points to it;
- ADD replaces a flow with the same table/priority/match (cookie included); MODIFY/MODIFY_STRICT change
  the actions of existing flows only (OF1.1+: never add), keep the cookie; DELETE/DELETE_STRICT;
  non-strict commands select every flow whose match is at least as specific as the command's;
  cookie/cookie_mask filter modify and delete; out_port/out_group filter deletes;
- group ADD of an existing id and MODIFY of a missing one are errors; DELETE of a missing id is a no-op;
- match prerequisites: ipv4_* fields need eth_type=0x0800, arp_* need eth_type=0x0806;
- a select group skips buckets whose watch_port is not live; an empty select group drops;
- DecNwTtl drops a packet whose TTL would reach zero;
- meters: ADD of an existing id and MODIFY of a missing one are errors, a flow using a missing meter is
  rejected, deleting a meter deletes the flows that use it; the fake never drops for a meter.
Rejected messages raise `OFError` (strict mode, the default) or are recorded in `errors`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from ipaddress import IPv4Address
from typing import Any

from client.ofmsg import (
    OFPG_ANY,
    OFPP_ANY,
    OFPP_IN_PORT,
    Action,
    Barrier,
    Bucket,
    DecNwTtl,
    FlowCommand,
    FlowMod,
    GroupAction,
    GroupCommand,
    GroupMod,
    GroupType,
    InstalledFlow,
    InstalledGroup,
    InstalledMeter,
    MatchFields,
    Meter,
    MeterCommand,
    MeterMod,
    OfMessage,
    Output,
    PacketOut,
    SetField,
)

OFPG_ALL = 0xFFFFFFFC
_IP_FIELDS = {"ipv4_src", "ipv4_dst", "arp_spa", "arp_tpa"}
_MAC_FIELDS = {"eth_src", "eth_dst", "arp_sha", "arp_tha"}
_PREREQ = {"ipv4_src": 0x0800, "ipv4_dst": 0x0800, "ip_proto": 0x0800}
_PREREQ.update({f: 0x0806 for f in ("arp_op", "arp_spa", "arp_tpa", "arp_sha", "arp_tha")})


class OFError(Exception):
    """The switch rejected a message (the table is unchanged)."""

    def __init__(self, kind: str, msg: OfMessage) -> None:
        super().__init__(f"{kind}: {msg!r}")
        self.kind = kind
        self.msg = msg


@lru_cache(maxsize=65536)
def _num(name: str, value: Any) -> int:
    if name in _IP_FIELDS:
        return int(IPv4Address(value))
    if name in _MAC_FIELDS:
        return int(str(value).replace(":", ""), 16)
    return int(value)


def _field_matches(name: str, want: Any, have: Any) -> bool:
    if have is None:
        return False
    if isinstance(want, tuple):
        value, mask = want
        m = _num(name, mask)
        return _num(name, value) & m == _num(name, have) & m
    return _num(name, want) == _num(name, have)


def _covers(general: MatchFields, specific: MatchFields) -> bool:
    """True if every packet matching `specific` matches `general` (non-strict flow selection)."""
    spec = dict(specific)
    for name, want in general:
        have = spec.get(name)
        if have is None:
            return False
        if isinstance(have, tuple):
            if not isinstance(want, tuple):
                return False
            hv, hm = (_num(name, x) for x in have)
            wv, wm = (_num(name, x) for x in want)
            if wm & ~hm or (hv & wm) != (wv & wm):
                return False
        elif not _field_matches(name, want, have):
            return False
    return True


@dataclass(slots=True)
class Flow:
    table_id: int
    priority: int
    match: MatchFields
    actions: tuple[Action, ...]
    cookie: int
    seq: int  # installation order, for stable iteration

    def groups(self) -> set[int]:
        return {a.group_id for a in self.actions if isinstance(a, GroupAction)}

    def outputs(self) -> set[int]:
        return {a.port for a in self.actions if isinstance(a, Output)}


@dataclass(frozen=True, slots=True)
class Delivery:
    """One way a packet leaves the switch: the output port and the packet's fields at that point."""

    port: int
    fields: dict[str, Any] = field(hash=False, compare=True)


@dataclass(slots=True)
class FakeOFTable:
    strict: bool = True
    flows: dict[tuple[int, int, MatchFields], Flow] = field(default_factory=dict)
    groups: dict[int, InstalledGroup] = field(default_factory=dict)
    meters: dict[int, InstalledMeter] = field(default_factory=dict)
    live_ports: set[int] | None = None  # None = every port live
    errors: list[OFError] = field(default_factory=list)
    barriers: int = 0
    packet_outs: list[PacketOut] = field(default_factory=list)
    _seq: int = 0

    # ------------------------------------------------------------------------------------------ apply

    def apply_all(self, msgs: Iterable[OfMessage]) -> None:
        for m in msgs:
            self.apply(m)

    def apply(self, msg: OfMessage) -> None:
        try:
            if isinstance(msg, FlowMod):
                self._flow_mod(msg)
            elif isinstance(msg, GroupMod):
                self._group_mod(msg)
            elif isinstance(msg, MeterMod):
                self._meter_mod(msg)
            elif isinstance(msg, Barrier):
                self.barriers += 1
            elif isinstance(msg, PacketOut):
                self.packet_outs.append(msg)
            else:
                raise OFError("bad_type", msg)
        except OFError as e:
            if self.strict:
                raise
            self.errors.append(e)

    def _check_actions(self, msg: OfMessage, actions: Iterable[Action]) -> None:
        for a in actions:
            if isinstance(a, GroupAction) and a.group_id not in self.groups:
                raise OFError("bad_out_group", msg)
            if isinstance(a, Meter) and a.meter_id not in self.meters:
                raise OFError("unknown_meter", msg)

    def _selected(self, fm: FlowMod, strict: bool) -> list[tuple[int, int, MatchFields]]:
        keys = []
        for key, f in self.flows.items():
            if f.table_id != fm.table_id:
                continue
            if (f.cookie & fm.cookie_mask) != (fm.cookie & fm.cookie_mask):
                continue
            if strict:
                if f.priority != fm.priority or f.match != fm.match:
                    continue
            elif not _covers(fm.match, f.match):
                continue
            if fm.command in (FlowCommand.DELETE, FlowCommand.DELETE_STRICT):
                if fm.out_port != OFPP_ANY and fm.out_port not in f.outputs():
                    continue
                if fm.out_group != OFPG_ANY and fm.out_group not in f.groups():
                    continue
            keys.append(key)
        return keys

    def _flow_mod(self, fm: FlowMod) -> None:
        fields = dict(fm.match)
        for name, eth_type in _PREREQ.items():
            if name in fields and fields.get("eth_type") != eth_type:
                raise OFError("bad_prereq", fm)
        if fm.command is FlowCommand.ADD:
            self._check_actions(fm, fm.actions)
            key = (fm.table_id, fm.priority, fm.match)
            self._seq += 1
            self.flows[key] = Flow(fm.table_id, fm.priority, fm.match, tuple(fm.actions), fm.cookie, self._seq)
        elif fm.command in (FlowCommand.MODIFY, FlowCommand.MODIFY_STRICT):
            self._check_actions(fm, fm.actions)
            for key in self._selected(fm, fm.command is FlowCommand.MODIFY_STRICT):
                self.flows[key].actions = tuple(fm.actions)
        elif fm.command in (FlowCommand.DELETE, FlowCommand.DELETE_STRICT):
            for key in self._selected(fm, fm.command is FlowCommand.DELETE_STRICT):
                del self.flows[key]
        else:  # pragma: no cover - enum exhausted
            raise OFError("bad_command", fm)

    def _group_mod(self, gm: GroupMod) -> None:
        if gm.command is GroupCommand.ADD:
            if gm.group_id in self.groups:
                raise OFError("group_exists", gm)
            self.groups[gm.group_id] = InstalledGroup(gm.group_id, gm.type, tuple(gm.buckets))
        elif gm.command is GroupCommand.MODIFY:
            if gm.group_id not in self.groups:
                raise OFError("unknown_group", gm)
            self.groups[gm.group_id] = InstalledGroup(gm.group_id, gm.type, tuple(gm.buckets))
        elif gm.command is GroupCommand.DELETE:
            ids = list(self.groups) if gm.group_id == OFPG_ALL else [gm.group_id]
            for gid in ids:
                if self.groups.pop(gid, None) is not None:
                    for key in [k for k, f in self.flows.items() if gid in f.groups()]:
                        del self.flows[key]

    def _meter_mod(self, mm: MeterMod) -> None:
        if mm.command is MeterCommand.ADD:
            if mm.meter_id in self.meters:
                raise OFError("meter_exists", mm)
            self.meters[mm.meter_id] = InstalledMeter(mm.meter_id, mm.rate_pps, mm.burst)
        elif mm.command is MeterCommand.MODIFY:
            if mm.meter_id not in self.meters:
                raise OFError("unknown_meter", mm)
            self.meters[mm.meter_id] = InstalledMeter(mm.meter_id, mm.rate_pps, mm.burst)
        elif mm.command is MeterCommand.DELETE and self.meters.pop(mm.meter_id, None) is not None:
            for key in [k for k, f in self.flows.items() if Meter(mm.meter_id) in f.actions]:
                del self.flows[key]

    # --------------------------------------------------------------------------------------- readback

    def installed_meters(self) -> list[InstalledMeter]:
        return [self.meters[m] for m in sorted(self.meters)]

    def installed_flows(self) -> list[InstalledFlow]:
        return [
            InstalledFlow(f.table_id, f.priority, f.match, f.actions, f.cookie)
            for f in sorted(self.flows.values(), key=lambda f: f.seq)
        ]

    def installed_groups(self) -> list[InstalledGroup]:
        return [self.groups[g] for g in sorted(self.groups)]

    def dangling(self) -> list[Flow]:
        """Flows pointing to a missing group (never non-empty with OVS semantics; a self-check)."""
        return [f for f in self.flows.values() if not f.groups() <= self.groups.keys()]

    # ----------------------------------------------------------------------------------------- lookup

    def best_flow(self, pkt: dict[str, Any], table_id: int = 0) -> Flow | None:
        best: Flow | None = None
        for f in self.flows.values():
            if f.table_id != table_id or (best is not None and f.priority <= best.priority):
                continue
            if all(_field_matches(name, want, pkt.get(name)) for name, want in f.match):
                best = f
        return best

    def lookup(self, in_port: int, **fields: Any) -> list[Delivery]:
        """Every (port, rewritten fields) the packet can leave by; [] = dropped."""
        pkt = dict(fields, in_port=in_port)
        f = self.best_flow(pkt)
        if f is None:
            return []  # table miss: drop
        return self._run(f.actions, pkt)

    def forward(self, dst_ip: str | IPv4Address, in_port: int = 0, ttl: int = 64, **fields: Any) -> list[Delivery]:
        """Where an IPv4 packet to `dst_ip` goes (ECMP: all possible output ports)."""
        return self.lookup(in_port, eth_type=0x0800, ipv4_dst=str(dst_ip), ip_ttl=ttl, **fields)

    def _run(self, actions: Iterable[Action], pkt: dict[str, Any]) -> list[Delivery]:
        pkt = dict(pkt)
        out: list[Delivery] = []
        for a in actions:
            if isinstance(a, SetField):
                pkt[a.field] = a.value
            elif isinstance(a, DecNwTtl):
                ttl = pkt.get("ip_ttl", 64)
                if ttl <= 1:
                    return out  # TTL expired: dropped
                pkt["ip_ttl"] = ttl - 1
            elif isinstance(a, Output):
                port = pkt["in_port"] if a.port == OFPP_IN_PORT else a.port
                out.append(Delivery(port, dict(pkt)))
            elif isinstance(a, GroupAction):
                out += self._group(a.group_id, pkt)
        return out

    def _live(self, b: Bucket) -> bool:
        return self.live_ports is None or b.watch_port == OFPP_ANY or b.watch_port in self.live_ports

    def _group(self, gid: int, pkt: dict[str, Any]) -> list[Delivery]:
        g = self.groups[gid]
        if g.type is GroupType.SELECT:
            buckets = [b for b in g.buckets if self._live(b)]
        elif g.type is GroupType.FF:
            buckets = [b for b in g.buckets if self._live(b)][:1]
        else:
            buckets = list(g.buckets)
        out: list[Delivery] = []
        for b in buckets:
            out += self._run(b.actions, pkt)
        return out
