"""Switches that run the REAL client cores (client.reporter.Reporter + client.replica.LsdReplica) over real
UDP, without OVS or ND: a test harness for master replicas under control-network faults (issue #16).

    fleet = CoreFleet(fabric, keyring, {m.id: (addr, client_port)})
    fleet.block("to", "m1")          # reports (and requests) to m1 are dropped: m1 is deaf
    fleet.block("from", "m1")        # datagrams from m1 are dropped: m1 is mute
    fleet.block("to", "m1", "leaf-1"); fleet.block("from", "m1", "leaf-1")   # leaf-1 cut from m1 only
    fleet.pump(1.0, until=...)       # run the cores (timers + sockets) for up to 1 s
    fleet.set_usable("leaf-1", {2})  # a port goes down: the core sends its new report at once

One socket per switch (the master learns each switch's address from its datagrams). Port state is scripted:
`usable` ports are reported PHY/ND/usable up, the others down. One-way faults are applied here, in the
harness, on the switches' side (a dropped datagram is never sent / is discarded on arrival): nothing touches
the host's network configuration. Dispatch mirrors client.daemon (_on_master_datagram).
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from client.replica import LsdApplied, LsdReplica
from client.reporter import Reporter, SendToMaster
from proto.auth import KeyRing
from proto.config import Fabric
from proto.messages import Challenge, Codec, DecodeError, Keepalive, LsdDelta, LsdFull, PortStatus, ReportAck


@dataclass(slots=True, eq=False)
class CoreSwitch:
    name: str
    codec: Codec
    sock: socket.socket
    reporter: Reporter
    replica: LsdReplica
    usable: set[int]
    applied: list[tuple[float, int, int, tuple[int, ...]]] = field(default_factory=list)  # (t, term, v, changed)
    dropped: int = 0


class CoreFleet:
    def __init__(self, fabric: Fabric, keyring: KeyRing, masters: dict[str, tuple[str, int]],
                 names: Iterable[str] | None = None, *, bind: str = "127.0.0.1") -> None:
        self.fabric = fabric
        self.masters = dict(masters)
        self.sel = selectors.DefaultSelector()
        self.t0 = time.monotonic()
        self.blocked: set[tuple[str, str, str | None]] = set()     # (direction, master, switch|None = all)
        switch_names = frozenset(s.name for s in fabric.switches)
        master_ids = frozenset(m.id for m in fabric.masters)
        now = self.now()
        self.switches: dict[str, CoreSwitch] = {}
        for name in (names if names is not None else [s.name for s in fabric.switches]):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((bind, 0))
            sock.setblocking(False)
            sw = CoreSwitch(name, Codec(keyring.bundle_for_switch(name), name, switch_names, master_ids), sock,
                            Reporter(fabric, name, now=now, initial_seq=int(time.time() * 1000)),
                            LsdReplica(fabric, name, now=now), set(fabric.fabric_ports(name)))
            self.switches[name] = sw
            self.sel.register(sock, selectors.EVENT_READ, sw)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def close(self) -> None:
        for sw in self.switches.values():
            self.sel.unregister(sw.sock)
            sw.sock.close()
        self.sel.close()

    # ------------------------------------------------------------------------------------ faults
    def block(self, direction: str, master: str, switch: str | None = None) -> None:
        """Drop datagrams "to" (switch -> master) or "from" (master -> switch) `master`, for one switch or all."""
        if direction not in ("to", "from"):
            raise ValueError(f"direction: expected 'to' or 'from', got {direction!r}")
        self.blocked.add((direction, master, switch))

    def heal(self) -> None:
        self.blocked.clear()

    def _is_blocked(self, direction: str, master: str, switch: str) -> bool:
        b = self.blocked
        return bool(b) and ((direction, master, None) in b or (direction, master, switch) in b)

    # ------------------------------------------------------------------------------------ inputs
    def statuses(self, sw: CoreSwitch) -> tuple[PortStatus, ...]:
        return tuple(PortStatus(p, p in sw.usable, p in sw.usable, p in sw.usable, True, False)
                     for p in self.fabric.fabric_ports(sw.name))

    def start(self) -> None:
        """First report of every switch (to every master)."""
        now = self.now()
        for sw in self.switches.values():
            self._run(sw, sw.reporter.update(self.statuses(sw), now), now)

    def set_usable(self, name: str, usable: Iterable[int]) -> None:
        sw = self.switches[name]
        sw.usable = set(usable)
        now = self.now()
        self._run(sw, sw.reporter.update(self.statuses(sw), now), now)

    # ------------------------------------------------------------------------------------ loop
    def pump(self, duration: float, until: Callable[[], Any] | None = None, step: float = 0.005) -> Any:
        """Run sockets and timers for up to `duration` s; stop early when `until()` is truthy (returned)."""
        end = time.monotonic() + duration
        while True:
            if until is not None:
                got = until()
                if got:
                    return got
            if time.monotonic() >= end:
                return None
            for key, _ in self.sel.select(timeout=step):
                sw: CoreSwitch = key.data
                for _ in range(64):
                    try:
                        data = sw.sock.recv(65535)
                    except BlockingIOError:
                        break
                    self._receive(sw, data, self.now())
            now = self.now()
            for sw in self.switches.values():
                if min(sw.reporter.next_deadline(), sw.replica.next_deadline()) <= now:
                    self._run(sw, sw.reporter.tick(now) + sw.replica.tick(now), now)

    def _receive(self, sw: CoreSwitch, data: bytes, now: float) -> None:
        try:
            sender, msg = sw.codec.decode(data)
        except DecodeError as e:
            # A master of an incarnation not verified yet: answer with a Challenge, as client.core does.
            if e.reason == "stale" and e.sender in self.masters and not self._is_blocked("to", e.sender, sw.name):
                answer = sw.codec.answer(e.sender, now)
                if answer is not None:
                    with contextlib.suppress(OSError):
                        sw.sock.sendto(answer, self.masters[e.sender])
            return
        if self._is_blocked("from", sender, sw.name):
            sw.dropped += 1
            return
        rep, rpl = sw.reporter, sw.replica
        out: list[Any] = []
        if isinstance(msg, Challenge):
            out += rep.retransmit_now(now)
        elif isinstance(msg, ReportAck):
            out += rep.on_master_heard(msg.master, msg.term, now, msg.backup)
            out += rep.on_ack(msg, now)
            out += rpl.on_report_ack(msg.master, msg.term, msg.backup, now)
        elif isinstance(msg, Keepalive | LsdFull | LsdDelta):
            out += rep.on_master_heard(msg.master, msg.term, now, msg.backup)
            handler = {Keepalive: rpl.on_keepalive, LsdFull: rpl.on_full, LsdDelta: rpl.on_delta}[type(msg)]
            out += handler(msg, now)
        self._run(sw, out, now)

    def _run(self, sw: CoreSwitch, actions: list[Any], now: float) -> None:
        for a in actions:
            if isinstance(a, SendToMaster):
                if self._is_blocked("to", a.master, sw.name):
                    sw.dropped += 1
                    continue
                try:
                    sw.sock.sendto(sw.codec.encode(a.msg, to=a.master), self.masters[a.master])
                except OSError:
                    sw.dropped += 1
            elif isinstance(a, LsdApplied):
                sw.applied.append((now, a.term, a.version, a.changed))

    # ------------------------------------------------------------------------------------ views
    def states(self, name: str) -> bytes:
        return self.switches[name].replica.states()

    def all_have(self, states: bytes) -> bool:
        return all(sw.replica.states() == states for sw in self.switches.values())

    def link_state_everywhere(self, index: int, state: int) -> bool:
        return all(sw.replica.has_data and sw.replica.states()[index] == state for sw in self.switches.values())
