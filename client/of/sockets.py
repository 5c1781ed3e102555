"""TCP sockets to the switch: OpenFlow target parsing and sockets created inside a network namespace."""

from __future__ import annotations

import ctypes
import os
import socket
import threading
from ipaddress import IPv4Address

_CLONE_NEWNET = 0x40000000


def enter_netns(name: str) -> None:
    """Move the calling *thread* into the named network namespace (/var/run/netns/NAME). Raises OSError."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({name}): {os.strerror(err)}")
    finally:
        os.close(fd)


def socket_in_netns(netns: str) -> socket.socket:
    """A TCP socket created inside a named network namespace.

    A socket belongs to the namespace of the thread that created it, for good; setns() only changes the
    calling thread, so a throwaway thread enters the namespace, creates the socket and ends.
    """
    result: list[socket.socket | BaseException] = []

    def work() -> None:
        try:
            enter_netns(netns)
            result.append(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        except BaseException as e:  # handed to the caller
            result.append(e)

    t = threading.Thread(target=work, name=f"netns-{netns}", daemon=True)
    t.start()
    t.join()
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


def parse_target(target: str) -> tuple[str, int]:
    """'tcp:127.0.0.1:16001' (or '127.0.0.1:16001') -> ('127.0.0.1', 16001)."""
    rest = target[4:] if target.startswith("tcp:") else target
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not (port.isascii() and port.isdigit()) \
            or not 0 < int(port) < 65536:
        raise ValueError(f"OpenFlow target {target!r}: expected tcp:IP:PORT")
    try:
        # dotted quad only, as the config's `ovs:` (proto.configtopo): inet_aton took "1.2.3" for 1.2.0.3
        IPv4Address(host)
    except ValueError:
        raise ValueError(f"OpenFlow target {target!r}: {host!r} is not an IPv4 address") from None
    return host, int(port)
