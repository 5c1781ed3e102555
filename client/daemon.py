"""The switch client daemon: wires the pure cores to OVS (OpenFlow) and to the masters (UDP).

Threads, and why:

- **control** (this module): owns the Codec, the port table (PHY + ND + damping), the reporter and the
  LSD replica. Everything latency-critical happens here and it never computes routes, so ND frames go
  out on time whatever the routing load (Firepath's whole-fabric reboot outage was ND starved of CPU).
  It sleeps until the earliest core deadline or the next input.
- **programmer** (`client.programmer`): route computation and OpenFlow programming, fed the latest LSD.
- **udp-rx** (`client.transport`) and the OpenFlow driver's threads (`client.oskenapp`) only hand raw
  inputs to the control thread's inbox.

Hitless restart: the first port report is held back until every live fabric port has ND up (or a short
grace expires), so a restarting client never tells the master its links are down; the programmer does
not touch the switch before it has an LSD and then reconciles the installed state without flushing.
"""

from __future__ import annotations

import logging
import math
import queue
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from client.nd import SendNd
from client.ofmsg import PacketOut
from client.oskenapp import (
    BarrierDone,
    Connected,
    Disconnected,
    OfDriver,
    OfError,
    PacketIn,
    PortStatusChanged,
)
from client.ports import PortChanged, PortTable
from client.programmer import Programmer
from client.replica import FailStaticChanged, LsdApplied, LsdReplica
from client.reporter import Reporter, SendToMaster
from client.transport import UdpTransport
from proto.auth import KeyRing
from proto.config import Fabric
from proto.messages import (
    Codec,
    DecodeError,
    EncodeError,
    Keepalive,
    LsdDelta,
    LsdFull,
    NdFrame,
    ReportAck,
    decode_nd_ethernet,
    encode_nd_ethernet,
)

log = logging.getLogger("firepath.client")

#: Inbox item kinds.
_DATAGRAM = "dgram"
_DRIVER = "driver"
_STOP = "stop"
_CALL = "call"


class ClientDaemon:
    """One switch's Firepath client. `start()`, then `stop()` (or `run_forever()` until a signal)."""

    def __init__(self, fabric: Fabric, switch: str, keyring: KeyRing, *, ovs_target: str,
                 netns: str | None = None, bind: str = "127.0.0.1",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.fabric = fabric
        self.switch = fabric.switch(switch)
        self.name = switch
        self.clock = clock
        now = clock()
        self.started_at = now
        self.codec = Codec(keyring, switch, [s.name for s in fabric.switches], [m.id for m in fabric.masters],
                           accept_group=fabric.distribution.mode == "multicast")
        self.ports = PortTable(fabric, switch, now=now)
        self.reporter = Reporter(fabric, switch, now=now, initial_seq=time.time_ns() // 1_000_000)
        self.replica = LsdReplica(fabric, switch, now=now)
        self.driver = OfDriver(ovs_target, self._on_driver_event, netns=netns)
        self.programmer = Programmer(fabric, switch, self.driver, clock=clock)
        self.transport = UdpTransport(fabric, self._on_datagram, bind=bind)
        self.lock = threading.RLock()     # held while the control thread mutates the cores (REST reads)
        self._inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self.connected = False
        # First report held until ND settles (hitless restart), at most this long after the connection.
        self._report_grace = max(5 * fabric.timers.nd_dead, 0.2)
        self._report_hold_until = math.inf
        self._report_released = False
        self.counters: Counter[str] = Counter()
        self._nd_silenced = False         # set once a graceful restart was announced
        # The Ethernet header of every ND frame (dst, our MAC, ethertype) is the same: build it once
        # instead of validating and parsing the MAC for every frame on the ND hot path.
        self._nd_header = encode_nd_ethernet(self.switch.mac, b"")

    # ------------------------------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        sys.setswitchinterval(0.001)      # keep the control thread responsive next to route computation
        self.transport.start()
        self.programmer.start()
        self._thread = threading.Thread(target=self._control_loop, name="control", daemon=True)
        self._thread.start()
        self.driver.start()
        log.info("client started switch=%s udp=%s:%d ovs=%s", self.name, *self.transport.address,
                 self.driver.target)

    def stop(self, restart_hold: float = 0.0) -> None:
        """Stop every thread. Flows stay in the switch (fail_mode=secure keeps forwarding).

        With `restart_hold` > 0 (graceful restart, the default of `firepath client` on SIGTERM), first
        ask every ND peer to keep its link up for that long: the switch goes on forwarding while its
        client restarts, so nothing needs to route around it. See `NeighborDiscovery.restart_frames`.
        """
        if self._stopped.is_set():
            return
        if restart_hold > 0 and self.connected and self._thread is not None and self._thread.is_alive():
            sent = threading.Event()

            def announce(now: float) -> None:
                frames = self.ports.nd.restart_frames(restart_hold)
                self._run(frames, now)
                self._nd_silenced = True    # a normal frame after the hold would end it at the peer
                log.info("graceful restart: asked %d peers to hold their links for %.1fs", len(frames),
                         restart_hold)
                sent.set()

            self.call(announce)
            if sent.wait(1.0):
                time.sleep(0.05)      # let the driver flush the packet-outs
        self._stopped.set()
        self._inbox.put((_STOP, None))
        if self._thread is not None:
            self._thread.join(2.0)
        self.driver.stop()
        self.programmer.stop()
        self.transport.stop()
        log.info("client stopped switch=%s", self.name)

    def call(self, fn: Callable[[float], None]) -> None:
        """Run `fn(now)` on the control thread (for operator actions such as admin down)."""
        self._inbox.put((_CALL, fn))

    # ------------------------------------------------------------------------------------------ inputs
    def _on_datagram(self, data: bytes) -> None:
        self._inbox.put((_DATAGRAM, data))

    def _on_driver_event(self, event: Any) -> None:
        if isinstance(event, BarrierDone | OfError):
            self.programmer.on_driver_event(event)
            return
        self._inbox.put((_DRIVER, event))

    # ------------------------------------------------------------------------------------------ control loop
    def _deadline(self) -> float:
        d = min(self.ports.next_deadline(), self.reporter.next_deadline(), self.replica.next_deadline())
        if not self._report_released:
            d = min(d, self._report_hold_until)
        return d

    def _control_loop(self) -> None:
        while True:
            timeout = self._deadline() - self.clock()
            try:
                item = self._inbox.get(timeout=min(max(timeout, 0.0), 1.0)) if timeout > 0 else None
            except queue.Empty:
                item = None
            with self.lock:
                batch = 0
                while item is not None:
                    if item[0] == _STOP:
                        return
                    self._handle(item, self.clock())
                    batch += 1
                    if batch >= 256:
                        break
                    try:
                        item = self._inbox.get_nowait()
                    except queue.Empty:
                        item = None
                now = self.clock()
                self._run(self.ports.tick(now), now)
                self._maybe_release_report(now)
                self._run(self.reporter.tick(now), now)
                self._run(self.replica.tick(now), now)

    def _handle(self, item: tuple[str, Any], now: float) -> None:
        kind, payload = item
        try:
            if kind == _DATAGRAM:
                self._on_master_datagram(payload, now)
            elif kind == _DRIVER:
                self._on_switch_event(payload, now)
            elif kind == _CALL:
                payload(now)
        except Exception:  # a bug in one input must not kill the control thread
            self.counters["handler_errors"] += 1
            log.exception("control: error handling %s", kind)

    def _on_master_datagram(self, data: bytes, now: float) -> None:
        try:
            sender, msg = self.codec.decode(data)
        except DecodeError as e:
            self.counters[f"rejected_{e.reason}"] += 1
            log.debug("dropped datagram: %s", e)
            return
        if isinstance(msg, ReportAck):
            self._run(self.reporter.on_master_heard(msg.master, msg.term, now, msg.backup), now)
            self._run(self.reporter.on_ack(msg, now), now)
        elif isinstance(msg, Keepalive):
            self._run(self.reporter.on_master_heard(msg.master, msg.term, now, msg.backup), now)
            self._run(self.replica.on_keepalive(msg, now), now)
        elif isinstance(msg, LsdFull):
            self._run(self.reporter.on_master_heard(msg.master, msg.term, now, msg.backup), now)
            self._run(self.replica.on_full(msg, now), now)
        elif isinstance(msg, LsdDelta):
            self._run(self.reporter.on_master_heard(msg.master, msg.term, now, msg.backup), now)
            self._run(self.replica.on_delta(msg, now), now)
        else:
            self.counters["unexpected_message"] += 1

    def _on_switch_event(self, event: Any, now: float) -> None:
        if isinstance(event, PacketIn):
            self._on_nd_packet(event, now)
        elif isinstance(event, PortStatusChanged):
            self._run(self.ports.on_phy(event.port, event.live and not event.deleted, now), now)
        elif isinstance(event, Connected):
            self.connected = True
            log.info("switch connected dpid=%#x ports=%s", event.dpid, sorted(event.ports))
            self._run(self.ports.on_port_desc(event.ports, now), now)
            if not self._report_released:
                self._report_hold_until = now + self._report_grace
            self.programmer.on_connected()
        elif isinstance(event, Disconnected):
            self.connected = False
            log.warning("switch disconnected: %s", event.reason)
            self.programmer.on_disconnected()

    def _on_nd_packet(self, event: PacketIn, now: float) -> None:
        try:
            sender, msg = self.codec.decode(decode_nd_ethernet(event.data))
        except DecodeError as e:
            self.counters[f"nd_rejected_{e.reason}"] += 1
            return
        if not isinstance(msg, NdFrame):
            self.counters["nd_rejected_not_nd"] += 1
            return
        if msg.hold_ms:
            log.info("graceful restart of peer %s:%d: holding port %d up for %d ms", msg.switch, msg.port,
                     event.port, msg.hold_ms)
        self._run(self.ports.on_nd_frame(event.port, sender, msg, now), now)

    # ------------------------------------------------------------------------------------------ actions
    def _run(self, actions: list[Any], now: float) -> None:
        ports_changed = False
        urgent = False
        nd_frames: list[SendNd] = []
        for action in actions:
            if isinstance(action, SendNd):
                nd_frames.append(action)
            elif isinstance(action, PortChanged):
                ports_changed = True
                urgent = urgent or action.usable_changed or action.status.miscabled_by is not None
                st = action.status
                log.info("port=%d usable=%s phy=%s nd=%s admin=%s damped=%s miscabled_by=%s", action.port,
                         st.usable, st.phy, st.nd, st.admin, st.damped, st.miscabled_by)
                if action.usable_changed:
                    self.programmer.on_port_usable(action.port, action.usable)
            elif isinstance(action, SendToMaster):
                self._send_to_master(action)
            elif isinstance(action, LsdApplied):
                self.programmer.on_lsd(action)
            elif isinstance(action, FailStaticChanged):
                level = logging.WARNING if action.fail_static else logging.INFO
                log.log(level, "fail-static=%s: %s", action.fail_static,
                        "no master heard, forwarding on the last LSD" if action.fail_static else "master back")
        if nd_frames:
            self._send_nd(nd_frames)
        if ports_changed:
            self._maybe_release_report(now)
            if self._report_released:
                # A usable bit (or a miscabling) changed: report at once. Other fields (ND flapping on a
                # damped port, ...) ride on the next refresh, so a flapping port cannot flood the master.
                self._run(self.reporter.update(self.ports.statuses(), now, send_now=urgent), now)

    def _maybe_release_report(self, now: float) -> None:
        """Hitless restart: report only once ND had its chance on every live port."""
        if self._report_released or not self.connected:
            return
        statuses = self.ports.statuses()
        settled = all(s.usable or not s.phy for s in statuses)
        if settled or now >= self._report_hold_until:
            self._report_released = True
            self._run(self.reporter.update(statuses, now), now)

    def _send_nd(self, frames: list[SendNd]) -> None:
        """All ND frames of one tick go to the switch as one batch of packet-outs (one hand-off)."""
        if not self.connected or self._nd_silenced:
            return
        try:
            header = self._nd_header
            batch = [PacketOut(a.port, header + self.codec.encode(a.frame)) for a in frames]
            self.driver.send(batch)
            self.counters["nd_sent"] += len(batch)
        except Exception as e:  # NotConnected during a reconnect, EncodeError on a bug
            self.counters["nd_send_errors"] += 1
            log.debug("nd send failed: %s", e)

    def _send_to_master(self, action: SendToMaster) -> None:
        try:
            data = self.codec.encode(action.msg)
        except EncodeError:
            self.counters["encode_errors"] += 1
            log.exception("cannot encode %s", type(action.msg).__name__)
            return
        self.transport.send(action.master, data)

    # ------------------------------------------------------------------------------------------ status
    def status(self) -> dict[str, Any]:
        """A consistent JSON-ready view for REST (`GET /v1/state`) and metrics."""
        with self.lock:
            now = self.clock()
            ports = []
            for port in self.ports.ports:
                v = self.ports.view(port, now)
                ports.append({
                    "port": port, "peer": f"{v.expected.switch}:{v.expected.port}", "phy": v.phy,
                    "nd": str(v.nd), "usable": v.usable, "admin": v.admin, "damped": v.damped,
                    "miscabled_by": (f"{v.miscabled_by.switch}:{v.miscabled_by.port}"
                                     if v.miscabled_by is not None else None),
                    "discovered": (f"{v.discovered.switch}:{v.discovered.port}"
                                   if v.discovered is not None else None),
                })
            replica = self.replica
            state = {
                "switch": self.name, "term": replica.term, "master": replica.master,
                "lsd_version": replica.version, "replica_state": replica.state,
                "fail_static": replica.fail_static, "connected": self.connected, "ports": ports,
                # issue #16: a backup serving the LSD while the master is silent; the masters that hear us
                "served_by": replica.server if replica.served(now) else None,
                "reach": [m for i, m in enumerate(self.reporter.masters) if self.reporter.reach >> i & 1],
                "reports_sent": self.reporter.reports, "report_retransmits": self.reporter.retransmits,
                "report_seq": self.reporter.report_seq, "report_acked": self.reporter.acked,
                "replica": dict(replica.counters), "counters": dict(self.counters),
                "codec_rejected": dict(self.codec.rejected),
            }
        state.update(self.programmer.status())
        return state

    def run_forever(self, stop: threading.Event) -> None:
        while not stop.wait(0.5):
            pass
