"""Network namespaces and veth pairs for the lab, through iproute2.

Every helper is idempotent and works by name: creating what already exists, or deleting what is already
gone, is not an error. `cleanup(prefix)` removes only namespaces and links whose names start with the
prefix, so several labs and tests can share a machine as long as their prefixes differ.

Linux limits interface names to 15 bytes (IFNAMSIZ - 1); `check_ifname` rejects longer ones up front
instead of letting `ip` fail with a less helpful message.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

IFNAMSIZ_MAX = 15
NETNS_DIR = Path("/var/run/netns")


class NetnsError(RuntimeError):
    """An iproute2 command failed; carries the command and its stderr."""

    def __init__(self, cmd: Sequence[str], returncode: int, stderr: str) -> None:
        self.cmd = list(cmd)
        self.returncode = returncode
        self.stderr = stderr.strip()
        super().__init__(f"{' '.join(self.cmd)}: exit {returncode}: {self.stderr}")


def _run(
    cmd: Sequence[str], *, check: bool = True, timeout: float = 10.0
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise NetnsError(cmd, proc.returncode, proc.stderr)
    return proc


def _ip(netns: str | None, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = ["ip"]
    if netns is not None:
        cmd += ["-n", netns]
    return _run([*cmd, *args], check=check)


def check_ifname(name: str) -> str:
    if not name or len(name.encode()) > IFNAMSIZ_MAX or "/" in name or any(c.isspace() for c in name):
        raise ValueError(f"interface name {name!r}: must be 1..{IFNAMSIZ_MAX} bytes, no '/' or spaces")
    return name


# ---------------------------------------------------------------- namespaces


def list_netns() -> list[str]:
    """Names of all named network namespaces (those `ip netns add` created)."""
    proc = _run(["ip", "-j", "netns", "list"], check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        return []
    return [entry["name"] for entry in json.loads(proc.stdout)]


def netns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def create_netns(name: str, *, loopback_up: bool = True) -> None:
    """Create the namespace if missing and bring its loopback up (it starts down)."""
    if not netns_exists(name):
        proc = _run(["ip", "netns", "add", name], check=False)
        if proc.returncode != 0 and not netns_exists(name):
            raise NetnsError(["ip", "netns", "add", name], proc.returncode, proc.stderr)
    if loopback_up:
        _ip(name, "link", "set", "dev", "lo", "up")


def delete_netns(name: str) -> None:
    """Delete the namespace if present. Links inside it die with it (veths also lose their peer)."""
    if netns_exists(name):
        proc = _run(["ip", "netns", "delete", name], check=False)
        if proc.returncode != 0 and netns_exists(name):
            raise NetnsError(["ip", "netns", "delete", name], proc.returncode, proc.stderr)


def netns_pids(name: str) -> list[int]:
    """PIDs of processes running inside the namespace."""
    proc = _run(["ip", "netns", "pids", name], check=False)
    return [int(p) for p in proc.stdout.split()] if proc.returncode == 0 else []


def exec_cmd(netns: str | None, cmd: Sequence[str]) -> list[str]:
    """The argv that runs `cmd` inside `netns` (unchanged when netns is None)."""
    return list(cmd) if netns is None else ["ip", "netns", "exec", netns, *cmd]


def run_in(
    netns: str | None, cmd: Sequence[str], *, check: bool = True, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """Run a command inside a namespace (or the current one) and return its completed process."""
    return _run(exec_cmd(netns, cmd), check=check, timeout=timeout)


def popen_in(netns: str | None, cmd: Sequence[str], **kwargs: object) -> subprocess.Popen:
    """Start a long-running command inside a namespace; the caller owns (and must reap) the process."""
    return subprocess.Popen(exec_cmd(netns, cmd), **kwargs)  # type: ignore[call-overload]


# ---------------------------------------------------------------- links


@dataclass(frozen=True, slots=True)
class LinkInfo:
    name: str
    admin_up: bool  # IFF_UP
    carrier: bool  # LOWER_UP
    mac: str
    peer_netns_id: int | None


def link_info(ifname: str, netns: str | None = None) -> LinkInfo | None:
    proc = _ip(netns, "-j", "link", "show", "dev", ifname, check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        return None
    entry = json.loads(proc.stdout)[0]
    flags = entry.get("flags", [])
    return LinkInfo(
        name=entry["ifname"],
        admin_up="UP" in flags,
        carrier="LOWER_UP" in flags,
        mac=entry.get("address", ""),
        peer_netns_id=entry.get("link_netnsid"),
    )


def link_exists(ifname: str, netns: str | None = None) -> bool:
    return link_info(ifname, netns) is not None


def list_links(netns: str | None = None, prefix: str = "") -> list[str]:
    proc = _ip(netns, "-j", "link", "show", check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        return []
    return [e["ifname"] for e in json.loads(proc.stdout) if e["ifname"].startswith(prefix)]


def create_veth(
    a: str,
    b: str,
    *,
    netns_a: str | None = None,
    netns_b: str | None = None,
    up: bool = True,
    mtu: int | None = None,
) -> None:
    """Create the veth pair a<->b with each end in its namespace (None = current). Idempotent.

    If `a` exists already in netns_a, the pair is assumed to be there; if only a stale half exists in
    a wrong place, the kernel reports the clash as NetnsError.
    """
    check_ifname(a)
    check_ifname(b)
    if not link_exists(a, netns_a):
        cmd = ["link", "add", a]
        if netns_a is not None:
            cmd += ["netns", netns_a]
        cmd += ["type", "veth", "peer", "name", b]
        if netns_b is not None:
            cmd += ["netns", netns_b]
        _ip(None, *cmd)
    if mtu is not None:
        _ip(netns_a, "link", "set", "dev", a, "mtu", str(mtu))
        _ip(netns_b, "link", "set", "dev", b, "mtu", str(mtu))
    if up:
        set_link(a, True, netns_a)
        set_link(b, True, netns_b)


def delete_link(ifname: str, netns: str | None = None) -> None:
    """Delete a link (for a veth: both ends) if it exists."""
    if link_exists(ifname, netns):
        proc = _ip(netns, "link", "del", "dev", ifname, check=False)
        if proc.returncode != 0 and link_exists(ifname, netns):
            raise NetnsError(["ip", "link", "del", ifname], proc.returncode, proc.stderr)


def set_link(ifname: str, up: bool, netns: str | None = None) -> None:
    """Administratively up/down. Down on one veth end drops the carrier of the other end too."""
    _ip(netns, "link", "set", "dev", ifname, "up" if up else "down")


def set_mac(ifname: str, mac: str, netns: str | None = None) -> None:
    _ip(netns, "link", "set", "dev", ifname, "address", mac)


def add_address(ifname: str, cidr: str, netns: str | None = None) -> None:
    """Add an address (`replace` keeps it idempotent)."""
    _ip(netns, "addr", "replace", cidr, "dev", ifname)


def flush_addresses(ifname: str, netns: str | None = None) -> None:
    _ip(netns, "addr", "flush", "dev", ifname)


def add_route(dest: str, *, via: str | None = None, dev: str | None = None, netns: str | None = None) -> None:
    """Add or replace a route, e.g. add_route("default", via="10.1.1.1", netns="h1")."""
    cmd = ["route", "replace", dest]
    if via is not None:
        cmd += ["via", via]
    if dev is not None:
        cmd += ["dev", dev]
    _ip(netns, *cmd)


def add_neighbor(ip: str, mac: str, dev: str, netns: str | None = None) -> None:
    """A static (permanent) ARP entry."""
    _ip(netns, "neigh", "replace", ip, "lladdr", mac, "dev", dev, "nud", "permanent")


# ---------------------------------------------------------------- cleanup


def cleanup(prefix: str) -> list[str]:
    """Delete every named namespace and every root-namespace link whose name starts with `prefix`.

    Returns what it removed. Refuses an empty prefix (that would mean "everything").
    """
    if len(prefix) < 3:
        raise ValueError(f"cleanup prefix {prefix!r} is too short to be safe")
    removed: list[str] = []
    for ns in list_netns():
        if ns.startswith(prefix):
            delete_netns(ns)
            removed.append(f"netns:{ns}")
    for ifname in list_links(None, prefix):
        delete_link(ifname)
        removed.append(f"link:{ifname}")
    return removed


def is_root() -> bool:
    return os.geteuid() == 0
