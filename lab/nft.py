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
"""

from __future__ import annotations

import re
import subprocess
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


def _install(table: str, netns: str | None, devices: list[tuple[str, tuple[str, ...]]]) -> None:
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
    _nft(netns, "-f", "-", stdin=script)


def drop_link(table: str, ends: Iterable[tuple[str | None, str]]) -> None:
    """Silently cut a link: drop on every (netns, ifname) end given (normally both ends of a veth)."""
    by_ns: dict[str | None, list[tuple[str, tuple[str, ...]]]] = {}
    for netns, ifname in ends:
        by_ns.setdefault(netns, []).append((ifname, ("egress", "ingress")))
    name = table_name(table)
    for netns, devices in by_ns.items():
        _install(name, netns, devices)


def remove(table: str, netns: str | None = None) -> bool:
    """Delete our table in `netns`; True if it existed. Never touches other tables."""
    name = table_name(table)
    proc = _nft(netns, "delete", "table", "netdev", name, check=False)
    return proc.returncode == 0


def remove_link(table: str, netnses: Iterable[str | None]) -> None:
    for netns in set(netnses):
        remove(table, netns)


def tables(netns: str | None = None) -> list[str]:
    """Names of the netdev tables present in `netns`."""
    proc = _nft(netns, "list", "tables", "netdev", check=False)
    if proc.returncode != 0:
        return []
    return [line.split()[-1] for line in proc.stdout.splitlines() if line.startswith("table netdev ")]


def available() -> str | None:
    """None if nft with netdev egress hooks works here, else why not (checked in a throwaway table)."""
    proc = _nft(None, "list", "tables", check=False)
    if proc.returncode != 0:
        return f"nft does not work: {proc.stderr.strip()}"
    return None
