"""Build and tear down an emulated fabric: real OVS bridges, veth links, host namespaces, real daemons.

Layout (lab name N, e.g. ``demo``):

* one **lab namespace** ``fplab-N`` holds the private OVS instance (ovsdb-server + ovs-vswitchd, run dir
  ``<dir>/ovs``), one bridge per switch, both ends of every fabric veth, the switch end of every host veth,
  and the master and client processes. OpenFlow listeners, master and client REST ports all bind to *that
  namespace's* 127.0.0.1, so nothing collides with the machine or with another lab, and nothing of the lab
  appears in the root namespace — except, with external masters (`lab up --external-masters`), one veth
  end ``fpmN`` linking the lab namespace to the machine's, where those masters run (lab/external.py); it
  goes away with the lab namespace.
* with `--ovs-per-switch`, one **switch namespace** ``fplab-N-sw<i>`` per switch instead (lab/plumbing.py):
  the switch's own OVS (run dir ``<dir>/ovs/<bridge>``), its bridge, its ends of the fabric veths and of
  its hosts' veths; its OpenFlow listener binds to that namespace's 127.0.0.1. The daemons stay in the lab
  namespace.
* one **host namespace** ``fplab-N-<host>`` per host, holding ``eth0`` (the other end of its veth) with
  the configured MAC, address/prefix and a default route via the ToR gateway.
* interface names: ``s<i>p<port>`` where ``i`` is the switch's position in the
  config and ``port`` its OpenFlow port number (always <= 15 bytes); bridges are named after the switch
  when the name fits in 15 bytes, else ``sw<id>``.

The REST APIs live in the lab namespace; the lab (running in the root namespace) reaches them through a
thread pool whose worker threads have ``setns()`` into it (Python 3.11 has no os.setns: ctypes).
Everything created is recorded in ``<dir>/lab.json`` (lab/state.py) before it is created.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from client.of.sockets import enter_netns
from lab import bgp, converge, external, plumbing
from lab import netns as nsutil
from lab.iputil import ip_batch, quiet_ipv6
from lab.labconfig import (
    ADMIN_TOKEN,
    CLIENT_CPN_BASE,
    CLIENT_RESTART_HOLD_S,
    LAB_DEFAULT_TIMERS,
    adopt_committed,
    check_cpn_addresses,
    client_cpn_address,
    generate_config,
    keep_running,
    lab_fabric,
    load_fabric,
)
from lab.labports import OVS_BASE_PORT, REST_BASE_PORT, LabPorts, port_ranges
from lab.ovs import OvsInstance, ovs_missing, run_dir_problem
from lab.pyenv import python_env, set_group_nice
from lab.sizing import ND_CPU_BUDGET, ND_FRAME_COST_S, lab_memory_problem, nd_load_warning, oam_load_warning
from lab.zygote import socket_of
from proto.transit import transit_warning

__all__ = ["ADMIN_TOKEN", "CLIENT_CPN_BASE", "CLIENT_RESTART_HOLD_S", "LAB_DEFAULT_TIMERS", "ND_CPU_BUDGET",
           "ND_FRAME_COST_S", "OVS_BASE_PORT", "REST_BASE_PORT", "LabPorts", "client_cpn_address", "generate_config",
           "load_fabric", "nd_load_warning", "oam_load_warning", "port_ranges"]   # re-exported
from lab.state import (
    LabError,
    LabState,
    LabStateError,
    ProcRecord,
    check_lab_name,
    default_dir,
    host_netns,
    is_lab_dir,
    lab_dir_problem,
    lab_netns,
    locked,
    mark_lab_dir,
    proc_starttime,
    register,
    registered_dir,
    say,
    unregister,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST_IFNAME = plumbing.HOST_IFNAME
_IFNAME_RE = re.compile(r"^s\d+p\d+$")   # our interface names (only ever inside lab namespaces)
INSTALL_HINT = "run `make test` (or `sudo scripts/install-deps.sh`) to install what is missing"


# ---------------------------------------------------------------------------------------------- preflight

def preflight() -> str | None:
    """None if this machine can run a lab, else exactly what is missing and how to get it."""
    problems = []
    if os.geteuid() != 0:
        problems.append("root is needed (network namespaces, veth, Open vSwitch): run it with sudo")
    for tool, pkg in (("ip", "iproute2"), ("nft", "nftables"), ("ping", "iputils-ping")):
        if shutil.which(tool) is None:
            problems.append(f"`{tool}` not found (package {pkg})")
    missing = ovs_missing()
    if missing:
        problems.append(missing)
    if not problems:
        return None
    return "firepath lab cannot run here:\n  - " + "\n  - ".join(problems) + f"\n{INSTALL_HINT}"


# ---------------------------------------------------------------------------------------------- netns HTTP


class NetnsHttp:
    """GET JSON from 127.0.0.1 ports inside a namespace, in parallel, from worker threads living in it."""

    def __init__(self, netns: str, workers: int = 16) -> None:
        self.netns = netns
        self._pool = ThreadPoolExecutor(max_workers=workers, initializer=enter_netns, initargs=(netns,),
                                        thread_name_prefix=f"http-{netns}")

    def get(self, port: int, path: str, timeout: float = 1.0) -> Any:
        return self._pool.submit(_get_json, port, path, timeout).result(timeout + 5)

    def get_many(self, requests: Iterable[tuple[int, str]], timeout: float = 1.0) -> list[Any]:
        """Results in order; an unreachable/failed endpoint yields an Exception object, not a raise."""
        futures = [self._pool.submit(_get_json, port, path, timeout) for port, path in requests]
        out: list[Any] = []
        for f in futures:
            try:
                out.append(f.result(timeout + 5))
            except Exception as e:  # noqa: BLE001 - reported to the caller as a value
                out.append(e)
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _get_json(port: int, path: str, timeout: float) -> Any:
    """The JSON at 127.0.0.1:port + path; OSError (AnswerError for an HTTP error status or an answer that is
    not HTTP, too big or too slow: controller.ops.fetch) or ValueError if none."""
    from controller.ops.fetch import fetch_json

    return fetch_json(f"http://127.0.0.1:{port}{path}", timeout)


# Clients per bring-up wave when they are forked from the zygote (~0.08 s of CPU each, vs ~0.33 s started
# plainly, 2 per wave): the 48-switch lab spent 15.6 s in 24 waves of 2 (REST round trips, not CPU).
WAVE_FORKED = 8
# The masters stand for controller servers of their own: their session's CPU priority (autogroup) is raised
# so that 48 clients starting on the same 2 cores do not starve them. Measured: BENCHMARKS "Bring-up at scale".
MASTER_GROUP_NICE = -5


# ---------------------------------------------------------------------------------------------- helpers


def _reserve_ports(netns: str, ports: Iterable[int]) -> None:
    """Keep the lab's listening ports out of the namespace's ephemeral port allocation."""
    proc = subprocess.run(nsutil.exec_cmd(netns, ["sysctl", "-q", "-w",
                                                  f"net.ipv4.ip_local_reserved_ports={port_ranges(ports)}"]),
                          capture_output=True, text=True, timeout=10)
    if proc.returncode != 0:
        raise LabError(f"cannot reserve the lab's ports in {netns}: {proc.stderr.strip()}")


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll (bounded); True as soon as predicate() holds."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def python_argv(*args: str) -> list[str]:
    """argv running `firepath ARGS` with this interpreter (no dependence on the entry point being installed)."""
    return [sys.executable, "-c", "import sys; from proto.cli import main; sys.exit(main())", *args]


# ---------------------------------------------------------------------------------------------- the lab

class Lab:
    """An emulated fabric described by its state record. Create with :meth:`up`, reopen with :meth:`open`."""

    def __init__(self, state: LabState, fabric: Any | None) -> None:
        self.state = state
        self.fabric = fabric
        self.ports = LabPorts(fabric) if fabric is not None else None
        self._http: NetnsHttp | None = None
        self._lock = threading.Lock()
        self._zygote: Any = None           # kind -> lab.zygote.Zygote while _start_daemons runs

    # --- construction -------------------------------------------------------------------------

    @classmethod
    def open(cls, lab_dir: Path | str) -> Lab:
        state = LabState.load(lab_dir)
        lab = cls(state, lab_fabric(state))      # the config the lab runs, not an edit awaiting `lab reload`
        said = adopt_committed(lab)              # ... unless the masters run the edit (committed without it)
        if said:
            print(f"firepath lab: {said}", file=sys.stderr)
        return lab

    @classmethod
    def up(cls, *, name: str, lab_dir: Path | str | None = None, config: Path | str | None = None,
           clos: dict[str, Any] | None = None, clean: bool = False, daemons: bool = True,
           timeout: float = 60.0, keep_on_failure: bool = False, log: Callable[[str], None] = say,
           external_masters: bool = False, ovs_per_switch: bool = False) -> Lab:
        """Build the whole lab; on any failure tear down what was built and re-raise.

        `external_masters`: start no masters; the clients follow the masters of `config` that already run
        on this machine, reached over a CPN link (lab/external.py). `ovs_per_switch`: one OVS instance
        per switch, in the switch's own namespace, instead of one for the lab (lab/plumbing.py)."""
        problem = preflight()
        if problem:
            raise LabError(problem)
        check_lab_name(name)
        d = Path(lab_dir) if lab_dir else default_dir(name)
        d = d.resolve()
        t0 = time.monotonic()
        other = registered_dir(name)
        if other is not None and other != d:           # one namespace per name: that lab is in the way
            if not clean:
                raise LabError(f"lab {name} already exists in {other} (netns {lab_netns(name)}): "
                               f"`firepath lab down --name {name}` first, or `lab up --clean`")
            teardown(other, name=name, log=log)
        if (problem := lab_dir_problem(d, name, generates=config is None)) is not None:
            raise LabError(problem)
        with locked(d):
            mark_lab_dir(d, name)
            if LabState.exists(d) or nsutil.netns_exists(lab_netns(name)):
                if not clean:
                    raise LabError(f"a lab already exists in {d} (netns {lab_netns(name)}): "
                                   f"`firepath lab down --dir {d}` first, or `lab up --clean`")
                _teardown_locked(d, name, log=log, keep_logs=True)
            shutil.rmtree(d / "state", ignore_errors=True)     # a previous lab's master terms: start fresh
            logs = d / "logs"
            if logs.exists():          # keep the previous run's logs one generation back
                shutil.rmtree(d / "logs.prev", ignore_errors=True)
                logs.rename(d / "logs.prev")
            if config is None:
                config = generate_config(d, name, log=log, **(clos or {}))
                log(f"generated {config}")
            fabric = load_fabric(config)
            if (problem := lab_memory_problem(fabric, daemons)) is not None:     # before anything is built
                raise LabError(problem)
            ports = LabPorts(fabric)
            for run_dir in [d / "ovs", *(d / "ovs" / plumbing.bridge_name(s) for s in fabric.switches if ovs_per_switch)]:
                if (problem := run_dir_problem(run_dir)) is not None:       # before anything is built
                    raise LabError(problem)
            if ports.assigned_ovs:
                log(f"assigned `ovs:` targets tcp:127.0.0.1:{OVS_BASE_PORT}+id to {len(ports.assigned_ovs)} "
                    f"switch(es) without one")
            if ports.assigned_rest and len(ports.assigned_rest) < len(fabric.switches):
                log(f"assigned REST ports {REST_BASE_PORT}+id to {len(ports.assigned_rest)} switch(es) without one")
            for warning in (nd_load_warning(fabric), oam_load_warning(fabric), transit_warning(fabric)):
                if warning:
                    log(f"warning: {warning}")
            if daemons and not external_masters:      # before anything is built, not at the first client
                check_cpn_addresses(fabric)
            if external_masters:
                try:
                    external.check_fabric(fabric)
                except external.ExternalMastersError as e:
                    raise LabError(str(e)) from None
            state = LabState(name=name, dir=str(d), config=str(Path(config).resolve()), netns=lab_netns(name),
                             ovs_dir=str(d / "ovs"), daemons=daemons, external_masters=external_masters)
            keep_running(state, fabric)
            state.save()
            try:                       # so that `--name` / `--lab NAME` find a lab up with --dir too
                register(name, d)
            except OSError as e:       # a lab in its default dir is found without the registry
                if d != default_dir(name):
                    log(f"warning: lab not registered ({e}): other commands find it with --dir {d} only")
            lab = cls(state, fabric)
            try:
                lab._build_plumbing(log, ovs_per_switch)
                if fabric.external_slots:       # eBGP borders (issue #13): the outside world
                    bgp.build(lab, log)
                t_plumb = time.monotonic() - t0
                log(f"plumbing ready in {t_plumb:.2f}s: {len(fabric.switches)} bridges, {len(fabric.links)} links, "
                    f"{len(fabric.hosts)} hosts")
                if daemons:
                    t1 = time.monotonic()
                    lab._start_daemons()
                    converged = lab.wait_converged(timeout)
                    if not converged:
                        raise LabError(f"fabric did not converge within {timeout:.0f}s: "
                                       f"{lab.convergence_problem()} (logs in {d / 'logs'})")
                    if fabric.external_slots:     # up = the outside reachable too (sessions, routes, LSD)
                        problem = bgp.wait_ready(lab, max(10.0, timeout - (time.monotonic() - t1)))
                        if problem is not None:
                            raise LabError(f"eBGP not up within {timeout:.0f}s: {problem} (logs in {d / 'logs'})")
                    t_ctl = time.monotonic() - t1
                    log(f"control plane converged in {t_ctl:.2f}s after starting the daemons"
                        + (" (eBGP sessions established)" if fabric.external_slots else ""))
                state.bringup_s = round(time.monotonic() - t0, 3)
                state.phase = "up"
                state.save()
                log(f"lab {name} up in {state.bringup_s:.2f}s (dir {d})")
                return lab
            except BaseException:
                lab.close()
                if keep_on_failure:
                    log(f"bring-up failed: lab kept for inspection (`firepath lab down --dir {d}`)")
                else:
                    log("bring-up failed: tearing down what was built")
                    _teardown_locked(d, name, log=lambda _m: None, keep_logs=True)
                raise

    def _build_plumbing(self, log: Callable[[str], None], ovs_per_switch: bool = False) -> None:
        st, fabric = self.state, self.fabric
        (Path(st.dir) / "logs").mkdir(parents=True, exist_ok=True)
        index = {sw.name: i for i, sw in enumerate(fabric.switches)}

        def ifname(switch: str, port: int) -> str:
            return f"s{index[switch]}p{port}"

        # record intent first: everything below is removed by name or by namespace on teardown
        plumbing.plan_switches(st, fabric, fabric.switches, per_switch=ovs_per_switch)
        pairs = []
        for link in fabric.links:
            a, b = ifname(link.a.switch, link.a.port), ifname(link.b.switch, link.b.port)
            st.ifaces[f"{link.a.switch}:{link.a.port}"] = a
            st.ifaces[f"{link.b.switch}:{link.b.port}"] = b
            st.cabling.append([a, b])
            pairs.append((a, b))
        for host in fabric.hosts:
            st.host_netns[host.name] = host_netns(st.name, host.name)
            st.ifaces[f"{host.tor}:{host.port}"] = ifname(host.tor, host.port)
        plumbing.check_netns(st, fabric, (bgp.ROUTER, bgp.EXT_HOST) if fabric.external_slots else ())
        plumbing.plan_ifaces(st)
        st.save()

        nsutil.create_netns(st.netns)
        if st.daemons:      # the daemons' Pythons import their code while the bridges are built
            self._zygotes()
        quiet_ipv6(st.netns)
        assert self.ports is not None
        _reserve_ports(st.netns, self.ports.all)
        # The control plane runs on the lab namespace's loopback: master addresses outside 127/8 are added
        # there, and multicast distribution (if configured) needs lo to carry 224/4.
        lo = ["link set lo multicast on", "route replace 224.0.0.0/4 dev lo"]
        if not st.external_masters:      # external ones must not be local here: they are reached over the link
            lo += [f"addr replace {m.address}/32 dev lo" for m in fabric.masters if not m.address.is_loopback]
        ip_batch(st.netns, lo)
        if st.external_masters:
            link = external.plan(st.netns, st.name, fabric, external.root_networks())
            st.cpn = link.record()
            st.save()
            try:
                external.create(link)
            except subprocess.CalledProcessError as e:
                raise LabError(f"CPN link to the external masters: {' '.join(e.cmd)}: {e.stderr}") from None
        plumbing.add_switches(st, fabric, fabric.switches, lambda sw: self.ports.ovs[sw])
        plumbing.cable(st, pairs)
        plumbing.add_hosts(st, fabric, fabric.hosts)
        plumbing.add_ports(st, list(st.ifaces))

    def ovs_of(self, switch: str) -> OvsInstance:
        """The OVS instance of `switch` (its own, or the lab's shared one)."""
        return plumbing.ovs_of(self.state, switch)

    def ovs_instances(self) -> list[OvsInstance]:
        """Every OVS instance of the lab."""
        return plumbing.instances(self.state)

    def vswitchd_pids(self) -> list[int]:
        """The running ovs-vswitchd of every OVS instance (benchmarks add up their CPU)."""
        return [p for o in self.ovs_instances() if (p := o.pid("ovs-vswitchd")) is not None]

    def _check_ofports(self) -> None:
        plumbing.check_ofports(self.state)

    # --- processes ----------------------------------------------------------------------------

    def _start_daemons(self, wave: int = 2, wave_timeout: float = 20.0) -> None:
        """Masters first, then the clients a `wave` at a time, each wave once the previous one serves REST.

        Why waves: starting a Python daemon costs ~1-2 s of CPU (imports, os-ken). Thirteen of them at once
        on a 2-core machine starve the clients that already run ND, their frames come late, links flap and
        get damped (up to `damp_max`), and bring-up takes minutes. Total CPU is the same in waves; only
        the ND of running clients is no longer starved. A wave that does not answer in `wave_timeout` does
        not stop the next one (convergence is checked afterwards anyway).

        The daemons are forked from pre-imported Pythons (lab.zygote, started with the lab namespace, so
        they import while the bridges are built): one import of everything instead of one per daemon
        (~0.3 s of CPU each here); a plain start when a zygote fails.
        """
        zygotes = self._zygotes()
        try:
            self._start_daemons_now(wave, wave_timeout)
        finally:
            self._zygote = None
            for z in zygotes.values():
                z.__exit__(None, None, None)

    def _zygotes(self) -> dict[str, Any]:
        """The client and master zygotes (lab.zygote), started once; stopped by `_start_daemons` or
        `close`."""
        if self._zygote is None:
            from lab.zygote import Zygote

            where = (self.state.netns or None, str(Path(self.state.dir) / "logs"), str(REPO_ROOT))
            roles = ("client",) if self.state.external_masters else ("client", "master")
            self._zygote = {role: Zygote(*where, role).start() for role in roles}
        return self._zygote

    def _start_daemons_now(self, wave: int, wave_timeout: float) -> None:
        if self.state.external_masters:     # already running: only see that they answer
            wait_until(lambda: all(isinstance(s, dict) for s in self.master_states().values()), wave_timeout, 0.1)
        else:
            for m in self.fabric.masters:
                self.start_master(m.id)
            self._wait_rest([m.rest_port for m in self.fabric.masters], "/v1/lsd/version", wave_timeout)
        switches = list(self.fabric.switches)
        while switches:
            forked = self._zygote is not None and not self._zygote["client"].failed
            batch, switches = switches[:WAVE_FORKED if forked else wave], switches[WAVE_FORKED if forked else wave:]
            for sw in batch:
                self.start_client(sw.name)
            self._wait_rest([self.rest_port(sw.name) for sw in batch], "/v1/state", wave_timeout)

    def _wait_rest(self, ports: list[int], path: str, timeout: float) -> bool:
        if not ports:
            return True
        return wait_until(lambda: not any(isinstance(r, Exception)
                                          for r in self.http.get_many([(p, path) for p in ports], 0.5)),
                          timeout, 0.1)

    def _spawn(self, kind: str, name: str, argv: list[str], group_nice: int | None = None) -> ProcRecord:
        st = self.state
        log_path = Path(st.dir) / "logs" / f"{kind}-{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = python_env(REPO_ROOT)
        with open(log_path, "ab") as logf:
            logf.write(f"\n--- {time.strftime('%H:%M:%S')} start: {' '.join(argv)}\n".encode())
            logf.flush()
            zygote = (self._zygote or {}).get(kind)
            pid = zygote.spawn(argv[3:], str(log_path), env, group_nice) if zygote is not None else None
            if pid is None:
                pid = subprocess.Popen(nsutil.exec_cmd(st.netns, argv), stdout=logf, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True, env=env,
                                       cwd=REPO_ROOT).pid       # its session exists once Popen returns
                if group_nice is not None:
                    set_group_nice(pid, group_nice)
        starttime = proc_starttime(pid)
        if starttime is None:
            raise LabError(f"{kind} {name} exited at once; see {log_path}")
        rec = ProcRecord(kind=kind, name=name, pid=pid, starttime=starttime, argv=argv, log=str(log_path))
        st.processes[rec.key] = rec
        st.save()
        return rec

    def start_master(self, master_id: str, config: str | Path | None = None) -> ProcRecord:
        """Start a master replica; `config`: another config file for this one process (e.g. a node-local
        `security:` section during a key rollover; the rest must be the lab's fabric), default the lab's."""
        state_dir = Path(self.state.dir) / "state" / master_id
        state_dir.mkdir(parents=True, exist_ok=True)
        return self._spawn("master", master_id, python_argv(
            "master", "--config", str(config or self.state.config), "--id", master_id, "--state-dir", str(state_dir)),
            group_nice=MASTER_GROUP_NICE)

    def start_client(self, switch: str, config: str | Path | None = None) -> ProcRecord:
        """Start a switch's client; `config` as for `start_master`."""
        hold = min(CLIENT_RESTART_HOLD_S, self.fabric.timers.switch_dead)   # longer than switch_dead is moot
        assert self.ports is not None
        argv = python_argv(
            "client", "--config", str(config or self.state.config), "--switch", switch, "--restart-hold", f"{hold:g}",
            "--ovs", self.ports.ovs_target(switch), "--rest-port", str(self.ports.rest[switch]),
            "--ovsdb", self.ovs_of(switch).db_target)
        if self.state.switch_ns:     # its OVS (OpenFlow listener) and its IP stack (ExaBGP) are in its namespace
            argv += ["--netns", self.state.switch_ns[switch]]
        # Answers from the masters come back over the CPN link (external masters); otherwise each client has
        # its own CPN address, so one switch can be cut from a master (`lab fail cpn --switch`).
        argv += ["--bind", str(self.state.cpn["lab_addr"]) if self.state.external_masters
                 else client_cpn_address(self.fabric, switch)]
        if self.fabric.switch(switch).bgp is not None:       # its ExaBGP's files (issue #13)
            argv += ["--bgp-dir", str(Path(self.state.dir) / "bgp" / switch)]
        return self._spawn("client", switch, argv)

    def stop_process(self, key: str, signum: int = signal.SIGTERM, timeout: float = 5.0) -> ProcRecord:
        rec = self.state.processes.get(key)
        if rec is None:
            raise LabError(f"no process {key} in this lab")
        if signum == signal.SIGKILL:
            rec.send_signal(signal.SIGKILL)
            wait_until(lambda: not rec.alive(), timeout, 0.005)
        else:
            rec.stop(timeout, signum)
        return rec

    # --- REST -----------------------------------------------------------------------------------

    @property
    def http(self) -> NetnsHttp:
        with self._lock:
            if self._http is None:
                self._http = NetnsHttp(self.state.netns)
            return self._http

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None
        for z in (self._zygote or {}).values():
            z.__exit__(None, None, None)
        self._zygote = None

    def master_states(self, timeout: float = 0.5) -> dict[str, dict | Exception]:
        masters = self.fabric.masters
        if self.state.external_masters:
            return external.master_states(masters, timeout)
        res = self.http.get_many([(m.rest_port, "/v1/lsd/version") for m in masters], timeout)
        return {m.id: r for m, r in zip(masters, res, strict=True)}

    def client_states(self, timeout: float = 0.5) -> dict[str, dict | Exception]:
        sws = list(self.fabric.switches)
        res = self.http.get_many([(self.rest_port(sw.name), "/v1/state") for sw in sws], timeout)
        return {sw.name: r for sw, r in zip(sws, res, strict=True)}

    def rest_port(self, switch: str) -> int:
        """The REST port of a switch's client (from the config, or assigned by the lab)."""
        assert self.ports is not None
        return self.ports.rest[switch]

    def current_master(self) -> tuple[str, dict] | None:
        """(id, /v1/lsd/version) of the one master whose role is "master"; None if none or several."""
        leaders = [(mid, s) for mid, s in self.master_states().items()
                   if isinstance(s, dict) and str(s.get("role", "")).lower() == "master"]
        if len(leaders) != 1:
            return None
        return leaders[0]

    def expected_usable(self) -> dict[str, int]:
        """Usable fabric ports per switch given the recorded faults (all of them when there are none)."""
        down = self.expected_down()
        return {sw.name: sum(1 for p in self.fabric.fabric_ports(sw.name) if (sw.name, p) not in down)
                for sw in self.fabric.switches}

    def expected_down(self) -> set[tuple[str, int]]:
        """The fabric ports (switch, port) the recorded faults take out of use."""
        fabric = self.fabric
        port_of = {ifn: key for key, ifn in self.state.ifaces.items()}
        down: set[tuple[str, int]] = set()

        def both_ends(sw: str, port: int) -> None:
            down.add((sw, port))
            peer = fabric.peer_of(sw, port)
            if peer is not None:
                down.add((peer.switch, peer.port))

        for f in self.state.faults:
            kind = f["kind"]
            if kind in ("link", "silent"):
                link = fabric.links[int(f["link"])]
                both_ends(link.a.switch, link.a.port)
            elif kind in ("switch", "client"):
                for port in fabric.fabric_ports(str(f["switch"])):
                    both_ends(str(f["switch"]), port)
            elif kind == "miscable":
                for pair in f["new"]:
                    for ifn in pair:
                        sw, port = port_of[ifn].rsplit(":", 1)
                        down.add((sw, int(port)))
        return down

    def convergence_problem(self, expect_usable: dict[str, int] | None = None, min_version: int | None = None,
                            holds_ok: bool = True, damped_ok: bool = False) -> str | None:
        """None when every live client programmed the master's LSD version, has the usable port counts
        expected (by default: from the recorded faults), keeps no usable port of an UP link out of its groups,
        and the LSD agrees with the clients; else a short description of what is missing. `holds_ok=False`:
        a link the master holds on purpose (damping, the drastic-change guard) is not converged either
        (lab.converge says when a caller needs that). `damped_ok`: a port its client damps for flapping is such
        a hold too (`lab heal`); by default it is waited for."""
        return converge.convergence_problem(self, expect_usable, min_version, holds_ok, damped_ok)

    def wait_converged(self, timeout: float = 30.0, expect_usable: dict[str, int] | None = None,
                       min_version: int | None = None, holds_ok: bool = True, damped_ok: bool = False) -> bool:
        """Bounded wait for :meth:`convergence_problem` to clear; `min_version`: the master's LSD version
        must have reached it (pass version+1 after a fault, so the pre-fault state does not count)."""
        return wait_until(lambda: self.convergence_problem(expect_usable, min_version, holds_ok, damped_ok) is None,
                          timeout, 0.02)

    def master_get(self, path: str, timeout: float = 1.0) -> Any:
        """GET `path` (e.g. "/v1/lsd") from the current master's REST API."""
        leader = self.current_master()
        if leader is None:
            raise LabError(f"no single current master: {self.master_states()}")
        if self.state.external_masters:
            return external.get_json(self.fabric.master(leader[0]), path, timeout)
        return self.http.get(self.fabric.master(leader[0]).rest_port, path, timeout)

    def lsd_version(self) -> int | None:
        leader = self.current_master()
        return None if leader is None else int(leader[1]["version"])

    # --- data plane -----------------------------------------------------------------------------

    def host_ip(self, host: str) -> str:
        from lab.bgp import EXT_HOST, EXTERNAL_HOST_IP

        if host == EXT_HOST and EXT_HOST in self.state.host_netns:
            return EXTERNAL_HOST_IP
        return str(self.fabric.host(host).ip)

    def ping(self, pairs: Iterable[tuple[str, str]] | None = None, count: int = 3, timeout_s: int = 1,
             workers: int = 16) -> dict[tuple[str, str], int]:
        """Ping each (src, dst) host pair; returns packets received of `count` per pair."""
        hosts = [h.name for h in self.fabric.hosts]
        if "ext-host" in self.state.host_netns:   # lab.bgp: the host behind the external router (issue #13)
            hosts.append("ext-host")
        todo = list(pairs) if pairs is not None else [(a, b) for a in hosts for b in hosts if a != b]

        def one(pair: tuple[str, str]) -> int:
            src, dst = pair
            proc = subprocess.run(nsutil.exec_cmd(self.state.host_netns[src], [
                "ping", "-n", "-q", "-c", str(count), "-i", "0.05", "-W", str(timeout_s), self.host_ip(dst)]),
                capture_output=True, text=True, timeout=count * (timeout_s + 1) + 5)
            for line in proc.stdout.splitlines():
                if "received" in line:
                    return int(line.split(",")[1].split()[0])
            return 0

        with ThreadPoolExecutor(max_workers=workers) as pool:
            return dict(zip(todo, pool.map(one, todo), strict=True))

    def dump_groups(self, switch: str) -> list[str]:
        return self.ovs_of(switch).dump_groups(self.state.bridges[switch])

    def dump_flows(self, switch: str) -> list[str]:
        return self.ovs_of(switch).dump_flows(self.state.bridges[switch])

    def probe(self, src: str, dst: str, *, flows: int = 4, rate: float = 1000.0, port: int = 7000) -> Any:
        from lab.probe import Probe

        return Probe(src_ip=self.host_ip(src), dst_ip=self.host_ip(dst), src_netns=self.state.host_netns[src],
                     dst_netns=self.state.host_netns[dst], flows=flows, rate=rate, port=port)

    def down(self, log: Callable[[str], None] = say) -> None:
        self.close()
        teardown(self.state.dir, name=self.state.name, log=log)


# ---------------------------------------------------------------------------------------------- teardown

def teardown(lab_dir: Path | str, *, name: str | None = None, log: Callable[[str], None] = say,
             keep_logs: bool = True) -> list[str]:
    """Remove everything of the lab: processes by PID, OVS, namespaces (and the veths in them), state.

    Safe to run twice and on a half-built lab. With no record, falls back to the names derived from
    `name` (namespaces ``fplab-<name>`` and ``fplab-<name>-*``). Returns what it removed.
    """
    d = Path(lab_dir).resolve()
    with locked(d):
        return _teardown_locked(d, name, log=log, keep_logs=keep_logs)


def _teardown_locked(d: Path, name: str | None, *, log: Callable[[str], None], keep_logs: bool) -> list[str]:
    removed: list[str] = []
    state: LabState | None = None
    ours = is_lab_dir(d, name)        # else only the namespaces of `name` are its: nothing in d is removed
    with contextlib.suppress(LabStateError):
        state = LabState.load(d)
    if state is not None:
        name = state.name
        state.phase = "down"
        for rec in state.processes.values():
            if rec.alive():
                rec.stop(timeout=3.0)
                removed.append(f"process {rec.key} pid {rec.pid}")
    if name is None:
        raise LabError(f"{d}: no lab record; give the lab name to clean up by name")
    check_lab_name(name)
    ns = lab_netns(name)
    ovs_dir = Path(state.ovs_dir) if state and state.ovs_dir else d / "ovs"
    running = [o for o in plumbing.instances_on_disk(ovs_dir, ns) if ours and (o.pid("ovsdb-server") or o.pid("ovs-vswitchd"))]
    plumbing.parallel(lambda o: o.stop(), running)
    if running:
        removed.append(f"ovs daemons ({len(running)} instance{'s' if len(running) > 1 else ''})")
    # anything still running inside our namespaces is ours (probes, pings, strays): kill by PID
    host_nses = set(state.host_netns.values()) if state else set()
    host_nses |= {n for n in nsutil.list_netns() if n.startswith(ns + "-")}
    for n in [ns, *sorted(host_nses)]:
        if not nsutil.netns_exists(n):
            continue
        sockets = []
        for pid in nsutil.netns_pids(n):
            sockets.append(socket_of(pid))      # a zygote's socket file outlives a SIGKILL
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                removed.append(f"pid {pid} in {n}")
        wait_until(lambda n=n: not nsutil.netns_pids(n), 3.0, 0.02)
        for path in filter(None, sockets):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    for n in [*sorted(host_nses), ns]:
        if nsutil.netns_exists(n):
            nsutil.delete_netns(n)
            removed.append(f"netns {n}")
    if ours:
        shutil.rmtree(d / "ovs", ignore_errors=True)
    bgp.cleanup(name)
    if ours:
        shutil.rmtree(d / "state", ignore_errors=True)      # masters' durable terms: the next lab starts fresh
    if state is not None:
        state.remove()
    unregister(name, d)
    if not keep_logs and ours:
        shutil.rmtree(d / "logs", ignore_errors=True)
    for line in removed:
        log(f"removed {line}")
    if not removed:
        log(f"nothing to remove for lab {name}")
    return removed


def lab_ifnames(fabric: Any) -> list[str]:
    """Every interface name the lab creates for `fabric` (the switch ends; host ends are `eth0`)."""
    index = {sw.name: i for i, sw in enumerate(fabric.switches)}
    names = [f"s{index[sw.name]}p{port}" for sw in fabric.switches for port in fabric.fabric_ports(sw.name)]
    names += [f"s{index[h.tor]}p{h.port}" for h in fabric.hosts]
    return names


def lab_leftovers(name: str, lab_dir: Path | str | None = None, ifaces: Iterable[str] | None = None) -> list[str]:
    """What of lab `name` still exists (namespaces, OVS daemons, processes in its namespaces, state, and
    interfaces of the lab in the root namespace); empty after a clean `lab down`.

    The lab never creates anything in the root namespace, so an interface there can only be ours if it has
    one of the lab's names: `ifaces` if given, else the names recorded in the lab state, else those derived
    from the lab's config (``fabric.yaml`` in the lab dir, kept by `lab down`). Only with none of these does
    it fall back to the naming pattern (which another lab's leak would match too).
    """
    ns = lab_netns(name)
    left = [f"netns {n}" for n in nsutil.list_netns() if n == ns or n.startswith(ns + "-")]
    d = Path(lab_dir) if lab_dir else default_dir(name)
    left += [f"{daemon} pid {ovs.pid(daemon)}" for ovs in plumbing.instances_on_disk(d / "ovs", ns)
             for daemon in ("ovsdb-server", "ovs-vswitchd") if ovs.pid(daemon)]
    for n in list(left):
        if n.startswith("netns "):
            left += [f"pid {p} in {n[6:]}" for p in nsutil.netns_pids(n[6:])]
    names: set[str] | None = set(ifaces) if ifaces is not None else None
    if names is None and LabState.exists(d):
        with contextlib.suppress(LabStateError):
            names = set(LabState.load(d).ifaces.values())
    if names is None and (d / "fabric.yaml").exists():
        with contextlib.suppress(Exception):      # an unreadable config: fall back to the pattern
            names = set(lab_ifnames(load_fabric(d / "fabric.yaml")))
    root = nsutil.list_links(None)
    left += [f"root interface {i}" for i in root if (i in names if names is not None else _IFNAME_RE.match(i))]
    left += [f"root interface {i}" for i in root if i == external.root_ifname(name)]
    if LabState.exists(d):
        left.append(f"state {d / 'lab.json'}")
    return left
