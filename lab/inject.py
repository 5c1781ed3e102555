"""Failure injection on a running lab; every fault is recorded in the lab state so `heal` undoes them all.

Each injector returns the fault record; its ``at`` is the monotonic time just before the action (for
benchmarks' timelines). Kinds (each reversible):

* ``link``      carrier down on both ends of a fabric link (``ip link set ... down``)
* ``silent``    the link stays up but drops every frame both ways (nftables netdev egress+ingress drop,
                lab/nft.py; one table per fault, in the lab namespace)
* ``switch``    a chassis failure: every fabric port of the switch down at once
* ``master``    SIGKILL of a master replica (the current master by default); healed by restarting it
* ``client``    SIGKILL of a switch's client; healed by restarting it
* ``miscable``  the far ends of two links swapped (veth pairs re-created with the same interface names,
                so OVS keeps the same OpenFlow port numbers); healed by re-creating the original pairs
* ``cpn``       a gray failure of the control-plane network: one master's client traffic dropped one way
                (``to-switches``: it still hears the switches; ``from-switches``: it still reaches them) or
                both, for every switch or one switch only (nftables `inet` input drop on the lab
                namespace's loopback, lab/nft.py; FMRP between the replicas is untouched); healed by
                deleting the table

``restart_client`` is not a fault: SIGTERM then start again (the flows stay in OVS meanwhile). A restart
of a killed client undoes that kill, so it also drops the kill's record (``without_kill``).

Every public operation holds the lab's lock (lab/state.py `locked`, re-entrant within a thread) while it
changes the fabric and the record, so two `firepath lab` commands (or a command and `lab down`) never
interleave their edits of ``lab.json``.
"""

from __future__ import annotations

import functools
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from lab import nft, plumbing
from lab.fabric import Lab, LabError, client_cpn_address, wait_until
from lab.iputil import ip_batch, set_carrier
from lab.labconfig import edited_since_run, keep_running, load_fabric
from lab.state import RUNNING_FILE, locked, say

_F = TypeVar("_F", bound=Callable[..., Any])


def _exclusive(func: _F) -> _F:
    """Run the operation under the lab's lock (bounded wait; re-entrant in one thread)."""
    @functools.wraps(func)
    def run(lab: Lab, *args: Any, **kwargs: Any) -> Any:
        with locked(lab.state.dir):
            return func(lab, *args, **kwargs)

    return run  # type: ignore[return-value]


def _refuse_duplicate(lab: Lab, fault: dict[str, object], *fields: str) -> None:
    """A fault equal to one already recorded (same kind and `fields`) is refused: healing undoes each record
    once, and a second record of the same fault made `lab heal` act twice and `lab status` list it twice."""
    for f in lab.state.faults:
        if f.get("kind") == fault["kind"] and all(f.get(k) == fault.get(k) for k in fields):
            from lab.report import describe_fault, heal_command
            raise LabError(f"already injected: {describe_fault(f)} (undo with `{heal_command(lab.state.name)}`)")


def _no_master(lab: Lab, master_id: object) -> LabError:
    ids = sorted(k.split(":", 1)[1] for k in lab.state.processes if k.startswith("master:"))
    return LabError(f"no master {master_id!r} in this lab (masters: {', '.join(ids) or 'none'})")


def _save(lab: Lab) -> None:
    lab.state.save()


def _set_ifaces(lab: Lab, ifaces: list[str], up: bool) -> float:
    """Carrier of every interface up/down (lab.iputil.set_carrier: ioctls from a thread in each namespace,
    no process per change); returns time.monotonic() right before the first change."""
    by_ns: dict[str, list[str]] = {}
    for i in ifaces:
        by_ns.setdefault(lab.state.netns_of(i), []).append(i)
    return min(set_carrier(ns, names, up) for ns, names in by_ns.items())


def _endpoint(spec: str) -> tuple[str, int]:
    sw, sep, port = spec.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()):
        raise LabError(f"endpoint {spec!r}: expected SWITCH:PORT")
    return sw, int(port)


def find_link(lab: Lab, a: str, b: str) -> Any:
    """The fabric link between switches `a` and `b` (or given as SWITCH:PORT endpoints); the first one
    not already failed when there are parallel links (`links_between` lists them all)."""
    return _pick(lab, links_between(lab, a, b))


def _pick(lab: Lab, candidates: list[Any]) -> Any:
    failed = {f.get("link") for f in lab.state.faults}
    fresh = [link for link in candidates if link.index not in failed]
    return (fresh or candidates)[0]


def links_between(lab: Lab, a: str, b: str) -> list[Any]:
    """Every fabric link that `a` and `b` (switch names or SWITCH:PORT endpoints) name, in config order;
    KeyError for an unknown switch, LabError when there is none."""
    fabric = lab.fabric
    known = {sw.name for sw in fabric.switches}
    for spec in (a, b):
        sw = _endpoint(spec)[0] if ":" in spec else spec
        if sw not in known:
            raise KeyError(sw)          # lab.cli lists the lab's names
    candidates = []
    for link in fabric.links:
        ends = {(link.a.switch, link.a.port), (link.b.switch, link.b.port)}
        names = {link.a.switch, link.b.switch}
        ok = True
        for spec in (a, b):
            if ":" in spec:
                ok &= _endpoint(spec) in ends
            else:
                ok &= spec in names
        if ok and (a != b):
            candidates.append(link)
    if not candidates:
        raise LabError(f"no fabric link between {a} and {b}")
    return candidates


def _link_ifaces(lab: Lab, link: Any) -> list[str]:
    st = lab.state
    return [st.ifaces[f"{link.a.switch}:{link.a.port}"], st.ifaces[f"{link.b.switch}:{link.b.port}"]]


@_exclusive
def fail_link(lab: Lab, a: str, b: str, *, silent: bool = False) -> dict[str, object]:
    link = find_link(lab, a, b)
    ifaces = _link_ifaces(lab, link)
    for f in lab.state.faults:       # carrier loss and silent loss on one link: the second is not observable
        if f.get("kind") in ("link", "silent") and f.get("link") == link.index:
            from lab.report import describe_fault, heal_command
            raise LabError(f"already injected on this link: {describe_fault(f)} (undo with `{heal_command(lab.state.name)}`)")
    if silent:
        table = f"fplab_{lab.state.name}_l{link.index}"
        fault: dict[str, object] = {"kind": "silent", "link": link.index, "name": link.name, "table": table,
                                    "ifaces": ifaces}
        lab.state.faults.append(fault)
        _save(lab)
        fault["at"] = nft.drop_link(table, [(lab.state.netns_of(i), i) for i in ifaces])
    else:
        fault = {"kind": "link", "link": link.index, "name": link.name, "ifaces": ifaces}
        lab.state.faults.append(fault)
        _save(lab)
        fault["at"] = _set_ifaces(lab, ifaces, up=False)
    return fault


@_exclusive
def fail_switch(lab: Lab, switch: str) -> dict[str, object]:
    fabric = lab.fabric
    fabric.switch(switch)            # KeyError for an unknown name
    ifaces = [lab.state.ifaces[f"{switch}:{p}"] for p in fabric.fabric_ports(switch)]
    fault: dict[str, object] = {"kind": "switch", "switch": switch, "ifaces": ifaces}
    _refuse_duplicate(lab, fault, "switch")
    lab.state.faults.append(fault)
    _save(lab)
    fault["at"] = _set_ifaces(lab, ifaces, up=False)
    return fault


@_exclusive
def kill_master(lab: Lab, master_id: str | None = None) -> dict[str, object]:
    """SIGKILL a master replica; by default the current master (per the masters' REST)."""
    if master_id is None:
        leader = lab.current_master()
        if leader is None:
            raise LabError("no single current master to kill (see `firepath lab status`)")
        master_id = leader[0]
    key = f"master:{master_id}"
    if key not in lab.state.processes:
        raise _no_master(lab, master_id)
    fault: dict[str, object] = {"kind": "master", "id": master_id}
    _refuse_duplicate(lab, fault, "id")
    _refuse_dead(lab, key, f"master {master_id}")
    lab.state.faults.append(fault)
    _save(lab)
    fault["at"] = time.monotonic()
    lab.stop_process(key, signal.SIGKILL)
    return fault


def _refuse_dead(lab: Lab, key: str, what: str, also: str = "") -> None:
    """A kill of a process that is not running records no fault: it would say `injected` and make `heal`
    claim to undo it (tester finding: killing a dead client printed "injected: ... killed")."""
    from lab.report import heal_command

    rec = lab.state.processes.get(key)
    if rec is not None and not rec.alive():
        raise LabError(f"{what} is not running (it stopped outside the lab's fault records): nothing to kill; "
                       f"`{heal_command(lab.state.name)}`{also} starts it again")


def _check_client(lab: Lab, switch: str, key: str) -> None:
    if key in lab.state.processes:
        return
    if switch not in {sw.name for sw in lab.fabric.switches}:
        raise KeyError(switch)          # lab.cli lists the lab's names
    raise LabError(f"no client for switch {switch!r} in this lab (started without daemons?)")


@_exclusive
def kill_client(lab: Lab, switch: str) -> dict[str, object]:
    key = f"client:{switch}"
    _check_client(lab, switch, key)
    fault: dict[str, object] = {"kind": "client", "switch": switch}
    _refuse_duplicate(lab, fault, "switch")
    _refuse_dead(lab, key, f"the client of {switch}", f" (or `lab restart client {switch}`)")
    lab.state.faults.append(fault)
    _save(lab)
    fault["at"] = time.monotonic()
    lab.stop_process(key, signal.SIGKILL)
    return fault


#: The field of a kill's fault record that names the process it stopped, per process kind (ProcRecord.kind).
_KILLED = {"client": "switch", "master": "id"}


def without_kill(faults: list[dict[str, Any]], kind: str, name: str) -> list[dict[str, Any]]:
    """`faults` (the lab's record, oldest first) without the kill of process `kind` ("client" or "master")
    `name` (switch or master id), for once that process runs again: a kill record left behind made
    `lab status` list the kill as active, convergence checks skip the switch as dead, and the readiness wait
    of `lab restart client` expect its links down. Order kept; KeyError for another kind."""
    field = _KILLED[kind]
    return [f for f in faults if not (f.get("kind") == kind and f.get(field) == name)]


@_exclusive
def restart_client(lab: Lab, switch: str, timeout: float = 5.0) -> float:
    """SIGTERM the client (nothing to stop if it was killed), start it again and drop any recorded kill of
    it (the restart undid it); returns the seconds the switch had no client."""
    key = f"client:{switch}"
    _check_client(lab, switch, key)
    t0 = time.monotonic()
    lab.stop_process(key, signal.SIGTERM, timeout)
    lab.start_client(switch)
    gap = time.monotonic() - t0
    lab.state.faults = without_kill(lab.state.faults, "client", switch)
    _save(lab)
    return gap


def client_lacks(state: object, want: list[int]) -> str | None:
    """What a client's REST `/v1/state` (`state`: its JSON, or the error of the request) lacks to be back
    in the fabric's control: connected to its switch, following a master, an LSD programmed (a version
    >= 0: -1 means none), every port of `want` usable or without carrier (see `no_carrier`). None if nothing."""
    if not isinstance(state, dict):
        return f"REST does not answer ({state})"
    if not state.get("connected"):
        return "not connected to its switch"
    programmed = state.get("programmed_version")
    if isinstance(programmed, bool) or not isinstance(programmed, int) or programmed < 0:
        if not state.get("master"):      # the cause, not its effect: an LSD comes from a serving master only
            return "no master heard, so nothing programmed yet (the switch forwards on the flows it kept)"
        return "nothing programmed yet"
    if not state.get("master"):
        return "no master heard (fail-static)"
    # a port without carrier (a cable pulled outside the lab's fault records) is not the client's to bring up
    unplugged = set(no_carrier(state))
    missing = [p for p in want if p not in unplugged and not any(
        isinstance(q, dict) and q.get("port") == p and q.get("usable") for q in state.get("ports", []))]
    if missing:
        return f"fabric ports not usable: {', '.join(map(str, missing))} (of {len(want)} expected)"
    return None


def no_carrier(state: object) -> list[int]:
    """Ports a connected client's `/v1/state` shows without carrier (`phy` False)."""
    if not isinstance(state, dict) or not state.get("connected"):
        return []
    return sorted(q["port"] for q in state.get("ports", []) if isinstance(q, dict) and q.get("phy") is False
                  and isinstance(q.get("port"), int))


def wait_client_ready(lab: Lab, switch: str, timeout: float = 15.0,
                      unplugged: list[int] | None = None) -> str | None:
    """Wait until the switch's client answers REST, is connected to its switch, has programmed an LSD, has
    every fabric port usable that the recorded faults leave in use, and the master's LSD has those links
    up; None when it is, else what it lacks (at `timeout` seconds). A port without carrier that no fault
    recorded (a cable pulled behind the lab's back) is not waited for: it goes into `unplugged`."""
    lack = ["no answer"]
    down = lab.expected_down()
    links = [link for link in lab.fabric.links if switch in (link.a.switch, link.b.switch)
             and (link.a.switch, link.a.port) not in down and (link.b.switch, link.b.port) not in down]
    want = sorted(p for p in lab.fabric.fabric_ports(switch) if (switch, p) not in down)

    def ready() -> bool:
        s = lab.http.get_many([(lab.rest_port(switch), "/v1/state")], 0.5)[0]
        if (what := client_lacks(s, want)) is not None:
            lack[0] = what
        else:
            without = no_carrier(s)
            if unplugged is not None:      # only what no fault records (a failed link or switch is expected)
                unplugged[:] = [p for p in without if (switch, p) not in down]
            gone = {(switch, p) for p in without}
            try:
                lsd = lab.master_get("/v1/lsd").get("links", {})
            except (LabError, OSError, ValueError) as e:
                lack[0] = f"master LSD: {type(e).__name__}: {e}"
                return False
            not_up = [f"{link.name} ({lsd.get(link.name)})" for link in links
                      if lsd.get(link.name) not in ("up", "drained", "drained_down")   # drains: the operator's
                      and not gone & {(link.a.switch, link.a.port), (link.b.switch, link.b.port)}]
            if not_up:
                lack[0] = f"links not up in the master's LSD: {', '.join(not_up[:8])}"
                return False
            return True
        return False

    return None if wait_until(ready, timeout, 0.05) else lack[0]


def _peer_of(lab: Lab, ifname: str) -> str:
    for a, b in lab.state.cabling:
        if a == ifname:
            return b
        if b == ifname:
            return a
    raise LabError(f"interface {ifname} is not cabled")


def _recable(lab: Lab, old_pairs: list[list[str]], new_pairs: list[list[str]]) -> None:
    """Replace veth pairs; interface names (hence OVS ports and their numbers) are kept."""
    st = lab.state
    for pair in old_pairs:
        st.cabling.remove(pair) if pair in st.cabling else st.cabling.remove(pair[::-1])
    st.cabling.extend(new_pairs)
    _save(lab)
    by_ns: dict[str, list[str]] = {}
    for pair in old_pairs:
        by_ns.setdefault(st.netns_of(pair[0]), []).append(f"link del {pair[0]}")
    for ns, lines in by_ns.items():
        ip_batch(ns, lines)
    plumbing.cable(st, [(a, b) for a, b in new_pairs])
    port_of = {ifn: key for key, ifn in st.ifaces.items()}
    plumbing.add_ports(st, [port_of[ifn] for ifn in sorted({i for pair in new_pairs for i in pair})], reopen=True)


def cabling_ends(ifaces: dict[str, str], pairs: list[list[str]]) -> list[list[str]]:
    """Veth pairs as SWITCH:PORT pairs (`ifaces`: the lab's SWITCH:PORT -> interface name)."""
    port_of = {ifn: key for key, ifn in ifaces.items()}
    return [[port_of.get(i, i) for i in pair] for pair in pairs]


@_exclusive
def miscable(lab: Lab, a: str, b: str) -> dict[str, object]:
    """Swap the far ends of the links at endpoints `a` and `b` (SWITCH:PORT each)."""
    st = lab.state
    ends = []
    for spec in (a, b):
        sw, port = _endpoint(spec)
        if lab.fabric.link_at(sw, port) is None:
            raise LabError(f"{spec} is not a fabric port")
        ends.append(st.ifaces[f"{sw}:{port}"])
    if_a, if_b = ends
    peer_a, peer_b = _peer_of(lab, if_a), _peer_of(lab, if_b)
    if if_b in (if_a, peer_a):
        raise LabError(f"{a} and {b} are the same link: nothing to swap")
    old = [[if_a, peer_a], [if_b, peer_b]]
    new = [[if_a, peer_b], [if_b, peer_a]]
    # `old`/`new`: veth names (what undo re-creates); `cabled`: the same as SWITCH:PORT ends, for people
    fault: dict[str, object] = {"kind": "miscable", "a": a, "b": b, "old": old, "new": new,
                                "cabled": cabling_ends(st.ifaces, new)}
    st.faults.append(fault)
    _save(lab)
    fault["at"] = time.monotonic()
    _recable(lab, old, new)
    return fault


@_exclusive
def fail_cpn(lab: Lab, master_id: str | None = None, direction: str = "both",
             switch: str | None = None) -> dict[str, object]:
    """Cut a master's control-plane traffic one way (see the module doc): `direction` one of
    lab.nft.CPN_DIRECTIONS, `master_id` the current master by default, `switch` only that switch's client
    (default: every client). The replica keeps running and keeps its FMRP sessions."""
    if direction not in nft.CPN_DIRECTIONS:
        raise LabError(f"CPN direction {direction!r}: one of {', '.join(nft.CPN_DIRECTIONS)}")
    if master_id is None:
        leader = lab.current_master()
        if leader is None:
            raise LabError("no single current master to cut off (see `firepath lab status`)")
        master_id = leader[0]
    try:
        master = lab.fabric.master(master_id)
    except KeyError:
        raise _no_master(lab, master_id) from None
    client = None
    if switch is not None:
        try:
            client = client_cpn_address(lab.fabric, switch)
        except KeyError:
            raise LabError(f"no switch {switch!r} in this lab") from None
    table = f"fplab_{lab.state.name}_cpn{len(lab.state.faults)}"
    fault: dict[str, object] = {"kind": "cpn", "id": master_id, "direction": direction, "switch": switch,
                                "client": client, "table": table}
    target = (str(master.address), master.client_port)
    nft.cpn_script(table, target, direction, client)       # a bad argument raises before anything is recorded
    _refuse_duplicate(lab, fault, "id", "direction", "switch")
    lab.state.faults.append(fault)
    _save(lab)
    fault["at"] = time.monotonic()
    nft.drop_cpn(table, lab.state.netns, target, direction, client)
    return fault


@_exclusive
def undo(lab: Lab, fault: dict[str, Any]) -> float:
    """Undo one fault (it stays in the record: `heal` removes it); returns time.monotonic() right before
    the repair (for a carrier change: before the first interface came up)."""
    kind = fault["kind"]
    st = lab.state
    at = time.monotonic()
    if kind in ("link", "switch"):
        at = _set_ifaces(lab, list(fault["ifaces"]), up=True)
    elif kind == "silent":
        at = nft.remove_link(fault["table"], [st.netns_of(i) for i in fault["ifaces"]])
    elif kind == "cpn":
        nft.remove(fault["table"], st.netns, family="inet")
    elif kind == "master":
        if not st.processes[f"master:{fault['id']}"].alive():
            _check_runs_file(lab, "master", fault["id"])
            lab.start_master(fault["id"])
    elif kind == "client":
        if not st.processes[f"client:{fault['switch']}"].alive():
            _check_runs_file(lab, "client", fault["switch"])
            lab.start_client(fault["switch"])
    elif kind == "miscable":
        _recable(lab, [list(p) for p in fault["new"]], [list(p) for p in fault["old"]])
    elif kind == "external":
        from lab import bgp
        bgp.set_external(lab, True, session=bool(fault.get("session")))
    else:
        raise LabError(f"unknown fault kind {kind!r} in the lab record")
    return at


def _check_runs_file(lab: Lab, kind: str, name: str) -> None:
    """LabError, starting nothing, when healing would start daemon `kind` `name` on an edit the lab does not
    run yet. An edit the serving master runs (a rollout committed by `firepath config rollout --commit`, not
    `lab reload`: it becomes what the lab runs) or has prepared (mid-rollout: a master started on it follows
    the commit, a client on it is a moved switch, served its LSD) is not such an edit: before, a master killed
    mid-rollout could be started by neither `lab heal` (the edit) nor `lab reload all` (it waited for the dead
    master, then failed), and after a commit outside `lab reload` never again."""
    problem = edited_since_run(lab.state)
    if problem is None:
        return
    held = _served_as(lab)
    if held == "current":
        return
    if held == "next":
        if kind == "master":
            say(f"master {name}: started on {lab.state.config}, the config the serving master has prepared: it "
                f"takes it at the commit; if it had it prepared when it stopped, it runs the config it ran until then "
                f"and after an abort (else, after an abort, restart it on the running file)")
        return
    on_purpose = (f", or restart it on the edit on purpose (`firepath lab restart client {name}`: a rolling "
                  f"restart, after the masters)") if kind == "client" else ""
    raise LabError(f"not restarting {kind} {name}: {problem}; heal restarts daemons on the config the lab runs. "
                   f"Roll the edit out (`firepath lab reload all`), restore the file from "
                   f"{Path(lab.state.dir) / RUNNING_FILE}{on_purpose}")


def _served_as(lab: Lab) -> str | None:
    """"current" if the serving master runs the lab's config file as it is now (the record is brought up to
    it: lab.labconfig.keep_running), "next" if it has it prepared, else None (or no single serving master)."""
    from lab.reload import _rollout_view  # here: lab.reload pulls in the client OpenFlow sockets
    try:
        fabric = load_fabric(lab.state.config)
        view = _rollout_view(lab)
    except (OSError, ValueError, LabError):
        return None
    if view is None:
        return None
    if view.get("current") == fabric.digest:
        keep_running(lab.state, fabric)
        lab.state.save()
        return "current"
    return "next" if view.get("next") == fabric.digest else None


@_exclusive
def heal(lab: Lab) -> list[dict[str, object]]:
    """Undo every recorded fault, newest first, then start again every master and client of the lab that is
    not running although no fault records it (killed by PID or crashed: `{"kind": ..., "outside": True}`) and
    continue every one stopped by a signal (`"stopped": True`); returns what was undone. A stopped OVS is not restarted (`lab up --clean` rebuilds the lab)."""
    undone: list[dict[str, object]] = []
    while lab.state.faults:
        fault = lab.state.faults[-1]
        undo(lab, fault)
        lab.state.faults.pop()
        _save(lab)
        undone.append(fault)
    for rec in list(lab.state.processes.values()):
        if rec.kind not in ("master", "client"):
            continue
        if rec.stopped():         # SIGSTOP by hand (a suspended daemon): it answers nothing until continued
            rec.send_signal(signal.SIGCONT)
            who = {"id": rec.name} if rec.kind == "master" else {"switch": rec.name}
            undone.append({"kind": rec.kind, **who, "outside": True, "stopped": True})
            continue
        if rec.alive():
            continue
        _check_runs_file(lab, rec.kind, rec.name)
        if rec.kind == "master":
            lab.start_master(rec.name)
            undone.append({"kind": "master", "id": rec.name, "outside": True})
        else:
            lab.start_client(rec.name)
            undone.append({"kind": "client", "switch": rec.name, "outside": True})
        _save(lab)
    return undone
