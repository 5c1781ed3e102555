"""`OfDriver`: one switch's OpenFlow connection, its threads and its batch bookkeeping.

`OfDriver` connects actively to one Open vSwitch bridge that listens (`ptcp:PORT:127.0.0.1`), speaks
OpenFlow through os-ken (embedded by `client.of.embed`, messages built by `client.of.translate`), and
offers a small thread-safe API in firepath's own types (`client.ofmsg` values in, `client.of.events`
out). This module does not import os-ken itself.

OpenFlow version: 1.3 or 1.5, the highest the bridge's `protocols` allow (lab.ovs bridges allow both).
On 1.5 every SELECT group ADD/MODIFY carries `selection_method=dp_hash` (see `client.of.translate`):
setting it afterwards with `ovs-ofctl -O OpenFlow15 mod-group` is not viable, as the next OF1.3 group
MODIFY silently resets it.

Threads: os-ken's (handshake and receive loop of each connection: replies and asynchronous messages are
handed to this driver's `_on_*` methods on the receive thread itself, `client.of.embed`); `of-dispatch`
calls the user's `on_event` in order, so a slow callback never stalls os-ken's receive loop — unless the
driver is built with `inline_events=True`, for a callback that never blocks (the client daemon's: it only
enqueues, or completes a batch): then `on_event` runs on the thread that produced the event, one thread
hand-off less per event (issue #20); `of-connect` opens the connection (optionally inside a network
namespace, `client.of.sockets`) and serves it. Sending: a batch (or request) is serialized and written to
the socket by the thread that calls `send()` when nothing is queued before it (`_Datapath.send` writes
directly, under a lock); while another send is under way it is queued, in order, for `of-send`.
Barriers are never waited for: a barrier reply becomes a `BarrierDone(batch_id)` event.

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
import logging
import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from client import ofmsg
from client.of import embed, translate
from client.of.events import (
    BarrierDone,
    Connected,
    Disconnected,
    DriverEvent,
    NotConnected,
    OfError,
    PacketIn,
    PortStatusChanged,
    RoleChanged,
)
from client.of.sockets import parse_target, socket_in_netns
from client.of.wire import WireCache

LOG = logging.getLogger("firepath.of.driver")

__all__ = ["OfDriver"]


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
    `packet_out()` and even `dump_state()` (which blocks the dispatcher meanwhile). With `inline_events`,
    it is called on the thread that produced the event (os-ken's receive thread for messages of the switch),
    still in the order the switch sent them; it must then never block (no `dump_state()`).
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
        inline_events: bool = False,
        generation_id: int | None = None,
    ) -> None:
        self.address = parse_target(target)
        self.select_method = select_method
        #: selection method of each SELECT group as read by the last dump_state() ("" = OVS default;
        #: always "" on OpenFlow 1.3, which cannot express it). ofmsg.InstalledGroup has no such field.
        self.last_selection_methods: dict[int, str] = {}
        self.target = target
        self.netns = netns
        #: with a generation_id, every connection first asks for the MASTER role with it (client.ofrole)
        self.generation_id = generation_id
        self._on_event = on_event
        self.inline_events = inline_events
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
        self._wire: WireCache | None = None  # serialized messages of the current connection (of-send only)
        self._pending_ports: dict[int, Any] = {}
        self._live: dict[int, tuple[bool, bool]] = {}  # last (live, carrier) per port (PortStatus is repetitive)
        self._hw: dict[int, str] = {}     # port -> hardware address (port-desc), for PortMod

        self._events: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._work: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._tx = threading.Lock()     # held while a work item is serialized and written (any thread)
        self._queued = 0                # work items queued for of-send, not finished (guarded by _lock)
        self.sent_direct = 0            # work items written by the caller's thread
        self.sent_queued = 0            # ... by of-send (another send was under way)
        self.batch_writes = 0           # socket writes of batches (one per batch)
        self._app: Any = None
        self._threads: list[threading.Thread] = []
        self._osken_threads: set[int] = set()

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        with self._lock:
            if self._running:
                raise RuntimeError("OfDriver already started")
            self._running = True
        self._stopping.clear()
        embed.configure()
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
        self._app = embed.instantiate_app(self)
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
            embed.uninstantiate_app(self._app)
            self._app = None
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
            if not isinstance(m, ofmsg.FlowMod | ofmsg.GroupMod | ofmsg.MeterMod | ofmsg.Barrier | ofmsg.PacketOut
                              | ofmsg.PortMod):
                raise TypeError(f"send(): {m!r} is not an OpenFlow message of client.ofmsg")
        with self._lock:
            if not self._connected:
                raise NotConnected(f"no OpenFlow connection to {self.target}")
            self._next_batch += 1
            batch_id = self._next_batch
            epoch = self._epoch
        self._submit(_Work(epoch, "batch", batch_id, list(messages)))
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
        self._submit(
            _Work(
                epoch,
                "request",
                requests=[(translate.flow_dump_request, flows_req), (translate.group_dump_request, groups_req)],
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
        flows = [translate.flow_from_stats(s) for s in flows_req.body]
        groups = [translate.group_from_stats(s) for s in groups_req.body]
        self.last_selection_methods = {
            s.group_id: translate.selection_method_of(getattr(s, "properties", ()))
            for s in groups_req.body
            if s.type == ofmsg.GroupType.SELECT
        }
        return flows, groups

    def dump_meters(self, timeout: float = 5.0) -> list[ofmsg.InstalledMeter]:
        """Every meter installed in the switch (same rules as `dump_state`)."""
        if threading.get_ident() in self._osken_threads or threading.current_thread().name in (
            "of-send",
            "of-connect",
        ):
            raise RuntimeError("dump_meters() called from a driver/os-ken thread: would deadlock")
        req = _Multipart()
        with self._lock:
            if not self._connected:
                raise NotConnected(f"no OpenFlow connection to {self.target}")
            epoch = self._epoch
        self._submit(_Work(epoch, "request", requests=[(translate.meter_dump_request, req)]))
        if not req.done.wait(timeout):
            raise TimeoutError(f"dump_meters: no complete multipart reply from {self.target} in {timeout}s")
        if req.error is not None:
            raise NotConnected(req.error)
        return [translate.meter_from_stats(s) for s in req.body]

    # ---------------------------------------------------------------- threads of ours

    def _emit(self, event: DriverEvent) -> None:
        if not self.inline_events:
            self._events.put(event)
            return
        try:
            self._on_event(event)
        except Exception:
            LOG.exception("on_event(%r) raised", event)

    def _dispatch_loop(self) -> None:
        while True:
            ev = self._events.get()
            if ev is _STOP:
                return
            try:
                self._on_event(ev)
            except Exception:
                LOG.exception("on_event(%r) raised", ev)

    #: an unreachable switch is reported at once, then at most once per this many seconds while it lasts
    CONNECT_WARN_EVERY = 10.0

    def _connect_loop(self) -> None:
        backoff = self._reconnect_min
        failures = 0
        warned_at = -1e18
        while not self._stopping.is_set():
            sock = None
            try:
                sock = (
                    socket_in_netns(self.netns)
                    if self.netns
                    else socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                )
                sock.settimeout(self._connect_timeout)
                sock.connect(self.address)
            except OSError as e:
                if sock is not None:
                    sock.close()
                failures += 1
                now = time.monotonic()
                if now - warned_at >= self.CONNECT_WARN_EVERY:
                    warned_at = now
                    where = f" in netns {self.netns}" if self.netns else ""
                    LOG.warning("event=of_unreachable target=%s%s attempts=%d error=%r action=retrying every "
                                "<=%gs", self.target, where, failures, e.strerror or str(e), self._reconnect_max)
                else:
                    LOG.debug("connect %s: %s", self.target, e)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, self._reconnect_max)
                continue
            if failures:
                LOG.info("event=of_reachable target=%s after_attempts=%d", self.target, failures)
                failures, warned_at = 0, -1e18
            backoff = self._reconnect_min
            with self._lock:
                self._sock = sock
            if self._stopping.is_set():
                break
            self._osken_threads.add(threading.get_ident())
            try:
                # Runs the os-ken Datapath (hello, features, ...) in this thread until the connection ends.
                embed.serve_connection(sock, self.address, self)
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

    def _submit(self, work: _Work) -> None:
        """Write `work` now on this thread if nothing is queued before it and no other thread is writing;
        otherwise queue it for of-send (FIFO: a direct write never overtakes queued work)."""
        with self._lock:
            direct = self._queued == 0 and self._tx.acquire(blocking=False)
            if not direct:
                self._queued += 1
        if not direct:
            self._work.put(work)
            return
        try:
            self._send_current(work)
            self.sent_direct += 1
        finally:
            self._tx.release()

    def _send_loop(self) -> None:
        while True:
            work = self._work.get()
            if work is _STOP:
                return
            try:
                with self._tx:
                    self._send_current(work)
                    self.sent_queued += 1
            finally:
                with self._lock:
                    self._queued -= 1

    def _send_current(self, work: _Work) -> None:
        """Serialize and write `work` if its connection is still the current one (with `_tx` held)."""
        with self._lock:
            dp = self._dp
            current = work.epoch == self._epoch and dp is not None
        if not current:
            for _, req in work.requests:
                req.error = f"connection to {self.target} ended"
                req.done.set()
            return
        try:
            self._send_work(dp, work)
        except Exception as e:
            LOG.exception("sending to %s failed", self.target)
            for _, req in work.requests:
                req.error = f"send failed: {e}"
                req.done.set()

    def _send_work(self, dp: Any, work: _Work) -> None:
        if work.kind == "setup":
            role = None if self.generation_id is None else ofmsg.RoleRequest(ofmsg.Role.MASTER, self.generation_id)
            *config, req = translate.setup_messages(dp, role)
            for msg in config:
                dp.send_msg(msg)
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
        if self._wire is None or self._wire.dp is not dp:
            self._wire = WireCache(dp, self.select_method)
        encoded = [self._wire.encode(m, self._hw) for m in work.messages]
        xids = [xid for _, xid in encoded]
        if not encoded:
            return
        with self._lock:
            self._batches.append((work.batch_id, xids[0], xids[-1]))
            for m, xid in zip(work.messages, xids, strict=True):
                if isinstance(m, ofmsg.Barrier):
                    self._barriers[xid] = work.batch_id
        # The whole batch in one write (one syscall, one read for the switch), on this thread
        # (client.of.embed._Datapath.send); an os-ken message object serializes with its xid already set.
        chunks: list[bytes] = []
        for item, _ in encoded:
            if not isinstance(item, bytes):
                item.serialize()
                item = bytes(item.buf)
            chunks.append(item)
        self.batch_writes += 1
        if not dp.send(b"".join(chunks)):
            return  # connection is going away; the runtime reconciles after reconnecting

    # ---------------------------------------------------------------- called from os-ken's threads
    # (_on_main/_on_dead: FirepathOFApp's thread; the others: the connection's receive thread)

    def _on_main(self, dp: Any) -> None:
        with self._lock:
            self._epoch += 1
            self._dp = dp
            self._connected = False
            self._barriers.clear()
            self._pending_ports = {}
            epoch = self._epoch
        self._submit(_Work(epoch, "setup"))

    def _on_port_desc(self, msg: Any) -> None:
        dp = msg.datapath
        with self._lock:
            if dp is not self._dp or msg.xid != self._port_desc_xid:
                return
            ports = self._pending_ports
            ports.update(translate.physical_ports(msg.body))
            if translate.reply_more(msg):
                return
            self._pending_ports = {}
            self._port_desc_xid = None
            self._connected = True
            self._live = {n: (translate.port_live(p), translate.port_carrier(p)) for n, p in ports.items()}
            self._hw = {n: str(p.hw_addr) for n, p in ports.items()}
        self._emit(
            Connected(
                dpid=dp.id,
                ports={n: translate.port_live(p) for n, p in sorted(ports.items())},
                names={n: translate.port_name(p) for n, p in sorted(ports.items())},
                version=dp.ofproto.OFP_VERSION,
                carrier={n: translate.port_carrier(p) for n, p in sorted(ports.items())},
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
        status = translate.port_status(msg)
        if status is None:
            return
        port_no, live, name, deleted, carrier = status
        with self._lock:
            if not deleted:
                self._hw[port_no] = str(msg.desc.hw_addr)
            # OVS sends several MODIFY messages per carrier change (state, then config/speed...):
            # report only changes of liveness or carrier, additions and deletions.
            if not deleted and self._live.get(port_no) == (live, carrier):
                return
            if deleted:
                self._live.pop(port_no, None)
            else:
                self._live[port_no] = (live, carrier)
        self._emit(PortStatusChanged(port_no, live, name, deleted, carrier))

    def _on_packet_in(self, msg: Any) -> None:
        if msg.datapath is not self._dp:
            return
        self._emit(PacketIn(port=msg.match.get("in_port", 0), data=bytes(msg.data), cookie=msg.cookie))

    def _on_role(self, msg: Any) -> None:
        """A role reply or an OFPT_ROLE_STATUS (another controller became master)."""
        if msg.datapath is not self._dp:
            return
        role, generation_id = translate.role_of(msg)
        source = "status" if type(msg).__name__ == "OFPRoleStatus" else "reply"
        self._emit(RoleChanged(role, generation_id, source))

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
            more = translate.reply_more(msg)
            if not more:
                del self._multipart[msg.xid]
        collector.body.extend(msg.body)
        if not more:
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
        self._emit(OfError(batch_id, msg.type, msg.code, translate.error_text(msg)))
