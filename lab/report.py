"""How the lab reports itself: the status table, active faults and ping results as text, for `firepath lab`
(lab.cli) and the guided demo (lab.demo), which both import it (and not each other)."""

from __future__ import annotations

from typing import Any

from lab import plumbing
from proto.termsafe import clean


def format_status(lab: Any) -> str:
    """The status table. Every value read from a master's or a client's REST goes through `clean` (whatever
    binds a client's REST port answers for it: tester bb40 F14 cleared the screen with an ESC sequence), and
    is formatted as text (a number where a string was expected, or the reverse, no longer raises)."""
    lines = []
    masters = lab.master_states()
    switches = lab.client_states()
    # name columns as wide as the longest name (a fabric's names may be long: the rows misaligned past 12)
    mw = max([8, *(len(m) for m in masters)])
    w = max([12, *(len(n) for n in switches), *(len(sw.name) for sw in lab.fabric.switches)])
    lines.append(f"{'master':<{mw}} {'pid':>7} {'role':<10} {'term':>5} {'version':>8}")
    for mid, s in masters.items():
        rec = lab.state.processes.get(f"master:{mid}")
        pid = "ext" if lab.state.external_masters else str(rec.pid) if rec and rec.alive() else "dead"
        if isinstance(s, dict):
            lines.append(f"{mid:<{mw}} {pid:>7} {clean(s.get('role', '?')):<10} {clean(s.get('term', '?')):>5} "
                         f"{clean(s.get('version', '?')):>8}")
        else:
            lines.append(f"{mid:<{mw}} {pid:>7} {'unreachable':<10} {'-':>5} {'-':>8}")
    lines.append("")
    lines.append(f"{'switch':<{w}} {'client':>7} {'master':<7} {'lsd':>5} {'prog':>5} {'usable':>6} {'down':>5} "
                 f"{'miscab':>6} {'routes':>6} {'groups':>6}")
    for name, s in switches.items():
        rec = lab.state.processes.get(f"client:{name}")
        pid = str(rec.pid) if rec and rec.alive() else "dead"
        if not isinstance(s, dict):
            lines.append(f"{name:<{w}} {pid:>7} {'-':<7} (REST unreachable)")
            continue
        ports = [p for p in s.get("ports") or [] if isinstance(p, dict)] if isinstance(s.get("ports"), list) else []
        usable = sum(1 for p in ports if p.get("usable"))
        # miscabled as ND finds it, or as link OAM finds it (CFM hears another port: `miscabled_by`; a cable
        # looped back into the same switch is miscabled by both, with software ND too since it takes its own
        # frames for a wrong peer's)
        misc = sum(1 for p in ports if p.get("nd") == "miscabled" or p.get("miscabled_by"))
        down = len(ports) - usable
        # fail-static: the master it last heard, in parentheses (it hears none now)
        master = clean(s.get("master") or "-")
        master = f"({master})" if s.get("fail_static") and master != "-" else master
        lines.append(f"{name:<{w}} {pid:>7} {master:<7} {clean(s.get('lsd_version', '?')):>5} "
                     f"{clean(s.get('programmed_version', '?')):>5} {usable:>6} {down:>5} {misc:>6} "
                     f"{clean(s.get('routes', '?')):>6} {clean(s.get('groups', '?')):>6}")
    # A switch without a master forwards on its last LSD (fail-static): say it in words too (a tester saw
    # "master m3" with every master dead).
    static = [name for name, s in switches.items() if isinstance(s, dict) and s.get("fail_static")]
    if not any(isinstance(s, dict) and s.get("role") == "master" for s in masters.values()):
        lines.append("")
        lines.append("no master: no replica is serving (election in progress, or no majority)")
    if static:
        lines.append("")
        lines.append(f"fail-static (no master heard, forwarding on the last LSD; '(m)' = the last master it "
                     f"heard): {', '.join(static)}")
    # a client on another config than the LSD its master serves (left on an aborted rollout, or reloaded onto a
    # file no master prepared) refuses that LSD and keeps what its switch holds: a tester saw lsd -1, prog -1,
    # routes 0 for a switch that still forwarded, and no word why. A switch moved to a prepared next config is
    # served an LSD under it (controller.nextlsd): no mismatch, its lsd/prog are that LSD's versions.
    other = [name for name, s in switches.items() if isinstance(s, dict) and s.get("config_mismatch")]
    if other:
        lines.append("")
        lines.append("on another config than its master's LSD (left on an aborted rollout, reloaded onto a file "
                     "no master prepared, or moved to a next config the masters do not serve before the commit: "
                     "`config rollout --status` says why; it refuses that LSD, its switch forwards on the flows it "
                     "holds, no reroute but local repair): " + ", ".join(other))
    borders = [(name, s["border"]) for name, s in switches.items()
               if isinstance(s, dict) and isinstance(s.get("border"), dict)]
    unheard = [sw.name for sw in lab.fabric.switches if getattr(sw, "bgp", None) is not None
               and not isinstance(switches.get(sw.name), dict)]
    if borders or unheard:              # eBGP borders (issue #13): one line per session
        lines.append("")
        lines.append(f"{'border':<{w}} {'peer':<15} {'state':<12} {'uptime':>8} {'in':>4} {'out':<14} provides")
        for name, b in borders:
            provided = clean(",".join(map(str, b.get("provided", {}))) or "-")
            # routes the border's flap damping holds (RFC 2439): a tester saw a session established with 1 prefix
            # in, providing nothing, and no word why (only `lab heal --wait` named the damping)
            damped: dict[str, list[str]] = {}
            for item in b.get("suppressed") or []:
                if isinstance(item, (list, tuple)) and len(item) == 2:
                    damped.setdefault(str(item[0]), []).append(clean(item[1]))
            for ses in b.get("sessions", []):
                up = "-" if ses.get("uptime_s") is None else _secs(ses["uptime_s"])
                held = damped.get(str(ses["peer"]))
                note = f" (damped: {','.join(held)})" if held else ""
                lines.append(f"{name:<{w}} {clean(ses['peer']):<15} {clean(ses['state']):<12} {up:>8} "
                             f"{clean(ses['prefixes_in']):>4} {clean(','.join(map(str, ses['prefixes_out'])) or '-'):<14} "
                             f"{provided}{note}")
        lines += _master_border_lines(lab, unheard, w)
    if lab.state.faults:
        lines.append("")
        lines.append("active faults: " + ", ".join(describe_fault(f) for f in lab.state.faults))
    suspended = [f"{rec.kind} {rec.name} (pid {rec.pid})" for rec in lab.state.processes.values()
                 if rec.kind in ("master", "client") and rec.stopped()]
    if suspended:           # SIGSTOP by hand: alive, silent, and no lab fault records it
        lines.append("")
        lines.append("stopped by a signal (no lab fault records it; `lab heal` continues them): " + ", ".join(suspended))
    stopped = plumbing.stopped_ovs(lab.state) if getattr(lab.state, "phase", None) == "up" else []
    if stopped:
        lines.append("")
        lines.append("OVS not running (no lab fault: `lab heal` does not restart it, `lab up --clean` rebuilds the "
                     "lab): " + ", ".join(stopped))
    growing = getattr(lab.state, "growing", None)
    if growing:
        lines.append("")
        lines.append("interrupted `reload --grow` (may be half built; `lab up --clean` rebuilds): " + ", ".join(growing))
    return "\n".join(lines)


def _secs(v: Any) -> str:
    """Seconds from an answer as `12.3s`; anything but a number as it came (cleaned)."""
    return f"{v:.1f}s" if isinstance(v, (int, float)) and not isinstance(v, bool) else f"{clean(v)}s"


def _master_border_lines(lab: Any, names: list[str], w: int = 12) -> list[str]:
    """Sessions of borders whose client REST did not answer, as the master's `GET /v1/borders` has them
    (from the borders' last reports; counts, not prefixes, for what is announced out)."""
    if not names:
        return []
    leader = None if lab.state.external_masters else lab.current_master()
    view: Any = None
    if leader is not None:
        port = next(m.rest_port for m in lab.fabric.masters if m.id == leader[0])
        try:
            view = lab.http.get(port, "/v1/borders").get("borders", {})
        except Exception:           # unreachable master: say so below
            view = None
    out = []
    for name in names:
        b = view.get(name) if isinstance(view, dict) else None
        if not isinstance(b, dict):
            out.append(f"{name:<{w}} (client and master REST unreachable)")
            continue
        provided = clean(",".join(str(p) for p, up in b.get("provides", {}).items() if up) or "-")
        age = b.get("report_age_s")
        for ses in b.get("sessions", []):
            up = "-" if ses.get("uptime_s") is None else _secs(ses["uptime_s"])
            out.append(f"{name:<{w}} {clean(ses['peer']):<15} {clean(ses['state']):<12} {up:>8} "
                       f"{clean(ses.get('prefixes_in', '-')):>4} {clean(ses.get('prefixes_out', '-')):<14} {provided} "
                       f"(master's view, report {'never' if age is None else f'{_secs(age)} old'})")
    return out


def heal_command(name: str = "demo", lab_dir: str | None = None) -> str:
    """The command that undoes a fault of this lab (tester: the hints said `firepath lab heal` for every lab)."""
    if lab_dir:
        return f"firepath lab heal --dir {lab_dir}"
    return "firepath lab heal" + ("" if name == "demo" else f" --name {name}")


def describe_fault(f: dict[str, Any]) -> str:
    kind = f["kind"]
    if kind in ("link", "silent"):
        return f"{kind} {f['name']}"
    if kind == "switch":
        return f"switch {f['switch']}"
    if kind in ("master", "client") and f.get("outside"):
        who = f"master {f['id']}" if kind == "master" else f"client {f['switch']}"
        if f.get("stopped"):
            return f"{who} was stopped (SIGSTOP; no lab fault recorded it): continued"
        return f"{who} was not running (no lab fault recorded it): started again"
    if kind == "master":
        return f"master {f['id']} killed"
    if kind == "client":
        return f"client {f['switch']} killed"
    if kind == "miscable":
        now = f.get("cabled")              # SWITCH:PORT pairs (a record from an older lab has only veth names)
        return f"miscabled {f['a']}<->{f['b']}" + (f" (as {', '.join('<->'.join(p) for p in now)})" if now else "")
    if kind == "external":
        return "external router " + ("sessions shut down" if f.get("session") else "withdrew the default route")
    if kind == "cpn":
        return f"cpn {f['id']} {f['direction']}" + (f" (switch {f['switch']} only)" if f.get("switch") else "")
    return kind



def ping_summary(results: dict[tuple[str, str], int], count: int) -> tuple[str, int]:
    total = len(results)
    ok = sum(1 for r in results.values() if r == count)
    dead = [f"{a}->{b}" for (a, b), r in results.items() if r == 0]
    partial = [f"{a}->{b} ({r}/{count})" for (a, b), r in results.items() if 0 < r < count]
    text = f"ping: {ok}/{total} pairs without loss"
    if partial:
        text += f"; partial loss: {', '.join(partial[:8])}"
    if dead:
        text += f"; unreachable: {', '.join(dead[:8])}" + (f" (+{len(dead) - 8})" if len(dead) > 8 else "")
    return text, total - ok
