"""A master replica's FMRP and replication input: each peer replica on a queue of its own, strangers last.

FMRP's hellos, votes and replication acks keep a mastership alive (its lease), so they must never wait
behind anything else (issue #18: liveness traffic first). Reading one shared peer socket to the end each
turn did not hold that against a flood: junk datagrams to the peer port (no key needed; a tester's
50 k/s for 3 s) kept the reading loop busy, no hello went out, and the serving master lost its lease.

Every replica sends from its configured (address, peer_port), so each peer gets a receive queue of its own
(`proto.queues.bind_split`: SO_REUSEPORT + connect, udp(7)). The unconnected socket (the one replies are sent
from) receives everything else — junk, forgeries, a peer sending from another address than its configured
one — and is read after the peers' queues, at most `STRANGER_BATCH` datagrams or `STRANGER_BUDGET` of
wall-clock time per turn, so a flood there only fills its own queue (the kernel drops the rest, counted in
/proc/net/udp).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from controller.intake import enable_timestamps, read_batch, udp_socket
from proto.queues import bind_split

#: datagrams read from one peer's queue per turn at most (it is drained over the next turns if longer)
PEER_BATCH = 256
#: datagrams read from unknown sources per turn at most, and wall-clock time spent on them (s)
STRANGER_BATCH = 64
STRANGER_BUDGET = 0.005

Handler = Callable[[bytes, tuple[str, int], float], None]


class PeerInput:
    """The peer port's sockets: `main` (unconnected; sends go out of it) and one connected socket per
    peer replica id in `peers` (id -> (address, port)). `read(clock, handle)` hands every datagram to
    `handle(data, source, arrival time)` in arrival order per queue, peers first."""

    def __init__(self, main: socket.socket, by_peer: dict[str, socket.socket]) -> None:
        self.main = main
        self.by_peer = by_peer
        self.stamps = enable_timestamps(main)
        for sock in by_peer.values():
            enable_timestamps(sock)
        self._last_at = float("-inf")
        self.stranger_datagrams = 0     # read from the unconnected socket (junk and misaddressed peers)

    @classmethod
    def open(cls, bind: str, port: int, peers: dict[str, tuple[str, int]]) -> PeerInput:
        """Bind `port` on `bind` (proto.queues.bind_split: OSError EADDRINUSE if taken): the unconnected
        socket and one socket connected to each peer."""
        main, by_peer = bind_split(bind, port, peers,
                                   lambda b, p, reuse: udp_socket(b, p, reuse_port=reuse))
        return cls(main, by_peer)

    def sockets(self) -> list[socket.socket]:
        return [self.main, *self.by_peer.values()]

    def read(self, clock: Callable[[], float], handle: Handler) -> int:
        """One turn: up to PEER_BATCH datagrams from each peer's queue, then strangers within their
        budget. Arrival times never go back (the driver's clock is monotonic). What is left stays queued:
        the event loop's readers are level-triggered, so the next turn comes at once. Returns datagrams
        read."""
        n = 0
        for sock in self.by_peer.values():
            n += self._deliver(read_batch(sock, PEER_BATCH, clock, self.stamps), handle)
        end = time.perf_counter() + STRANGER_BUDGET
        left = STRANGER_BATCH
        while left > 0 and time.perf_counter() < end:
            batch = read_batch(self.main, min(16, left), clock, self.stamps)
            left -= len(batch)
            self.stranger_datagrams += len(batch)
            n += self._deliver(batch, handle)
            if len(batch) < 16:
                break
        return n

    def _deliver(self, batch: list[tuple[bytes, tuple[str, int], float]], handle: Handler) -> int:
        for data, addr, at in batch:
            at = max(at, self._last_at)
            self._last_at = at
            handle(data, addr, at)
        return len(batch)

    def close(self) -> None:
        """Close every socket (closing one twice is harmless)."""
        for sock in self.sockets():
            sock.close()
