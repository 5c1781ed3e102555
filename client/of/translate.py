"""client.ofmsg values <-> os-ken messages: the only module of firepath that builds os-ken objects.

Like Faucet's `valve_of.py`, every OpenFlow message the client sends is built here from plain values
(`client.ofmsg`, produced by `client.ofplan`), and every reply the driver needs is read back here into
plain values. Messages are built with the parser of the version each connection negotiated
(`datapath.ofproto_parser`, OpenFlow 1.3 or 1.5); the constants used below have the same values in both.

OpenFlow 1.5 is there for one feature: OVS's select-group *selection method* (an NTR experimenter group
property only 1.5 group-mods can carry). On a 1.5 connection every SELECT group ADD/MODIFY carries the
group's `ofmsg.Selection` (method `dp_hash`, which hashes the L4 5-tuple, UDP ports included, and its
parameter, the switch's hash basis; see `to_osken`), and a 1.5 group-desc reply reads it back
(`group_from_stats`), so a reconcile after a restart sees and keeps the basis. OpenFlow 1.3 can neither
send nor show it: its read-back says "unknown" (`InstalledGroup.selection is None`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from os_ken.ofproto import ofproto_v1_3

from client import ofmsg
from client.of import patches

patches.apply()

ofp = ofproto_v1_3

__all__ = [
    "flow_dump_request",
    "flow_from_stats",
    "from_osken_actions",
    "from_osken_match",
    "group_dump_request",
    "group_from_stats",
    "meter_dump_request",
    "meter_from_stats",
    "port_live",
    "port_name",
    "selection_method_of",
    "selection_method_property",
    "selection_of",
    "to_osken",
]


#: Netronome (NTR) experimenter group property that OVS uses for the select-group selection method.
NTR_VENDOR_ID = 0x0000154D
NTRT_SELECTION_METHOD = 1


def _osken_action(action: ofmsg.Action, p: Any) -> Any:
    match action:
        case ofmsg.Output(port=port, max_len=max_len):
            return p.OFPActionOutput(port, max_len)
        case ofmsg.SetField(field=name, value=value):
            return p.OFPActionSetField(**{name: value})
        case ofmsg.DecNwTtl():
            return p.OFPActionDecNwTtl()
        case ofmsg.GroupAction(group_id=group_id):
            return p.OFPActionGroup(group_id)
        case ofmsg.Meter(meter_id=meter_id) if hasattr(p, "OFPActionMeter"):  # OpenFlow 1.5
            return p.OFPActionMeter(meter_id)
    raise TypeError(f"unsupported OpenFlow action {action!r}")


def _instructions(actions: Iterable[ofmsg.Action], p: Any, o: Any) -> list[Any]:
    out: list[Any] = []
    if o.OFP_VERSION < 0x06:
        # OpenFlow 1.3 has no meter action: a meter is an instruction, applied before the actions.
        meters = [a for a in actions if isinstance(a, ofmsg.Meter)]
        out += [p.OFPInstructionMeter(m.meter_id) for m in meters]
        actions = [a for a in actions if not isinstance(a, ofmsg.Meter)]
    acts = [_osken_action(a, p) for a in actions]
    if acts:
        out.append(p.OFPInstructionActions(o.OFPIT_APPLY_ACTIONS, acts))
    return out


def selection_method_property(method: str, param: int, p: Any) -> Any:
    """OVS's NTR experimenter group property (OpenFlow 1.5 only), e.g. method 'dp_hash', param 0.

    Layout after the 12-byte experimenter header: 4 bytes pad, 16-byte NUL-padded method name,
    u64 parameter (no field list: dp_hash hashes the L4 5-tuple, UDP ports included).
    """
    raw = method.encode()
    if not raw or len(raw) > 15:
        raise ValueError(f"selection method {method!r}: 1..15 ASCII characters")
    body = b"\0" * 4 + raw.ljust(16, b"\0") + param.to_bytes(8, "big")
    words = [int.from_bytes(body[i : i + 4], "big") for i in range(0, len(body), 4)]
    return p.OFPGroupPropExperimenter(
        type_=0xFFFF, experimenter=NTR_VENDOR_ID, exp_type=NTRT_SELECTION_METHOD, data=words
    )


def selection_of(props: Iterable[Any]) -> ofmsg.Selection | None:
    """The NTR selection method property among a group's properties, None if it has none."""
    for prop in props:
        if getattr(prop, "experimenter", None) == NTR_VENDOR_ID and prop.exp_type == NTRT_SELECTION_METHOD:
            body = b"".join(int(w).to_bytes(4, "big") for w in prop.data)
            method = body[4:20].rstrip(b"\0").decode(errors="replace")
            param = int.from_bytes(body[20:28], "big") if len(body) >= 28 else 0
            return ofmsg.Selection(method, param)
    return None


def selection_method_of(props: Iterable[Any]) -> str:
    """The selection method name of a group's properties ("" = OVS's default)."""
    sel = selection_of(props)
    return "" if sel is None else sel.method


def _buckets(msg: ofmsg.GroupMod, p: Any, o: Any) -> list[Any]:
    if o.OFP_VERSION < 0x06:
        # OVS rejects (OFPGMFC_INVALID_GROUP) a non-SELECT group whose buckets have a weight != 0:
        # weight is only defined for SELECT. Read-back reports ofmsg's default (1) for those.
        select = msg.type == ofmsg.GroupType.SELECT
        return [
            p.OFPBucket(
                weight=b.weight if select else 0,
                watch_port=b.watch_port,
                watch_group=b.watch_group,
                actions=[_osken_action(a, p) for a in b.actions],
            )
            for b in msg.buckets
        ]
    out = []
    for i, b in enumerate(msg.buckets):
        props: list[Any] = []
        if msg.type == ofmsg.GroupType.SELECT:
            props.append(p.OFPGroupBucketPropWeight(type_=o.OFPGBPT_WEIGHT, weight=b.weight))
        if b.watch_port != ofmsg.OFPP_ANY:
            props.append(p.OFPGroupBucketPropWatch(type_=o.OFPGBPT_WATCH_PORT, watch=b.watch_port))
        if b.watch_group != ofmsg.OFPG_ANY:
            props.append(p.OFPGroupBucketPropWatch(type_=o.OFPGBPT_WATCH_GROUP, watch=b.watch_group))
        out.append(
            p.OFPBucket(bucket_id=i, actions=[_osken_action(a, p) for a in b.actions], properties=props)
        )
    return out


def to_osken(msg: ofmsg.OfMessage, datapath: Any, *, select_method: str | None = None,
             hw_addrs: Any = None) -> Any:
    """Translate one ofmsg value into the os-ken message for the datapath's OpenFlow version (1.3 or 1.5).

    OpenFlow 1.5 only: a SELECT group ADD/MODIFY carries its `selection` (method and parameter, e.g.
    dp_hash with the switch's hash basis) as OVS's NTR property; a group-mod without one gets
    `select_method` with parameter 0, if given.
    """
    p, o = datapath.ofproto_parser, datapath.ofproto
    match msg:
        case ofmsg.FlowMod():
            return p.OFPFlowMod(
                datapath,
                cookie=msg.cookie,
                cookie_mask=msg.cookie_mask,
                table_id=msg.table_id,
                command=int(msg.command),
                priority=msg.priority,
                buffer_id=o.OFP_NO_BUFFER,
                out_port=msg.out_port,
                out_group=msg.out_group,
                match=p.OFPMatch(**dict(msg.match)),
                instructions=_instructions(msg.actions, p, o),
            )
        case ofmsg.GroupMod():
            if o.OFP_VERSION < 0x06:
                return p.OFPGroupMod(
                    datapath,
                    command=int(msg.command),
                    type_=int(msg.type),
                    group_id=msg.group_id,
                    buckets=_buckets(msg, p, o),
                )
            props = []
            if msg.type == ofmsg.GroupType.SELECT and msg.command != ofmsg.GroupCommand.DELETE:
                sel = msg.selection
                if sel is None and select_method:
                    sel = ofmsg.Selection(select_method, 0)
                if sel is not None and sel.method:
                    props.append(selection_method_property(sel.method, sel.param, p))
            return p.OFPGroupMod(
                datapath,
                command=int(msg.command),
                type_=int(msg.type),
                group_id=msg.group_id,
                command_bucket_id=o.OFPG_BUCKET_ALL,
                buckets=_buckets(msg, p, o),
                properties=props,
            )
        case ofmsg.MeterMod():
            bands = [] if msg.command == ofmsg.MeterCommand.DELETE else [
                p.OFPMeterBandDrop(rate=msg.rate_pps, burst_size=msg.burst)
            ]
            return p.OFPMeterMod(
                datapath,
                command=int(msg.command),
                flags=o.OFPMF_PKTPS | o.OFPMF_BURST | o.OFPMF_STATS,
                meter_id=msg.meter_id,
                bands=bands,
            )
        case ofmsg.Barrier():
            return p.OFPBarrierRequest(datapath)
        case ofmsg.RoleRequest(role=role, generation_id=generation_id):
            return p.OFPRoleRequest(datapath, role=int(role), generation_id=generation_id & 0xFFFFFFFFFFFFFFFF)
        case ofmsg.PortMod(port=port, down=down):
            hw = (hw_addrs or {}).get(port)
            if hw is None:
                raise ValueError(f"port-mod: port {port} unknown to the switch (no hardware address)")
            config = o.OFPPC_PORT_DOWN if down else 0
            if o.OFP_VERSION < 0x06:
                return p.OFPPortMod(datapath, port, hw, config, o.OFPPC_PORT_DOWN, 0)
            return p.OFPPortMod(datapath, port, hw, config, o.OFPPC_PORT_DOWN, [])
        case ofmsg.PacketOut(port=port, data=data):
            actions = [p.OFPActionOutput(port, 0)]
            if o.OFP_VERSION < 0x06:
                return p.OFPPacketOut(
                    datapath,
                    buffer_id=o.OFP_NO_BUFFER,
                    in_port=o.OFPP_CONTROLLER,
                    actions=actions,
                    data=bytes(data),
                )
            return p.OFPPacketOut(
                datapath,
                buffer_id=o.OFP_NO_BUFFER,
                match=p.OFPMatch(in_port=o.OFPP_CONTROLLER),
                actions=actions,
                data=bytes(data),
            )
    raise TypeError(f"unsupported OpenFlow message {msg!r}")


def _user_value(value: Any) -> Any:
    if isinstance(value, list):  # os-ken returns some masked values as lists
        value = tuple(value)
    return value


def from_osken_match(match: Any) -> ofmsg.MatchFields:
    return ofmsg.match(**{k: _user_value(v) for k, v in match.items()})


def from_osken_actions(actions: Iterable[Any]) -> tuple[ofmsg.Action, ...]:
    """os-ken actions (any OpenFlow version) -> ofmsg actions."""
    out: list[ofmsg.Action] = []
    for a in actions:
        kind = type(a).__name__
        if kind == "OFPActionOutput":
            out.append(ofmsg.Output(a.port, a.max_len))
        elif kind == "OFPActionSetField":
            out.append(ofmsg.SetField(a.key, _user_value(a.value)))
        elif kind == "OFPActionDecNwTtl":
            out.append(ofmsg.DecNwTtl())
        elif kind == "OFPActionGroup":
            out.append(ofmsg.GroupAction(a.group_id))
        elif kind == "OFPActionMeter":
            out.append(ofmsg.Meter(a.meter_id))
        else:
            raise TypeError(f"installed action {a!r} has no ofmsg equivalent")
    return tuple(out)


def flow_from_stats(stats: Any) -> ofmsg.InstalledFlow:
    actions: tuple[ofmsg.Action, ...] = ()
    for inst in stats.instructions:
        if type(inst).__name__ == "OFPInstructionActions" and inst.type == ofp.OFPIT_APPLY_ACTIONS:
            actions += from_osken_actions(inst.actions)
        elif type(inst).__name__ == "OFPInstructionMeter":
            actions = (ofmsg.Meter(inst.meter_id), *actions)
        else:
            raise TypeError(f"installed instruction {inst!r} has no ofmsg equivalent")
    return ofmsg.InstalledFlow(
        table_id=stats.table_id,
        priority=stats.priority,
        match=from_osken_match(stats.match),
        actions=actions,
        cookie=stats.cookie,
    )


def _bucket_from_stats(b: Any, group_type: ofmsg.GroupType) -> ofmsg.Bucket:
    if not hasattr(b, "properties"):  # OpenFlow 1.3
        return ofmsg.Bucket(
            actions=from_osken_actions(b.actions),
            weight=b.weight if group_type == ofmsg.GroupType.SELECT else 1,
            watch_port=b.watch_port,
            watch_group=b.watch_group,
        )
    weight, watch_port, watch_group = 1, ofmsg.OFPP_ANY, ofmsg.OFPG_ANY
    for prop in b.properties:
        kind = type(prop).__name__
        if kind == "OFPGroupBucketPropWeight":
            weight = prop.weight
        elif kind == "OFPGroupBucketPropWatch" and prop.type == 1:  # OFPGBPT_WATCH_PORT
            watch_port = prop.watch
        elif kind == "OFPGroupBucketPropWatch" and prop.type == 2:  # OFPGBPT_WATCH_GROUP
            watch_group = prop.watch
    return ofmsg.Bucket(
        actions=from_osken_actions(b.actions), weight=weight, watch_port=watch_port, watch_group=watch_group
    )


def group_from_stats(stats: Any) -> ofmsg.InstalledGroup:
    """A group-desc entry as an InstalledGroup. OpenFlow 1.5 entries carry their properties: a SELECT
    group's selection is read from them (OVS's default method shows as Selection("", 0)); OpenFlow 1.3
    entries have none, so the selection is unknown (None)."""
    gtype = ofmsg.GroupType(stats.type)
    selection = None
    if gtype == ofmsg.GroupType.SELECT and hasattr(stats, "properties"):
        selection = selection_of(stats.properties or ()) or ofmsg.Selection("", 0)
    return ofmsg.InstalledGroup(
        group_id=stats.group_id,
        type=gtype,
        buckets=tuple(_bucket_from_stats(b, gtype) for b in stats.buckets),
        selection=selection,
    )


def port_live(port: Any) -> bool:
    """OFPPS_LIVE and not admin down (OpenFlow 1.3 section 7.2.1: LIVE is what fast-failover/watch_port
    follow; OVS clears it on carrier loss and on a CFM/BFD fault)."""
    return bool(port.state & ofp.OFPPS_LIVE) and not port.config & ofp.OFPPC_PORT_DOWN


def port_carrier(port: Any) -> bool:
    """The PHY is up (no OFPPS_LINK_DOWN) and the port is not admin down."""
    return not port.state & ofp.OFPPS_LINK_DOWN and not port.config & ofp.OFPPC_PORT_DOWN


def port_name(port: Any) -> str:
    name = port.name
    return name.decode(errors="replace") if isinstance(name, bytes) else str(name)


def flow_dump_request(dp: Any) -> Any:
    p = dp.ofproto_parser
    # OpenFlow 1.5 split flow stats: FLOW_DESC carries the instructions, FLOW_STATS only counters.
    cls = p.OFPFlowDescStatsRequest if dp.ofproto.OFP_VERSION >= 0x06 else p.OFPFlowStatsRequest
    return cls(dp, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY)


def group_dump_request(dp: Any) -> Any:
    return dp.ofproto_parser.OFPGroupDescStatsRequest(dp, 0)



def setup_messages(dp: Any, role: ofmsg.RoleRequest | None = None) -> list[Any]:
    """What a new connection sends first: the role request if any (`client.ofrole`: before anything else,
    so a SLAVE never programs), `OFPSetConfig(miss_send_len=0xffff)` (without it a service connection gets
    no PortStatus nor PacketIn) and a port description request (last: its xid matters)."""
    p = dp.ofproto_parser
    first = [to_osken(role, dp)] if role is not None else []
    return [*first, p.OFPSetConfig(dp, ofp.OFPC_FRAG_NORMAL, 0xFFFF), p.OFPPortDescStatsRequest(dp, 0)]


def role_of(msg: Any) -> tuple[int, int]:
    """An OFPRoleReply or OFPRoleStatus as (role, generation_id)."""
    return int(msg.role), int(msg.generation_id)


def reply_more(msg: Any) -> bool:
    """A multipart reply with more parts to come (OFPMPF_REPLY_MORE)."""
    return bool(msg.flags & ofp.OFPMPF_REPLY_MORE)


def physical_ports(body: Iterable[Any]) -> dict[int, Any]:
    """Port descriptions of a port-desc reply, without reserved ports (LOCAL, CONTROLLER...)."""
    return {p.port_no: p for p in body if p.port_no <= ofp.OFPP_MAX}


def port_status(msg: Any) -> tuple[int, bool, str, bool, bool] | None:
    """A PortStatus message as (port, live, name, deleted, carrier); None for a reserved port."""
    port = msg.desc
    if port.port_no > ofp.OFPP_MAX:
        return None
    deleted = msg.reason == ofp.OFPPR_DELETE
    return (port.port_no, port_live(port) and not deleted, port_name(port), deleted,
            port_carrier(port) and not deleted)


def error_text(msg: Any) -> str:
    """An OFPErrorMsg's type and code as names."""
    o = msg.datapath.ofproto
    return f"type={o.ofp_error_type_to_str(msg.type)} code={o.ofp_error_code_to_str(msg.type, msg.code)}"


def meter_dump_request(dp: Any) -> Any:
    """Every meter's configuration (OpenFlow 1.5 renamed METER_CONFIG to METER_DESC)."""
    p = dp.ofproto_parser
    cls = p.OFPMeterDescStatsRequest if dp.ofproto.OFP_VERSION >= 0x06 else p.OFPMeterConfigStatsRequest
    return cls(dp, 0, dp.ofproto.OFPM_ALL)


def meter_from_stats(stats: Any) -> ofmsg.InstalledMeter:
    """A meter config entry; the first drop band gives rate and burst (0, 0 without one)."""
    drop = next((b for b in stats.bands if type(b).__name__ == "OFPMeterBandDrop"), None)
    return ofmsg.InstalledMeter(
        stats.meter_id, drop.rate if drop is not None else 0, drop.burst_size if drop is not None else 0
    )
