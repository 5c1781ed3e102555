"""A lab whose masters it did not start: the link from the lab namespace to masters on this machine.

`firepath lab up --external-masters CONFIG` builds the fabric of CONFIG and starts its clients, but no
masters: those already run elsewhere on this machine, e.g. the containerised cluster of
``docker/compose.yaml`` (host networking, masters bound to 127.0.0.11-13 of the machine). The clients run
in the lab namespace, whose loopback is its own — 127.0.0.11 there is not the machine's — so the lab adds
one **CPN link**: a veth pair, ``fpm<lab name>`` in the root namespace and ``cpn0`` in the lab namespace,
with a link-local /30 (169.254.0.0/16, a per-lab /30 chosen from the lab name, skipping /30s in use):

* lab namespace: a /32 route per master address via the root end, put in the ``local`` table so that it
  wins over ``local 127.0.0.0/8 dev lo`` (longest prefix inside the table consulted first); the clients
  bind the link's lab-side address (``--bind``), so the masters answer to an address the root namespace
  routes back over the link (a master replies to the address a switch's datagram came from);
* ``route_localnet=1`` on both ends only (not ``all``): without it the kernel drops 127/8 sources and
  destinations on a non-loopback interface as martians; ``arp_announce=2`` on the root end, so ARP asks
  from the link's address rather than from 127.0.0.11.

Nothing else changes in the root namespace (one interface, its connected /30). Deleting the lab
namespace deletes the pair, so `lab down` needs no extra step.

Why not the alternatives: Docker can put a container in the host's or another container's network
namespace, not in a named one, and the cluster would then live and die with the lab instead of being the
compose file an operator runs; a userspace UDP/TCP relay would be one more process on the path, whose
death looks like a master failure, and the masters would see the relay's address for every switch.
Multicast distribution is refused: the link does not carry the group.
"""

from __future__ import annotations

import json
import subprocess
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from proto.config import line_of

LINK_LOCAL = IPv4Network("169.254.0.0/16")
# Not offered: 169.254.0.0/24 and 169.254.255.0/24 (RFC 3927 reserves them) and 169.254.169.0/24 (cloud
# metadata services live at 169.254.169.254).
_RESERVED = (IPv4Network("169.254.0.0/24"), IPv4Network("169.254.255.0/24"), IPv4Network("169.254.169.0/24"))
LAB_IFNAME = "cpn0"
LAB_LOOPBACK = IPv4Address("127.0.0.1")     # the lab namespace's: OpenFlow listeners, the clients' REST
ROOT_IFNAME_PREFIX = "fpm"


class ExternalMastersError(ValueError):
    """The config cannot be used with external masters; the message says why."""


@dataclass(frozen=True, slots=True)
class CpnLink:
    """The veth pair between the root namespace and a lab namespace, and its addresses (pure value)."""

    netns: str
    root_if: str
    lab_if: str
    subnet: IPv4Network
    masters: tuple[str, ...]        # master addresses routed over the link

    @property
    def root_addr(self) -> IPv4Address:
        return self.subnet.network_address + 1

    @property
    def lab_addr(self) -> IPv4Address:
        return self.subnet.network_address + 2

    def record(self) -> dict[str, Any]:
        """What the lab state keeps (JSON)."""
        return {"root_if": self.root_if, "lab_if": self.lab_if, "subnet": str(self.subnet),
                "root_addr": str(self.root_addr), "lab_addr": str(self.lab_addr), "masters": list(self.masters)}

    def root_commands(self) -> list[list[str]]:
        """argv lists run in the root namespace, in order."""
        return [
            ["ip", "link", "add", self.root_if, "type", "veth", "peer", "name", self.lab_if, "netns", self.netns],
            ["sysctl", "-q", "-w", f"net.ipv4.conf.{self.root_if}.route_localnet=1",
             f"net.ipv4.conf.{self.root_if}.arp_announce=2"],
            ["ip", "addr", "add", f"{self.root_addr}/{self.subnet.prefixlen}", "dev", self.root_if],
            ["ip", "link", "set", self.root_if, "up"],
        ]

    def lab_commands(self) -> list[list[str]]:
        """argv lists run inside the lab namespace, after :meth:`root_commands`."""
        cmds = [
            ["sysctl", "-q", "-w", f"net.ipv4.conf.{self.lab_if}.route_localnet=1"],
            ["ip", "addr", "add", f"{self.lab_addr}/{self.subnet.prefixlen}", "dev", self.lab_if],
            ["ip", "link", "set", self.lab_if, "up"],
        ]
        cmds += [["ip", "route", "replace", f"{m}/32", "via", str(self.root_addr), "dev", self.lab_if,
                  "src", str(self.lab_addr), "table", "local"] for m in self.masters]
        return cmds


def root_ifname(lab_name: str) -> str:
    """``fpm<lab name>``: at most 15 bytes for the lab's names (1..12 characters)."""
    return f"{ROOT_IFNAME_PREFIX}{lab_name}"


def pick_subnet(lab_name: str, in_use: list[IPv4Network]) -> IPv4Network:
    """A /30 of 169.254.0.0/16 for this lab: the one its name hashes to, or the next free one.

    `in_use`: networks of the root namespace's addresses; a /30 overlapping any of them is skipped.
    Raises ExternalMastersError when none is free.
    """
    n = LINK_LOCAL.num_addresses // 4
    start = zlib.crc32(lab_name.encode())
    for k in range(n):
        candidate = IPv4Network((int(LINK_LOCAL.network_address) + ((start + k) % n) * 4, 30))
        if any(candidate.overlaps(r) for r in _RESERVED) or any(candidate.overlaps(u) for u in in_use):
            continue
        return candidate
    raise ExternalMastersError("no free /30 in 169.254.0.0/16 for the CPN link")


def check_fabric(fabric: Any) -> None:
    """Refuse a config the CPN link cannot serve (ExternalMastersError naming the config and the field)."""
    if fabric.distribution.mode == "multicast":
        raise ExternalMastersError(f"{fabric.source}: distribution.mode multicast: the link to external "
                                   "masters carries unicast only; use unicast distribution")
    if not fabric.masters:
        raise ExternalMastersError(f"{fabric.source}: no masters configured")
    for i, m in enumerate(fabric.masters):
        # the lab routes each master's /32 over the link, in the lab namespace's local table: 127.0.0.1 there
        # would stop being local, and the lab's OVS and the clients' REST listen on it (the clients died at
        # once, 'cannot serve REST on 127.0.0.1:...', and lab up said only 'REST TimeoutError' 10 s later)
        if m.address == LAB_LOOPBACK:
            field = f"masters[{i}].address"
            line = line_of(fabric.source, field) if fabric.source else None
            raise ExternalMastersError(
                f"{fabric.source}:{line or '?'}: {field}: master {m.id} at {m.address}: the lab namespace's own "
                f"{LAB_LOOPBACK} is where its OVS and the clients' REST listen, so the lab cannot route it to the "
                f"machine's; run the masters on other loopback addresses (127.0.0.11-13: `firepath lab config`, "
                f"or `config clos --master-address 127.0.0.11,127.0.0.12,127.0.0.13`)")


def plan(netns: str, lab_name: str, fabric: Any, in_use: list[IPv4Network]) -> CpnLink:
    check_fabric(fabric)
    masters = tuple(dict.fromkeys(str(m.address) for m in fabric.masters))
    return CpnLink(netns=netns, root_if=root_ifname(lab_name), lab_if=LAB_IFNAME,
                   subnet=pick_subnet(lab_name, in_use), masters=masters)


def root_networks() -> list[IPv4Network]:
    """Networks of every IPv4 address in the root namespace (`ip -j addr`)."""
    proc = subprocess.run(["ip", "-j", "-4", "addr", "show"], capture_output=True, text=True, timeout=10,
                          check=True)
    return [IPv4Network(f"{a['local']}/{a['prefixlen']}", strict=False)
            for link in json.loads(proc.stdout or "[]") for a in link.get("addr_info", [])]


def create(link: CpnLink) -> None:
    """Create the pair and configure both ends; raises subprocess.CalledProcessError with ip's message."""
    for argv in link.root_commands():
        _run(argv)
    for argv in link.lab_commands():
        _run(["ip", "netns", "exec", link.netns, *argv])


def _run(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, argv, proc.stdout, proc.stderr.strip())


# ---------------------------------------------------------------------------------------------- masters' REST

def get_json(master: Any, path: str, timeout: float = 1.0) -> Any:
    """GET `path` (e.g. "/v1/clients") from a master's REST API at its configured address and rest_port."""
    from controller.ops.fetch import fetch_json

    # bounded in size and time, no proxy, no redirect
    return fetch_json(f"http://{master.address}:{master.rest_port}{path}", timeout)


def master_states(masters: Any, timeout: float = 0.5) -> dict[str, Any]:
    """{master id: /v1/lsd/version answer, or the Exception} from each master's configured address and
    rest_port, asked from this (the root) namespace in parallel."""
    masters = list(masters)
    with ThreadPoolExecutor(max_workers=max(1, len(masters))) as pool:
        futures = [pool.submit(get_json, m, "/v1/lsd/version", timeout) for m in masters]
        out: dict[str, Any] = {}
        for m, f in zip(masters, futures, strict=True):
            try:
                out[m.id] = f.result(timeout + 5)
            except Exception as e:  # noqa: BLE001 - reported to the caller as a value
                out[m.id] = e
        return out
