"""`firepath lab demo` (what `make demo` runs): a guided tour of a small 3-tier Clos, always torn down.

Builds 2 spines + 2 pods x (2 aggs + 2 ToRs), one host per ToR, 3 masters; shows the status table; pings
every pair; fails a ToR-agg link under a running probe and shows the outage the probe saw and the ToR's
new ECMP buckets; heals; drains a spine with the operator CLI (a dry run first, then the drain under the
probe, the drain list and an agg's routes, then the undrain); kills the master and shows the failover
(new master, new term, probe loss); rolls a re-weighted ToR uplink out in two phases under the probe
(issue #21: `lab reload`); tears everything down (try/finally), in well under two minutes.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from lab.state import default_dir

CLOS = {"spines": 2, "pods": 2, "aggs_per_pod": 2, "tors_per_pod": 2, "hosts_per_tor": 1, "masters": 3,
        "border_pods": 1, "external": True}
PROBE_FLOWS = 4      # 4 x 1000 pps: what OVS's userspace datapath on 2 busy cores carries without loss
PROBE_RATE = 1000.0


def say(text: str = "") -> None:
    print(text, flush=True)


def step(n: int, title: str) -> None:
    say()
    say(f"== {n}. {title} " + "=" * max(0, 70 - len(title)))


def _indent(lines: list[str] | str, prefix: str = "   ") -> str:
    if isinstance(lines, str):
        lines = lines.splitlines()
    return "\n".join(prefix + line for line in lines)


def _select_groups(lab: Any, switch: str) -> list[str]:
    """One line per ECMP (select) group: its buckets' output ports and the neighbour behind each."""
    out = []
    for line in lab.dump_groups(switch):
        if "type=select" not in line:
            continue
        gid = line.split(",", 1)[0].split("=", 1)[1]
        hops = []
        for port in re.findall(r"output:(\d+)", line):
            peer = lab.fabric.peer_of(switch, int(port))
            hops.append(f"port {port} -> {peer.switch if peer else '?'}")
        out.append(f"group {gid}: {len(hops)} bucket(s): {', '.join(hops)}")
    return out or ["(no select groups)"]


def _probe_line(result: dict[str, Any]) -> str:
    worst = max(result["flows"], key=lambda f: (f["lost"], f["max_gap_ms"] or 0))
    return (f"probe: {result['sent']} packets on {len(result['flows'])} flows, lost {result['lost']} "
            f"(worst flow: {worst['lost']} lost = {worst['loss_ms']:.0f} ms, longest gap {worst['max_gap_ms']} ms)")


def _firepath(lab: Any, *argv: str, with_lab: bool = True) -> int:
    """Run `firepath ARGV --lab NAME` (or without --lab) as an operator would, showing the command and its
    output."""
    argv = (*argv, "--lab", lab.state.name) if with_lab else argv
    shown = " ".join(a if " " not in a else f'"{a}"' for a in argv)
    say(f"   $ firepath {shown}")
    r = subprocess.run([sys.executable, "-m", "proto.cli", *argv], capture_output=True, text=True, timeout=60)
    out = (r.stdout + r.stderr).rstrip()
    if out:
        say(_indent(out, "     "))
    return r.returncode


def _drain_tour(lab: Any, src: str, dst: str) -> None:
    """Dry run, then drain spine-1 under a probe, list the drains and an agg's routes, undrain."""
    from lab.fabric import LabError

    spine = next(sw.name for sw in lab.fabric.switches if str(sw.role) == "spine")
    agg = next(sw.name for sw in lab.fabric.switches if str(sw.role) == "agg")
    far = str(lab.fabric.switch(lab.fabric.host(dst).tor).prefixes[0])
    _firepath(lab, "drain", "--switch", spine, "--dry-run")
    probe = lab.probe(src, dst, flows=PROBE_FLOWS, rate=PROBE_RATE, port=7002)
    probe.start()
    try:
        time.sleep(1.0)
        v0 = lab.lsd_version() or 0
        if _firepath(lab, "drain", "--switch", spine, "--reason", "demo: replace optics") != 0:
            raise LabError("the drain failed")
        lab.wait_converged(10.0, min_version=v0 + 1)
        time.sleep(0.5)
        result = probe.stop()
    finally:
        probe.close()
    say("   " + _probe_line(result))
    _firepath(lab, "drains")
    _firepath(lab, "routes", agg, far)
    v0 = lab.lsd_version() or 0
    _firepath(lab, "undrain", "--switch", spine)
    lab.wait_converged(10.0, min_version=v0 + 1)


def _wait_sessions(lab: Any, timeout: float = 20.0) -> None:
    """Until every border's eBGP sessions are Established (ExaBGP starts with the client; FRR retries 1 s) and
    the external prefixes they provide are UP in the serving master's LSD (lab.bgp.bgp_problem)."""
    from lab import bgp
    from lab.fabric import wait_until

    if bgp.peers(lab.fabric) and not wait_until(
            lambda: all(s["state"] == "Established" for s in bgp.router_sessions(lab).values())
            and bgp.bgp_problem(lab) is None, timeout, 0.2):
        say(f"   eBGP not ready after {timeout:.0f} s: {bgp.bgp_problem(lab) or bgp.router_sessions(lab)}")


def _border_tour(lab: Any) -> None:
    """Sessions, the external host reached, then the outside withdraws the default route (issue #13)."""
    from lab import bgp, inject
    from lab.fabric import wait_until

    tors = [s.name for s in lab.fabric.switches if str(s.role) == "tor"]

    def has_default(sw: str) -> bool:
        return any(",priority=1000,ip actions=" in ln.replace(" priority", ",priority") for ln in lab.dump_flows(sw))

    for addr, ses in bgp.router_sessions(lab).items():
        say(f"   external router: session with {addr} {ses['state']}, {ses['prefixes_in']} prefix(es) in, "
            f"{ses['prefixes_out']} out")
    say(f"   routes it learnt from the borders: {bgp.router_routes(lab)}")
    try:                                  # the same sessions as the master has them (the borders' reports)
        for border, view in lab.master_get("/v1/borders")["borders"].items():
            for ses in view["sessions"]:
                say(f"   master's GET /v1/borders: {border} <-> {ses['peer']} {ses['state']}, "
                    f"{ses.get('prefixes_in', '-')} in, {ses.get('prefixes_out', '-')} out, "
                    f"up {ses.get('uptime_s', '-')} s")
    except Exception as e:                # the tour goes on without it
        say(f"   master's GET /v1/borders: unreachable ({e})")
    host = lab.fabric.hosts[0].name
    got = lab.ping([(host, bgp.EXT_HOST), (bgp.EXT_HOST, host)], count=3)
    say(f"   ping {host} <-> {bgp.EXT_HOST} ({bgp.EXTERNAL_HOST_IP}): " + ", ".join(f"{n}/3" for n in got.values()))
    t0 = time.monotonic()
    bgp.fail_external(lab)
    gone = wait_until(lambda: not any(has_default(t) for t in tors), 10.0, 0.005)
    say("   the router withdrew 0.0.0.0/0: " + (f"no ToR has a default route {(time.monotonic() - t0) * 1000:.0f} ms "
        "later (BGP -> border -> master -> LSD -> every ToR)" if gone else "ToRs still have it after 10 s"))
    inject.heal(lab)
    t0 = time.monotonic()
    back = wait_until(lambda: all(has_default(t) for t in tors), 10.0, 0.005)
    say("   announced again: " + (f"every ToR has it {(time.monotonic() - t0) * 1000:.0f} ms later" if back
                                 else "not back within 10 s"))


def run_demo(name: str = "demo", lab_dir: Path | None = None) -> int:
    from lab import inject
    from lab.fabric import Lab, LabError, preflight, teardown, wait_until
    from lab.report import format_status, ping_summary

    problem = preflight()
    if problem:
        say(problem)
        return 1
    t_start = time.monotonic()
    d = lab_dir or default_dir(name)
    lab: Lab | None = None
    # `kill PID` / a CI timeout: unwind through the finally below so the lab is always torn down
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        step(1, "bring up a Clos: 2 spines, 2 pods x (2 aggs + 2 ToRs), 4 hosts, 3 masters, 2 eBGP borders")
        lab = Lab.up(name=name, lab_dir=d, clos=CLOS, clean=True, timeout=90.0, log=lambda m: say("   " + m))
        fabric = lab.fabric
        _wait_sessions(lab)

        step(2, "status")
        say(_indent(format_status(lab)))

        step(3, "ping every host pair")
        results = lab.ping(count=3)
        say("   " + ping_summary(results, 3)[0])

        hosts = [h.name for h in fabric.hosts]
        src, dst = hosts[0], hosts[-1]
        tor = fabric.host(src).tor
        agg_link = next(fabric.links[i] for i in fabric.links_of(tor))
        agg = agg_link.b.switch if agg_link.a.switch == tor else agg_link.a.switch

        step(4, f"fail link {tor} -- {agg} (carrier down)")
        say(f"   probe {src} -> {dst}: {PROBE_FLOWS} UDP flows x {PROBE_RATE:.0f} packets/s")
        say(f"   ECMP groups of {tor} before:")
        say(_indent(_select_groups(lab, tor), "     "))
        probe = lab.probe(src, dst, flows=PROBE_FLOWS, rate=PROBE_RATE)
        probe.start()
        try:
            time.sleep(1.0)                      # steady traffic before the failure
            v0 = lab.lsd_version() or 0
            t0 = time.monotonic()
            inject.fail_link(lab, tor, agg)
            converged = lab.wait_converged(10.0, min_version=v0 + 1)
            t_conv = time.monotonic() - t0
            time.sleep(0.5)                      # traffic after the repair
            result = probe.stop()
        finally:
            probe.close()
        say(f"   control plane: every switch programmed the new LSD {t_conv * 1000:.0f} ms after the carrier loss"
            if converged else f"   not converged: {lab.convergence_problem()}")
        say("   " + _probe_line(result))
        say(f"   ECMP groups of {tor} after (one uplink left):")
        say(_indent(_select_groups(lab, tor), "     "))

        step(5, "heal")
        v0 = lab.lsd_version() or 0
        inject.heal(lab)
        t0 = time.monotonic()
        ok = lab.wait_converged(10.0, min_version=v0 + 1)
        say(f"   link back in use after {(time.monotonic() - t0) * 1000:.0f} ms" if ok
            else f"   not converged: {lab.convergence_problem()}")

        step(6, "drain a spine with the operator CLI: dry run, drain under the probe, undrain")
        _drain_tour(lab, src, dst)

        step(7, "kill the master (SIGKILL), same probe running")
        before = lab.current_master()
        if before is None:
            raise LabError("no single master before the kill")
        say(f"   master {before[0]}, term {before[1].get('term')}, LSD version {before[1].get('version')}")
        probe = lab.probe(src, dst, flows=PROBE_FLOWS, rate=PROBE_RATE, port=7001)
        probe.start()
        try:
            time.sleep(1.0)
            t0 = time.monotonic()
            inject.kill_master(lab, before[0])
            new: list[Any] = []

            def new_master() -> bool:
                cur = lab.current_master()
                if cur is not None and cur[0] != before[0]:
                    new[:] = [cur]
                    return True
                return False

            elected = wait_until(new_master, 10.0, 0.01)
            t_fail = time.monotonic() - t0
            if elected:
                lab.wait_converged(10.0)
            time.sleep(0.5)
            result = probe.stop()
        finally:
            probe.close()
        if elected:
            mid, s = new[0]
            say(f"   new master {mid}, term {s.get('term')}, LSD version {s.get('version')}, "
                f"serving {t_fail * 1000:.0f} ms after the kill")
        else:
            say(f"   no new master within 10 s: {lab.master_states()}")
        say("   " + _probe_line(result))
        say(_indent(format_status(lab)))
        inject.heal(lab)
        back = wait_until(lambda: isinstance(s := lab.master_states().get(before[0]), dict)
                          and s.get("role") == "backup", 20.0, 0.1)
        leader = lab.current_master()
        say(f"   {before[0]} restarted: " + (f"rejoined as backup; {leader[0]} stays master (sticky election)"
                                            if back and leader else f"state {lab.master_states().get(before[0])}"))
        step(8, "the outside: eBGP borders (ExaBGP) and an external router (FRR bgpd)")
        _border_tour(lab)

        step(9, "roll out a config change: re-weight a ToR uplink, two phases, probe running")
        from lab.demo_rollout import rollout_tour

        rollout_tour(lab, src, dst, say=say, firepath=lambda *a: _firepath(lab, *a), groups=_select_groups,
                     probe_line=_probe_line, flows=PROBE_FLOWS, rate=PROBE_RATE)

        step(10, "add a rack: a ToR with a host joins the running fabric (config add-tor, reload --grow)")
        from lab.demo_rollout import add_tor_tour

        add_tor_tour(lab, src, dst, say=say, firepath=lambda *a: _firepath(lab, *a, with_lab=False),
                     probe_line=_probe_line,
                     flows=PROBE_FLOWS, rate=PROBE_RATE)
        return 0
    except LabError as e:
        say(f"demo failed: {e}")
        return 1
    finally:
        step(11, "tear down")
        if lab is not None:
            lab.close()
        teardown(d, name=name, log=lambda m: None)
        say(f"   lab {name} removed; logs kept in {d / 'logs'}")
        say(f"   demo took {time.monotonic() - t_start:.1f} s")
        signal.signal(signal.SIGTERM, previous)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    sys.exit(run_demo())
