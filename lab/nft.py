"""Silent link failure with nftables: the interface stays up, every frame is dropped.

This kernel has no tc netem, so the lab drops with nftables `netdev`-family base chains bound to one
device. Measured here (kernel 6.18, OVS 3.1 userspace datapath, veth):

* an **ingress** hook on the veth end that OVS reads does NOT hide frames from OVS: the netdev datapath
  receives through an AF_PACKET socket, and packet taps run in `__netif_receive_skb_core` *before* the
  ingress hook. Traffic keeps flowing.
* an **egress** hook on a veth end drops what is transmitted on it, including what OVS sends through its
  AF_PACKET socket (no qdisc bypass), so nothing reaches the peer. A host process sending into such a
  device sees ENOBUFS from sendmsg; OVS does not care.

So a link is cut silently, both directions, by an egress drop on **each** end of the veth pair, in the
namespace where each end lives. `drop_link` does exactly that; each table also carries an ingress drop,
which keeps a host end's kernel stack from receiving anything (harmless for OVS ends).

Tables are named by the caller (prefix them, e.g. `fpovs_...`); `remove` deletes only that table.
nftables table names allow letters, digits, '_' and '.', so dashes are mapped to '_'.

Timing: a link's drop tables are installed and removed through libnftables (the library the `nft` command
is built on, loaded with ctypes) from a worker thread that lives in the namespace (`lab.iputil.in_netns`):
no process start-up, so `drop_link` / `remove_link` return the time right before the change, and the
change follows within about a millisecond. `ip netns exec ... nft -f -` took 17-19 ms on an idle machine,
all of it inside every silent-failure figure of the benchmarks. Without libnftables (or for the root
namespace) the `nft` process is used, and the time returned is taken before it starts.

**Control-plane network (CPN) faults** (`cpn_script`, `drop_cpn`): masters and clients talk UDP over the lab
namespace's loopback, so a one-way CPN fault is an `inet` table whose `input` hook drops, on `lo`, the
datagrams of one master's *client* port in one direction (optionally only those of one client address).
Input, not output: a drop in the output hook fails the sender's sendmsg with EPERM, which no real lossy
link does; dropped on the receive side the sender sees its datagram leave and hears nothing -- a gray
failure. The masters' peer port (FMRP, the LSD stream to backups) is never matched.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import re
import subprocess
import threading
import time
from collections.abc import Iterable

from lab.netns import check_ifname, exec_cmd

_TABLE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.]{0,63}$")


class NftError(RuntimeError):
    pass


def table_name(name: str) -> str:
    """Turn a lab name such as 'fpovs-l3' into a valid nftables table name ('fpovs_l3')."""
    fixed = name.replace("-", "_").replace(":", "_")
    if not _TABLE_RE.match(fixed):
        raise ValueError(f"nft table name {name!r}: letters, digits, '_', '.', '-' only, start with a letter")
    return fixed


def _nft(
    netns: str | None, *args: str, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    cmd = exec_cmd(netns, ["nft", *args])
    proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=10)
    if check and proc.returncode != 0:
        raise NftError(f"{' '.join(cmd)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc


class _Libnftables:
    """The few libnftables calls we need (libnftables(3)): one context per thread, output to buffers."""

    def __init__(self) -> None:
        lib = ctypes.CDLL(ctypes.util.find_library("nftables") or "libnftables.so.1")
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        self.lib = lib
        self._local = threading.local()

    def run(self, script: str) -> tuple[float, int, str]:
        """(time.monotonic() right before the commit call, return code, error text) in this thread's netns."""
        ctx = getattr(self._local, "ctx", None)
        if ctx is None:
            ctx = self._local.ctx = self.lib.nft_ctx_new(0)      # NFT_CTX_DEFAULT, opened in this namespace
            self.lib.nft_ctx_buffer_output(ctx)
            self.lib.nft_ctx_buffer_error(ctx)
        at = time.monotonic()
        rc = self.lib.nft_run_cmd_from_buffer(ctx, script.encode())
        err = self.lib.nft_ctx_get_error_buffer(ctx) or b""
        return at, rc, err.decode(errors="replace").strip()


@functools.cache
def _libnftables() -> _Libnftables | None:
    """The library, loaded once; None where it is missing (then the `nft` process is used)."""
    try:
        return _Libnftables()
    except (OSError, AttributeError):
        return None


def _apply(netns: str | None, script: str, check: bool = True) -> tuple[float, bool]:
    """Run an nft script in `netns`; (time right before the change, succeeded). NftError if `check` and it
    failed."""
    lib = _libnftables() if netns is not None else None
    if lib is not None:
        from lab.iputil import in_netns

        at, rc, err = in_netns(netns, lib.run, script)
        if rc != 0 and check:
            raise NftError(f"nft in {netns}: {err or f'exit {rc}'}: {script.strip()[:200]}")
        return at, rc == 0
    at = time.monotonic()
    proc = _nft(netns, "-f", "-", stdin=script, check=check)
    return at, proc.returncode == 0


def _chain_name(hook: str, ifname: str) -> str:
    return f"{hook}_" + re.sub(r"[^A-Za-z0-9_]", "_", ifname)


def drop_interface(
    table: str, ifname: str, netns: str | None = None, *, hooks: Iterable[str] = ("egress", "ingress")
) -> None:
    """Drop every frame on `ifname` (in `netns`) at the given netdev hooks, inside table `table`.

    Idempotent: the table is replaced atomically, so calling it twice leaves one set of rules.
    Several interfaces of one namespace may share a table only if they are passed in one call of
    `drop_link`; a second `drop_interface` with the same table and namespace replaces the first.
    """
    _install(table_name(table), netns, [(ifname, tuple(hooks))])


def _install(table: str, netns: str | None, devices: list[tuple[str, tuple[str, ...]]]) -> float:
    lines = [f"table netdev {table} {{"]
    for ifname, hooks in devices:
        check_ifname(ifname)
        for hook in hooks:
            if hook not in ("ingress", "egress"):
                raise ValueError(f"nft hook {hook!r}: must be 'ingress' or 'egress'")
            lines.append(
                f'  chain {_chain_name(hook, ifname)} {{ type filter hook {hook} device "{ifname}" '
                "priority -500; policy drop; }"
            )
    lines.append("}")
    # Delete-then-add in one transaction: atomic, and repeatable.
    script = f"table netdev {table}\ndelete table netdev {table}\n" + "\n".join(lines) + "\n"
    return _apply(netns, script)[0]


def drop_link(table: str, ends: Iterable[tuple[str | None, str]]) -> float:
    """Silently cut a link: drop on every (netns, ifname) end given (normally both ends of a veth). Returns
    time.monotonic() right before the first namespace's change."""
    by_ns: dict[str | None, list[tuple[str, tuple[str, ...]]]] = {}
    for netns, ifname in ends:
        by_ns.setdefault(netns, []).append((ifname, ("egress", "ingress")))
    name = table_name(table)
    return min(_install(name, netns, devices) for netns, devices in by_ns.items())


def remove(table: str, netns: str | None = None, family: str = "netdev") -> bool:
    """Delete our table (of `family`: netdev for link drops, inet for CPN faults) in `netns`; True if it
    existed. Never touches other tables."""
    return _remove(table, netns, family)[1]


def _remove(table: str, netns: str | None, family: str) -> tuple[float, bool]:
    if family not in ("netdev", "inet"):
        raise ValueError(f"nft family {family!r}: must be 'netdev' or 'inet'")
    return _apply(netns, f"delete table {family} {table_name(table)}\n", check=False)


def remove_link(table: str, netnses: Iterable[str | None]) -> float:
    """Lift a silent cut (every namespace given); time.monotonic() right before the first removal."""
    return min(_remove(table, netns, "netdev")[0] for netns in sorted(set(netnses), key=str))


def tables(netns: str | None = None, family: str = "netdev") -> list[str]:
    """Names of the tables of `family` (netdev or inet) present in `netns`."""
    proc = _nft(netns, "list", "tables", family, check=False)
    if proc.returncode != 0:
        return []
    return [line.split()[-1] for line in proc.stdout.splitlines() if line.startswith(f"table {family} ")]


# ---------------------------------------------------------------------------------------------- CPN faults

#: One-way CPN fault directions, named from the master's side.
CPN_DIRECTIONS = ("to-switches", "from-switches", "both")


def cpn_script(table: str, master: tuple[str, int], direction: str, client: str | None = None) -> str:
    """The nft script (for `nft -f -`) that drops one master's client traffic on loopback, one way or both.

    `master` is the master's (IPv4 address, client UDP port); `direction`: ``to-switches`` drops what the
    master sends from that port (keepalives, LSD updates, acks), ``from-switches`` what is sent to it
    (reports, LSD requests), ``both`` both. `client` (an IPv4 address) limits the cut to the one client
    bound to that address; None cuts every client. Atomic and repeatable (the table is replaced). Raises
    ValueError for a bad direction, address or port (nothing is installed then).
    """
    from ipaddress import IPv4Address

    if direction not in CPN_DIRECTIONS:
        raise ValueError(f"CPN direction {direction!r}: one of {', '.join(CPN_DIRECTIONS)}")
    addr, port = master
    maddr = IPv4Address(addr)           # ValueError names the bad address
    if not 1 <= int(port) <= 65535:
        raise ValueError(f"CPN master port {port}: must be 1..65535")
    caddr = None if client is None else IPv4Address(client)
    name = table_name(table)
    rules = []
    if direction in ("to-switches", "both"):
        rules.append(f"iifname \"lo\" ip saddr {maddr} udp sport {port}"
                     + (f" ip daddr {caddr}" if caddr else "") + " counter drop")
    if direction in ("from-switches", "both"):
        rules.append(f"iifname \"lo\" ip daddr {maddr} udp dport {port}"
                     + (f" ip saddr {caddr}" if caddr else "") + " counter drop")
    body = "\n".join(f"    {r}" for r in rules)
    return (f"table inet {name}\ndelete table inet {name}\n"
            f"table inet {name} {{\n  chain input {{\n    type filter hook input priority -300; policy accept;\n"
            f"{body}\n  }}\n}}\n")


def drop_cpn(table: str, netns: str | None, master: tuple[str, int], direction: str,
             client: str | None = None) -> None:
    """Install `cpn_script` in `netns` (see there); NftError if nft refuses it."""
    _nft(netns, "-f", "-", stdin=cpn_script(table, master, direction, client))


def cpn_dropped(table: str, netns: str | None = None) -> int:
    """Datagrams dropped so far by a CPN table's rules (their counters); 0 if the table is gone."""
    proc = _nft(netns, "list", "table", "inet", table_name(table), check=False)
    if proc.returncode != 0:
        return 0
    return sum(int(m) for m in re.findall(r"counter packets (\d+)", proc.stdout))


def available() -> str | None:
    """None if nft with netdev egress hooks works here, else why not (checked in a throwaway table)."""
    proc = _nft(None, "list", "tables", check=False)
    if proc.returncode != 0:
        return f"nft does not work: {proc.stderr.strip()}"
    return None
