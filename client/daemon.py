"""The switch client daemon: threads and I/O around the pure `client.core.ClientCore`.

Threads, and why:

- **control** (this module): feeds the core its inputs with `now` and carries out the actions. It sleeps
  until the core's next deadline or the next input — a datagram on the master socket, which it reads itself,
  or an item in its inbox (an eventfd wakes it) — and always drains both, even when a deadline is already
  due. Switch events (ND frames, port status, connection) are handled before master datagrams and operator
  calls that arrived with them. It computes routes only for a small update that finds the programmer idle
  (`client.programmer`, bounded by `INLINE_BUDGET`): a big computation never delays ND frames (Firepath's
  whole-fabric reboot outage was ND starved of CPU).
- **programmer** (`client.programmer`): route computation and OpenFlow programming, fed the latest LSD.
- the OpenFlow driver's threads (`client.of.driver`) hand switch events to the control thread's inbox from
  the connection's receive thread (a port status is handled there when nothing waits before it), and
  barrier replies straight to the programmer.

Hand-offs on the way of an LSD delta (issue #20): the datagram wakes the control thread, which decodes it,
computes the routes and writes the batch to the switch's socket; the barrier reply, read by the driver's
receive thread, completes the batch there. A port status is handled on the receive thread itself when no
input waits before it (report sent, local repair programmed), else queued for the control thread.

The policy (dispatch, urgency, first-report hold for hitless restart) lives in `client.core`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import queue
import selectors
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from client.core import ClientCore, LsdApplied, SendDatagram, SendFrames, UsableChanged
from client.oam import ConfigureOam, OamObserved, OamSetupFailed, OvsdbConnection
from client.of.events import (
    BarrierDone,
    Connected,
    Disconnected,
    Driver,
    DriverEvent,
    OfError,
    PacketIn,
    PortStatusChanged,
    RoleChanged,
)
from client.ofrole import RoleGuard, TakenOver
from client.programmer import Programmer
from client.stallwatch import StallWatch
from client.transport import UdpTransport
from proto.auth import KeyRing
from proto.config import Fabric
from proto.logsetup import kv

log = logging.getLogger("firepath.client")

#: Inbox item kinds.
_DATAGRAM = "dgram"
_DRIVER = "driver"
_STOP = "stop"
_CALL = "call"
_OAM = "oam"
_STALL = "stall"

#: Most inputs handled between two ticks (so timers run even under a flood of inputs).
MAX_BATCH = 256
#: s the control loop waits per turn while a deadline stays due after its tick (a core bug; never spin)
STUCK_WAIT = 0.001


def _osken_driver(target: str, on_event: Callable[[DriverEvent], None], netns: str | None, *,
                  generation_id: int | None = None) -> Driver:
    from client.of.driver import OfDriver  # os-ken is loaded only when a real driver is built

    # The daemon's callback never blocks (it enqueues, or completes a batch): run it on the receiving thread.
    return OfDriver(target, on_event, netns=netns, inline_events=True, generation_id=generation_id)


class ClientDaemon:
    """One switch's Firepath client. `start()`, then `stop()` (or `run_forever()` until a signal)."""

    def __init__(self, fabric: Fabric, switch: str, keyring: KeyRing, *, ovs_target: str,
                 netns: str | None = None, bind: str = "127.0.0.1", ovsdb: str | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 driver_factory: Callable[[str, Callable[[DriverEvent], None], str | None], Driver] | None = None,
                 bgp_dir: str | None = None) -> None:
        """`driver_factory(ovs_target, on_event, netns)` builds the OpenFlow driver; the default is
        `client.of.driver.OfDriver`, imported only then, so that a daemon built with a fake driver
        never loads os-ken. `ovsdb` (unix:PATH or tcp:IP:PORT): the switch's OVSDB, where the client
        configures and monitors link OAM (client.liveness, imported only then); without it, with
        `liveness: oam`, every fabric port falls back to software ND."""
        self.fabric = fabric
        self.name = switch
        self.clock = clock
        now = clock()
        self.started_at = now
        self.core = ClientCore(fabric, switch, keyring, now=now, initial_seq=time.time_ns() // 1_000_000,
                               switch_read_back=False)
        #: this process's OpenFlow role generation (client.ofrole): a newer process always exceeds it
        self.generation_id = time.time_ns()
        self.role = RoleGuard(switch, self.generation_id)
        #: called once (from a driver thread) when another client took the switch over; the CLI exits
        self.on_fatal: Callable[[str], None] | None = None
        if driver_factory is None:
            driver_factory = functools.partial(_osken_driver, generation_id=self.generation_id)
        self.driver = driver_factory(ovs_target, self._on_driver_event, netns)
        self.programmer = Programmer(fabric, switch, self.driver, clock=clock)
        self.programmer.on_kept_routes = lambda kept: self.call(
            lambda now: self._execute(self.core.on_kept_routes(kept, now)))
        self.transport = UdpTransport(fabric, None, bind=bind)     # read by the control thread itself
        self.ovsdb = ovsdb
        self.liveness: Any = None
        if ovsdb and self.core.ports.oam.enabled:
            from client.liveness import OvsdbLiveness
            self.liveness = OvsdbLiveness(ovsdb, self.core.switch.id, self._on_liveness_event)
        self.border: Any = None
        if bgp_dir is not None and fabric.switch(switch).bgp is not None:
            # eBGP border (issue #13): ExaBGP + client.border; imported only on such a switch
            from pathlib import Path

            from client.bgpspeaker import BorderSpeaker
            self.border = BorderSpeaker(
                fabric, switch, Path(bgp_dir), report=self._report_external, program=self.programmer.on_external,
                fabric_prefixes=self._reachable_prefixes, clock=clock, report_sessions=self._report_bgp,
                set_ports=self._set_external_ports, netns=netns)
        self.lock = threading.RLock()     # held while the control thread mutates the core (REST reads)
        self._inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._pending = 0                    # inbox items not handled yet (guarded by _pending_lock)
        self._pending_lock = threading.Lock()
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)   # written after every inbox item
        self._selector = selectors.DefaultSelector()
        self._due: float | None = None         # the deadline that was due at the last turn (STUCK_WAIT)
        self._selector.register(self._wake, selectors.EVENT_READ)
        for sock in self.transport.sockets:
            self._selector.register(sock, selectors.EVENT_READ)
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self.stall_watch = StallWatch(lambda start, end: self._put((_STALL, (start, end))), clock=clock)

    @property
    def connected(self) -> bool:
        return self.core.connected

    # ------------------------------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        sys.setswitchinterval(0.001)      # keep the control thread responsive next to route computation
        self.transport.start()
        self.programmer.start()
        self._thread = threading.Thread(target=self._control_loop, name="control", daemon=True)
        self._thread.start()
        self.stall_watch.start()
        self.call(self._start_oam)
        if self.liveness is not None:
            self.liveness.start()
        self.driver.start()
        if self.border is not None:
            self.border.start()
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
        if restart_hold > 0 and self.role.taken_over is None and self.connected and self._thread is not None and self._thread.is_alive():
            sent = threading.Event()

            def announce(now: float) -> None:
                actions = self.core.graceful_restart(restart_hold, now)
                self._execute(actions)
                log.info("graceful restart: asked %d peers to hold their links for %.1fs",
                         sum(len(a.frames) for a in actions if isinstance(a, SendFrames)), restart_hold)
                sent.set()

            self.call(announce)
            if sent.wait(1.0):
                time.sleep(0.05)      # let the driver flush the packet-outs
        if self.border is not None:
            self.border.stop()
        self._stopped.set()
        self.stall_watch.stop()
        self._put((_STOP, None))
        if self._thread is not None:
            self._thread.join(2.0)
        if self.liveness is not None:
            self.liveness.stop()        # CFM stays configured: the datapath keeps checking the links
        self.driver.stop()
        self.programmer.stop()
        self.transport.stop()
        self._selector.close()
        with contextlib.suppress(OSError):
            os.close(self._wake)
        log.info("client stopped switch=%s", self.name)

    def call(self, fn: Callable[[float], None]) -> None:
        """Run `fn(now)` on the control thread (for operator actions such as admin down)."""
        self._put((_CALL, fn))

    def _put(self, item: tuple[str, Any]) -> None:
        with self._pending_lock:
            self._pending += 1
        self._inbox.put(item)
        with contextlib.suppress(OSError):     # closed: the daemon has stopped
            os.eventfd_write(self._wake, 1)

    # ------------------------------------------------------------------------------------------ inputs
    def _start_oam(self, now: float) -> None:
        self._execute(self.core.start_oam(now))
        if self.core.ports.oam.enabled and self.liveness is None:
            self._execute(self.core.on_oam_failed(None, "no OVSDB target (firepath client --ovsdb)", now))

    def _reachable_prefixes(self) -> list[Any]:
        """Prefixes the switch can forward into the fabric now: routed over a port that local repair has
        not excluded (so a border whose fabric links die stops announcing before the LSD says so)."""
        routes, _groups, excluded = self.programmer.route_snapshot()
        return [p for p, ports in routes.items() if not ports <= excluded]

    def _report_external(self, bits: int) -> None:
        self.call(lambda now: self._execute(self.core.set_external(bits, now)))

    def _set_external_ports(self, ports: tuple[int, ...], up: bool) -> None:
        """Border link-state tracking (client.border.ExternalPorts): OpenFlow port-mod, from the border's
        poll thread (the driver's send is thread-safe)."""
        from client.ofmsg import PortMod
        try:
            self.driver.send([PortMod(p, not up) for p in ports])
        except Exception as e:      # NotConnected: the next reach change (or restart) sets them again
            log.warning("border: external ports %s not set %s: %s", list(ports), "up" if up else "down", e)

    def _report_bgp(self, sessions: tuple) -> None:
        self.call(lambda now: self._execute(self.core.set_bgp(sessions, now)))

    def _on_liveness_event(self, event: Any) -> None:
        self._put((_OAM, event))

    def _on_driver_event(self, event: DriverEvent) -> None:
        decision = None
        if isinstance(event, RoleChanged):
            if event.source == "reply":
                decision = self.role.on_role_reply(event.role, event.generation_id)
            else:
                decision = self.role.on_role_status(event.role, event.generation_id)
        elif isinstance(event, OfError):
            decision = self.role.on_error(event.type, event.code)
        elif isinstance(event, Connected):
            self.role.on_connected()
        if decision is not None:
            self._taken_over(decision)
        if self.role.taken_over is not None or isinstance(event, RoleChanged):
            return                  # no fight: nothing more reaches the core or the programmer
        if isinstance(event, BarrierDone | OfError):
            self.programmer.on_driver_event(event)
            return
        if isinstance(event, PortStatusChanged) and self._handle_now(event):
            return
        self._put((_DRIVER, event))

    def _taken_over(self, decision: TakenOver) -> None:
        """Another firepath client owns the switch: say it once, stop sending (ND, programming) and let
        the process exit non-zero (`on_fatal`); the driver stops at once, on a thread of its own."""
        log.error("event=switch_taken_over %s", decision.message())
        self.core.counters["taken_over"] += 1
        threading.Thread(target=self.driver.stop, name="of-relinquish", daemon=True).start()
        if self.on_fatal is not None:
            self.on_fatal(decision.message())

    def _handle_now(self, event: PortStatusChanged) -> bool:
        """A port status, on the thread that delivers it (the driver's receive thread), when no input waits
        before it in the inbox: the report and the local repair leave without waking the control thread
        (issue #20). The lock keeps the core single-owner; an input queued earlier (a switch event, the
        process's own stall) keeps it queued, so the switch's events stay in order. False: queue it."""
        if self._pending or self._thread is None or self._stopped.is_set():
            return False
        with self.lock:
            if self._pending:
                return False
            deadline = self.core.next_deadline()
            self._handle((_DRIVER, event), self.clock())
            if self.core.next_deadline() < deadline:
                with contextlib.suppress(OSError):
                    os.eventfd_write(self._wake, 1)   # the control thread sleeps until the older deadline
        return True

    # ------------------------------------------------------------------------------------------ control loop
    def _drain_inbox(self, items: list[tuple[str, Any]]) -> None:
        with contextlib.suppress(queue.Empty):
            while len(items) < MAX_BATCH:
                items.append(self._inbox.get_nowait())

    def _next_items(self) -> list[tuple[str, Any]]:
        """Wait for inputs (the inbox, the master socket) until the core's next deadline; return what
        arrived (at most MAX_BATCH), switch events first. Never skips an input, even when a deadline is
        already due."""
        items: list[tuple[str, Any]] = []
        self._drain_inbox(items)
        if not items:
            deadline = self.core.next_deadline()
            timeout = deadline - self.clock()
            if timeout > 0:
                self._selector.select(min(timeout, 1.0))
            elif deadline == self._due:
                # the last tick left this very deadline due: a bug in the core (its contract: after tick(now)
                # every deadline is later than now). Wait a little anyway, counted and said once: a spinning
                # control loop takes a core from the switch
                self.core.counters["deadline_stuck"] += 1
                if self.core.counters["deadline_stuck"] == 1:
                    log.error("control: a deadline %.3fs past stays due after its tick (a bug): waiting 1 ms "
                              "per turn while it lasts (counter deadline_stuck)", -timeout)
                self._selector.select(STUCK_WAIT)
            self._due = deadline if timeout <= 0 else None
            with contextlib.suppress(BlockingIOError):
                os.eventfd_read(self._wake)    # items put from now on write it again
            self._drain_inbox(items)
        items.extend((_DATAGRAM, got) for got in self.transport.read_from(MAX_BATCH - len(items)))
        # The process's own stalls first (they decide which port drops were one event: client.damping),
        # then liveness; a stable sort keeps arrival order within each class.
        items.sort(key=lambda item: 0 if item[0] == _STALL else 1 if item[0] in (_DRIVER, _OAM) else 2)
        return items

    def _control_loop(self) -> None:
        while True:
            items = self._next_items()
            with self.lock:
                queued = 0
                for item in items:
                    if item[0] == _STOP:
                        return
                    self._handle(item, self.clock())
                    queued += item[0] != _DATAGRAM       # datagrams come from the socket, not the inbox
                with self._pending_lock:
                    self._pending -= queued
                now = self.clock()
                self._execute(self.core.tick(now))

    def _handle(self, item: tuple[str, Any], now: float) -> None:
        kind, payload = item
        try:
            if kind == _DATAGRAM:
                self._execute(self.core.on_datagram(payload[0], now, payload[1]))
            elif kind == _DRIVER:
                self._on_switch_event(payload, now)
            elif kind == _CALL:
                payload(now)
            elif kind == _OAM:
                self._on_oam_event(payload, now)
            elif kind == _STALL:
                self._execute(self.core.on_stall(*payload, now))
        except Exception:  # a bug in one input must not kill the control thread
            self.core.counters["handler_errors"] += 1
            log.exception("control: error handling %s", kind)

    def _on_switch_event(self, event: Any, now: float) -> None:
        if isinstance(event, PacketIn):
            self._execute(self.core.on_packet_in(event.port, event.data, now))
        elif isinstance(event, PortStatusChanged):
            carrier = None if event.carrier is None else event.carrier and not event.deleted
            self._execute(self.core.on_port_status(event.port, event.live and not event.deleted, now, carrier))
        elif isinstance(event, Connected):
            log.info(kv("switch_connected", dpid=f"{event.dpid:#x}", ports=sorted(event.ports)))
            self._execute(self.core.on_connected(event.ports, now, event.carrier))
            self.programmer.on_connected()
        elif isinstance(event, Disconnected):
            log.warning("switch disconnected: %s", event.reason)
            self._execute(self.core.on_disconnected(now))
            self.programmer.on_disconnected()

    def _on_oam_event(self, event: Any, now: float) -> None:
        if isinstance(event, OamObserved):
            self._execute(self.core.on_oam_observed(event.obs, now))
        elif isinstance(event, OamSetupFailed):
            self._execute(self.core.on_oam_failed(event.ports, event.reason, now))
        elif isinstance(event, OvsdbConnection):
            self.core.ovsdb_connected = event.up
            if event.up:
                log.info("ovsdb connected target=%s", self.ovsdb)
            else:
                self.core.counters["ovsdb_disconnects"] += 1
                log.warning("ovsdb disconnected target=%s (the datapath keeps running CFM; reconnecting)",
                            self.ovsdb)

    # ------------------------------------------------------------------------------------------ actions
    def _execute(self, actions: list[Any]) -> None:
        for action in actions:
            if isinstance(action, SendFrames):
                if self.role.taken_over is not None:
                    continue        # another client owns the switch: never fight it with ND
                try:
                    self.driver.send(list(action.frames))
                    self.core.counters["nd_sent"] += len(action.frames)
                except Exception as e:  # NotConnected during a reconnect
                    self.core.counters["nd_send_errors"] += 1
                    log.debug("nd send failed: %s", e)
            elif isinstance(action, SendDatagram):
                self.transport.send(action.master, action.data)
            elif isinstance(action, UsableChanged):
                self.programmer.on_port_usable(action.port, action.usable)
                if self.border is not None:
                    self.border.poke()      # its aggregate follows local repair at once
            elif isinstance(action, LsdApplied):
                self.programmer.on_lsd(action)
            elif isinstance(action, ConfigureOam) and self.liveness is not None:
                self.liveness.configure(action)

    # ------------------------------------------------------------------------------------------ status
    def status(self) -> dict[str, Any]:
        """A consistent JSON-ready view for REST (`GET /v1/state`) and metrics."""
        with self.lock:
            state = self.core.status(self.clock())
        state.update(self.programmer.status())
        if self.border is not None:
            state["border"] = self.border.status()
        return state

    def routes_view(self, prefix: Any = None, read_ovs: bool = True, timeout: float = 2.0) -> dict[str, Any]:
        """The routes as computed next to what OVS holds (client.routeview), for REST `GET /v1/routes`.
        OVS is read over the client's own OpenFlow connection (blocks up to `timeout`); if that fails the
        rows have status "unknown" and `ovs_error` says why."""
        from client.of.events import NotConnected
        from client.routeview import route_rows

        routes, group_of, excluded = self.programmer.route_snapshot()
        external = self.programmer.planner.external_routes()
        flows = groups = None
        error = None
        if read_ovs:
            try:
                flows, groups = self.driver.dump_state(timeout)
            except (NotConnected, TimeoutError, RuntimeError) as e:
                error = str(e)
        with self.lock:
            version, mismatch = self.core.replica.version, self.core.replica.config_mismatch
        return {"switch": self.name, "lsd_version": version, "config_mismatch": mismatch,
                "programmed_version": self.programmer.programmed_version,
                "excluded_ports": sorted(excluded), "ovs_read": flows is not None, "ovs_error": error,
                "routes": route_rows(self.fabric, self.name, routes, group_of, excluded, flows, groups, prefix,
                                     external=external)}

    def run_forever(self, stop: threading.Event) -> None:
        while not stop.wait(0.5):
            pass
