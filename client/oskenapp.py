"""The OpenFlow driver: the only module of firepath that imports os_ken.

`OfDriver` connects actively to one Open vSwitch bridge that listens (`ptcp:PORT:127.0.0.1`), speaks
OpenFlow through os-ken's parsers and handshake (`os_ken.controller.ofp_handler`), and offers a small
thread-safe API in firepath's own types (`client.ofmsg` values in, frozen dataclass events out), so that
nothing else in the project depends on os-ken.

OpenFlow version: 1.3 or 1.5, the highest the bridge's `protocols` allow (lab.ovs bridges allow both).
The ofmsg model is the same for both; 1.5 is there for one feature: OVS's select-group *selection
method* (an NTR experimenter group property that only OpenFlow 1.5 group-mods can carry). OVS's default
for select groups hashes a symmetric L4 hash that leaves UDP ports out (every UDP flow between two hosts
takes one path); on a 1.5 connection every SELECT group ADD/MODIFY carries `selection_method=dp_hash`,
which hashes the 5-tuple, UDP included, and still skips dead `watch_port` buckets. Setting it afterwards
with `ovs-ofctl -O OpenFlow15 mod-group` is not viable: the next OF1.3 group MODIFY from the client
silently resets it, and an OF1.3 group-desc cannot even show it. Two os-ken 4.2.2 bugs in OF1.5 group
parsing are corrected at import (see `_fix_osken_of15_group_parsers`).

How os-ken is embedded (native threads, no eventlet, no monkey-patching of the standard library):

* `OSKEN_HUB_TYPE` stays `native`: os-ken's "green threads" are ordinary threads. They are created from
  a daemon thread of ours, so they are all daemons and can never keep the process alive.
* The handshake app is a subclass of os-ken's `OFPHandler` whose `start()` does not run
  `OpenFlowController`: that would open a listening socket (0.0.0.0:6653 and :6633 unless configured)
  and block forever in `accept()` on a non-daemon thread, and its connect loop retries at most once a
  second. Instead our own connect thread opens the TCP connection (optionally from inside a network
  namespace, see `netns`) and serves it like `os_ken.controller.controller.datapath_connection_factory`
  does for os-ken's `StreamClient`, with a `Datapath` subclass that fixes a native-hub hang (see
  `_Datapath`). Nothing listens at all. `os_ken.cfg.CONF` is still set to loopback/ephemeral listen
  values so that nothing would listen on a fixed port even if someone started the stock controller.
* Several drivers may live in one process: each has its own app instance (unique name) and keeps only
  the events of the connections it opened.
* os-ken delivers events to each app through a bounded queue (128) drained by the app's thread; our app's
  handlers only translate and enqueue into an unbounded dispatch queue; one dispatcher thread of ours
  calls the user's `on_event`, so a slow callback never stalls os-ken's receive loop.
* A datapath's send queue is only 16 messages deep and `send_msg` blocks when it is full, so every
  message leaves through one sender thread of ours (FIFO), never from a handler. Barriers are never
  waited for: a barrier reply becomes a `BarrierDone(batch_id)` event.

Connection life cycle: `Connected(dpid, ports)` is emitted once per connection after the switch config
(`OFPSetConfig(miss_send_len=0xffff)`, without which a service connection gets no PortStatus nor
PacketIn) and a fresh port description have been exchanged, so no port change can fall between the two.
`Disconnected` follows when the connection ends; the driver reconnects with a short backoff. Batches
queued but not sent when a connection ends are dropped (the runtime re-reads the switch with
`dump_state()` after the next `Connected` and reconciles), and `send()` while disconnected raises
`NotConnected`.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from os_ken import cfg
from oslo_config import cfg as oslo_cfg

# app_manager must be imported before os_ken.controller.controller (circular import inside os-ken).
from os_ken.base import app_manager  # isort: skip
from os_ken.controller import controller as osken_controller
from os_ken.controller import ofp_event
from os_ken.controller.handler import DEAD_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
from os_ken.controller.ofp_handler import OFPHandler
from os_ken.ofproto import ofproto_v1_3, ofproto_v1_5

from client import ofmsg

# Constants used below have the same values in OpenFlow 1.3 and 1.5; messages are built with the
# parser of the version each connection negotiated (datapath.ofproto_parser).
ofp = ofproto_v1_3


def _fix_osken_of15_group_parsers() -> None:
    """Correct two bugs of os-ken 4.2.2's OpenFlow 1.5 group parsing (the reply parser runs inside
    os-ken's receive loop, so an exception there drops the whole connection):

    * `OFPBucket.parser` slices the bucket properties as `buf[offset:offset + len]` after `offset` has
      moved past the bucket header and actions, so with two or more buckets it parses the next bucket
      as properties and raises ValueError;
    * `OFPGroupDescStats.parser` makes the same mistake for group properties and appends to a
      `properties` that is None.

    The fixed versions below differ only in slicing from the start of the structure.
    """
    import struct

    from os_ken.ofproto import ofproto_v1_5_parser as p15

    o15 = ofproto_v1_5
    if getattr(p15.OFPBucket, "_firepath_fixed", False):
        return

    def bucket_parser(cls: Any, buf: bytes, offset: int) -> Any:
        msg = cls()
        start = offset
        (msg.len, msg.action_array_len, msg.bucket_id) = struct.unpack_from(
            o15.OFP_BUCKET_PACK_STR, buf, offset
        )
        offset += o15.OFP_BUCKET_SIZE
        action_buf = buf[offset : offset + msg.action_array_len]
        msg.actions = []
        while action_buf:
            action = p15.OFPAction.parser(action_buf, 0)
            msg.actions.append(action)
            action_buf = action_buf[action.len :]
        offset += msg.action_array_len
        rest = buf[offset : start + msg.len]
        msg.properties = []
        while rest:
            prop, rest = p15.OFPGroupBucketProp.parse(rest)
            msg.properties.append(prop)
        return msg

    def group_desc_parser(cls: Any, buf: bytes, offset: int) -> Any:
        stats = cls()
        start = offset
        (stats.length, stats.type, stats.group_id, stats.bucket_array_len) = struct.unpack_from(
            o15.OFP_GROUP_DESC_STATS_PACK_STR, buf, offset
        )
        offset += o15.OFP_GROUP_DESC_STATS_SIZE
        bucket_buf = buf[offset : offset + stats.bucket_array_len]
        stats.buckets = []
        while bucket_buf:
            bucket = p15.OFPBucket.parser(bucket_buf, 0)
            stats.buckets.append(bucket)
            bucket_buf = bucket_buf[bucket.len :]
        offset += stats.bucket_array_len
        rest = buf[offset : start + stats.length]
        stats.properties = []
        while rest:
            prop, rest = p15.OFPGroupProp.parse(rest)
            stats.properties.append(prop)
        return stats

    p15.OFPBucket.parser = classmethod(bucket_parser)  # type: ignore[method-assign,assignment]
    p15.OFPGroupDescStats.parser = classmethod(group_desc_parser)  # type: ignore[method-assign,assignment]
    p15.OFPBucket._firepath_fixed = True  # type: ignore[attr-defined]


_fix_osken_of15_group_parsers()

LOG = logging.getLogger("firepath.oskenapp")

__all__ = [
    "BarrierDone",
    "Connected",
    "Disconnected",
    "DriverEvent",
    "NotConnected",
    "OfDriver",
    "OfError",
    "PacketIn",
    "PortStatusChanged",
    "from_osken_actions",
    "from_osken_match",
    "to_osken",
]

# ---------------------------------------------------------------- events (our types, no os-ken inside)


@dataclass(frozen=True, slots=True)
class Connected:
    """The switch is ready: ports maps OpenFlow port number -> live (OFPPS_LIVE); names -> interface."""

    dpid: int
    ports: dict[int, bool]
    names: dict[int, str] = field(default_factory=dict)
    version: int = 0x04  # negotiated OpenFlow version: 0x04 = 1.3, 0x06 = 1.5


@dataclass(frozen=True, slots=True)
class Disconnected:
    reason: str = ""


@dataclass(frozen=True, slots=True)
class PortStatusChanged:
    port: int
    live: bool
    name: str
    deleted: bool = False


@dataclass(frozen=True, slots=True)
class PacketIn:
    port: int
    data: bytes = field(repr=False)
    cookie: int = 0


@dataclass(frozen=True, slots=True)
class BarrierDone:
    batch_id: int


@dataclass(frozen=True, slots=True)
class OfError:
    """The switch rejected a message; batch_id is the batch that carried it (None if unknown)."""

    batch_id: int | None
    type: int
    code: int
    text: str


DriverEvent = Connected | Disconnected | PortStatusChanged | PacketIn | BarrierDone | OfError


class NotConnected(RuntimeError):
    """No OpenFlow connection to the switch right now (or it ended during the call)."""


# ---------------------------------------------------------------- translation ofmsg <-> os-ken


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
    raise TypeError(f"unsupported OpenFlow action {action!r}")


def _instructions(actions: Iterable[ofmsg.Action], p: Any, o: Any) -> list[Any]:
    acts = [_osken_action(a, p) for a in actions]
    return [p.OFPInstructionActions(o.OFPIT_APPLY_ACTIONS, acts)] if acts else []


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


def _selection_method_of(props: Iterable[Any]) -> str:
    for prop in props:
        if getattr(prop, "experimenter", None) == NTR_VENDOR_ID and prop.exp_type == NTRT_SELECTION_METHOD:
            body = b"".join(int(w).to_bytes(4, "big") for w in prop.data)
            return body[4:20].rstrip(b"\0").decode(errors="replace")
    return ""


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


def to_osken(msg: ofmsg.OfMessage, datapath: Any, *, select_method: str | None = None) -> Any:
    """Translate one ofmsg value into the os-ken message for the datapath's OpenFlow version (1.3 or 1.5).

    `select_method` (OpenFlow 1.5 only): selection method property added to SELECT group ADD/MODIFY.
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
            if (
                select_method
                and msg.type == ofmsg.GroupType.SELECT
                and msg.command != ofmsg.GroupCommand.DELETE
            ):
                props.append(selection_method_property(select_method, 0, p))
            return p.OFPGroupMod(
                datapath,
                command=int(msg.command),
                type_=int(msg.type),
                group_id=msg.group_id,
                command_bucket_id=o.OFPG_BUCKET_ALL,
                buckets=_buckets(msg, p, o),
                properties=props,
            )
        case ofmsg.Barrier():
            return p.OFPBarrierRequest(datapath)
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
        else:
            raise TypeError(f"installed action {a!r} has no ofmsg equivalent")
    return tuple(out)


def _flow_from_stats(stats: Any) -> ofmsg.InstalledFlow:
    actions: tuple[ofmsg.Action, ...] = ()
    for inst in stats.instructions:
        if type(inst).__name__ == "OFPInstructionActions" and inst.type == ofp.OFPIT_APPLY_ACTIONS:
            actions += from_osken_actions(inst.actions)
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


def _group_from_stats(stats: Any) -> ofmsg.InstalledGroup:
    gtype = ofmsg.GroupType(stats.type)
    return ofmsg.InstalledGroup(
        group_id=stats.group_id,
        type=gtype,
        buckets=tuple(_bucket_from_stats(b, gtype) for b in stats.buckets),
    )


def _port_live(port: Any) -> bool:
    return bool(port.state & ofp.OFPPS_LIVE) and not port.config & ofp.OFPPC_PORT_DOWN


def _port_name(port: Any) -> str:
    name = port.name
    return name.decode(errors="replace") if isinstance(name, bytes) else str(name)


# ---------------------------------------------------------------- os-ken configuration and apps


_CONF_LOCK = threading.Lock()
_CONFIGURED = False
_SHARED_LOCK = threading.Lock()
_shared_users = 0
_handler_app: Any = None


def _configure_osken() -> None:
    """Make os_ken.cfg.CONF safe: loopback only, no fixed listening ports, fast socket timeout."""
    global _CONFIGURED
    with _CONF_LOCK:
        if _CONFIGURED:
            return
        conf = cfg.CONF
        # Parse an empty command line (never sys.argv: pytest's or our CLI's options are not os-ken's).
        with contextlib.suppress(oslo_cfg.Error):
            conf(args=[], project="os_ken", default_config_files=[])
        conf.set_override("ofp_listen_host", "127.0.0.1")
        # Non-zero values (0 would make OpenFlowController fall back to 6653 + 6633); we never start
        # os-ken's listener, but if anything did, these are "pick any free port" on loopback only.
        conf.set_override("ofp_tcp_listen_port", 0)
        conf.set_override("ofp_ssl_listen_port", 1)
        conf.set_override("ofp_switch_address_list", [])
        _CONFIGURED = True


class _ClientOnlyOFPHandler(OFPHandler):
    """os-ken's handshake app (hello, features, port-desc, echo) without OpenFlowController's listener."""

    def start(self) -> None:  # type: ignore[override]
        app_manager.OSKenApp.start(self)  # only the event loop; returns None: no main thread
        return None


def _acquire_shared() -> None:
    global _shared_users, _handler_app
    with _SHARED_LOCK:
        if _shared_users == 0:
            mgr = app_manager.AppManager.get_instance()
            _handler_app = mgr.instantiate(_ClientOnlyOFPHandler)
            _handler_app.start()
        _shared_users += 1


def _release_shared() -> None:
    global _shared_users, _handler_app
    with _SHARED_LOCK:
        _shared_users -= 1
        if _shared_users == 0 and _handler_app is not None:
            mgr = app_manager.AppManager.get_instance()
            with contextlib.suppress(KeyError):
                mgr.uninstantiate(_handler_app.name)
            _handler_app = None


class _Datapath(osken_controller.Datapath):
    """os-ken's Datapath with one fix for the native hub.

    When the switch closes the connection, `serve()` kills its send thread with `hub.kill`, a no-op
    under the native hub, then joins it; that thread sits in `send_q.get()` forever, so `serve()` never
    returns, the datapath never reaches DEAD_DISPATCHER and no one learns the connection is gone. After
    the receive loop ends we queue a close marker, which makes the send loop exit.

    `owner` is the OfDriver that opened the connection: every app sees every datapath's events, and
    each driver's app keeps only those of its own connections.
    """

    def __init__(self, sock: socket.socket, address: tuple[str, int], owner: OfDriver) -> None:
        self.owner = owner  # before super().__init__, which already emits a state-change event
        super().__init__(sock, address)

    def _recv_loop(self) -> None:
        try:
            super()._recv_loop()
        finally:
            with contextlib.suppress(Exception):
                self.send(b"", close_socket=True)


def _serve_connection(sock: socket.socket, address: tuple[str, int], owner: OfDriver) -> None:
    """What os_ken.controller.controller.datapath_connection_factory does, with our _Datapath."""
    with contextlib.closing(_Datapath(sock, address, owner)) as datapath:
        datapath.serve()


class FirepathOFApp(app_manager.OSKenApp):
    """Receives os-ken events for one driver. Handlers translate and hand over; they never block."""

    # Global in os-ken (intersected over all apps): both versions, the bridge's `protocols` decides.
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION, ofproto_v1_5.OFP_VERSION]

    def __init__(self, *args: Any, driver: OfDriver, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.name = f"firepath_of_{id(driver):x}"  # unique per driver: several may share a process
        self.driver = driver

    def _mine(self, datapath: Any) -> bool:
        return getattr(datapath, "owner", None) is self.driver

    @set_ev_cls(ofp_event.EventOFPStateChange, [MAIN_DISPATCHER, DEAD_DISPATCHER])
    def _state_change(self, ev: Any) -> None:
        if not self._mine(ev.datapath):
            return
        if ev.state == MAIN_DISPATCHER:
            self.driver._on_main(ev.datapath)
        elif ev.state == DEAD_DISPATCHER:
            self.driver._on_dead(ev.datapath)

    @set_ev_cls(
        [
            ofp_event.EventOFPPortDescStatsReply,
            ofp_event.EventOFPPortStatus,
            ofp_event.EventOFPPacketIn,
            ofp_event.EventOFPBarrierReply,
            ofp_event.EventOFPFlowStatsReply,
            ofp_event.EventOFPFlowDescStatsReply,
            ofp_event.EventOFPGroupDescStatsReply,
            ofp_event.EventOFPErrorMsg,
        ],
        MAIN_DISPATCHER,
    )
    def _message(self, ev: Any) -> None:
        msg = ev.msg
        if not self._mine(msg.datapath):
            return
        handler = self._handlers.get(type(ev))
        if handler is not None:
            handler(msg)

    def start(self) -> Any:
        d = self.driver
        self._handlers = {
            ofp_event.EventOFPPortDescStatsReply: d._on_port_desc,
            ofp_event.EventOFPPortStatus: d._on_port_status,
            ofp_event.EventOFPPacketIn: d._on_packet_in,
            ofp_event.EventOFPBarrierReply: d._on_barrier_reply,
            ofp_event.EventOFPFlowStatsReply: d._on_multipart,
            ofp_event.EventOFPFlowDescStatsReply: d._on_multipart,
            ofp_event.EventOFPGroupDescStatsReply: d._on_multipart,
            ofp_event.EventOFPErrorMsg: d._on_error,
        }
        return super().start()


# ---------------------------------------------------------------- network namespace helper

_CLONE_NEWNET = 0x40000000


def _socket_in_netns(netns: str) -> socket.socket:
    """A TCP socket created inside a named network namespace.

    A socket belongs to the namespace of the thread that created it, for good; setns() only changes the
    calling thread, so a throwaway thread enters the namespace, creates the socket and ends.
    """
    result: list[socket.socket | BaseException] = []

    def work() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/var/run/netns/{netns}", os.O_RDONLY)
            try:
                if libc.setns(fd, _CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({netns}): {os.strerror(err)}")
            finally:
                os.close(fd)
            result.append(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        except BaseException as e:  # handed to the caller
            result.append(e)

    t = threading.Thread(target=work, name=f"netns-{netns}", daemon=True)
    t.start()
    t.join()
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


def parse_target(target: str) -> tuple[str, int]:
    """'tcp:127.0.0.1:16001' (or '127.0.0.1:16001') -> ('127.0.0.1', 16001)."""
    rest = target[4:] if target.startswith("tcp:") else target
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"OpenFlow target {target!r}: expected tcp:IP:PORT")
    try:
        socket.inet_aton(host)
    except OSError:
        raise ValueError(f"OpenFlow target {target!r}: {host!r} is not an IPv4 address") from None
    return host, int(port)


# ---------------------------------------------------------------- the driver


def _flow_dump_request(dp: Any) -> Any:
    p = dp.ofproto_parser
    # OpenFlow 1.5 split flow stats: FLOW_DESC carries the instructions, FLOW_STATS only counters.
    cls = p.OFPFlowDescStatsRequest if dp.ofproto.OFP_VERSION >= 0x06 else p.OFPFlowStatsRequest
    return cls(dp, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY)


def _group_dump_request(dp: Any) -> Any:
    return dp.ofproto_parser.OFPGroupDescStatsRequest(dp, 0)


class _Multipart:
    """Collects the bodies of one multipart reply (possibly several messages)."""

    def __init__(self) -> None:
        self.body: list[Any] = []
        self.done = threading.Event()
        self.error: str | None = None


@dataclass(slots=True)
class _Work:
    epoch: int
    kind: str  # "batch" | "setup" | "request"
    batch_id: int = 0
    messages: list[ofmsg.OfMessage] = field(default_factory=list)
    requests: list[tuple[Any, _Multipart]] = field(default_factory=list)


_STOP = object()


class OfDriver:
    """Thread-safe OpenFlow driver for one switch (OpenFlow 1.3 or 1.5, whichever the bridge allows).

    `target`: "tcp:IP:PORT" of the bridge's listening target. `netns`: connect from inside this named
    network namespace (the OVS may run in a lab namespace while this process stays in the root one).
    `select_method`: on an OpenFlow 1.5 connection, every SELECT group ADD/MODIFY carries OVS's
    selection-method property with this value (default "dp_hash": hash of the L4 5-tuple, UDP ports
    included; OVS's default for OF1.3 groups hashes UDP flows by addresses only). Ignored on 1.3.
    `on_event` is called from one dispatcher thread of the driver, in order; it may call `send()`,
    `packet_out()` and even `dump_state()` (which blocks the dispatcher meanwhile).
    """

    def __init__(
        self,
        target: str,
        on_event: Callable[[DriverEvent], None],
        *,
        netns: str | None = None,
        reconnect_min: float = 0.05,
        reconnect_max: float = 1.0,
        connect_timeout: float = 2.0,
        select_method: str | None = "dp_hash",
    ) -> None:
        self.address = parse_target(target)
        self.select_method = select_method
        #: selection method of each SELECT group as read by the last dump_state() ("" = OVS default;
        #: always "" on OpenFlow 1.3, which cannot express it). ofmsg.InstalledGroup has no such field.
        self.last_selection_methods: dict[int, str] = {}
        self.target = target
        self.netns = netns
        self._on_event = on_event
        self._reconnect_min = reconnect_min
        self._reconnect_max = reconnect_max
        self._connect_timeout = connect_timeout

        self._lock = threading.Lock()
        self._running = False
        self._stopping = threading.Event()
        self._dp: Any = None  # os-ken Datapath of the current connection (MAIN state reached)
        self._epoch = 0  # +1 per connection
        self._connected = False  # Connected emitted for this epoch
        self._sock: socket.socket | None = None
        self._next_batch = 0
        self._barriers: dict[int, int] = {}  # barrier xid -> batch_id
        self._batches: collections.deque[tuple[int, int, int]] = collections.deque(
            maxlen=256
        )  # id, xid0, xid1
        self._multipart: dict[int, _Multipart] = {}
        self._port_desc_xid: int | None = None
        self._pending_ports: dict[int, Any] = {}
        self._live: dict[int, bool] = {}  # last liveness reported per port (PortStatus is repetitive)

        self._events: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._work: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._app: FirepathOFApp | None = None
        self._threads: list[threading.Thread] = []
        self._osken_threads: set[int] = set()

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        with self._lock:
            if self._running:
                raise RuntimeError("OfDriver already started")
            self._running = True
        self._stopping.clear()
        _configure_osken()
        # Everything os-ken spawns inherits daemon=True from the thread that creates it.
        boot = threading.Thread(target=self._boot, name="of-boot", daemon=True)
        boot.start()
        boot.join()
        for target, name in ((self._dispatch_loop, "of-dispatch"), (self._send_loop, "of-send")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        conn = threading.Thread(target=self._connect_loop, name="of-connect", daemon=True)
        conn.start()
        self._threads.append(conn)

    def _boot(self) -> None:
        _acquire_shared()
        mgr = app_manager.AppManager.get_instance()
        self._app = mgr.instantiate(FirepathOFApp, driver=self)
        self._app.start()
        self._osken_threads.update(t.ident for t in self._app.threads if t.ident)

    def stop(self, timeout: float = 5.0) -> None:
        """Close the connection and stop every thread of this driver. Idempotent."""
        with self._lock:
            if not self._running:
                return
            self._running = False
        self._stopping.set()
        self._close_connection()
        self._work.put(_STOP)
        deadline = time.monotonic() + timeout
        for t in self._threads:
            if t.name != "of-dispatch":
                t.join(max(0.0, deadline - time.monotonic()))
        if self._app is not None:
            with contextlib.suppress(KeyError):
                app_manager.AppManager.get_instance().uninstantiate(self._app.name)
            self._app = None
            _release_shared()
        self._events.put(_STOP)
        for t in self._threads:
            if t.name == "of-dispatch" and t is not threading.current_thread():
                t.join(max(0.0, deadline - time.monotonic()))
        self._threads.clear()

    def __enter__(self) -> OfDriver:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def connected(self) -> bool:
        return self._connected

    # ---------------------------------------------------------------- public API

    def send(self, messages: list[ofmsg.OfMessage]) -> int:
        """Queue a batch; messages go out in order. Returns its batch id.

        If the batch ends with a Barrier, `BarrierDone(batch_id)` follows when its reply arrives (the
        switch has then applied every earlier message). Rejected messages produce `OfError(batch_id)`.
        Raises NotConnected if there is no ready connection.
        """
        for m in messages:
            if not isinstance(m, ofmsg.FlowMod | ofmsg.GroupMod | ofmsg.Barrier | ofmsg.PacketOut):
                raise TypeError(f"send(): {m!r} is not an OpenFlow message of client.ofmsg")
        with self._lock:
            if not self._connected:
                raise NotConnected(f"no OpenFlow connection to {self.target}")
            self._next_batch += 1
            batch_id = self._next_batch
            epoch = self._epoch
        self._work.put(_Work(epoch, "batch", batch_id, list(messages)))
        return batch_id

    def packet_out(self, port: int, data: bytes) -> int:
        """Send one frame out of `port` (a batch of one PacketOut)."""
        return self.send([ofmsg.PacketOut(port, data)])

    def dump_state(
        self, timeout: float = 5.0
    ) -> tuple[list[ofmsg.InstalledFlow], list[ofmsg.InstalledGroup]]:
        """All flows (every table) and groups installed in the switch, read with multipart requests.

        Blocks up to `timeout` seconds. The requests are queued after everything sent before, so the
        answer reflects those messages. Must not be called from an os-ken thread (it would deadlock).
        """
        if threading.get_ident() in self._osken_threads or threading.current_thread().name in (
            "of-send",
            "of-connect",
        ):
            raise RuntimeError("dump_state() called from a driver/os-ken thread: would deadlock")
        flows_req = _Multipart()
        groups_req = _Multipart()
        with self._lock:
            if not self._connected:
                raise NotConnected(f"no OpenFlow connection to {self.target}")
            epoch = self._epoch
        self._work.put(
            _Work(
                epoch,
                "request",
                requests=[(_flow_dump_request, flows_req), (_group_dump_request, groups_req)],
            )
        )
        deadline = time.monotonic() + timeout
        for req in (flows_req, groups_req):
            if not req.done.wait(max(0.0, deadline - time.monotonic())):
                raise TimeoutError(
                    f"dump_state: no complete multipart reply from {self.target} in {timeout}s"
                )
            if req.error is not None:
                raise NotConnected(req.error)
        flows = [_flow_from_stats(s) for s in flows_req.body]
        groups = [_group_from_stats(s) for s in groups_req.body]
        self.last_selection_methods = {
            s.group_id: _selection_method_of(getattr(s, "properties", ()))
            for s in groups_req.body
            if s.type == ofmsg.GroupType.SELECT
        }
        return flows, groups

    # ---------------------------------------------------------------- threads of ours

    def _emit(self, event: DriverEvent) -> None:
        self._events.put(event)

    def _dispatch_loop(self) -> None:
        while True:
            ev = self._events.get()
            if ev is _STOP:
                return
            try:
                self._on_event(ev)
            except Exception:
                LOG.exception("on_event(%r) raised", ev)

    def _connect_loop(self) -> None:
        backoff = self._reconnect_min
        while not self._stopping.is_set():
            sock = None
            try:
                sock = (
                    _socket_in_netns(self.netns)
                    if self.netns
                    else socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                )
                sock.settimeout(self._connect_timeout)
                sock.connect(self.address)
            except OSError as e:
                if sock is not None:
                    sock.close()
                LOG.debug("connect %s: %s", self.target, e)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, self._reconnect_max)
                continue
            backoff = self._reconnect_min
            with self._lock:
                self._sock = sock
            if self._stopping.is_set():
                break
            self._osken_threads.add(threading.get_ident())
            try:
                # Runs the os-ken Datapath (hello, features, ...) in this thread until the connection ends.
                _serve_connection(sock, self.address, self)
            except Exception:
                LOG.exception("OpenFlow connection to %s failed", self.target)
            finally:
                self._osken_threads.discard(threading.get_ident())
                with self._lock:
                    self._sock = None
                with contextlib.suppress(OSError):
                    sock.close()
            # Make sure the connection counts as ended even if os-ken did not reach DEAD_DISPATCHER.
            self._connection_ended(None, "connection closed")
            self._stopping.wait(self._reconnect_min)

    def _close_connection(self) -> None:
        with self._lock:
            sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _send_loop(self) -> None:
        while True:
            work = self._work.get()
            if work is _STOP:
                return
            with self._lock:
                dp = self._dp
                current = work.epoch == self._epoch and dp is not None
            if not current:
                for _, req in work.requests:
                    req.error = f"connection to {self.target} ended"
                    req.done.set()
                continue
            try:
                self._send_work(dp, work)
            except Exception as e:
                LOG.exception("sending to %s failed", self.target)
                for _, req in work.requests:
                    req.error = f"send failed: {e}"
                    req.done.set()

    def _send_work(self, dp: Any, work: _Work) -> None:
        if work.kind == "setup":
            p = dp.ofproto_parser
            dp.send_msg(p.OFPSetConfig(dp, ofp.OFPC_FRAG_NORMAL, 0xFFFF))
            req = p.OFPPortDescStatsRequest(dp, 0)
            dp.set_xid(req)
            with self._lock:
                self._port_desc_xid = req.xid
            dp.send_msg(req)
            return
        if work.kind == "request":
            for build, collector in work.requests:
                msg = build(dp)
                dp.set_xid(msg)
                with self._lock:
                    self._multipart[msg.xid] = collector
                if not dp.send_msg(msg):
                    collector.error = "connection closing"
                    collector.done.set()
            return
        # Number and register everything first: an error or barrier reply may arrive before the loop ends.
        msgs = [to_osken(m, dp, select_method=self.select_method) for m in work.messages]
        xids = [dp.set_xid(msg) for msg in msgs]
        if not msgs:
            return
        with self._lock:
            self._batches.append((work.batch_id, xids[0], xids[-1]))
            for m, xid in zip(work.messages, xids, strict=True):
                if isinstance(m, ofmsg.Barrier):
                    self._barriers[xid] = work.batch_id
        for msg in msgs:
            if not dp.send_msg(msg):  # blocks while os-ken's 16-deep send queue is full
                return  # connection is going away; the runtime reconciles after reconnecting

    # ---------------------------------------------------------------- called from os-ken's app thread

    def _on_main(self, dp: Any) -> None:
        with self._lock:
            self._epoch += 1
            self._dp = dp
            self._connected = False
            self._barriers.clear()
            self._pending_ports = {}
            epoch = self._epoch
        self._work.put(_Work(epoch, "setup"))

    def _on_port_desc(self, msg: Any) -> None:
        dp = msg.datapath
        with self._lock:
            if dp is not self._dp or msg.xid != self._port_desc_xid:
                return
            ports = self._pending_ports
            for p in msg.body:
                if p.port_no <= ofp.OFPP_MAX:
                    ports[p.port_no] = p
            if msg.flags & ofp.OFPMPF_REPLY_MORE:
                return
            self._pending_ports = {}
            self._port_desc_xid = None
            self._connected = True
            self._live = {n: _port_live(p) for n, p in ports.items()}
        self._emit(
            Connected(
                dpid=dp.id,
                ports={n: _port_live(p) for n, p in sorted(ports.items())},
                names={n: _port_name(p) for n, p in sorted(ports.items())},
                version=dp.ofproto.OFP_VERSION,
            )
        )

    def _on_dead(self, dp: Any) -> None:
        self._connection_ended(dp, "connection closed")

    def _connection_ended(self, dp: Any, reason: str) -> None:
        with self._lock:
            if dp is not None and dp is not self._dp:
                return
            if self._dp is None:
                return
            was_connected = self._connected
            self._dp = None
            self._connected = False
            self._epoch += 1  # invalidates queued work of the old connection
            self._barriers.clear()
            pending = list(self._multipart.values())
            self._multipart.clear()
        for req in pending:
            req.error = f"connection to {self.target} ended"
            req.done.set()
        if was_connected:
            self._emit(Disconnected(reason))

    def _on_port_status(self, msg: Any) -> None:
        if msg.datapath is not self._dp or not self._connected:
            return
        port = msg.desc
        if port.port_no > ofp.OFPP_MAX:
            return
        deleted = msg.reason == ofp.OFPPR_DELETE
        live = _port_live(port) and not deleted
        with self._lock:
            # OVS sends several MODIFY messages per carrier change (state, then config/speed...):
            # report only changes of liveness, additions and deletions.
            if not deleted and self._live.get(port.port_no) == live:
                return
            if deleted:
                self._live.pop(port.port_no, None)
            else:
                self._live[port.port_no] = live
        self._emit(PortStatusChanged(port.port_no, live, _port_name(port), deleted))

    def _on_packet_in(self, msg: Any) -> None:
        if msg.datapath is not self._dp:
            return
        self._emit(PacketIn(port=msg.match.get("in_port", 0), data=bytes(msg.data), cookie=msg.cookie))

    def _on_barrier_reply(self, msg: Any) -> None:
        with self._lock:
            if msg.datapath is not self._dp:
                return
            batch_id = self._barriers.pop(msg.xid, None)
        if batch_id is not None:
            self._emit(BarrierDone(batch_id))

    def _on_multipart(self, msg: Any) -> None:
        with self._lock:
            collector = self._multipart.get(msg.xid)
            if collector is None:
                return
            if not msg.flags & ofp.OFPMPF_REPLY_MORE:
                del self._multipart[msg.xid]
        collector.body.extend(msg.body)
        if not msg.flags & ofp.OFPMPF_REPLY_MORE:
            collector.done.set()

    def _on_error(self, msg: Any) -> None:
        if msg.datapath is not self._dp:
            return
        batch_id = None
        with self._lock:
            for bid, first, last in reversed(self._batches):
                if first <= msg.xid <= last:
                    batch_id = bid
                    break
            collector = self._multipart.pop(msg.xid, None)
        if collector is not None:
            collector.error = f"switch rejected request: type={msg.type} code={msg.code}"
            collector.done.set()
        o = msg.datapath.ofproto
        text = f"type={o.ofp_error_type_to_str(msg.type)} code={o.ofp_error_code_to_str(msg.type, msg.code)}"
        self._emit(OfError(batch_id, msg.type, msg.code, text))
