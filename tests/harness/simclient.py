"""Scripted Firepath clients over real UDP — a test/benchmark harness for master replicas, not the client.

`SimFleet` plays many switches on a few UDP sockets (the master learns each switch's address from its
datagrams, so several switches may share one socket; incoming datagrams are dispatched by the key owner in
the header, which for master→switch unicast is the destination switch). Each simulated switch signs with
its own key (real `Codec`), reports a configurable set of usable fabric ports (retrying until acked,
re-reporting on a new term), keeps an LSD replica (full/delta, strict in-order), answers gaps and
keepalives that show it behind with `LsdRequest`, and (optionally) acknowledges every update with an
LsdRequest of its new version so the master's /v1/clients shows lag 0. A `drop(switch, msg)` predicate
simulates loss of incoming messages.

Like the real client, a switch sends to the master in use (the one of the highest term heard) while that
master is heard within `master_silence` (default 3 x keepalive), and to every configured master otherwise
(before any master is known, or after the master died): that is how a failover reaches the new master even
when it never heard of the switch. `last_change[name]` records when the switch's term or data term last
changed (failover benchmarks). `report_all=True` sends every port report to every master (a proposed
client behaviour: the backups then always know where the clients are, so a new master can announce itself
to all of them at once; only the master in use acknowledges).
"""

from __future__ import annotations

import selectors
import socket
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from proto.auth import KeyRing
from proto.config import Fabric
from proto.lsd import LinkStateDB, LsdError, decode_changes
from proto.messages import (
    Challenge,
    Codec,
    DecodeError,
    Keepalive,
    LsdDelta,
    LsdFull,
    LsdRequest,
    Message,
    PortReport,
    PortStatus,
    ReportAck,
)

_FIXED = struct.Struct(">2sBBBBQQQQQ")  # the framing header of proto.messages (wire version 3)
_LSD_AND_KEEPALIVE = (LsdFull.TYPE, LsdDelta.TYPE, Keepalive.TYPE)


def key_owner(data: bytes) -> str | None:
    """The key owner field of a datagram header (the destination switch of master unicast, "" for GROUP)."""
    try:
        pos = _FIXED.size
        n = data[pos]
        pos += 1 + n
        m = data[pos]
        return data[pos + 1 : pos + 1 + m].decode()
    except (IndexError, UnicodeDecodeError):
        return None


@dataclass(slots=True, eq=False)
class SimSwitch:
    name: str
    codec: Codec
    lsd: LinkStateDB
    sock: int
    usable: set[int]
    term: int = 0                 # highest term seen
    data_term: int = -1           # term of the LSD data (-1: none)
    report_seq: int = 0
    acked_seq: int = -1
    report_sent_at: float = -1e9
    master: str | None = None
    heard_at: float = -1e9        # last message from `master` in `term`
    term_at: float | None = None  # when `term` was adopted
    data_term_at: float | None = None   # when the LSD data of `data_term` was first applied
    counts: dict[str, int] = field(default_factory=lambda: {"full": 0, "delta": 0, "keepalive": 0, "ack": 0,
                                                            "requests": 0, "dropped": 0, "rejected": 0})

    @property
    def version(self) -> int:
        return self.lsd.version if self.data_term >= 0 else -1


class SimFleet:
    def __init__(
        self,
        fabric: Fabric,
        keyring: KeyRing,
        masters: dict[str, tuple[str, int]],
        names: Iterable[str] | None = None,
        *,
        n_sockets: int = 1,
        bind: str = "127.0.0.1",
        ack_updates: bool = True,
        drop: Callable[[str, Message], bool] | None = None,
        report_retry: float = 0.05,
        report_refresh: float | None = None,
        group: tuple[str, int] | None = None,
        master_silence: float | None = None,
        report_all: bool = False,
    ) -> None:
        self.fabric = fabric
        self.report_all = report_all
        self.master_silence = 3 * fabric.timers.keepalive if master_silence is None else master_silence
        self.masters = dict(masters)
        self.ack_updates = ack_updates
        self.drop = drop
        self.report_retry = report_retry
        self.report_refresh = fabric.timers.report_refresh if report_refresh is None else report_refresh
        self.socks: list[socket.socket] = []
        self.sel = selectors.DefaultSelector()
        for i in range(n_sockets):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._big_buffers(s)
            s.bind((bind, 0))
            s.setblocking(False)
            self.socks.append(s)
            self.sel.register(s, selectors.EVENT_READ, i)
        if group is not None:
            # One socket joined to the group stands for every client's multicast reception.
            g = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._big_buffers(g)
            g.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            g.bind(("", group[1]))
            g.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, socket.inet_aton(group[0]) + socket.inet_aton(bind))
            g.setblocking(False)
            self.socks.append(g)
            self.sel.register(g, selectors.EVENT_READ, len(self.socks) - 1)
        self.group_sock = len(self.socks) - 1 if group is not None else None
        # One shared frozenset for every Codec (frozenset(x) of a frozenset is x): 10,000 codecs must not
        # each copy a 10,000-name set.
        switch_names = frozenset(s.name for s in fabric.switches)
        master_ids = frozenset(m.id for m in fabric.masters)
        names = list(names) if names is not None else switch_names
        self.switches: dict[str, SimSwitch] = {}
        for i, name in enumerate(names):
            codec = Codec(keyring.bundle_for_switch(name), name, switch_names, master_ids)
            self.switches[name] = SimSwitch(
                name, codec, LinkStateDB(len(fabric.links), history=0), i % n_sockets,
                set(fabric.fabric_ports(name)),
            )
        self.rejected: dict[str, int] = {}
        self._last_retry_scan = -1e9
        self.raw: list[tuple[float, int, bytes]] = []

    @staticmethod
    def _big_buffers(s: socket.socket) -> None:
        try:   # root may exceed net.core.rmem_max: a 10,000-client burst must not overflow the queue
            s.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), 32 * 1024 * 1024)
        except OSError:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024 * 1024)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 * 1024 * 1024)

    def close(self) -> None:
        self.sel.close()
        for s in self.socks:
            s.close()

    # ------------------------------------------------------------------------------------ sending
    def _send(self, sw: SimSwitch, msg: Message, to: str | None = None) -> None:
        if to:
            targets = [to]
        elif self.report_all and isinstance(msg, PortReport):
            targets = list(self.masters)
        elif sw.master is not None and time.monotonic() - sw.heard_at < self.master_silence:
            targets = [sw.master]
        else:
            targets = list(self.masters)
        for mid in targets:
            data = sw.codec.encode(msg, to=mid)   # each master has its own stream (seq, challenge)
            try:
                self.socks[sw.sock].sendto(data, self.masters[mid])
            except BlockingIOError:  # pragma: no cover - full socket buffer: like a loss
                sw.counts["dropped"] += 1

    def report(self, names: Iterable[str] | None = None, now: float | None = None) -> None:
        """Send a new full port report (next seq) for each switch (default: all)."""
        now = time.monotonic() if now is None else now
        for name in names if names is not None else self.switches:
            sw = self.switches[name]
            sw.report_seq += 1
            self._send_report(sw, now)

    def set_usable(self, name: str, usable: Iterable[int]) -> None:
        self.switches[name].usable = set(usable)

    def _send_report(self, sw: SimSwitch, now: float) -> None:
        ports = tuple(
            PortStatus(p, p in sw.usable, p in sw.usable, p in sw.usable, True, False)
            for p in self.fabric.fabric_ports(sw.name)
        )
        self._send(sw, PortReport(sw.name, self.fabric.digest, sw.report_seq, sw.term, ports))
        sw.report_sent_at = now

    def _request(self, sw: SimSwitch) -> None:
        sw.counts["requests"] += 1
        self._send(sw, LsdRequest(sw.name, max(sw.data_term, 0), sw.version))

    # ------------------------------------------------------------------------------------ receiving
    def pump(self, duration: float, until: Callable[[], bool] | None = None, raw: bool = False,
             skip_lsd: bool = False) -> bool:
        """Receive and handle datagrams for up to `duration` seconds (stop early when `until()` is true).
        With `raw`, only record (arrival time, socket, bytes) in self.raw — handle later with process_raw().
        With `skip_lsd`, LSD updates and keepalives are discarded undecoded (cheap warm-up of a big fleet:
        afterwards `request_full()` gets every switch one snapshot).
        Unacked reports are retried every `report_retry`. Returns until() (or True without it)."""
        deadline = time.monotonic() + duration
        while True:
            if until is not None and until():
                return True
            now = time.monotonic()
            if now >= deadline:
                return until() if until is not None else True
            for key, _ in self.sel.select(min(0.01, deadline - now)):
                s = self.socks[key.data]
                while True:
                    try:
                        data = s.recv(65535)
                    except BlockingIOError:
                        break
                    if raw:
                        self.raw.append((time.monotonic(), key.data, data))
                    elif skip_lsd and len(data) > 3 and data[3] in _LSD_AND_KEEPALIVE:
                        continue
                    else:
                        self._dispatch(key.data, data, time.monotonic())
            if not raw:
                self._retry_reports(time.monotonic())

    def process_raw(self) -> None:
        raw, self.raw = self.raw, []
        for t, sock, data in raw:
            self._dispatch(sock, data, t)

    def _retry_reports(self, now: float) -> None:
        """Retry unacked reports every `report_retry`; refresh acked ones every `report_refresh` (a real
        client does, and that is how a restarted master learns where its clients are)."""
        if now - self._last_retry_scan < min(self.report_retry, 0.01):
            return
        self._last_retry_scan = now
        for sw in self.switches.values():
            if sw.report_seq <= 0:
                continue
            age = now - sw.report_sent_at
            if sw.acked_seq != sw.report_seq and age >= self.report_retry:
                self._send_report(sw, now)
            elif self.report_refresh > 0 and age >= self.report_refresh:
                sw.report_seq += 1
                self._send_report(sw, now)

    def _dispatch(self, sock: int, data: bytes, now: float) -> None:
        owner = key_owner(data)
        if owner == "":
            targets = list(self.switches.values()) if sock == self.group_sock else []
        else:
            sw = self.switches.get(owner or "")
            targets = [sw] if sw is not None else []
        for sw in targets:
            try:
                sender, msg = sw.codec.decode(data)
            except DecodeError as e:
                self.rejected[e.reason] = self.rejected.get(e.reason, 0) + 1
                sw.counts["rejected"] += 1
                if e.reason == "stale" and e.sender in self.masters:   # like client.core: challenge it
                    answer = sw.codec.answer(e.sender, now)
                    if answer is not None:
                        self.socks[sw.sock].sendto(answer, self.masters[e.sender])
                continue
            if isinstance(msg, Challenge):
                # like client.core: the master verified us or asks to be verified: resend the open report
                if sw.report_seq > 0 and sw.acked_seq != sw.report_seq:
                    self._send_report(sw, now)
                continue
            if self.drop is not None and self.drop(sw.name, msg):
                sw.counts["dropped"] += 1
                continue
            self._handle(sw, sender, msg, now)

    def _handle(self, sw: SimSwitch, sender: str, msg: Message, now: float) -> None:
        term = getattr(msg, "term", 0)
        if term < sw.term:
            return
        if term > sw.term or sender == sw.master or now - sw.heard_at >= self.master_silence:
            sw.heard_at = now
        if term > sw.term:
            sw.term = term
            sw.term_at = now
            sw.master = sender
            self._send_report(sw, now)              # a new term: re-send our report to the new master
        if isinstance(msg, ReportAck):
            sw.counts["ack"] += 1
            sw.master = sender
            if msg.report_seq == sw.report_seq:
                sw.acked_seq = msg.report_seq
        elif isinstance(msg, LsdFull):
            sw.counts["full"] += 1
            if msg.digest != self.fabric.digest:
                return
            try:
                sw.lsd.load_snapshot(msg.version, msg.snapshot)
            except LsdError:
                self._request(sw)
                return
            if sw.data_term != msg.term:
                sw.data_term_at = now
            sw.data_term = msg.term
            sw.master = sender
            if self.ack_updates:
                self._request(sw)
        elif isinstance(msg, LsdDelta):
            sw.counts["delta"] += 1
            if msg.term == sw.data_term and msg.from_version == sw.lsd.version:
                try:
                    sw.lsd.apply_delta(msg.from_version, msg.to_version,
                                       decode_changes(msg.changes, sw.lsd.n_links))
                except LsdError:
                    self._request(sw)
                    return
                if self.ack_updates:
                    self._request(sw)
            elif not (msg.term == sw.data_term and msg.to_version <= sw.lsd.version):
                self._request(sw)                   # gap
        elif isinstance(msg, Keepalive):
            sw.counts["keepalive"] += 1
            sw.master = sender
            if sw.data_term != msg.term or msg.version > sw.lsd.version:
                self._request(sw)

    def request_full(self, names: Iterable[str] | None = None) -> None:
        """Every (named) switch asks for a full snapshot (LsdRequest version -1)."""
        for name in names if names is not None else self.switches:
            sw = self.switches[name]
            sw.counts["requests"] += 1
            self._send(sw, LsdRequest(sw.name, sw.term, -1))

    # ------------------------------------------------------------------------------------ checks
    def converged(self, term: int, version: int, states: bytes) -> bool:
        return all(sw.data_term == term and sw.lsd.version == version and sw.lsd.states() == states
                   for sw in self.switches.values())

    def on_term(self, term: int) -> bool:
        """Every switch holds LSD data of `term` (it resynced to that master's term)."""
        return all(sw.data_term == term for sw in self.switches.values())

    def all_acked(self) -> bool:
        return all(sw.acked_seq == sw.report_seq for sw in self.switches.values())
