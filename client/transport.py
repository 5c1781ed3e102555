"""UDP transport of the switch client: one socket to the masters (and the multicast group's), raw bytes.

Decoding (HMAC, replay window) is not done here: raw datagrams go to the control thread, which owns the
Codec, so that exactly one thread touches the replay windows. Two ways to receive: with an `on_datagram`
callback, a receiver thread per socket calls it; without one (the client daemon, issue #20: one thread
hand-off less per datagram), the control thread waits on `sockets` itself and takes what arrived with
`read()`.

Each master has a queue of its own (`proto.queues.bind_split`: the port bound once per master with
SO_REUSEPORT, each socket connected to that master's client address); `read()` takes them before the
unconnected socket, which gets everything else (junk, a master sending from another address than its
configured one) and is read within `STRANGER_BATCH` a call. A junk flood on the client's port then fills
only its own queue, never the masters' (the same split as the masters' peer port: controller.peerinput).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
from collections.abc import Callable

from proto.config import Fabric
from proto.queues import bind_split

log = logging.getLogger("firepath.client.transport")

MAX_DATAGRAM = 65_535
#: datagrams read from unknown sources per read() at most (the masters' queues are read first)
STRANGER_BATCH = 64
_RCVBUF = 4 << 20


class UdpTransport:
    """Sends datagrams to masters by id; delivers every received datagram to `on_datagram(data)`."""

    def __init__(self, fabric: Fabric, on_datagram: Callable[[bytes], None] | None, *, bind: str = "127.0.0.1",
                 port: int = 0) -> None:
        self._masters = {m.id: (str(m.address), m.client_port) for m in fabric.masters}
        self._on_datagram = on_datagram
        self.sock, self._by_master = bind_split(bind, port, self._masters, _udp)
        self._mcast: socket.socket | None = None
        dist = fabric.distribution
        if dist.mode == "multicast" and dist.group is not None and dist.port is not None:
            self._mcast = self._join_group(str(dist.group), dist.port, bind)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.sent = 0
        self.send_errors = 0
        self.received = 0

    @staticmethod
    def _join_group(group: str, port: int, interface: str) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((group, port))
        mreq = struct.pack("4s4s", socket.inet_aton(group), socket.inet_aton(interface))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        return sock

    @property
    def address(self) -> tuple[str, int]:
        return self.sock.getsockname()

    @property
    def sockets(self) -> list[socket.socket]:
        """The receiving sockets (for a caller that waits on them itself: no `on_datagram`): each master's,
        the multicast group's, then the unconnected one."""
        return [*self._by_master.values(), *(s for s in (self._mcast, self.sock) if s is not None)]

    def read(self, limit: int) -> list[bytes]:
        """What arrived, at most `limit` datagrams, without waiting (no `on_datagram`): the masters' queues
        and the group first, then at most STRANGER_BATCH from the unconnected socket."""
        return [data for data, _addr in self.read_from(limit)]

    def read_from(self, limit: int) -> list[tuple[bytes, tuple[str, int]]]:
        """`read` with each datagram's source (ip, port): what a rejected datagram's log line names."""
        out: list[tuple[bytes, tuple[str, int]]] = []
        for sock in self.sockets:
            cap = limit if sock is not self.sock else min(limit, len(out) + STRANGER_BATCH)
            while len(out) < cap:
                try:
                    got = sock.recvfrom(MAX_DATAGRAM)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as e:        # e.g. an ICMP error queued on the socket: the rest next time
                    log.debug("receive failed: %s", e)
                    break
                out.append(got)
        self.received += len(out)
        return out

    def start(self) -> None:
        if self._on_datagram is None:
            for sock in self.sockets:
                sock.setblocking(False)
            return
        named = [(self.sock, "udp-rx"), (self._mcast, "udp-mcast-rx"),
                 *((sock, f"udp-rx-{mid}") for mid, sock in self._by_master.items())]
        for sock, name in named:
            if sock is None:
                continue
            sock.settimeout(0.2)
            t = threading.Thread(target=self._receive_loop, args=(sock,), name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def send(self, master: str, data: bytes) -> None:
        try:
            self.sock.sendto(data, self._masters[master])
            self.sent += 1
        except OSError as e:
            self.send_errors += 1
            log.debug("send to %s failed: %s", master, e)

    def _receive_loop(self, sock: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                data, _addr = sock.recvfrom(MAX_DATAGRAM)
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                continue
            self.received += 1
            assert self._on_datagram is not None
            self._on_datagram(data)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(1.0)
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.close()


def _udp(bind: str, port: int, reuse_port: bool) -> socket.socket:
    """A UDP socket bound to (`bind`, `port`) with a 4 MB receive buffer; SO_REUSEPORT if `reuse_port`."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((bind, port))
    except OSError:
        sock.close()
        raise
    return sock
