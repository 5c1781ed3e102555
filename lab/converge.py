"""When a lab fabric has converged (`Lab.convergence_problem`, `Lab.wait_converged`): what a check reads and
what it may ignore.

Converged means every live client programmed the serving master's LSD version, has the usable port counts the
recorded faults leave, and the master's LSD agrees with what the clients say right now: a link whose two ends
are usable is UP, a link with an end out of use is not.

Mid-rollout (issue #21), a client that moved to the prepared next config programs the LSD the master serves
under it (controller.nextlsd: versions of its own, above the running LSD's): it is converged at the master's
`next_version` (`/v1/rollout`), not at the running LSD's version (before, `lab heal` during a rollout failed
with "leaf-1: programmed 12 != 11" on a fabric where every pair was reachable).

Two kinds of "not yet" are told apart:

- **Pending**, never converged: a report still in flight to the master (the LSD is about to change), or a port
  that *local repair* still keeps out of the ECMP groups although it is usable and its link is UP in the LSD
  the client programmed (client.programmer: an excluded port returns with the next LSD, or after
  `max(keepalive, 3 x nd_interval)` of usability when the master never saw the failure). The client's
  `programmed_version` is already current then, so a check on versions alone passes while the switch still
  forwards around the port: a test reading the groups right after it found the port missing.
- **Held on purpose** by the master: a link its flap damping suppresses (controller.damping: DOWN in the LSD
  with both ends usable, until its penalty decays), the downs its drastic-change guard holds
  (controller.guard: until corroborated or confirmed), or a whole LSD held (a master that heard no switch on
  its config). With `holds_ok` (the default: `lab up`, `lab heal --wait`, reloads) these count as converged —
  the fabric is where the master wants it. With `holds_ok=False` they do not: a hold ends by itself (a
  damped link is reused, a held down corroborated a moment later), so a test that reads the LSD or the
  switches right after the wait must not start while one is in force, or it reads a change half-way (CI,
  2026-12-04: a heal held by damping and released just after the wait; a spine failure whose downs the guard
  held until the spine's own report arrived). A hold that never ends then fails the wait, naming it.
  A port its own client holds out of use for flapping (client.damping: `damped` in the client's REST, until
  its penalty decays, up to `damp_max`) is such a hold too for a caller that says so (`damped_ok`: `lab heal`,
  whose user flapped the link): before, `lab heal` after a flapping link waited its whole `--wait` and failed
  with "spine-2: 1/2 ports usable", naming neither the port nor why. Other callers (`lab up`, benchmarks that
  wait for damped ports to return) still wait for it, and the message names the damped ports.
"""

from __future__ import annotations

from typing import Any

from lab.state import LabError

__all__ = ["convergence_problem", "lsd_disagreement", "pending_exclusions"]


def convergence_problem(lab: Any, expect_usable: dict[str, int] | None = None, min_version: int | None = None,
                        holds_ok: bool = True, damped_ok: bool = False) -> str | None:
    """None when `lab` has converged (module docstring), else a short description of what is missing.
    `damped_ok`: a port its client damps for flapping is a hold (subject to `holds_ok`), not a port missing."""
    if expect_usable is None:
        expect_usable = lab.expected_usable()
    dead_clients = {str(f["switch"]) for f in lab.state.faults if f["kind"] == "client"}
    leader = lab.current_master()
    if leader is None:
        states = {m: (s.get("role") if isinstance(s, dict) else type(s).__name__)
                  for m, s in lab.master_states().items()}
        return f"no single master: {states}"
    version = int(leader[1]["version"])
    if min_version is not None and version < min_version:
        return f"master {leader[0]} at LSD version {version} < {min_version}"
    running = lab.fabric.digest
    rollout: dict | None = None          # the master's /v1/rollout, read once a client holds another config
    behind: list[str] = []
    damped: list[str] = []          # ports their client's flap damping holds out of use (a hold on purpose)
    recorded: set[tuple[str, int]] | None = None       # the ports the lab's faults take down (read when needed)
    states = lab.client_states()
    for name, s in states.items():
        if name in dead_clients:
            continue
        if isinstance(s, Exception):
            rec = lab.state.processes.get(f"client:{name}")
            behind.append(f"{name}: client stopped by a signal (pid {rec.pid})" if rec is not None and rec.stopped()
                          else f"{name}: REST {type(s).__name__}")
            continue
        want_version = version
        digest = s.get("digest", running)
        if digest != running:
            # mid-rollout, a switch moved to the prepared next config programs the LSD the master serves under
            # it (controller.nextlsd: its own versions, above the running LSD's), not the running LSD's version
            if rollout is None:
                rollout = _rollout(lab)
            nxt = rollout.get("next_version")
            if digest == rollout.get("next") and rollout.get("next_withheld"):
                continue        # not served before the commit, on purpose: it keeps its routes (local repair)
            if digest != rollout.get("next") or nxt is None:
                behind.append(f"{name}: holds config {str(digest)[:12]}..., which the master neither runs nor has "
                              f"prepared: it refuses the LSD (left on an aborted rollout? reload it onto the running "
                              f"config)")
                continue
            want_version = int(nxt)
        if int(s.get("programmed_version", -1)) != want_version:
            behind.append(f"{name}: programmed {s.get('programmed_version')} != {want_version}"
                          + (" (the next config's LSD)" if want_version != version else ""))
            continue
        want = expect_usable.get(name, len(lab.fabric.fabric_ports(name)))
        ports = s.get("ports", [])
        usable = sum(1 for p in ports if p.get("usable"))
        if usable != want:
            held = [f"{name}:{p.get('port')}" for p in ports if p.get("damped") and not p.get("usable")]
            if damped_ok and usable < want <= usable + len(held):      # every missing port is one its client damps
                damped.extend(held)
            else:
                if recorded is None:
                    recorded = lab.expected_down()
                # a cable pulled behind the lab's back: `lab heal` cannot undo it, so say so (tester finding)
                unplugged = [f"{name}:{p.get('port')}" for p in ports if p.get("phy") is False
                             and not p.get("usable") and (name, p.get("port")) not in recorded]
                why = ([f"{', '.join(held)} damped for flapping"] if held else []) + (
                    [f"{', '.join(unplugged)} without carrier, which no lab fault records"] if unplugged else [])
                behind.append(f"{name}: {usable}/{want} ports usable" + (f" ({'; '.join(why)})" if why else ""))
    if behind:
        return "; ".join(behind[:6])
    problem = lsd_disagreement(lab, states, dead_clients, holds_ok)
    if problem is None and damped and not holds_ok:
        return (f"client flap damping holds {', '.join(damped[:6])}{' ...' if len(damped) > 6 else ''} out of use "
                f"(back in use once the flaps' penalty decays, at most damp_max_ms: {lab.fabric.timers.damp_max:g} s)")
    return problem


def _rollout(lab: Any) -> dict:
    """The serving master's GET /v1/rollout ({} if it does not answer: every moved switch is then behind)."""
    try:
        got = lab.master_get("/v1/rollout")
    except (LabError, OSError, ValueError):
        return {}
    return got if isinstance(got, dict) else {}


def lsd_disagreement(lab: Any, states: dict[str, dict | Exception], dead_clients: set[str],
                     holds_ok: bool = True) -> str | None:
    """None when the master's LSD agrees with what the clients say right now and no client keeps a port out
    of its groups that the LSD lets it use (drained links are not compared; held links: module docstring).
    Programmed-version equality alone is not enough: a report still in flight to the master (a repaired
    port just usable) leaves every client at the current version while the LSD is about to change."""
    try:
        lsd = lab.master_get("/v1/lsd")
    except (LabError, OSError, ValueError) as e:
        return f"master LSD: {type(e).__name__}: {e}"
    links = lsd.get("links", {})
    pending = pending_exclusions(lab.fabric, states, links, dead_clients)
    if pending:
        return pending
    if lsd.get("held") or lsd.get("guard_held"):     # the master holds changes on purpose
        if holds_ok:
            return None
        return (f"master {lsd.get('master')} holds its LSD (no switch heard on its config)" if lsd.get("held")
                else f"master {lsd.get('master')}: the drastic-change guard holds {lsd['guard_held']} link(s) down")
    usable = {(name, int(p["port"])): bool(p.get("usable")) for name, s in states.items()
              if isinstance(s, dict) for p in s.get("ports", [])}
    wrong = []
    for link in lab.fabric.links:
        if link.a.switch in dead_clients or link.b.switch in dead_clients:
            continue
        ends = (usable.get((link.a.switch, link.a.port)), usable.get((link.b.switch, link.b.port)))
        state = links.get(link.name)
        if None in ends or state in (None, "drained", "drained_down"):   # a drain wins over evidence
            continue
        if all(ends) != (state == "up"):
            wrong.append(link.name)
    if wrong:      # a link the master damps stays down with both ends usable (controller.damping)
        try:
            damped = {d["link"] for d in lab.master_get("/v1/damping").get("suppressed", [])}
        except (LabError, OSError, ValueError) as e:
            return f"master damping: {type(e).__name__}: {e}"
        held = [name for name in wrong if name in damped]
        wrong = [name for name in wrong if name not in damped]
        if held and not holds_ok and not wrong:
            return f"master damping suppresses {', '.join(held[:6])} (both ends usable)"
    return "; ".join(f"{name}: LSD {links[name]} vs. the clients' usable ports" for name in wrong[:6]) or None


def pending_exclusions(fabric: Any, states: dict[str, dict | Exception], links: dict[str, str],
                       dead_clients: set[str]) -> str | None:
    """The ports local repair still keeps out of the groups although they are usable and their link is UP in
    the LSD (they return within a keepalive or so: client.programmer `_may_restore`), or None."""
    late = []
    for name, s in states.items():
        if name in dead_clients or not isinstance(s, dict) or not s.get("excluded_ports"):
            continue
        usable = {int(p["port"]) for p in s.get("ports", []) if p.get("usable")}
        for port in s["excluded_ports"]:
            link = fabric.link_at(name, int(port))
            if int(port) in usable and link is not None and links.get(link.name) == "up":
                late.append(f"{name}:{port}")
    if not late:
        return None
    return f"still excluded by local repair, usable and UP in the LSD: {', '.join(late[:6])}"
