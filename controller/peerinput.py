"""A master replica's FMRP and replication input: each peer replica on a queue of its own, strangers last.

FMRP's hellos, votes and replication acks keep a mastership alive (its lease), so they must never wait
behind anything else (issue #18: liveness traffic first). Reading one shared peer socket to the end each
turn did not hold that against a flood: junk datagrams to the peer port (no key needed; a tester's
50 k/s for 3 s) kept the reading loop busy, no hello went out, and the serving master lost its lease.

Every replica sends from its configured (address, peer_port). `PeerInput` binds its own peer port once
per configured peer with SO_REUSEPORT and connects each of those sockets to that peer: Linux delivers a
datagram to the socket *connected* to its exact source before any unconnected one (udp(7); reuseport
groups keep connected sockets apart), so a peer's datagrams sit in a queue nobody else can fill. The
unconnected socket (the one replies are sent from) receives everything else: junk, forgeries, and a peer
whose datagrams come from an address other than its configured one (a host bound to 0.0.0.0 with several
addresses) — read after the peers' queues, at most `STRANGER_BATCH` datagrams or `STRANGER_BUDGET` of
wall-clock time per turn, so a flood there only fills its own queue (the kernel drops the rest, counted in
/proc/net/udp). A forged *source address* (raw sockets) defeats the split; the HMAC still drops its frames.

SO_REUSEPORT would also let a second process bind the same port silently (two masters started on one
config entry would share its datagrams), so the port is first bound once without it: a port in use is
refused as before (EADDRINUSE).
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable

from controller.intake import enable_timestamps, read_batch, udp_socket
from proto.logsetup import kv

log = logging.getLogger("firepath.master")

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
        """Bind `port` on `bind`: once plainly (OSError EADDRINUSE if taken), then the unconnected socket
        and one socket connected to each peer. A peer that cannot be connected to (an address this host
        has no route to) is logged and read through the unconnected socket."""
        probe = udp_socket(bind, port)          # EADDRINUSE here if another process holds the port
        port = probe.getsockname()[1]
        probe.close()
        main = udp_socket(bind, port, reuse_port=True)
        by_peer: dict[str, socket.socket] = {}
        try:
            for pid, addr in sorted(peers.items()):
                sock = udp_socket(bind, port, reuse_port=True)
                try:
                    sock.connect(addr)
                except OSError as e:
                    sock.close()
                    log.warning(kv("peer_queue_unavailable", peer=pid, address=f"{addr[0]}:{addr[1]}", error=e))
                    continue
                by_peer[pid] = sock
        except OSError:
            main.close()
            for sock in by_peer.values():
                sock.close()
            raise
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
