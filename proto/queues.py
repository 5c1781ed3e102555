"""One UDP port, one receive queue per known sender: the kernel split the master's peer port
(controller.peerinput) and the switch client's port (client.transport) both use.

The port is bound once per known sender with SO_REUSEPORT and each of those sockets is connected to that
sender's configured address: Linux delivers a datagram to the socket *connected* to its exact source before
any unconnected one (udp(7); reuseport groups keep connected sockets apart), so a known sender's datagrams
sit in a queue nobody else can fill. The unconnected socket gets everything else (junk, forgeries, a sender
whose datagrams come from another address than its configured one); its reader decides the budget. A forged
source address (raw sockets) defeats the split; authentication still drops its frames.

SO_REUSEPORT would also let a second process bind the same port silently, so the port is first bound once
without it: a port in use is refused as before (EADDRINUSE).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable

log = logging.getLogger("firepath.queues")

#: make(bind, port, reuse_port) -> a bound UDP socket (the caller's buffers and options)
MakeSocket = Callable[[str, int, bool], socket.socket]


def bind_split(bind: str, port: int, senders: dict[str, tuple[str, int]], make: MakeSocket
               ) -> tuple[socket.socket, dict[str, socket.socket]]:
    """(the unconnected socket, sender id -> its connected socket), all bound to (`bind`, `port`; 0 picks
    one). OSError (EADDRINUSE) if the port is taken; nothing is left open then. A sender that cannot be
    connected to (no route from here) is logged and left to the unconnected socket."""
    probe = make(bind, port, False)          # EADDRINUSE here if another process holds the port
    port = probe.getsockname()[1]
    probe.close()
    main = make(bind, port, True)
    by_sender: dict[str, socket.socket] = {}
    try:
        for sid, addr in sorted(senders.items()):
            sock = make(bind, port, True)
            try:
                sock.connect(addr)
            except OSError as e:
                sock.close()
                log.warning("no queue of its own for %s at %s:%s: %s", sid, addr[0], addr[1], e)
                continue
            by_sender[sid] = sock
    except OSError:
        main.close()
        for sock in by_sender.values():
            sock.close()
        raise
    return main, by_sender
