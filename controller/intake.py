"""Batched datagram I/O of a master replica under load (issue #18): what `controller.server` reads and
sends with, and how it knows it is overloaded.

A cold start of a big fabric (every switch reporting at once) must not take the master's liveness with
it. The runtime reads its sockets itself (no asyncio datagram transport: one datagram per callback) and
runs each turn in this order:

1. **FMRP first**: the peer socket (hellos, votes, replication acks of the other replicas) is drained
   completely, each datagram with the time it *arrived* (SO_TIMESTAMPNS), before any report and before
   every timer turn — a busy replica neither misses its followers' hellos (lease) nor its leader's.
2. deferred fan-out (`Outbox`): a turn sends at most `OUT_CHUNK` datagrams to clients; the rest of a
   fan-out waits for the next turns, after the peer socket has been read again.
3. at most `CLIENT_BATCH` client datagrams or `TURN_BUDGET` of wall-clock time, processed as one batch
   (one LSD version: MasterCore.begin_batch); what is left stays in the socket for the next turn.

Overload (`Overload`): the client socket's kernel counters (/proc/net/udp: drops and receive-queue bytes)
are sampled every `CHECK_EVERY`; new drops, a queue above a quarter of the receive buffer, or a full batch
(more input waiting than one turn takes) mean the master is overloaded. While it is (and `hold` after),
the runtime tells the core (`note_input_loss`) so that no switch is declared silent: the master cannot
tell whose datagram it lost, and overload is not failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import time
from collections import deque
from collections.abc import Callable

from proto.budget import MIN_RECEIVE_BUFFER

#: client datagrams read per turn at most (one LSD version)
CLIENT_BATCH = 512
#: wall-clock time one turn spends on client datagrams at most (s): on a starved host a batch shrinks, so
#: timers and FMRP input come around at least this often (plus one datagram)
TURN_BUDGET = 0.02
#: client sends per turn before the rest of a fan-out is deferred to the next turn
OUT_CHUNK = 1000
#: how often the kernel counters are sampled (s)
CHECK_EVERY = 0.25
_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_TIMESPEC = struct.Struct("@qq")


def udp_socket(bind: str, port: int, *, multicast: bool = False, rcvbuf: int = MIN_RECEIVE_BUFFER,
               reuse_port: bool = False) -> socket.socket:
    """A non-blocking UDP socket bound to (`bind`, `port`) with large buffers (receive `rcvbuf` bytes, send
    MIN_RECEIVE_BUFFER), multicast-sending options if `multicast`, SO_REUSEPORT if `reuse_port`. The raw
    socket is kept (asyncio only exposes a wrapper) so the fan-out can sendto directly. OSError (e.g.
    EADDRINUSE) if it cannot be bound; nothing is left open then."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        # Large buffers so a burst (every client reporting after a failover) is not dropped; the
        # *FORCE variants work past net.core.[rw]mem_max when we have CAP_NET_ADMIN.
        for force, opt, size in ((getattr(socket, "SO_RCVBUFFORCE", 33), socket.SO_RCVBUF, rcvbuf),
                                 (getattr(socket, "SO_SNDBUFFORCE", 32), socket.SO_SNDBUF, MIN_RECEIVE_BUFFER)):
            try:
                sock.setsockopt(socket.SOL_SOCKET, force, size)
            except OSError:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, opt, size)
        if multicast:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 8)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
            if bind not in ("0.0.0.0", ""):
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(bind))
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((bind, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def udp_stats(sock: socket.socket, table: str = "/proc/net/udp") -> tuple[int, int] | None:
    """(receive-queue bytes, drops) of `sock` from /proc/net/udp (the row whose inode is the socket's);
    None if unavailable (not Linux, or the row is not found)."""
    try:
        inode = str(os.fstat(sock.fileno()).st_ino)
        with open(table, encoding="ascii") as f:
            next(f, None)
            for line in f:
                cols = line.split()
                if len(cols) >= 13 and cols[9] == inode:
                    return int(cols[4].split(":")[1], 16), int(cols[-1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def udp_drops(socks: list[socket.socket], table: str = "/proc/net/udp") -> int | None:
    """Datagrams the kernel dropped on any of `socks` (receive queue full), summed from one read of
    /proc/net/udp; None if unavailable."""
    try:
        inodes = {str(os.fstat(s.fileno()).st_ino) for s in socks}
        total = 0
        with open(table, encoding="ascii") as f:
            next(f, None)
            for line in f:
                cols = line.split()
                if len(cols) >= 13 and cols[9] in inodes:
                    total += int(cols[-1])
    except (OSError, ValueError):
        return None
    return total


def enable_timestamps(sock: socket.socket) -> bool:
    """Ask the kernel to stamp each datagram `sock` receives with its arrival time (SO_TIMESTAMPNS,
    socket(7)); False if the option is refused. Linux turns receive stamping on from a work queue, so the
    first datagrams after this call may carry the time they are *read* (net/core/sock.c,
    __sock_recv_timestamp fills in the current time for an unstamped packet): later, never earlier."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        return True
    except OSError:
        return False


def read_one_at(sock: socket.socket, offset: float
                ) -> tuple[bytes, tuple[str, int], float | None] | None:
    """One datagram waiting on non-blocking `sock` with its kernel receive time (see enable_timestamps)
    converted to another clock: wall time + `offset` (the caller's clock minus time.time(), taken once per
    turn); None as the time if the kernel gave none (timestamps not enabled). None if nothing waits."""
    while True:
        try:
            data, anc, _flags, addr = sock.recvmsg(65535, 64)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:          # ICMP port unreachable reported on a later read: skip it
            continue
        wall = _kernel_time(anc)
        return data, addr, None if wall is None else wall + offset


def _kernel_time(anc: list[tuple[int, int, bytes]]) -> float | None:
    """The SO_TIMESTAMPNS receive time (wall clock, s) in a datagram's ancillary data, None if absent."""
    for level, kind, raw in anc:
        if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(raw) >= _TIMESPEC.size:
            sec, nsec = _TIMESPEC.unpack_from(raw)
            return sec + nsec * 1e-9
    return None


def read_batch(sock: socket.socket, limit: int, clock: Callable[[], float], timestamps: bool = False
               ) -> list[tuple[bytes, tuple[str, int], float]]:
    """Up to `limit` datagrams waiting on non-blocking `sock`: (data, addr, arrival time on `clock`).
    With `timestamps` (see enable_timestamps) the arrival time is the kernel's receive time, converted to
    `clock`; otherwise the time of the read."""
    out: list[tuple[bytes, tuple[str, int], float]] = []
    now = clock()
    if not timestamps:
        recv = sock.recvfrom
        for _ in range(limit):
            try:
                data, addr = recv(65535)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:          # ICMP port unreachable reported on a later read: skip it
                continue
            out.append((data, addr, now))
        return out
    offset = now - time.time()       # wall -> clock
    for _ in range(limit):
        try:
            data, anc, _flags, addr = sock.recvmsg(65535, 64)
        except (BlockingIOError, InterruptedError):
            break
        except OSError:
            continue
        wall = _kernel_time(anc)
        out.append((data, addr, now if wall is None else min(now, wall + offset)))
    return out


class Outbox:
    """Sends on one non-blocking socket; what the kernel will not take now waits (bounded) and is
    flushed when the socket is writable. Drops beyond `limit` are counted, never block the loop."""

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop, limit: int = 200_000) -> None:
        self.sock = sock
        self.loop = loop
        self.limit = limit
        self.queue: deque[tuple[bytes, tuple[str, int]]] = deque()
        self.dropped = 0
        self._writing = False

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self.queue:
            try:
                self.sock.sendto(data, addr)
                return
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:         # unreachable destination etc.: like a loss
                self.dropped += 1
                return
        if len(self.queue) >= self.limit:
            self.dropped += 1
            return
        self.queue.append((data, addr))
        if not self._writing:
            self._writing = True
            self.loop.add_writer(self.sock.fileno(), self._flush)

    def get_write_buffer_size(self) -> int:
        return len(self.queue)

    def _flush(self) -> None:
        q = self.queue
        while q:
            data, addr = q[0]
            try:
                self.sock.sendto(data, addr)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.dropped += 1
            q.popleft()
        self._writing = False
        self.loop.remove_writer(self.sock.fileno())

    def close(self) -> None:
        if self._writing:
            self.loop.remove_writer(self.sock.fileno())
            self._writing = False
        self.queue.clear()
        self.sock.close()


class Overload:
    """Is the master losing or queueing input? Fed samples (pure: `now` passed in).

    `sample(now, stats, backlog)`: `stats` = udp_stats() of the client socket (or None), `backlog` = the
    last turn left input waiting. Returns the datagrams dropped since the last sample (0 if none)."""

    def __init__(self, rcvbuf: int, hold: float) -> None:
        self.rcvbuf = max(rcvbuf, 1)
        self.hold = hold
        self.until = float("-inf")
        self.drops: int | None = None
        self.total_dropped = 0
        self.episodes = 0
        self.peak_queue = 0

    def overloaded(self, now: float) -> bool:
        return now < self.until

    def sample(self, now: float, stats: tuple[int, int] | None, backlog: bool) -> int:
        dropped = 0
        queue_high = False
        if stats is not None:
            queued, drops = stats
            self.peak_queue = max(self.peak_queue, queued)
            queue_high = queued > self.rcvbuf // 4
            if self.drops is not None and drops > self.drops:
                dropped = drops - self.drops
                self.total_dropped += dropped
            self.drops = drops
        if dropped or queue_high or backlog:
            if not self.overloaded(now):
                self.episodes += 1
            self.until = now + self.hold
        return dropped
