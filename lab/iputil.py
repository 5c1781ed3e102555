"""iproute2 and interface helpers shared by the lab's builders (lab.fabric, lab.bgp, lab.inject) and the
FRR peer benchmark: batched `ip` commands, IPv6 off in a namespace, tx checksum offload off on a veth, timed
carrier changes (`set_carrier`, what lab.inject fails and heals links with)."""

from __future__ import annotations

import ctypes
import fcntl
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from client.of.sockets import enter_netns
from lab import netns as nsutil
from lab.state import LabError


def ip_batch(netns: str | None, lines: Sequence[str], *, force: bool = False) -> None:
    """Run many iproute2 commands in one process (`ip -batch -`)."""
    if not lines:
        return
    cmd = ["ip"] + (["-n", netns] if netns else []) + (["-force"] if force else []) + ["-batch", "-"]
    proc = subprocess.run(cmd, input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=60)
    if proc.returncode != 0 and not force:
        raise LabError(f"{' '.join(cmd)} failed: {proc.stderr.strip()}")


def quiet_ipv6(netns: str) -> None:
    """No IPv6 in lab namespaces: keeps router solicitations, DAD and MLD out of the fabric."""
    subprocess.run(nsutil.exec_cmd(netns, ["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1",
                                           "net.ipv6.conf.default.disable_ipv6=1"]),
                   capture_output=True, timeout=10, check=False)


SIOCETHTOOL = 0x8946
ETHTOOL_STXCSUM = 0x17


class _EthtoolValue(ctypes.Structure):
    _fields_ = [("cmd", ctypes.c_uint32), ("data", ctypes.c_uint32)]


class _IfreqData(ctypes.Structure):
    _fields_ = [("ifr_name", ctypes.c_char * 16), ("ifr_data", ctypes.c_void_p), ("pad", ctypes.c_char * 16)]


def disable_tx_checksum(netns: str, ifname: str) -> None:
    """`ethtool -K IF tx off` without ethtool (SIOCETHTOOL from a thread inside the namespace).

    Why: a host's kernel hands UDP/TCP to a veth with the checksum left to "offload" (CHECKSUM_PARTIAL);
    OVS's userspace datapath reads it through AF_PACKET and forwards it as is, so the receiving host drops
    it as a bad checksum (UdpInCsumErrors). ICMP is unaffected, which is why ping alone does not show it.
    """
    errors: list[BaseException] = []

    def work() -> None:
        try:
            enter_netns(netns)
            value = _EthtoolValue(ETHTOOL_STXCSUM, 0)
            req = _IfreqData(ifname.encode(), ctypes.cast(ctypes.pointer(value), ctypes.c_void_p), b"")
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                fcntl.ioctl(sock.fileno(), SIOCETHTOOL, bytes(req))
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(e)

    t = threading.Thread(target=work, name=f"ethtool-{netns}")
    t.start()
    t.join(10)
    if errors:
        raise LabError(f"cannot turn off tx checksum offload on {ifname} in {netns}: {errors[0]}")


SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
_IFREQ_FLAGS = struct.Struct("16sH14x")


def _set_carrier_here(ifnames: Sequence[str], up: bool) -> float:
    """In a thread already inside the namespace: every interface's admin state up/down (SIOCSIFFLAGS, all
    flags read first); returns time.monotonic() right before the first change."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        reqs = []
        for name in ifnames:
            flags = _IFREQ_FLAGS.unpack(fcntl.ioctl(s, SIOCGIFFLAGS, _IFREQ_FLAGS.pack(name.encode(), 0)))[1]
            flags = (flags | IFF_UP) if up else (flags & ~IFF_UP & 0xFFFF)
            reqs.append(_IFREQ_FLAGS.pack(name.encode(), flags))
        at = time.monotonic()
        for req in reqs:
            fcntl.ioctl(s, SIOCSIFFLAGS, req)
    return at


_T = TypeVar("_T")
_workers: dict[str, ThreadPoolExecutor] = {}
_workers_lock = threading.Lock()


def in_netns(netns: str, fn: Callable[..., _T], *args: Any, timeout: float = 10.0) -> _T:
    """`fn(*args)` on a worker thread that lives in `netns` (one per namespace, kept for the process's life):
    no process start-up, so what `fn` does there is immediate and can be timed. Exceptions propagate."""
    with _workers_lock:
        pool = _workers.get(netns)
        if pool is None:
            pool = _workers[netns] = ThreadPoolExecutor(max_workers=1, initializer=enter_netns, initargs=(netns,),
                                                        thread_name_prefix=f"netns-{netns}")
    return pool.submit(fn, *args).result(timeout)


def set_carrier(netns: str, ifnames: Sequence[str], up: bool, timeout: float = 10.0) -> float:
    """`ip link set IF up|down` for every interface of `ifnames` in `netns`, without a process: ioctls from the
    namespace's worker thread (`in_netns`), so the change is immediate and timed. Returns time.monotonic()
    right before the first change. LabError naming the interface on failure."""
    try:
        return in_netns(netns, _set_carrier_here, list(ifnames), up, timeout=timeout)
    except OSError as e:
        raise LabError(f"netns {netns}: set {', '.join(ifnames)} {'up' if up else 'down'}: {e.strerror or e}") from None
