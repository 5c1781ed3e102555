"""The world outside the lab fabric (issue #13): an external router running Debian's FRR bgpd, peering with
every eBGP border, and an external host behind it.

Layout for lab N (built when the config has borders with `bgp:`, e.g. `lab up --border-pods 1 --external`):

* ``fplab-N-ext-router``: FRR (zebra + bgpd, in the foreground, our children, recorded in the lab state)
  with one interface ``b<i>`` per border peer (the peer's `address` on the `local_address` subnet) whose
  other end ``s<i>p<port>`` is the border bridge's external port, and ``xh0`` (EXTERNAL_GATEWAY) towards
* ``fplab-N-ext-host``: ``eth0`` at EXTERNAL_HOST_IP, default route via the router.
* each border's own IP stack is its bridge's LOCAL interface in the lab namespace (in the border's own
  namespace with `lab up --ovs-per-switch`; the border client's ExaBGP runs there), with the peer link's
  `local_address` and the switch's router MAC.

The router announces 0.0.0.0/0 to every border (`default-originate`) and installs the cluster aggregate the
borders announce (ECMP over them: `maximum-paths`). `lab fail external` withdraws the default on every
session (`no ... default-originate`: BGP UPDATE withdraws) or, with `--session`, shuts every session down;
`lab heal` undoes it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from lab import netns as nsutil
from lab.state import LabError, ProcRecord, host_netns, proc_starttime, say

ROUTER = "ext-router"
EXT_HOST = "ext-host"
EXTERNAL_NET = "198.51.100.0/24"        # TEST-NET-2 (RFC 5737)
EXTERNAL_GATEWAY = "198.51.100.1"
EXTERNAL_HOST_IP = "198.51.100.10"
FRR_DIR = Path("/usr/lib/frr")


class BgpLabError(LabError):
    """A LabError: the CLI prints it as one line (`lab fail external` on a lab without borders, twice)."""


def peers(fabric: Any) -> list[tuple[Any, Any]]:
    """(border switch, BgpPeer) of every eBGP session in the fabric, in config order."""
    return [(sw, p) for sw in fabric.switches if sw.bgp is not None for p in sw.bgp.peers]


def router_asn(fabric: Any) -> int:
    asns = {p.peer_as for _sw, p in peers(fabric)}
    if len(asns) != 1:
        raise BgpLabError(f"the lab's one external router needs one peer AS for every border, got {sorted(asns)}")
    return asns.pop()


def frr_config(fabric: Any, log_dir: Path) -> dict[str, str]:
    """zebra.conf and bgpd.conf of the external router."""
    lines = ["frr defaults datacenter", f"hostname {ROUTER}", f"log file {log_dir}/frr-bgpd.log informational",
             f"router bgp {router_asn(fabric)}", f" bgp router-id {EXTERNAL_GATEWAY}",
             " no bgp ebgp-requires-policy", " no bgp network import-check"]
    for _sw, p in peers(fabric):
        a = p.local_address.ip
        lines += [f" neighbor {a} remote-as {p.local_as}", f" neighbor {a} timers {p.keepalive} {p.hold_time}",
                  f" neighbor {a} timers connect 1"]
        if p.password_file is not None:     # TCP MD5: the router uses the border's own key file
            lines.append(f" neighbor {a} password {p.password_file.read_text().strip()}")
    lines += [" address-family ipv4 unicast", "  maximum-paths 16"]
    lines += [f"  neighbor {p.local_address.ip} default-originate" for _sw, p in peers(fabric)]
    lines += [" exit-address-family", ""]
    zebra = f"hostname {ROUTER}\nlog file {log_dir}/frr-zebra.log informational\nno zebra nexthop kernel enable\n"
    return {"zebra": zebra, "bgpd": "\n".join(lines)}


def build(lab: Any, log: Any = say) -> None:
    """Plumb the external router and host, address the borders' own interfaces, start FRR."""
    from lab import plumbing
    from lab.iputil import disable_tx_checksum, ip_batch, quiet_ipv6

    st, fabric = lab.state, lab.fabric
    if not shutil.which("vtysh") or not (FRR_DIR / "bgpd").exists():
        raise BgpLabError("FRR is not installed (Debian package frr: scripts/install-deps.sh)")
    index = {sw.name: i for i, sw in enumerate(fabric.switches)}
    rns, hns = host_netns(st.name, ROUTER), host_netns(st.name, EXT_HOST)
    st.host_netns[EXT_HOST] = hns
    links = []
    for sw, p in peers(fabric):
        lab_end, far = f"s{index[sw.name]}p{p.port}", f"b{index[sw.name]}p{p.port}"[:15]
        st.ifaces[f"{sw.name}:{p.port}"] = lab_end
        if sw.name in st.switch_ns:
            st.iface_netns[lab_end] = st.switch_ns[sw.name]
        links.append((sw, p, lab_end, far))
    st.save()
    for ns in (rns, hns):
        nsutil.create_netns(ns)
        quiet_ipv6(ns)
    # ignore_routes_with_linkdown: the kernel skips an ECMP next hop whose link lost carrier at once (a
    # border cut off from the fabric takes its external port down: client.border, link-state tracking),
    # as a hardware router prunes its ECMP on a port down, without waiting for BGP
    subprocess.run(nsutil.exec_cmd(rns, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1",
                                         "net.ipv4.conf.all.ignore_routes_with_linkdown=1",
                                         "net.ipv4.conf.default.ignore_routes_with_linkdown=1"]),
                   check=True, capture_output=True, timeout=10)
    plen = EXTERNAL_NET.split("/")[1]
    subprocess.run(["ip", "link", "add", "xh0", "netns", rns, "type", "veth", "peer", "name", "eth0", "netns", hns],
                   check=True, capture_output=True, timeout=10)
    ip_batch(rns, [f"addr add {EXTERNAL_GATEWAY}/{plen} dev xh0", "link set xh0 up"])
    ip_batch(hns, [f"addr add {EXTERNAL_HOST_IP}/{plen} dev eth0", "link set eth0 up",
                    f"route add default via {EXTERNAL_GATEWAY}"])
    disable_tx_checksum(hns, "eth0")
    disable_tx_checksum(rns, "xh0")
    for sw, p, lab_end, far in links:
        sns = st.ns_of_switch(sw.name)
        subprocess.run(["ip", "link", "add", lab_end, "netns", sns, "type", "veth", "peer", "name", far,
                        "netns", rns], check=True, capture_output=True, timeout=10)
        ip_batch(rns, [f"addr add {p.address}/{p.local_address.network.prefixlen} dev {far}", f"link set {far} up"])
        disable_tx_checksum(rns, far)
        ip_batch(sns, [f"link set {lab_end} up"])
    plumbing.add_ports(st, [f"{sw.name}:{p.port}" for sw, p, _l, _f in links])
    # each border's own IP stack: its bridge's LOCAL port (in the border's namespace), with the peer links'
    # addresses
    for sw in {sw.name: sw for sw, _p, _l, _f in links}.values():
        br = st.bridges[sw.name]
        lab.ovs_of(sw.name).vsctl("set", "bridge", br, f"other-config:hwaddr={sw.mac}")
        ip_batch(st.ns_of_switch(sw.name), [f"link set {br} address {sw.mac}", f"link set {br} up"]
                 + [f"addr replace {p.local_address} dev {br}" for p in sw.bgp.peers])
    start_frr(lab)
    log(f"external router {rns} (FRR bgpd, AS {router_asn(fabric)}) peering with {len(links)} border "
        f"session(s); external host {EXT_HOST} {EXTERNAL_HOST_IP}")


def run_dir(lab: Any) -> Path:
    return Path(f"/var/run/frr/{host_netns(lab.state.name, ROUTER)}")


def start_frr(lab: Any) -> None:
    st = lab.state
    rns = host_netns(st.name, ROUTER)
    d = Path(st.dir) / "frr"
    d.mkdir(parents=True, exist_ok=True)
    logs = Path(st.dir) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    run = run_dir(lab)
    run.mkdir(parents=True, exist_ok=True)
    confs = frr_config(lab.fabric, logs)
    for path in (d, run, logs):
        shutil.chown(path, "frr", "frr")
    for daemon in ("zebra", "bgpd"):
        conf = d / f"{daemon}.conf"
        conf.write_text(confs[daemon])
        shutil.chown(conf, "frr", "frr")
        argv = nsutil.exec_cmd(rns, [str(FRR_DIR / daemon), "-F", "datacenter", "-N", rns, "-f", str(conf),
                                     "-i", str(run / f"{daemon}.pid")])
        out = logs / f"frr-{daemon}.out"
        with open(out, "ab") as f:
            proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        start = proc_starttime(proc.pid)
        if start is None:
            raise BgpLabError(f"{daemon} in {rns} exited at once; see {out}")
        rec = ProcRecord(kind="frr", name=daemon, pid=proc.pid, starttime=start, argv=argv, log=str(out))
        st.processes[rec.key] = rec
        st.save()
        if daemon == "zebra":
            deadline = time.monotonic() + 10
            while not (run / "zserv.api").exists() and time.monotonic() < deadline:
                time.sleep(0.01)


def vtysh(lab: Any, *commands: str, timeout: float = 10.0) -> str:
    rns = host_netns(lab.state.name, ROUTER)
    argv = ["vtysh", "-N", rns]
    for c in commands:
        argv += ["-c", c]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise BgpLabError(f"vtysh {' '.join(commands)}: {proc.stdout.strip()} {proc.stderr.strip()}")
    return proc.stdout


def set_external(lab: Any, up: bool, *, session: bool = False) -> None:
    """Announce (up) or withdraw the default route to every border; `session`: shut the sessions instead."""
    cmds = ["configure terminal", f"router bgp {router_asn(lab.fabric)}"]
    if session:
        cmds += [f"{'no ' if up else ''}neighbor {p.local_address.ip} shutdown" for _sw, p in peers(lab.fabric)]
    else:
        cmds.append("address-family ipv4 unicast")
        cmds += [f"{'' if up else 'no '}neighbor {p.local_address.ip} default-originate"
                 for _sw, p in peers(lab.fabric)]
    vtysh(lab, *cmds)


def set_password(lab: Any, border_address: str, password: str | None) -> None:
    """Give the router's session to the border at `border_address` a TCP MD5 password (None: none)."""
    cmd = f"neighbor {border_address} password {password}" if password else f"no neighbor {border_address} password"
    vtysh(lab, "configure terminal", f"router bgp {router_asn(lab.fabric)}", cmd)


def fail_external(lab: Any, session: bool = False) -> dict[str, object]:
    """`lab fail external`: the outside withdraws the default (or drops every session); undone by heal."""
    if not peers(lab.fabric):
        raise BgpLabError("this lab has no eBGP border (lab up --border-pods N --external)")
    fault: dict[str, object] = {"kind": "external", "session": session}
    if any(f.get("kind") == "external" and f.get("session") == session for f in lab.state.faults):
        from lab.report import heal_command
        raise BgpLabError("already injected: the outside " + ("dropped its sessions" if session else
                          "withdrew the default") + f" (undo with `{heal_command(lab.state.name)}`)")
    lab.state.faults.append(fault)
    lab.state.save()
    fault["at"] = time.monotonic()
    set_external(lab, False, session=session)
    return fault


def router_sessions(lab: Any) -> dict[str, dict[str, Any]]:
    """The external router's view: border address -> {state, uptime_ms, prefixes_in, prefixes_out}."""
    data = json.loads(vtysh(lab, "show bgp ipv4 unicast summary json") or "{}")
    out = {}
    for addr, n in (data.get("peers") or {}).items():
        out[addr] = {"state": n.get("state"), "uptime_ms": n.get("peerUptimeMsec"),
                     "prefixes_in": n.get("pfxRcd"), "prefixes_out": n.get("pfxSnt")}
    return out


def bgp_problem(lab: Any) -> str | None:
    """None when every eBGP border's sessions are Established (its client's view), it provides its external
    prefixes, and the serving master's LSD has every external slot UP; else what is missing (one line)."""
    borders = [s.name for s in lab.fabric.switches if s.bgp is not None]
    if not borders:
        return None
    states = lab.client_states()
    missing = []
    for b in borders:
        st = states.get(b)
        border = st.get("border") if isinstance(st, dict) else None
        if not isinstance(border, dict):
            missing.append(f"{b}: no border state ({type(st).__name__})")
            continue
        down = [str(x.get("peer", x.get("address", "?"))) for x in border.get("sessions", [])
                if x.get("state") != "established"]
        damped = [f"{prefix} from {peer}" for peer, prefix in border.get("suppressed") or ()]
        if down:
            missing.append(f"{b}: BGP session(s) not established: {', '.join(down)}")
        elif damped:        # RFC 2439: back once the penalty decays (client.border HALF_LIFE, MAX_SUPPRESS)
            missing.append(f"{b}: route(s) suppressed by flap damping: {', '.join(damped)}")
        elif not border.get("provided"):
            missing.append(f"{b}: provides no external prefix yet")
    if missing:
        return "; ".join(missing[:4])
    try:
        lsd = lab.master_get("/v1/lsd")
    except Exception as e:  # noqa: BLE001 - reported as the problem
        return f"master LSD not read: {e}"
    down_slots = [f"{b} {p}" for b, slots in (lsd.get("external") or {}).items() for p, up in slots.items() if not up]
    return f"external prefix(es) not in the LSD: {', '.join(down_slots)}" if down_slots else None


def router_problem(lab: Any) -> str | None:
    """None when the external router has every session Established and a route to every prefix the borders
    announce (traffic from the outside can come in), else what is missing (one line)."""
    try:
        sessions = router_sessions(lab)
        routes = router_routes(lab)
    except (BgpLabError, OSError, subprocess.SubprocessError, ValueError) as e:
        return f"external router not read: {e}"
    want = {str(p.local_address.ip) for _sw, p in peers(lab.fabric)}
    down = sorted(a for a in want if (sessions.get(a) or {}).get("state") != "Established")
    if down:
        return f"external router: session(s) with {', '.join(down)} not established"
    missing = sorted({str(n) for sw, _p in peers(lab.fabric) for n in sw.bgp.announce} - set(routes))
    return f"external router: no route to {', '.join(missing)} yet" if missing else None


def wait_ready(lab: Any, timeout: float) -> str | None:
    """Bounded wait until the outside and the fabric reach each other: every border's sessions up and its
    prefixes in the LSD (`bgp_problem`), the router's sessions and routes up (`router_problem`), then every
    client programmed the master's LSD version (the external slots coming UP made a new one). None when
    ready, else what is missing. `lab up` and `lab heal --wait` wait for it."""
    deadline = time.monotonic() + timeout
    while True:
        problem = bgp_problem(lab) or router_problem(lab)
        if problem is None or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    if problem is not None:
        return problem
    if not lab.wait_converged(max(0.0, deadline - time.monotonic())):
        return lab.convergence_problem() or "not converged"
    return None


def router_routes(lab: Any) -> dict[str, list[str]]:
    """The external router's kernel routes learned by BGP: prefix -> next hops."""
    rns = host_netns(lab.state.name, ROUTER)
    proc = subprocess.run(["ip", "-n", rns, "-j", "route", "show", "proto", "bgp"], capture_output=True,
                          text=True, timeout=10)
    out: dict[str, list[str]] = {}
    for r in json.loads(proc.stdout or "[]"):
        hops = [h.get("gateway") for h in r.get("nexthops", [])] or [r.get("gateway")]
        out[r["dst"]] = sorted(h for h in hops if h)
    return out


def cleanup(name: str) -> None:
    """What `lab down` must remove beyond namespaces and processes: FRR's run directory."""
    shutil.rmtree(f"/var/run/frr/{host_netns(name, ROUTER)}", ignore_errors=True)
