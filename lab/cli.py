"""`firepath lab ...`: build, inspect, break, heal and remove an emulated fabric on this machine."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from lab.report import describe_fault, format_status, heal_command, ping_summary
from lab.state import LabState, LabStateError, check_lab_name, default_dir, find_lab_dir, locked, not_found
from proto.argtypes import (
    at_most,
    ipv4_list,
    non_negative_float,
    non_negative_int,
    port,
    positive_float,
    positive_int,
    positive_seconds,
)

DEFAULT_NAME = "demo"


def _lab_dir(args: argparse.Namespace) -> Path:
    """--dir, else where lab --name lives: its default directory, or the one it was started in with --dir
    (lab.state.find_lab_dir); `lab up` and `lab demo` build in the default one."""
    if args.dir:
        return Path(args.dir).resolve()
    if args.lab_command in ("up", "demo"):
        return default_dir(args.name)
    return find_lab_dir(args.name)


def _found_dir(args: argparse.Namespace) -> Path:
    """The directory of an existing lab; LabStateError naming where it looked, and the labs it knows, if
    --name finds none (before anything, the lock file included, is created there)."""
    d = _lab_dir(args)
    if not args.dir and not LabState.exists(d):
        raise LabStateError(not_found(args.name, "a lab up with --dir DIR that is not registered: pass --dir DIR"))
    return d


def _open(args: argparse.Namespace) -> Any:
    from lab.fabric import Lab

    return Lab.open(_found_dir(args))


def _heal(args: argparse.Namespace) -> str:
    return heal_command(getattr(args, "name", None) or "demo", getattr(args, "dir", None))


def _err(msg: str) -> int:
    print(f"firepath lab: {msg}", file=sys.stderr)
    return 1


# ---------------------------------------------------------------------------------------------- commands

def cmd_up(args: argparse.Namespace) -> int:
    from lab.fabric import Lab

    clos = {k: getattr(args, k) for k in ("spines", "pods", "aggs_per_pod", "tors_per_pod", "leaves",
                                          "hosts_per_tor", "masters", "border_pods") if getattr(args, k) is not None}
    from proto.clos import ClosParams, ignored_option

    if (problem := ignored_option(clos, clos.get("pods", ClosParams().pods))) is not None:
        return _err(problem)
    if args.external:
        if not args.border_pods:
            return _err("--external needs borders: give --border-pods N")
        clos["external"] = True
    timers = _timer_items(args.timer or [])
    if isinstance(timers, str):
        return _err(timers)
    if timers:
        # over the lab's defaults (as `lab config` does); the CFM interval stays sized to the fabric unless given
        from lab.fabric import LAB_DEFAULT_TIMERS

        base = {k: v for k, v in LAB_DEFAULT_TIMERS if k != "oam_interval_ms"}
        clos["timers"] = tuple({**base, **dict(timers)}.items())
    if args.config and clos:
        return _err("give either --config or Clos parameters (and --timer), not both")
    if args.external_masters and (args.config or clos):
        return _err("--external-masters CONFIG is the config: give no --config or Clos parameters with it")
    lab = Lab.up(name=args.name, lab_dir=_lab_dir(args), config=args.external_masters or args.config, clos=clos,
                 clean=args.clean, daemons=not args.no_daemons, timeout=args.timeout,
                 keep_on_failure=args.keep_on_failure, external_masters=bool(args.external_masters),
                 ovs_per_switch=args.ovs_per_switch)
    lab.close()
    return 0


COMPOSE_MASTERS = ("127.0.0.11", "127.0.0.12", "127.0.0.13")     # docker/compose.yaml
IMAGE_UID = 10001                                                # the user of docker/Dockerfile


def cmd_config(args: argparse.Namespace) -> int:
    from lab.extconfig import write_config
    from proto.clos import ignored_option

    try:
        check_lab_name(args.name)
        clos: dict[str, Any] = {"pods": 0, "leaves": 2}
        given = {k: getattr(args, k) for k in ("spines", "pods", "aggs_per_pod", "tors_per_pod", "leaves",
                                               "hosts_per_tor") if getattr(args, k) is not None}
        clos.update(given)
        if (problem := ignored_option(given, clos["pods"])) is not None:
            raise ValueError(problem)
        addresses = [a for a in args.master_address.split(",") if a.strip()]
        clos.update(masters=len(addresses), master_address=args.master_address,
                    master_base_port=args.master_base_port)
        if args.timer:
            from lab.fabric import LAB_DEFAULT_TIMERS

            items = _timer_items(args.timer)
            if isinstance(items, str):
                return _err(items)
            clos["timers"] = tuple({**dict(LAB_DEFAULT_TIMERS), **dict(items)}.items())
        group = args.token_group
        if group is None and os.geteuid() == 0 and os.environ.get("SUDO_GID", "").isdigit():
            group = int(os.environ["SUDO_GID"])     # `sudo firepath lab config`: the operator's own group
        path = write_config(Path(args.output).resolve(), args.name, key_owner=args.key_owner, token_group=group,
                            **clos)
    except (ValueError, LabStateError, OSError) as e:
        return _err(f"config: {e}")
    print(f"wrote {path}, {path.parent / 'fabric.key'} and {path.parent / 'admin.token'} (owner uid "
          f"{args.key_owner}, mode 0400" + (f"; the token also readable by group {group}, mode 0440)"
                                           if group is not None else ")"))
    return 0


def _timer_items(items: list[str]) -> list[tuple[str, float]] | str:
    """`--timer KEY=VALUE` values as (key, number), or the one-line error naming the bad one."""
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            return f"--timer {item!r}: expected KEY=VALUE, e.g. nd_dead_ms=60"
        try:
            out.append((key.strip(), float(value)))
        except ValueError:
            return f"--timer {item!r}: {value.strip()!r} is not a number"
    return out


def cmd_down(args: argparse.Namespace) -> int:
    from lab.fabric import teardown

    name = args.name
    if LabState.exists(_lab_dir(args)):
        name = LabState.load(_lab_dir(args)).name
    teardown(_lab_dir(args), name=name, keep_logs=not args.purge)
    return 0


def _operator_files(lab: Any) -> dict[str, str | None]:
    """The config and the admin (drain) token the operator commands use (`firepath drain --lab NAME`)."""
    token = lab.fabric.security.admin_token_file if lab.fabric is not None else None
    return {"config": lab.state.config, "admin_token_file": str(token) if token else None}


def cmd_status(args: argparse.Namespace) -> int:
    lab = _open(args)
    try:
        if args.json:
            print(json.dumps({"masters": _jsonable(lab.master_states()), "switches": _jsonable(lab.client_states()),
                              "faults": lab.state.faults, **_operator_files(lab)}, indent=1))
        else:
            print(format_status(lab))
            files = _operator_files(lab)
            print(f"\nconfig {files['config']}; admin token "
                  + (f"{files['admin_token_file']} (`firepath drain --lab {lab.state.name} ...` reads it)"
                     if files["admin_token_file"] else "none (drains answer 403): set security.admin_token_file"))
    finally:
        lab.close()
    return 0


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (v if not isinstance(v, Exception) else {"error": repr(v)}) for k, v in d.items()}


def cmd_ping(args: argparse.Namespace) -> int:
    import random

    lab = _open(args)
    hosts = [h.name for h in lab.fabric.hosts]
    if "ext-host" in lab.state.host_netns:     # behind the external router (lab.bgp, issue #13)
        hosts.append("ext-host")
    pairs = [(a, b) for a in hosts for b in hosts if a != b]
    if not pairs:     # "0/0 pairs" read as a pass (tester finding)
        print(f"lab ping: this lab has {len(hosts)} host{'s' * (len(hosts) != 1)}: no pair to ping", file=sys.stderr)
        return 1
    if args.sample and len(pairs) > args.sample:
        pairs = random.Random(args.seed).sample(pairs, args.sample)
    t0 = time.monotonic()
    results = lab.ping(pairs, count=args.count)
    text, bad = ping_summary(results, args.count)
    print(f"{text}  [{time.monotonic() - t0:.1f}s]")
    return 0 if bad == 0 else 1


def _mutate(args: argparse.Namespace, op: Any) -> Any:
    """Open the lab and run `op(lab)` under the lab lock: the record read is the one `op` updates."""
    with locked(_found_dir(args)):
        lab = _open(args)
        try:
            return op(lab)
        finally:
            lab.close()


def cmd_fail(args: argparse.Namespace) -> int:
    from lab import inject

    others: list[str] = []
    if args.what == "link":
        def fail(lab: Any) -> Any:
            fault = inject.fail_link(lab, args.a, args.b, silent=args.silent)
            others.extend(k.name for k in inject.links_between(lab, args.a, args.b) if k.index != fault["link"])
            return fault
        f = _mutate(args, fail)
    elif args.what == "external":
        from lab import bgp
        f = _mutate(args, lambda lab: bgp.fail_external(lab, args.session))
    elif args.what == "cpn":
        f = _mutate(args, lambda lab: inject.fail_cpn(lab, args.master, args.direction, args.switch))
    else:
        f = _mutate(args, lambda lab: inject.fail_switch(lab, args.switch))
    print(f"injected: {describe_fault(f)} (undo with `{_heal(args)}`)")
    if others:      # parallel links (tester: one of two failed without a word about the other)
        print(f"note: {args.a} and {args.b} name {len(others) + 1} links; this is the first not failed; the "
              f"other(s): {', '.join(others)} (name an end as SWITCH:PORT to pick one, or run the command again "
              f"for the next)")
    return 0


def cmd_kill(args: argparse.Namespace) -> int:
    from lab import inject

    f = _mutate(args, lambda lab: inject.kill_master(lab, args.id) if args.what == "master"
                else inject.kill_client(lab, args.switch))
    print(f"injected: {describe_fault(f)} (undo with `{_heal(args)}`)")
    return 0


def cmd_restart(args: argparse.Namespace) -> int:
    from lab import inject

    def restart(lab: Any) -> tuple[str, float, str | None, Path]:
        killed = len(inject.without_kill(lab.state.faults, "client", args.switch)) < len(lab.state.faults)
        gap = inject.restart_client(lab, args.switch)
        t0 = time.monotonic()
        unplugged: list[int] = []
        lack = inject.wait_client_ready(lab, args.switch, args.wait, unplugged)
        # a killed client had none since the kill, not for the restart's gap
        how = ("was killed; its kill is no longer an active fault" if killed
               else f"{gap * 1000:.0f} ms without a client")
        if unplugged:
            how += (f"; port(s) {', '.join(map(str, unplugged))} without carrier, which no lab fault "
                    "records (not waited for)")
        if lack is not None and lack.startswith("no master heard"):
            killed_masters = sorted(str(f.get("id")) for f in lab.state.faults if f.get("kind") == "master")
            if killed_masters:
                lack += f"; master(s) {', '.join(killed_masters)} killed (`{_heal(args)}` starts them)"
        return how, time.monotonic() - t0, lack, Path(lab.state.processes[f"client:{args.switch}"].log)

    how, took, lack, log_path = _mutate(args, restart)
    if lack is not None:
        print(f"client {args.switch} restarted ({how}) but not ready "
              f"{args.wait:g} s later: {lack} (its log: {log_path})", file=sys.stderr)
        return 1
    print(f"client {args.switch} restarted ({how}), ready {took * 1000:.0f} ms later")
    return 0


def cmd_reload(args: argparse.Namespace) -> int:
    """Issue #21: roll the edited lab fabric.yaml out (lab.reload)."""
    from lab.reload import reload_lab

    out = _mutate(args, lambda lab: reload_lab(lab, args.target, timeout=args.timeout, grow=args.grow))
    if out["committed_version"] is not None:
        print(f"config {out['digest'][:12]}... in force: LSD version {out['committed_version']}")
    return 0


def cmd_miscable(args: argparse.Namespace) -> int:
    from lab import inject

    f = _mutate(args, lambda lab: inject.miscable(lab, args.a, args.b))
    print(f"injected: {describe_fault(f)} (undo with `{_heal(args)}`)")
    return 0


def _wait_masters_back(lab: Any, ids: list[str], timeout: float) -> str | None:
    """Bounded wait until every master in `ids` answers its REST as master or backup; None, or what is not."""
    from lab.fabric import wait_until

    def role(mid: str) -> str:
        s = lab.master_states().get(mid)
        return str(s.get("role", "?")).lower() if isinstance(s, dict) else "no answer"

    if wait_until(lambda: all(role(m) in ("master", "backup") for m in ids), timeout, 0.05):
        return None
    return "restarted master(s) not back: " + ", ".join(f"{m} {role(m)}" for m in ids)


def cmd_heal(args: argparse.Namespace) -> int:
    from lab import inject

    undone = _mutate(args, inject.heal)
    lab = _open(args)
    try:
        for f in undone:
            print(f"healed: {describe_fault(f)}")
        if not undone:
            print("nothing to heal")
        if args.wait and lab.state.daemons:
            from lab import bgp

            t0 = time.monotonic()
            ok = lab.wait_converged(args.wait, damped_ok=True)     # the user flapped it: a hold, named below
            problem = None if ok else lab.convergence_problem(damped_ok=True)
            restarted = [str(f.get("id")) for f in undone if f.get("kind") == "master"]
            if ok and restarted:      # tester: "converged" while a restarted master did not answer yet
                problem = _wait_masters_back(lab, restarted, max(0.0, args.wait - (time.monotonic() - t0)))
                ok = problem is None
            external = bool(lab.fabric.external_slots)
            if ok and external:         # --external: converged only once the eBGP sessions are back too
                problem = bgp.wait_ready(lab, max(0.0, args.wait - (time.monotonic() - t0)))
                ok = problem is None
            if not ok:
                from lab.plumbing import stopped_ovs

                stopped = stopped_ovs(lab.state)      # a crashed OVS is no lab fault: heal cannot undo it
                return _err(f"heal: not converged within {args.wait:g}s: {problem}"
                            + (f" (OVS not running: {', '.join(stopped)})" if stopped else ""))
            # converged counts what the master holds on purpose (damping, the guard): say so, it ends by itself
            held = lab.convergence_problem(holds_ok=False, damped_ok=True)
            print(f"converged in {time.monotonic() - t0:.2f}s" + (" (eBGP sessions established)" if external else "")
                  + (f"; still held on purpose: {held}" if held else ""))
    finally:
        lab.close()
    return 0


def cmd_groups(args: argparse.Namespace) -> int:
    lab = _open(args)
    for line in lab.dump_groups(args.switch):
        print(line)
    return 0


#: One UDP socket per flow in the sender (the process's descriptor limit is ~1,024).
MAX_PROBE_FLOWS = 256


#: --flows: 1..MAX_PROBE_FLOWS.
probe_flows = at_most(positive_int, MAX_PROBE_FLOWS, " (one UDP socket per flow)")


def cmd_probe(args: argparse.Namespace) -> int:
    from lab.fabric import LabError
    from lab.probe import ProbeError

    if args.src == args.dst:         # it "measured" the host's own loopback: sent 8004, lost 0
        raise LabError(f"probe: {args.src} -> {args.dst}: source and destination are the same host")
    lab = _open(args)
    probe = lab.probe(args.src, args.dst, flows=args.flows, rate=args.rate)
    try:
        probe.start()
        time.sleep(args.seconds)
        result = probe.stop()
    except ProbeError as e:
        raise LabError(f"probe {args.src} -> {args.dst}: {e}") from None
    finally:
        probe.close()
    print(json.dumps(result, indent=1) if args.json else
          f"probe {args.src}->{args.dst}: sent {result['sent']}, lost {result['lost']}, "
          f"max gap {result['max_gap_ms']} ms, reordered {result['reordered']}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from lab.demo import run_demo

    return run_demo(name=args.name, lab_dir=_lab_dir(args))


def _names(names: list[str], limit: int = 24) -> str:
    return ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _unknown_name(args: argparse.Namespace, e: KeyError) -> str:
    """One line for a name the lab does not know, listing the names it does."""
    name = e.args[0] if e.args else "?"
    what = f"{args.lab_command}: unknown name {name!r}"
    try:
        from proto.config import load_fabric

        fabric = load_fabric(LabState.load(_lab_dir(args)).config)
    except Exception:  # noqa: BLE001 - the lab's record is unreadable: say what we know
        return f"{what} (and the lab {args.name!r} cannot be read to list its names)"
    kinds = {"switch": [s.name for s in fabric.switches], "host": [h.name for h in fabric.hosts],
             "master": [m.id for m in fabric.masters]}
    kind = next((k for k, names in kinds.items() if name in names), None)
    if kind is not None:        # known, as another kind: "unknown name 'h-1-1' ... hosts: h-1-1" said both
        wanted = "host" if args.lab_command == "probe" else "switch"
        what = f"{args.lab_command}: {name!r} is a {kind} of this lab, not a {wanted}"
    return (f"{what}; this lab has switches: {_names(kinds['switch'])}; "
            f"hosts: {_names(kinds['host'])}; masters: {_names(kinds['master'])}")


def _guard(func: Any) -> Any:
    """Turn the lab's expected errors into one readable line and exit code 1."""
    def run(args: argparse.Namespace) -> int:
        from lab.fabric import LabError, preflight
        from lab.ovs import OvsError

        problem = preflight()
        if problem:
            print(problem, file=sys.stderr)
            return 1
        try:
            check_lab_name(args.name)
            return func(args)
        except KeyError as e:          # a switch, host, link end or master name the lab does not have
            return _err(_unknown_name(args, e))
        except (LabError, LabStateError, ValueError, OvsError) as e:     # OvsError: the command and its stderr
            return _err(str(e))
        except BrokenPipeError:        # `firepath lab status | head`
            return 0
        except KeyboardInterrupt:      # Ctrl-C: `lab up` has already torn down what it built (Lab.up)
            return _err(f"{args.lab_command}: interrupted (Ctrl-C)") + 129

    return run


# ---------------------------------------------------------------------------------------------- parser

def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("lab", help="run a local lab fabric on Open vSwitch",
                              description="Emulated fabric on this machine: real OVS, namespaces, daemons. Needs root.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--name", default=DEFAULT_NAME, help="lab name: namespaces are fplab-NAME[-HOST] "
                        f"(default {DEFAULT_NAME}, also for a lab up with --dir); finds a lab up with --dir too")
    common.add_argument("--dir", help="lab directory (default /tmp/fplab-NAME): config, logs, OVS run dir, state")
    sub = p.add_subparsers(dest="lab_command", metavar="COMMAND", required=True)

    up = sub.add_parser("up", parents=[common], help="build the fabric and start masters and clients")
    up.add_argument("--config", help="fabric YAML (otherwise generated from the Clos parameters)")
    for opt, helptext in (("--spines", "spine switches (default 2)"), ("--pods", "pods; 0 = two-tier (default 2)"),
                          ("--aggs-per-pod", "default 2"), ("--tors-per-pod", "default 2"),
                          ("--leaves", "two-tier leaves (with --pods 0)"), ("--hosts-per-tor", "default 1"),
                          ("--masters", "master replicas (default 3)"),
                          ("--border-pods", "border pods (border switches originating 0.0.0.0/0; default 0)")):
        up.add_argument(opt, type=int, help=helptext)
    up.add_argument("--timer", action="append", metavar="KEY=MS",
                    help="fabric timer for the generated config, e.g. nd_dead_ms=60 (repeatable)")
    up.add_argument("--clean", action="store_true", help="tear down a previous or half-built lab first")
    up.add_argument("--external", action="store_true", help="borders speak eBGP (ExaBGP) with an external "
                    "router (FRR bgpd) with a host behind it (issue #13; needs --border-pods)")
    up.add_argument("--no-daemons", action="store_true", help="plumbing only: no masters, no clients")
    up.add_argument("--keep-on-failure", action="store_true", help="leave a lab that did not converge in place")
    up.add_argument("--ovs-per-switch", action="store_true", help="one OVS instance per switch, each in the switch's "
                    "own namespace, instead of one for the lab: a link change costs the OVS of its two ends only, "
                    "but idle CPU and memory grow with the switches (lab/plumbing.py)")
    up.add_argument("--timeout", type=positive_seconds, default=90.0, help="seconds to wait for convergence")
    up.add_argument("--external-masters", metavar="CONFIG",
                    help="use the masters of CONFIG already running on this machine (e.g. docker/fabric.yaml, the config docker/compose.yaml runs) "
                         "instead of starting them; see `lab config` and lab/external.py")
    up.set_defaults(func=_guard(cmd_up))

    cf = sub.add_parser("config", parents=[common], help="write a lab-ready config for external masters",
                        description="Write OUT/fabric.yaml (lab ports and timers, Clos parameters) and a new "
                        "OUT/fabric.key, for masters started outside the lab (docker/compose.yaml) and "
                        "`lab up --external-masters OUT/fabric.yaml`. Builds nothing (root only to give the "
                        "key to --key-owner).")
    cf.add_argument("-o", "--output", required=True, metavar="OUT", help="directory for fabric.yaml and fabric.key")
    cf.add_argument("--master-address", type=ipv4_list, default=",".join(COMPOSE_MASTERS),
                    help=f"one address per master, comma-separated (default {','.join(COMPOSE_MASTERS)}: "
                         "docker/compose.yaml)")
    cf.add_argument("--master-base-port", type=port, default=7600,
                    help="master i: client port BASE+i, peer BASE+100+i, REST BASE+200+i (default 7600)")
    cf.add_argument("--key-owner", type=int, default=IMAGE_UID,
                    help=f"uid owning the key file, readable by it only (default {IMAGE_UID}: the image's user)")
    cf.add_argument("--token-group", type=int, metavar="GID",
                    help="gid that may also read admin.token (mode 0440), so an operator who is not root can drain "
                         "and roll out with it (default: $SUDO_GID under sudo, else none: 0400)")
    for opt, helptext in (("--spines", "default 2"), ("--pods", "0 = two-tier (default 0)"),
                          ("--aggs-per-pod", "default 2"), ("--tors-per-pod", "default 2"),
                          ("--leaves", "two-tier leaves (default 2)"), ("--hosts-per-tor", "default 1")):
        cf.add_argument(opt, type=int, help=helptext)
    cf.add_argument("--timer", action="append", metavar="KEY=MS", help="fabric timer (repeatable)")
    cf.set_defaults(func=cmd_config)

    down = sub.add_parser("down", parents=[common], help="remove everything the lab created (safe twice)")
    down.add_argument("--purge", action="store_true", help="also delete the logs")
    down.set_defaults(func=_guard(cmd_down))

    st = sub.add_parser("status", parents=[common], help="masters and switches at a glance")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=_guard(cmd_status))

    pi = sub.add_parser("ping", parents=[common], help="ping every host pair (or a sample)")
    pi.add_argument("--count", type=positive_int, default=3, help="pings per pair (default 3)")
    pi.add_argument("--sample", type=non_negative_int, default=0, help="ping only this many random pairs")
    pi.add_argument("--seed", type=int, default=1)
    pi.set_defaults(func=_guard(cmd_ping))

    fail = sub.add_parser("fail", help="inject a link, switch or control-plane network failure")
    fsub = fail.add_subparsers(dest="what", required=True)
    fl = fsub.add_parser("link", parents=[common], help="carrier down on a link (or --silent drops)")
    fl.add_argument("a", help="switch or SWITCH:PORT")
    fl.add_argument("b", help="switch or SWITCH:PORT")
    fl.add_argument("--silent", action="store_true", help="keep the link up, drop every frame (nftables)")
    fl.set_defaults(func=_guard(cmd_fail))
    fs = fsub.add_parser("switch", parents=[common], help="all links of a switch down")
    fs.add_argument("switch")
    fs.set_defaults(func=_guard(cmd_fail))
    fx = fsub.add_parser("external", parents=[common], help="the external router withdraws the default route "
                         "from every border (eBGP; --session: shuts the sessions down)")
    fx.add_argument("--session", action="store_true", help="shut every eBGP session down instead")
    fx.set_defaults(func=_guard(cmd_fail))
    fc = fsub.add_parser("cpn", parents=[common], help="gray failure of the control-plane network: drop a "
                         "master's client traffic one way (FMRP between replicas untouched)")
    fc.add_argument("master", nargs="?", help="master replica id (default: the current master)")
    way = fc.add_mutually_exclusive_group()
    way.add_argument("--to-switches", dest="direction", action="store_const", const="to-switches",
                     help="drop what the master sends to the switches (it still hears them)")
    way.add_argument("--from-switches", dest="direction", action="store_const", const="from-switches",
                     help="drop what the switches send to the master (it still reaches them)")
    way.add_argument("--both", dest="direction", action="store_const", const="both", help="both ways (default)")
    fc.add_argument("--switch", help="cut only this switch's client from the master")
    fc.set_defaults(func=_guard(cmd_fail), direction="both")

    kill = sub.add_parser("kill", help="SIGKILL a master or a client")
    ksub = kill.add_subparsers(dest="what", required=True)
    km = ksub.add_parser("master", parents=[common], help="the current master by default")
    km.add_argument("id", nargs="?")
    km.set_defaults(func=_guard(cmd_kill))
    kc = ksub.add_parser("client", parents=[common])
    kc.add_argument("switch")
    kc.set_defaults(func=_guard(cmd_kill))

    rs = sub.add_parser("restart", help="restart a client (SIGTERM, start again; a killed one: its kill is cleared)")
    rsub = rs.add_subparsers(dest="what", required=True)
    rc = rsub.add_parser("client", parents=[common])
    rc.add_argument("switch")
    rc.add_argument("--wait", type=positive_seconds, default=15.0, help="seconds to wait for the new client to "
                    "answer REST, connect, program, have its fabric ports usable and their links up in the "
                    "master's LSD (positive; default 15); exit 1 naming what is missing if it does not")
    rc.set_defaults(func=_guard(cmd_restart))

    rl = sub.add_parser("reload", parents=[common], help="roll an edited fabric.yaml out: masters, clients, commit")
    rl.add_argument("target", nargs="?", default="all", help="a master id, a switch, or all (default: prepare on "
                    "every master, move every client, commit)")
    rl.add_argument("--timeout", type=positive_seconds, default=60.0, help="per step, in s (positive; default 60)")
    rl.add_argument("--grow", action="store_true", help="build the switches, links and hosts the file adds "
                    "(a new ToR) before moving the clients")
    rl.set_defaults(func=_guard(cmd_reload))

    mc = sub.add_parser("miscable", parents=[common], help="swap the far ends of two links")
    mc.add_argument("a", help="SWITCH:PORT")
    mc.add_argument("b", help="SWITCH:PORT")
    mc.set_defaults(func=_guard(cmd_miscable))

    he = sub.add_parser("heal", parents=[common], help="undo every injected fault")
    he.add_argument("--wait", type=non_negative_float, default=10.0, help="then wait up to this many s for convergence (0: no)")
    he.set_defaults(func=_guard(cmd_heal))

    gr = sub.add_parser("groups", parents=[common], help="ovs-ofctl dump-groups of a switch")
    gr.add_argument("switch")
    gr.set_defaults(func=_guard(cmd_groups))

    pr = sub.add_parser("probe", parents=[common], help="run the UDP probe between two hosts")
    pr.add_argument("src")
    pr.add_argument("dst")
    pr.add_argument("--seconds", type=positive_seconds, default=2.0)
    pr.add_argument("--flows", type=probe_flows, default=4, help=f"flows, 1..{MAX_PROBE_FLOWS} (default 4)")
    pr.add_argument("--rate", type=positive_float, default=1000.0, help="packets/s per flow (default 1000)")
    pr.add_argument("--json", action="store_true")
    pr.set_defaults(func=_guard(cmd_probe))

    de = sub.add_parser("demo", parents=[common], help="the guided tour (what `make demo` runs)")
    de.set_defaults(func=_guard(cmd_demo))
