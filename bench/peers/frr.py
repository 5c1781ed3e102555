"""FRR as a peer in the benchmarks: the lab's fabric built of Linux routers running FRR (issue #20, item 8).

The same fabric config as `firepath lab` (proto.clos, lab.fabric.generate_config), the same host namespaces
and probe (lab.probe), the same failure injection (lab.inject; carrier changes timed the way
bench.bench_convergence times them); only the switches differ. Each switch is its own network namespace
``fplab-<name>-sw<i>`` (kernel forwarding, no OVS) running one FRR daemon set (zebra, bfdd and ospfd or
bgpd), each daemon started in the foreground as our child (its PID recorded in the lab record, so
`lab.fabric.teardown` ends it by PID and removes every namespace by name).

Routing, two variants:

* ``ospf``: OSPFv2 area 0, point-to-point fabric links, BFD on every adjacency (`ip ospf bfd`).
* ``bgp``:  eBGP as in RFC 7938: one private ASN per ToR, one per tier of spines and one per pod's aggs
  (spines share an ASN, so valley paths are refused by AS_PATH loop detection), numbered /31 sessions,
  BFD on every session, multipath.

BFD 50 ms x 3 by default. Fabric links are /31s from 172.31.0.0/16 (link index k: .2k on its `a` end,
.2k+1 on its `b` end); loopbacks 10.255.255.<id>/32 (router ids); a ToR's host port carries the
gateway address of its prefix. ``zebra.conf`` says `no zebra nexthop kernel enable`: with kernel nexthop
groups FRR 8.4 leaves a group one member short after an interface flap (fixed upstream in 9.0).

"Programmed" for FRR is the kernel FIB: every switch namespace runs `ip -ts monitor route` from before the
daemons start, so a route change toward a data prefix (a ToR's/border's prefix) has a wall-clock time, as
firepath's clients log `programmed` lines. Expected next hops come from client.routes (the same
RouteComputer the firepath bench's oracle uses), mapped from port numbers to interface names.

:func:`plan` is pure (addresses, ASNs, daemon configs as text) and unit-tested without FRR; the rest needs
root, iproute2, nftables and Debian's ``frr`` (``scripts/install-deps.sh --bench``).
"""

from __future__ import annotations

import ctypes
import ipaddress
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.procstat import cpu_s, mem_mib
from lab.state import switch_netns

FRR_DIR = Path("/usr/lib/frr")
LINK_NET = ipaddress.IPv4Network("172.31.0.0/16")
VARIANTS = ("ospf", "bgp")
SPINE_ASN = 64512          # RFC 7938 5.2.1: private 2-byte ASNs; the spine tier shares one
AGG_ASN_BASE = 64600       # + pod number: the aggs of one pod share one
TOR_ASN_BASE = 65000       # + switch id: one per ToR
INSTALL_HINT = "install it with `sudo scripts/install-deps.sh --bench` (Debian package frr)"


class FrrError(RuntimeError):
    """The FRR fabric cannot be built or did not converge; the message says what is missing."""


def frr_missing() -> str | None:
    """None if FRR's daemons are installed here, else what is missing and how to get it."""
    missing = [d for d in ("zebra", "ospfd", "bgpd", "bfdd") if not (FRR_DIR / d).exists()]
    if missing:
        return f"FRR daemons not found in {FRR_DIR}: {', '.join(missing)}; {INSTALL_HINT}"
    return None


# ---------------------------------------------------------------------------------------------- the plan

@dataclass(frozen=True, slots=True)
class Neighbor:
    ifname: str
    address: str          # the far end's /31 address
    asn: int | None       # eBGP only


@dataclass(slots=True)
class SwitchPlan:
    name: str
    index: int                                        # position in the config (interface names s<i>p<port>)
    netns: str
    loopback: str                                     # 10.255.255.<id>, the router id
    asn: int | None
    addresses: dict[str, str] = field(default_factory=dict)     # ifname -> "a.b.c.d/len"
    fabric_ifaces: list[str] = field(default_factory=list)
    host_ifaces: list[str] = field(default_factory=list)
    neighbors: list[Neighbor] = field(default_factory=list)
    prefixes: list[str] = field(default_factory=list)           # originated (a ToR's host prefixes)
    configs: dict[str, str] = field(default_factory=dict)       # daemon -> config text


def switch_asn(switch: Any) -> int:
    """RFC 7938 ASN of a switch: shared by the spine tier, by the aggs of one pod, unique per ToR/border."""
    role = str(switch.role)
    if role == "spine":
        return SPINE_ASN
    if role == "agg":
        pod = getattr(switch, "pod", None)
        if pod is None:
            m = re.match(r"^[a-z]+-(\d+)-\d+$", switch.name)
            if not m:
                raise FrrError(f"switch {switch.name}: agg without a pod number")
            pod = int(m.group(1))
        return AGG_ASN_BASE + int(pod)
    return TOR_ASN_BASE + int(switch.id)


def link_addresses(index: int) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]:
    """The /31 of fabric link `index`: (a end, b end)."""
    if not 0 <= index < LINK_NET.num_addresses // 2:
        raise FrrError(f"link index {index}: more links than {LINK_NET} has /31s")
    base = LINK_NET.network_address + 2 * index
    return base, base + 1


def plan(fabric: Any, lab_name: str, variant: str, *, bfd_ms: int = 50, bfd_mult: int = 3,
         log_dir: Path | str = "/tmp") -> dict[str, SwitchPlan]:
    """Addresses, neighbours and the FRR config text of every switch (pure; no FRR needed).

    Raises FrrError for an unknown variant or timers FRR refuses (BFD 10..60000 ms, multiplier 2..255).
    """
    if variant not in VARIANTS:
        raise FrrError(f"variant {variant!r}: one of {', '.join(VARIANTS)}")
    if not 10 <= bfd_ms <= 60000 or not 2 <= bfd_mult <= 255:
        raise FrrError(f"BFD {bfd_ms} ms x {bfd_mult}: FRR takes 10..60000 ms and a multiplier of 2..255")
    index = {sw.name: i for i, sw in enumerate(fabric.switches)}
    plans = {sw.name: SwitchPlan(name=sw.name, index=index[sw.name], netns=switch_netns(lab_name, index[sw.name]),
                                 loopback=f"10.255.255.{sw.id}" if sw.id < 255 else
                                 str(ipaddress.IPv4Address("10.254.0.0") + sw.id),
                                 asn=switch_asn(sw) if variant == "bgp" else None)
             for sw in fabric.switches}
    for link in fabric.links:
        a_ip, b_ip = link_addresses(link.index)
        a_if = f"s{index[link.a.switch]}p{link.a.port}"
        b_if = f"s{index[link.b.switch]}p{link.b.port}"
        pa, pb = plans[link.a.switch], plans[link.b.switch]
        pa.addresses[a_if] = f"{a_ip}/31"
        pb.addresses[b_if] = f"{b_ip}/31"
        pa.fabric_ifaces.append(a_if)
        pb.fabric_ifaces.append(b_if)
        pa.neighbors.append(Neighbor(a_if, str(b_ip), pb.asn))
        pb.neighbors.append(Neighbor(b_if, str(a_ip), pa.asn))
    for host in fabric.hosts:
        tor = fabric.switch(host.tor)
        p = plans[host.tor]
        ifname = f"s{index[host.tor]}p{host.port}"
        prefix = next((n for n in tor.prefixes if host.ip in n), None)
        if prefix is None:
            raise FrrError(f"host {host.name}: {host.ip} is in none of {host.tor}'s prefixes")
        if ifname not in p.host_ifaces:
            p.host_ifaces.append(ifname)
            p.addresses[ifname] = f"{tor.gateway}/{prefix.prefixlen}"
    for sw in fabric.switches:
        plans[sw.name].prefixes = [str(n) for n in sw.prefixes]
    for p in plans.values():
        p.configs = _configs(p, variant, bfd_ms, bfd_mult, Path(log_dir))
    return plans


def _configs(p: SwitchPlan, variant: str, bfd_ms: int, bfd_mult: int, log_dir: Path) -> dict[str, str]:
    log = log_dir / p.name / "frr"
    head = f"frr defaults datacenter\nhostname {p.name}\nlog timestamp precision 3\n"
    zebra = (f"{head}log file {log}-zebra.log informational\n"
             # kernel nexthop groups lose a member on an interface flap in FRR 8.4 (fixed in 9.0)
             "no zebra nexthop kernel enable\n")
    bfdd = (f"{head}log file {log}-bfdd.log informational\n"
            f"bfd\n profile fabric\n  transmit-interval {bfd_ms}\n  receive-interval {bfd_ms}\n"
            f"  detect-multiplier {bfd_mult}\n exit\nexit\n")
    if variant == "ospf":
        lines = [f"{head}log file {log}-ospfd.log informational"]
        for ifname in p.fabric_ifaces:
            lines += [f"interface {ifname}", " ip ospf network point-to-point", " ip ospf area 0",
                      " ip ospf hello-interval 1", " ip ospf dead-interval 4",
                      " ip ospf bfd", " ip ospf bfd profile fabric", "exit"]
        for ifname in p.host_ifaces:
            lines += [f"interface {ifname}", " ip ospf area 0", " ip ospf passive", "exit"]
        lines += ["interface lo", " ip ospf area 0", " ip ospf passive", "exit",
                  "router ospf", f" ospf router-id {p.loopback}", " timers throttle spf 0 50 500",
                  # RFC 2328's MinLSInterval/MinLSArrival (5 s / 1 s in FRR) would pace every router-LSA
                  " timers throttle lsa all 0", " timers lsa min-arrival 0",
                  " maximum-paths 64", "exit"]
        return {"zebra": zebra, "bfdd": bfdd, "ospfd": "\n".join(lines) + "\n"}
    lines = [f"{head}log file {log}-bgpd.log informational", f"router bgp {p.asn}",
             f" bgp router-id {p.loopback}", " no bgp ebgp-requires-policy", " no bgp network import-check",
             " bgp bestpath as-path multipath-relax"]
    for n in p.neighbors:
        lines += [f" neighbor {n.address} remote-as {n.asn}", f" neighbor {n.address} timers 1 3",
                  f" neighbor {n.address} timers connect 1", f" neighbor {n.address} advertisement-interval 0",
                  f" neighbor {n.address} bfd", f" neighbor {n.address} bfd profile fabric"]
    lines += [" address-family ipv4 unicast", "  maximum-paths 64"]
    lines += [f"  network {pfx}" for pfx in [*p.prefixes, f"{p.loopback}/32"]]
    lines += [" exit-address-family", "exit"]
    return {"zebra": zebra, "bfdd": bfdd, "bgpd": "\n".join(lines) + "\n"}


def expected_routes(fabric: Any, plans: dict[str, SwitchPlan], down_links: Iterable[int] = ()
                    ) -> dict[str, dict[str, frozenset[str]]]:
    """switch -> data prefix -> set of egress interface names, per client.routes with `down_links` down."""
    from client.routes import RouteComputer

    data = {p for sw in fabric.switches if str(sw.role) in ("tor", "border") for p in sw.prefixes}
    states = bytearray([1]) * len(fabric.links)
    for i in down_links:
        states[i] = 0
    out: dict[str, dict[str, frozenset[str]]] = {}
    for sw in fabric.switches:
        routes = RouteComputer(fabric, sw.name).compute(bytes(states))
        i = plans[sw.name].index
        out[sw.name] = {str(pfx): frozenset(f"s{i}p{port}" for port in ports)
                        for pfx, ports in routes.items() if pfx in data and ports}
    return out


def expected_routes_bgp(fabric: Any, plans: dict[str, SwitchPlan], down_links: Iterable[int] = ()
                        ) -> dict[str, dict[str, frozenset[str]]]:
    """What eBGP with RFC 7938 ASNs installs: like :func:`expected_routes`, but only over paths whose ASNs
    do not repeat (AS_PATH loop detection), so a spine that lost its link to a ToR has no route to it
    rather than a valley path through another spine (which client.routes, like OSPF, would use).
    Multipath over the shortest such paths (hop count = AS_PATH length: every hop is another ASN)."""
    data = {str(p): sw.name for sw in fabric.switches if str(sw.role) in ("tor", "border") for p in sw.prefixes}
    down = set(down_links)
    adj: dict[str, list[tuple[str, str]]] = {sw.name: [] for sw in fabric.switches}
    for link in fabric.links:
        if link.index in down:
            continue
        adj[link.a.switch].append((f"s{plans[link.a.switch].index}p{link.a.port}", link.b.switch))
        adj[link.b.switch].append((f"s{plans[link.b.switch].index}p{link.b.port}", link.a.switch))
    asn = {sw.name: switch_asn(sw) for sw in fabric.switches}
    out: dict[str, dict[str, frozenset[str]]] = {}
    for src in adj:
        # breadth-first over (switch, ASNs on the path); paths are short (<= number of distinct ASNs)
        best: dict[str, tuple[int, set[str]]] = {}
        frontier = [(src, frozenset([asn[src]]), None)]
        depth = 0
        while frontier and depth < len(set(asn.values())):
            depth += 1
            nxt = []
            for node, seen, first in frontier:
                for ifname, peer in adj[node]:
                    if asn[peer] in seen:
                        continue
                    hop = first or ifname
                    d = best.setdefault(peer, (depth, set()))
                    if d[0] == depth:
                        d[1].add(hop)
                    nxt.append((peer, seen | {asn[peer]}, hop))
            frontier = nxt
        out[src] = {pfx: frozenset(best[tor][1]) for pfx, tor in data.items() if tor != src and tor in best}
    return out


# ---------------------------------------------------------------------------------------------- route log

_MON_RE = re.compile(r"^\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)\]\s*(Deleted )?(\S+)")


def parse_route_events(text: str, prefixes: set[str]) -> list[tuple[float, str, bool]]:
    """(wall time, prefix, deleted) of every `ip -ts monitor route` event toward one of `prefixes`.

    Timestamps are printed in the monitor's local time; the monitors run with TZ=UTC.
    """
    out = []
    for line in text.splitlines():
        m = _MON_RE.match(line)
        if not m:
            continue
        dest = m.group(3)
        if dest not in prefixes:
            continue
        ts = datetime.strptime(m.group(1)[:26], "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=UTC).timestamp()
        out.append((ts, dest, bool(m.group(2))))
    return out


# ---------------------------------------------------------------------------------------------- runtime

_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1


def _netns_sockets(names: Iterable[str]) -> dict[str, socket.socket]:
    """One datagram socket per namespace (made from a thread that setns() into each in turn): an ioctl on
    it acts in that namespace, from any thread, with no process start-up in a timed window."""
    names = list(names)
    out: dict[str, socket.socket] = {}
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for n in names:
                fd = os.open(f"/var/run/netns/{n}", os.O_RDONLY)
                try:
                    if _libc.setns(fd, CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), f"setns({n})")
                finally:
                    os.close(fd)
                out[n] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller
            errors.append(e)

    t = threading.Thread(target=work, name="frr-netns-sockets")
    t.start()
    t.join(10)
    if errors:
        raise FrrError(f"cannot open sockets in the switch namespaces: {errors[0]}")
    return out


class FrrLab:
    """The fabric of a lab config with FRR routers for switches. Create with :meth:`up`; `down` removes all.

    Duck-types what lab.inject needs of a lab: `.state` (a LabState whose `iface_netns` says where each
    fabric interface lives) and `.fabric`.
    """

    def __init__(self, state: Any, fabric: Any, plans: dict[str, SwitchPlan], variant: str) -> None:
        self.state = state
        self.fabric = fabric
        self.plans = plans
        self.variant = variant
        self.data_prefixes = {str(p) for sw in fabric.switches if str(sw.role) in ("tor", "border")
                              for p in sw.prefixes}
        self.route_logs = {name: Path(state.dir) / "logs" / f"routes-{name}.log" for name in plans}
        self._socks: dict[str, socket.socket] = {}
        self.t_daemons: float | None = None

    # --- construction ------------------------------------------------------------------------------
    @classmethod
    def up(cls, *, name: str, clos: dict[str, Any], variant: str, bfd_ms: int = 50, bfd_mult: int = 3,
           lab_dir: Path | str | None = None, timeout: float = 60.0,
           log: Callable[[str], None] = print) -> FrrLab:
        """Build the fabric, start FRR everywhere and wait (bounded) for full ECMP; tears down on failure."""
        from lab.fabric import generate_config, load_fabric
        from lab.netns import netns_exists
        from lab.state import LabState, check_lab_name, default_dir, host_netns, lab_netns, locked

        problems = [p for p in [frr_missing()] if p]
        if os.geteuid() != 0:
            problems.append("root is needed (network namespaces, veth, nftables)")
        problems += [f"`{tool}` not found" for tool in ("ip", "nft") if shutil.which(tool) is None]
        if problems:
            raise FrrError("the FRR fabric cannot run here: " + "; ".join(problems))
        check_lab_name(name)
        d = Path(lab_dir or default_dir(name)).resolve()
        with locked(d):
            if LabState.exists(d) or netns_exists(lab_netns(name)):
                from lab.fabric import _teardown_locked

                _teardown_locked(d, name, log=lambda _m: None, keep_logs=False)
            shutil.rmtree(d / "logs", ignore_errors=True)
            shutil.rmtree(d / "frr", ignore_errors=True)
            (d / "logs").mkdir(parents=True, exist_ok=True)
            config = generate_config(d, name, **clos)
            fabric = load_fabric(config)
            plans = plan(fabric, name, variant, bfd_ms=bfd_ms, bfd_mult=bfd_mult, log_dir=d / "frr")
            state = LabState(name=name, dir=str(d), config=str(config), netns=lab_netns(name), daemons=True)
            for p in plans.values():
                for ifname in p.fabric_ifaces + p.host_ifaces:
                    state.iface_netns[ifname] = p.netns
            for link in fabric.links:
                a = f"s{plans[link.a.switch].index}p{link.a.port}"
                b = f"s{plans[link.b.switch].index}p{link.b.port}"
                state.ifaces[f"{link.a.switch}:{link.a.port}"] = a
                state.ifaces[f"{link.b.switch}:{link.b.port}"] = b
                state.cabling.append([a, b])
            for host in fabric.hosts:
                state.host_netns[host.name] = host_netns(name, host.name)
                state.ifaces[f"{host.tor}:{host.port}"] = f"s{plans[host.tor].index}p{host.port}"
            state.save()
            lab = cls(state, fabric, plans, variant)
            try:
                lab._plumb()
                lab._start_monitors()
                lab.t_daemons = time.time()
                lab._start_daemons()
                if not lab.wait_routes(lab.expected(), timeout):
                    raise FrrError(f"FRR ({variant}) did not reach full ECMP in {timeout:.0f}s: "
                                   f"{lab.route_problem(lab.expected())} (logs in {d / 'logs'})")
                state.phase = "up"
                state.save()
                log(f"FRR {variant} fabric {name} up: {len(plans)} switches")
                return lab
            except BaseException:
                lab.down()
                raise

    def _plumb(self) -> None:
        from lab.iputil import ip_batch, quiet_ipv6
        from lab.netns import create_netns

        st, fabric = self.state, self.fabric
        sysctls = ["net.ipv4.ip_forward=1", "net.ipv4.fib_multipath_hash_policy=1",
                   "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0",
                   "net.ipv4.conf.all.ignore_routes_with_linkdown=1"]
        for p in self.plans.values():
            create_netns(p.netns)
            quiet_ipv6(p.netns)
            subprocess.run(["ip", "netns", "exec", p.netns, "sysctl", "-q", "-w", *sysctls],
                           capture_output=True, timeout=10, check=True)
            ip_batch(p.netns, [f"addr replace {p.loopback}/32 dev lo"])
        for link in fabric.links:
            pa, pb = self.plans[link.a.switch], self.plans[link.b.switch]
            a, b = f"s{pa.index}p{link.a.port}", f"s{pb.index}p{link.b.port}"
            subprocess.run(["ip", "link", "add", a, "netns", pa.netns, "type", "veth", "peer", "name", b,
                            "netns", pb.netns], check=True, capture_output=True, timeout=10)
        for host in fabric.hosts:
            p = self.plans[host.tor]
            hns = st.host_netns[host.name]
            create_netns(hns)
            quiet_ipv6(hns)
            ifname = f"s{p.index}p{host.port}"
            subprocess.run(["ip", "link", "add", ifname, "netns", p.netns, "type", "veth", "peer", "name", "eth0",
                            "netns", hns], check=True, capture_output=True, timeout=10)
            prefix = next(n for n in fabric.switch(host.tor).prefixes if host.ip in n)
            tor = fabric.switch(host.tor)
            ip_batch(hns, [f"link set eth0 address {host.mac}", f"addr add {host.ip}/{prefix.prefixlen} dev eth0",
                            "link set eth0 up", f"route add default via {tor.gateway} dev eth0"])
        for p in self.plans.values():
            lines = [f"addr replace {cidr} dev {ifn}" for ifn, cidr in p.addresses.items()]
            lines += [f"link set {ifn} up" for ifn in p.addresses]
            ip_batch(p.netns, lines)

    def _start_monitors(self) -> None:
        from lab.state import ProcRecord, proc_starttime

        env = dict(os.environ, TZ="UTC")
        for name, p in self.plans.items():
            with open(self.route_logs[name], "ab") as f:
                proc = subprocess.Popen(["ip", "-n", p.netns, "-ts", "monitor", "route"], stdout=f,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                        start_new_session=True)
            rec = ProcRecord(kind="monitor", name=name, pid=proc.pid, starttime=proc_starttime(proc.pid) or 0,
                             argv=list(proc.args), log=str(self.route_logs[name]))  # type: ignore[arg-type]
            self.state.processes[rec.key] = rec
        self.state.save()
        time.sleep(0.2)      # the monitors subscribe before any route appears

    def daemons(self) -> tuple[str, ...]:
        return ("zebra", "bfdd", "ospfd" if self.variant == "ospf" else "bgpd")

    def _start_daemons(self) -> None:
        """zebra first in every namespace (the others connect to its zserv socket), then bfdd and the
        routing daemon; all in the foreground, as our children."""
        for daemon in self.daemons():
            for p in self.plans.values():
                self._spawn(p, daemon)
            if daemon == "zebra":
                for p in self.plans.values():
                    sock = Path(f"/var/run/frr/{p.netns}/zserv.api")
                    deadline = time.monotonic() + 10
                    while not sock.exists() and time.monotonic() < deadline:
                        time.sleep(0.01)

    def _spawn(self, p: SwitchPlan, daemon: str) -> None:
        from lab.state import ProcRecord, proc_starttime

        d = Path(self.state.dir) / "frr" / p.name
        d.mkdir(parents=True, exist_ok=True)
        conf = d / f"{daemon}.conf"
        conf.write_text(p.configs[daemon])
        run = Path(f"/var/run/frr/{p.netns}")
        run.mkdir(parents=True, exist_ok=True)
        for path in (d, conf, run):          # the daemons drop privileges to user frr
            shutil.chown(path, "frr", "frr")
        argv = ["ip", "netns", "exec", p.netns, str(FRR_DIR / daemon), "-F", "datacenter", "-N", p.netns,
                "-f", str(conf), "-i", str(run / f"{daemon}.pid")]
        log_path = Path(self.state.dir) / "logs" / f"frr-{p.name}-{daemon}.out"
        with open(log_path, "ab") as f:
            proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        start = proc_starttime(proc.pid)
        if start is None:
            raise FrrError(f"{daemon} in {p.netns} exited at once; see {log_path}")
        rec = ProcRecord(kind=daemon, name=p.name, pid=proc.pid, starttime=start, argv=argv, log=str(log_path))
        self.state.processes[rec.key] = rec
        self.state.save()

    def down(self) -> None:
        from lab.fabric import teardown

        for s in self._socks.values():
            s.close()
        self._socks.clear()
        teardown(self.state.dir, name=self.state.name, log=lambda _m: None, keep_logs=True)
        for p in self.plans.values():
            shutil.rmtree(f"/var/run/frr/{p.netns}", ignore_errors=True)

    # --- routes ------------------------------------------------------------------------------------
    def routes(self, switch: str) -> dict[str, frozenset[str]]:
        """Data prefix -> egress interfaces of the switch's kernel FIB (main table)."""
        p = self.plans[switch]
        proc = subprocess.run(["ip", "-n", p.netns, "-j", "route", "show"], capture_output=True, text=True,
                              timeout=10)
        out: dict[str, frozenset[str]] = {}
        for r in json.loads(proc.stdout or "[]"):
            dst = r.get("dst")
            if dst not in self.data_prefixes or "linkdown" in r.get("flags", []):
                continue
            devs = [h["dev"] for h in r.get("nexthops", []) if "dead" not in h.get("flags", [])
                    and "linkdown" not in h.get("flags", [])] or ([r["dev"]] if "dev" in r else [])
            if r.get("protocol") in ("kernel",) and r.get("scope") == "link":
                continue        # the ToR's own connected prefix
            out[dst] = frozenset(devs)
        return out

    def expected(self, down_links: Iterable[int] = ()) -> dict[str, dict[str, frozenset[str]]]:
        """The next hops this variant must install with `down_links` down (see expected_routes_bgp)."""
        if self.variant == "bgp":
            return expected_routes_bgp(self.fabric, self.plans, down_links)
        return expected_routes(self.fabric, self.plans, down_links)

    def route_problem(self, want: dict[str, dict[str, frozenset[str]]]) -> str | None:
        """None when every switch's FIB has exactly the expected next hops toward every remote data prefix."""
        bad = []
        for name, routes in want.items():
            own = set(self.plans[name].prefixes)
            got = self.routes(name)
            for pfx in sorted(set(routes) | set(got)):
                if pfx in own:
                    continue
                if got.get(pfx) != routes.get(pfx):
                    bad.append(f"{name} {pfx}: {sorted(got.get(pfx, []))} != {sorted(routes.get(pfx, []))}")
        return "; ".join(bad[:6]) if bad else None

    def wait_routes(self, want: dict[str, dict[str, frozenset[str]]], timeout: float,
                    interval: float = 0.05) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if self.route_problem(want) is None:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(interval)

    def route_events(self, since: float, until: float | None = None) -> dict[str, list[tuple[float, str, bool]]]:
        """switch -> route events toward data prefixes with wall time in [since, until]."""
        out = {}
        for name, path in self.route_logs.items():
            text = path.read_text(errors="replace") if path.exists() else ""
            out[name] = [e for e in parse_route_events(text, self.data_prefixes)
                         if e[0] >= since - 0.0005 and (until is None or e[0] <= until)]
        return out

    # --- timed carrier changes ---------------------------------------------------------------------
    def set_links(self, ifaces: list[str], up: bool) -> float:
        """Carrier of every interface up/down by ioctl on per-namespace sockets; the wall time taken right
        before the first change (all flags read beforehand), as bench_convergence times the OVS lab."""
        import fcntl
        import struct

        ifreq = struct.Struct("16sH14x")
        nses = {self.state.netns_of(i) for i in ifaces}
        if not nses <= set(self._socks):
            self._socks.update(_netns_sockets(sorted(nses - set(self._socks))))
        reqs = []
        for name in ifaces:
            s = self._socks[self.state.netns_of(name)]
            flags = ifreq.unpack(fcntl.ioctl(s, SIOCGIFFLAGS, ifreq.pack(name.encode(), 0)))[1]
            flags = (flags | IFF_UP) if up else (flags & ~IFF_UP & 0xFFFF)
            reqs.append((s, ifreq.pack(name.encode(), flags)))
        t = time.time()
        for s, req in reqs:
            fcntl.ioctl(s, SIOCSIFFLAGS, req)
        return t

    # --- probes and resources ----------------------------------------------------------------------
    def probe(self, src: str, dst: str, *, flows: int = 4, rate: float = 1000.0, port: int = 7000) -> Any:
        from lab.probe import Probe

        return Probe(src_ip=str(self.fabric.host(src).ip), dst_ip=str(self.fabric.host(dst).ip),
                     src_netns=self.state.host_netns[src], dst_netns=self.state.host_netns[dst],
                     flows=flows, rate=rate, port=port)

    def daemon_pids(self) -> dict[str, list[int]]:
        """switch -> PIDs of its FRR daemons (live ones)."""
        out: dict[str, list[int]] = {name: [] for name in self.plans}
        for rec in self.state.processes.values():
            if rec.kind in self.daemons() and rec.alive():
                out[rec.name].append(rec.pid)
        return out


def cpu_rss(pids_by_switch: dict[str, list[int]], seconds: float) -> dict[str, dict[str, float]]:
    """Per switch: % of one core over `seconds` (utime+stime of the PIDs, /proc/PID/stat) and RSS in MiB."""
    def cpu(pid: int) -> float:
        return cpu_s(pid) or 0.0

    def rss(pid: int) -> float:
        return mem_mib(pid) or 0.0

    before = {sw: sum(cpu(p) for p in pids) for sw, pids in pids_by_switch.items()}
    t0 = time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - t0
    return {sw: {"cpu_pct": round(100 * (sum(cpu(p) for p in pids) - before[sw]) / wall, 2),
                 "rss_mib": round(sum(rss(p) for p in pids), 1)} for sw, pids in pids_by_switch.items()}
