"""A multi-process fleet of simulated switches that keeps up with a Jupiter-size fabric (issue #18).

`Fleet(fabric, masters, workers=3)` forks `workers` processes; each owns a slice of the switches and a few
UDP sockets (switches share sockets: the master learns each switch's address from its datagrams; incoming
unicast is dispatched by the key owner in the header) and, with multicast, one socket joined to the group
(a group datagram is verified once per worker and applied to every switch of its slice). Every switch
signs with its own key (the real `Codec`) and behaves like `client.reporter` + `client.core` as far as the
master can tell:

- a new report (first, refresh, new term) goes to every configured master; retransmissions of an unacked
  report (backoff report_retry_min .. report_retry_max) to the master in use, or to all if none is live;
  refreshes every report_refresh, jittered like the real client (proto.budget);
- the switch follows the highest term heard; LsdFull/LsdDelta are applied strictly in order (a delta must
  start at the switch's version), a gap or a keepalive showing it behind asks with LsdRequest (at most
  once per request_interval while unanswered, like client.replica).

LSD content: a worker keeps ONE reference LinkStateDB per term (the LSD is the same at a given (term,
version) for every switch) and each switch a version pointer; a switch "holds the complete LSD" when its
version is the reference's and every link of the reference is UP (every simulated switch reports all its
fabric ports usable). That is what `stats()` counts.

    fleet = Fleet(fabric, cluster.client_addr, workers=3, group=None)
    fleet.start()                 # fork, build codecs; returns when every worker is ready
    t0 = fleet.cold_start()       # every switch reports now
    t = fleet.wait(lambda s: s["complete"] == s["switches"], timeout=60)
    fleet.close()
"""

from __future__ import annotations

import heapq
import multiprocessing as mp
import os
import selectors
import socket
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

from proto.auth import KeyRing
from proto.budget import jitter_fraction, refresh_jitter, request_interval
from proto.config import Fabric
from proto.lsd import LinkState, LinkStateDB, LsdError, decode_changes
from proto.messages import (
    Challenge,
    Codec,
    DecodeError,
    Keepalive,
    LsdDelta,
    LsdFull,
    LsdRequest,
    PortReport,
    PortStatus,
    ReportAck,
)
from tests.harness.simclient import key_owner

_UP = int(LinkState.UP)


class _Sw:
    __slots__ = ("acked", "backoff", "codec", "data_term", "heard_at", "idx", "master", "name", "next_at",
                 "next_request", "ports", "refreshes", "seq", "sock", "term", "version")

    def __init__(self, idx: int, name: str, codec: Codec, sock: int, ports: tuple[PortStatus, ...]) -> None:
        self.idx, self.name, self.codec, self.sock, self.ports = idx, name, codec, sock, ports
        self.term = 0
        self.data_term = -1
        self.version = -1
        self.seq = 0
        self.acked = True
        self.backoff = 0.0
        self.master: str | None = None
        self.heard_at = -1e9
        self.next_at = float("inf")
        self.refreshes = 0
        self.next_request = 0.0


class _Worker:
    """One process's slice of the fleet (runs in the child)."""

    def __init__(self, fabric: Fabric, keyring: KeyRing, masters: dict[str, tuple[str, int]], names: Sequence[str],
                 n_sockets: int, group: tuple[str, int] | None, bind: str) -> None:
        t = fabric.timers
        self.fabric = fabric
        self.masters = masters
        self.retry_min, self.retry_max = t.report_retry_min, max(t.report_retry_max, t.report_retry_min)
        self.refresh = t.report_refresh
        self.jitter = refresh_jitter(len(fabric.switches))
        self.silence = 3 * t.keepalive
        self.request_interval = request_interval(t, len(fabric.switches))    # like client.replica
        self.sel = selectors.DefaultSelector()
        self.socks: list[socket.socket] = []
        for i in range(n_sockets):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            _big(s)
            s.bind((bind, 0))
            s.setblocking(False)
            self.socks.append(s)
            self.sel.register(s, selectors.EVENT_READ, i)
        self.group_sock: int | None = None
        if group is not None:
            g = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            _big(g)
            g.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            g.bind(("", group[1]))
            g.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, socket.inet_aton(group[0]) + socket.inet_aton(bind))
            g.setblocking(False)
            self.socks.append(g)
            self.group_sock = len(self.socks) - 1
            self.sel.register(g, selectors.EVENT_READ, self.group_sock)
        all_names = frozenset(s.name for s in fabric.switches)
        mids = frozenset(masters)
        self.sw: dict[str, _Sw] = {}
        for i, name in enumerate(names):
            codec = Codec(keyring.bundle_for_switch(name), name, all_names, mids)
            ports = tuple(PortStatus(p, True, True, True, True, False) for p in fabric.fabric_ports(name))
            self.sw[name] = _Sw(i, name, codec, i % n_sockets, ports)
        self.group_codec = next(iter(self.sw.values())).codec if self.sw else None
        self.n_links = len(fabric.links)
        self.lsd_size = fabric.lsd_size
        self.ref: dict[int, LinkStateDB] = {}        # term -> reference LSD
        self.heap: list[tuple[float, int, str]] = []
        self.counts = {"in": 0, "out": 0, "full": 0, "delta": 0, "keepalive": 0, "ack": 0, "requests": 0,
                       "rejected": 0, "send_drops": 0, "group": 0}
        self.first_report_at: float | None = None

    # ---------------------------------------------------------------------------------------- sending
    def _send(self, sw: _Sw, msg: Any, everyone: bool, now: float) -> None:
        if everyone or sw.master is None or now - sw.heard_at >= self.silence:
            targets: Sequence[str] = list(self.masters)
        else:
            targets = (sw.master,)
        s = self.socks[sw.sock]
        for mid in targets:
            try:
                s.sendto(sw.codec.encode(msg, to=mid), self.masters[mid])
                self.counts["out"] += 1
            except OSError:
                self.counts["send_drops"] += 1

    def _report(self, sw: _Sw, now: float, new: bool, everyone: bool = False) -> None:
        if new:
            sw.seq += 1
            sw.acked = False
            sw.backoff = self.retry_min
        self._send(sw, PortReport(sw.name, self.fabric.digest, sw.seq, sw.term, sw.ports), new or everyone, now)
        self._schedule(sw, now)

    def _schedule(self, sw: _Sw, now: float) -> None:
        if sw.acked:
            f = jitter_fraction(sw.name, sw.refreshes) if self.jitter else 0.0
            at = now + self.refresh * (1 - self.jitter * f)
        else:
            at = now + sw.backoff
            sw.backoff = min(2 * sw.backoff, self.retry_max)
        sw.next_at = at
        heapq.heappush(self.heap, (at, sw.idx, sw.name))

    def cold_start(self) -> None:
        now = time.monotonic()
        self.first_report_at = time.time()
        for sw in self.sw.values():
            self._report(sw, now, new=True)

    def timers(self, now: float) -> None:
        heap = self.heap
        while heap and heap[0][0] <= now:
            at, _i, name = heapq.heappop(heap)
            sw = self.sw[name]
            if sw.next_at != at:
                continue
            if sw.acked:
                sw.refreshes += 1
                self._report(sw, now, new=True)
            else:
                self._report(sw, now, new=False)

    def _request(self, sw: _Sw, now: float, version: int | None = None) -> None:
        if now < sw.next_request:
            return
        sw.next_request = now + self.request_interval
        self.counts["requests"] += 1
        v = sw.version if version is None else version
        self._send(sw, LsdRequest(sw.name, max(sw.data_term, 0), v), False, now)

    # ---------------------------------------------------------------------------------------- receiving
    def receive(self, timeout: float) -> None:
        for key, _ in self.sel.select(timeout):
            s = self.socks[key.data]
            for _ in range(512):
                try:
                    data = s.recv(65535)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    continue
                self.counts["in"] += 1
                self._dispatch(key.data, data, time.monotonic())

    def _dispatch(self, sock: int, data: bytes, now: float) -> None:
        owner = key_owner(data)
        if owner == "":
            if sock != self.group_sock or self.group_codec is None:
                return
            try:
                sender, msg = self.group_codec.decode(data)
            except DecodeError:
                self.counts["rejected"] += 1
                return
            self.counts["group"] += 1
            for sw in self.sw.values():
                self._handle(sw, sender, msg, now)
            return
        sw = self.sw.get(owner or "")
        if sw is None:
            return
        try:
            sender, msg = sw.codec.decode(data)
        except DecodeError as e:
            self.counts["rejected"] += 1
            if e.reason == "stale" and e.sender in self.masters:
                answer = sw.codec.answer(e.sender, now)
                if answer is not None:
                    self.socks[sw.sock].sendto(answer, self.masters[e.sender])
            return
        if isinstance(msg, Challenge):
            if not sw.acked:
                self._report(sw, now, new=False)
            return
        self._handle(sw, sender, msg, now)

    def _ref(self, term: int) -> LinkStateDB:
        ref = self.ref.get(term)
        if ref is None:
            ref = self.ref[term] = LinkStateDB(self.lsd_size, history=0)
            ref.version = -1
        return ref

    def _handle(self, sw: _Sw, sender: str, msg: Any, now: float) -> None:
        term = getattr(msg, "term", 0)
        if term < sw.term:
            return
        if term > sw.term or sender == sw.master or now - sw.heard_at >= self.silence:
            sw.heard_at = now
        if term > sw.term:
            sw.term = term
            # the master in use: only a master's own ack or keepalive says who it is (a backup acks and
            # serves the LSD in the same term)
            sw.master = sender if type(msg) is Keepalive or (type(msg) is ReportAck and not msg.backup) else None
            if not sw.acked:
                self._report(sw, now, new=False, everyone=True)    # a new term: the open report to everyone
        if type(msg) is ReportAck:
            self.counts["ack"] += 1
            if not msg.backup:
                sw.master = sender
                if msg.report_seq == sw.seq and not sw.acked:
                    sw.acked = True
                    self._schedule(sw, now)
        elif type(msg) is LsdFull:
            self.counts["full"] += 1
            if msg.digest != self.fabric.digest:
                return
            ref = self._ref(msg.term)
            if msg.version > ref.version:
                try:
                    ref.load_snapshot(msg.version, msg.snapshot)
                except LsdError:
                    return
            if msg.version >= sw.version or sw.data_term != msg.term:
                # not the master in use: a backup serves the LSD too (like client.replica's `server`)
                sw.data_term, sw.version = msg.term, msg.version
                sw.next_request = 0.0
        elif type(msg) is LsdDelta:
            self.counts["delta"] += 1
            if msg.term == sw.data_term and msg.from_version == sw.version:
                ref = self._ref(msg.term)
                if ref.version == msg.from_version:
                    try:
                        ref.apply_delta(msg.from_version, msg.to_version, decode_changes(msg.changes, ref.n_links))
                    except LsdError:
                        return
                sw.version = msg.to_version
                sw.next_request = 0.0
            elif not (msg.term == sw.data_term and msg.to_version <= sw.version):
                self._request(sw, now)
        elif type(msg) is Keepalive:
            self.counts["keepalive"] += 1
            sw.master = sender
            if sw.data_term != msg.term or msg.version > sw.version:
                self._request(sw, now, -1 if sw.data_term != msg.term else None)

    # ---------------------------------------------------------------------------------------- stats
    def stats(self) -> dict[str, Any]:
        complete = 0
        versions: dict[tuple[int, int], int] = {}
        full_refs = {t: r.version for t, r in self.ref.items() if r.count(LinkState.UP) >= self.n_links}
        for sw in self.sw.values():
            key = (sw.data_term, sw.version)
            versions[key] = versions.get(key, 0) + 1
            if full_refs.get(sw.data_term) == sw.version:
                complete += 1
        return {"switches": len(self.sw), "complete": complete, "acked": sum(s.acked for s in self.sw.values()),
                "versions": versions, "counts": dict(self.counts), "first_report_at": self.first_report_at,
                "terms": sorted({s.term for s in self.sw.values()})}


def _big(s: socket.socket) -> None:
    try:
        s.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), 16 * 1024 * 1024)
    except OSError:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024 * 1024)
    try:
        s.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_SNDBUFFORCE", 32), 4 * 1024 * 1024)
    except OSError:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)


def _worker_main(conn: Connection, fabric: Fabric, keyring: KeyRing, masters: dict[str, tuple[str, int]],
                 names: Sequence[str], n_sockets: int, group: tuple[str, int] | None, bind: str) -> None:
    w = _Worker(fabric, keyring, masters, names, n_sockets, group, bind)
    conn.send("ready")
    started = False
    while True:
        while conn.poll(0):
            cmd = conn.recv()
            if cmd == "stop":
                conn.send(w.stats())
                return
            if cmd == "start":
                w.cold_start()
                started = True
            elif cmd == "stats":
                conn.send(w.stats())
        now = time.monotonic()
        if started:
            w.timers(now)
        nxt = w.heap[0][0] - now if w.heap else 0.05
        w.receive(max(0.0, min(0.02, nxt)))


class Fleet:
    def __init__(self, fabric: Fabric, masters: dict[str, tuple[str, int]], *, workers: int = 3,
                 sockets_per_worker: int = 4, group: tuple[str, int] | None = None, bind: str = "127.0.0.1",
                 keyring: KeyRing | None = None, names: Sequence[str] | None = None) -> None:
        self.fabric = fabric
        self.masters = dict(masters)
        self.n_workers = workers
        self.sockets = sockets_per_worker
        self.group = group
        self.bind = bind
        self.keyring = keyring if keyring is not None else KeyRing.load(fabric.security.key_file)
        self.names = list(names) if names is not None else [s.name for s in fabric.switches]
        self.procs: list[Any] = []
        self.conns: list[Connection] = []
        self.started_at: float | None = None

    def start(self, timeout: float = 300.0) -> None:
        ctx = mp.get_context("fork")
        for i in range(self.n_workers):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_worker_main, daemon=True,
                            args=(child, self.fabric, self.keyring, self.masters, self.names[i::self.n_workers],
                                  self.sockets, self.group, self.bind))
            p.start()
            self.procs.append(p)
            self.conns.append(parent)
        for c in self.conns:
            if not c.poll(timeout):
                raise TimeoutError("fleet worker not ready")
            c.recv()

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def cold_start(self) -> float:
        self.started_at = time.monotonic()
        for c in self.conns:
            c.send("start")
        return self.started_at

    def stats(self) -> dict[str, Any]:
        for c in self.conns:
            c.send("stats")
        parts = [c.recv() for c in self.conns]
        total: dict[str, Any] = {"switches": 0, "complete": 0, "acked": 0, "counts": {}, "versions": {},
                                 "terms": set()}
        for s in parts:
            for k in ("switches", "complete", "acked"):
                total[k] += s[k]
            for k, v in s["counts"].items():
                total["counts"][k] = total["counts"].get(k, 0) + v
            for k, v in s["versions"].items():
                total["versions"][k] = total["versions"].get(k, 0) + v
            total["terms"] |= set(s["terms"])
        return total

    def wait(self, cond: Callable[[dict[str, Any]], bool], timeout: float, every: float = 0.1,
             on_stats: Callable[[float, dict[str, Any]], None] | None = None) -> float | None:
        """Seconds since cold_start() when cond(stats()) first held (None on timeout)."""
        assert self.started_at is not None
        deadline = time.monotonic() + timeout
        while True:
            s = self.stats()
            t = time.monotonic() - self.started_at
            if on_stats is not None:
                on_stats(t, s)
            if cond(s):
                return t
            if time.monotonic() >= deadline:
                return None
            time.sleep(every)

    def close(self) -> None:
        for c in self.conns:
            try:
                c.send("stop")
                c.poll(5) and c.recv()
            except (OSError, EOFError):
                pass
        for p in self.procs:
            p.join(5)
            if p.is_alive() and p.pid is not None:
                os.kill(p.pid, 9)
                p.join(1)
        self.procs.clear()
        self.conns.clear()
