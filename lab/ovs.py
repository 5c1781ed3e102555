"""A private Open vSwitch instance: its own database, daemons, sockets and logs in one run directory.

Nothing touches the system OVS (if any): every command gets OVS_RUNDIR/OVS_DBDIR/OVS_LOGDIR/OVS_SYSCONFDIR
pointing at the run dir and an explicit `--db=unix:<run_dir>/db.sock`; ovs-ofctl talks to a bridge through
its management socket `<run_dir>/<bridge>.mgmt`. Bridges use the userspace (`netdev`) datapath, so no
kernel module is needed.

With `netns` set, ovsdb-server and ovs-vswitchd run inside that network namespace (`ip netns exec`):
the bridges' ports (veth ends) must then live in that namespace, nothing of the lab appears in the root
namespace, and the OpenFlow listeners (`ptcp:PORT:127.0.0.1`) bind to the *namespace's* loopback: an
OpenFlow client either runs in that namespace (`ip netns exec NS ...`) or creates its socket there
(`client.of.driver.OfDriver(..., netns=NS)` does). Ports on that loopback cannot collide with the
machine's. The control sockets are unix sockets in the run dir, so ovs-vsctl/ovs-ofctl work from
anywhere.

Gotchas measured here: `--detach`ed daemons are re-parented to PID 1, which in this sandbox reaps
late, so a stopped daemon may linger as a zombie for a while (`_alive` treats zombies as gone); a
userspace bridge's internal port is a persistent tap device that survives ovs-vswitchd (see
`teardown`).

The client reaches a bridge by connecting actively to the bridge's listening target (`ptcp`), set once
at bridge creation: OVS flushes all flows and groups when a bridge gains or loses a controller, so this
module never changes a bridge's controller afterwards.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from lab.netns import check_ifname, exec_cmd
from lab.state import proc_starttime

SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")
OF_PROTOCOLS = "OpenFlow13,OpenFlow15"
DAEMONS = ("ovsdb-server", "ovs-vswitchd")


class OvsError(RuntimeError):
    def __init__(self, cmd: list[str], returncode: int, stderr: str) -> None:
        self.cmd = cmd
        self.returncode = returncode
        self.stderr = stderr.strip()
        super().__init__(f"{' '.join(cmd)}: exit {returncode}: {self.stderr}")


def ovs_missing() -> str | None:
    """None if the OVS tools this module needs are installed, else what is missing."""
    for tool in ("ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovs-ofctl"):
        if shutil.which(tool) is None:
            return f"{tool} not found (apt-get install openvswitch-switch)"
    if not SCHEMA.exists():
        return f"{SCHEMA} not found (apt-get install openvswitch-common)"
    return None


def dpid_hex(switch_id: int) -> str:
    """OpenFlow datapath id as OVS wants it in other-config:datapath-id: 16 hex digits."""
    if not 0 < switch_id < 2**64:
        raise ValueError(f"datapath id {switch_id}: must be 1..2**64-1")
    return f"{switch_id:016x}"


@dataclass(frozen=True, slots=True)
class PortState:
    ofport: int
    admin_up: bool  # OpenFlow port config: not PORT_DOWN
    link_up: bool  # OpenFlow port state: not LINK_DOWN (the carrier)


#: unix socket paths are limited to 107 bytes; the control socket's path must stay within this
MAX_CTL_PATH = 100


def run_dir_problem(run_dir: Path | str) -> str | None:
    """Why an OVS cannot run in `run_dir` (its unix socket paths would be too long), or None."""
    ctl = Path(run_dir).resolve() / "ovs-vswitchd.ctl"
    if len(str(ctl)) > MAX_CTL_PATH:
        return (f"OVS run dir {ctl.parent}: path too long for unix sockets ({len(str(ctl))} bytes with its control "
                f"socket, at most {MAX_CTL_PATH}): use a shorter lab --dir")
    return None


class OvsInstance:
    """One private OVS (ovsdb-server + ovs-vswitchd) rooted at `run_dir`.

    The daemons detach and write PID files in the run dir; `stop()` signals exactly those PIDs, so an
    instance can also be stopped by a later process that only knows the run dir (lab down).
    """

    def __init__(self, run_dir: Path | str, netns: str | None = None) -> None:
        self.run_dir = Path(run_dir).resolve()
        self.netns = netns
        # no path check here: teardown must be able to name (and find nothing in) a run dir whose path was too
        # long to start an OVS in (a lab up refused so could not be removed: `lab down` raised the same error)

    # ---------------------------------------------------------------- paths and environment

    @property
    def db_path(self) -> Path:
        return self.run_dir / "conf.db"

    @property
    def db_sock(self) -> Path:
        return self.run_dir / "db.sock"

    @property
    def db_target(self) -> str:
        return f"unix:{self.db_sock}"

    def pidfile(self, daemon: str) -> Path:
        return self.run_dir / f"{daemon}.pid"

    def ctl_sock(self, daemon: str) -> Path:
        return self.run_dir / f"{daemon}.ctl"

    def log_file(self, daemon: str) -> Path:
        return self.run_dir / f"{daemon}.log"

    def mgmt_sock(self, bridge: str) -> Path:
        return self.run_dir / f"{bridge}.mgmt"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        for var in ("OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR", "OVS_SYSCONFDIR", "OVS_PKGDATADIR"):
            env.pop(var, None)
        rd = str(self.run_dir)
        env.update(OVS_RUNDIR=rd, OVS_DBDIR=rd, OVS_LOGDIR=rd, OVS_SYSCONFDIR=rd)
        return env

    def _run(
        self, cmd: list[str], *, check: bool = True, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=self.env(), timeout=timeout)
        if check and proc.returncode != 0:
            raise OvsError(cmd, proc.returncode, proc.stderr)
        return proc

    # ---------------------------------------------------------------- lifecycle

    def pid(self, daemon: str) -> int | None:
        """PID from the daemon's PID file if that process is alive."""
        try:
            pid = int(self.pidfile(daemon).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    def running(self) -> bool:
        return all(self.pid(d) is not None for d in DAEMONS)

    def start(self) -> float:
        """Create the database and start both daemons (detached); returns seconds taken.

        Raises OvsError if a daemon fails, after stopping whatever part did start.
        """
        missing = ovs_missing()
        if missing:
            raise RuntimeError(missing)
        if (problem := run_dir_problem(self.run_dir)) is not None:
            raise ValueError(problem)
        if self.pid("ovsdb-server") or self.pid("ovs-vswitchd"):
            raise RuntimeError(f"an OVS instance is already running in {self.run_dir}; stop() it first")
        t0 = time.monotonic()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            if not self.db_path.exists():
                self._run(["ovsdb-tool", "create", str(self.db_path), str(SCHEMA)])
            self._run(
                exec_cmd(
                    self.netns,
                    [
                        "ovsdb-server",
                        str(self.db_path),
                        f"--remote=punix:{self.db_sock}",
                        f"--pidfile={self.pidfile('ovsdb-server')}",
                        f"--unixctl={self.ctl_sock('ovsdb-server')}",
                        f"--log-file={self.log_file('ovsdb-server')}",
                        "--detach",
                        "--no-chdir",
                    ],
                )
            )
            self.vsctl("--no-wait", "init")
            self._run(
                exec_cmd(
                    self.netns,
                    [
                        "ovs-vswitchd",
                        self.db_target,
                        f"--pidfile={self.pidfile('ovs-vswitchd')}",
                        f"--unixctl={self.ctl_sock('ovs-vswitchd')}",
                        f"--log-file={self.log_file('ovs-vswitchd')}",
                        "--detach",
                        "--no-chdir",
                    ],
                )
            )
        except BaseException:
            self.stop()
            raise
        return time.monotonic() - t0

    def boost(self, nice: int = -15, daemon: str = "ovs-vswitchd") -> int:
        """Raise the daemon's CPU priority (every thread: nice is per thread on Linux; threads created
        later inherit it from their creator). Returns how many threads were changed.

        Why: in a lab the data plane is a user-space process competing for CPU with the control plane it
        emulates (one Python client per switch, masters, probes). A real switch forwards in hardware
        whatever its CPU does; here a starved ovs-vswitchd lets its AF_PACKET receive buffers overflow and
        drops packets. Measured on a loaded 2-core machine: two CPU hogs for 5 s cost a probe crossing the
        fabric 15 % of its packets at nice 0, none at nice -15; a client restart (~1-2 CPU-seconds of
        imports) looked like a forwarding outage. Not real-time: a spinning vswitchd cannot lock up the box.

        With autogroup scheduling (kernel.sched_autogroup_enabled=1, as on this machine) a thread's nice
        only ranks it inside its own session's group: ovs-vswitchd `--detach`es into a session of its own,
        so against two CPU hogs started from a shell (another group) nice -15 did nothing, the main thread
        (which sends and checks every CCM) was late by more than 3.5 CFM intervals and every link of the
        lab faulted at once. The group's own nice (/proc/PID/autogroup) is set too (BENCHMARKS "Bring-up
        and stability under CPU load").
        """
        pid = self.pid(daemon)
        if pid is None:
            return 0
        changed = 0
        with contextlib.suppress(FileNotFoundError):
            for tid in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError):
                    os.setpriority(os.PRIO_PROCESS, int(tid), nice)
                    changed += 1
        with contextlib.suppress(OSError), open(f"/proc/{pid}/autogroup", "w") as f:   # absent without autogroup
            f.write(str(nice))
        return changed

    def stop(self, timeout: float = 5.0) -> None:
        """Stop both daemons by PID file: SIGTERM, wait, then SIGKILL. Safe to call twice."""
        for daemon in reversed(DAEMONS):  # vswitchd first, it needs the db to exit cleanly
            pid = self.pid(daemon)
            if pid is None:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.01)
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline and _alive(pid):
                    time.sleep(0.01)
            with contextlib.suppress(OSError):
                self.pidfile(daemon).unlink()

    def teardown(self, *, remove_run_dir: bool = False) -> None:
        """Delete every bridge, stop the daemons and optionally remove the run dir. Safe to call twice.

        Why delete bridges first: a userspace bridge's internal port is a *persistent* tap device that
        outlives ovs-vswitchd; only `del-br` removes it. (Inside a lab namespace it would also go away
        with the namespace; in the root namespace it would be left behind.) A plain `stop()` keeps the
        bridges so that a later `start()` on the same run dir brings the same switch back (OVS restart).
        """
        if self.running():
            with contextlib.suppress(OvsError, subprocess.TimeoutExpired):
                for bridge in self.bridges():
                    self.vsctl("--if-exists", "del-br", bridge)
        self.stop()
        if remove_run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def __enter__(self) -> OvsInstance:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.teardown()

    # ---------------------------------------------------------------- commands

    def vsctl(self, *args: str, timeout: float = 30.0) -> str:
        """Run ovs-vsctl against this instance's database; returns stdout."""
        cmd = ["ovs-vsctl", f"--db={self.db_target}", f"--timeout={max(1, int(timeout))}", *args]
        return self._run(cmd, timeout=timeout + 5).stdout

    def ofctl(self, bridge: str, *args: str, protocol: str = "OpenFlow13", check: bool = True) -> str:
        """Run `ovs-ofctl -O <protocol> CMD unix:<mgmt> ARGS...`: args[0] is the ofctl command.

        Example: ofctl("br1", "add-flow", "in_port=1,actions=output:2").
        """
        if not args:
            raise ValueError("ofctl needs a command, e.g. 'dump-flows'")
        cmd = ["ovs-ofctl", "-O", protocol, args[0], f"unix:{self.mgmt_sock(bridge)}", *args[1:]]
        return self._run(cmd, check=check).stdout

    def appctl(self, *args: str, daemon: str = "ovs-vswitchd") -> str:
        return self._run(["ovs-appctl", "-t", str(self.ctl_sock(daemon)), *args]).stdout

    # ---------------------------------------------------------------- bridges and ports

    def add_bridge(
        self,
        name: str,
        dpid: int,
        listen_port: int | None = None,
        controller: str | None = None,
        *,
        protocols: str = OF_PROTOCOLS,
    ) -> None:
        """Create a secure-fail-mode userspace bridge with a fixed datapath id, in one transaction.

        `listen_port`: OVS listens for the firepath client on ptcp:PORT:127.0.0.1 (of its namespace).
        `controller`: a further target (e.g. "tcp:127.0.0.1:6653") if OVS should connect out instead.
        The target list is fixed here for the bridge's life (changing it later flushes the tables).
        Idempotent: an existing bridge of that name is left as is (its settings are re-applied
        except the controller, which must not be toggled).
        """
        check_ifname(name)
        targets = []
        if listen_port is not None:
            targets.append(f"ptcp:{listen_port}:127.0.0.1")
        if controller is not None:
            targets.append(controller)
        args = [
            "--may-exist", "add-br", name,
            "--", "set", "bridge", name,
            "datapath_type=netdev",
            "fail_mode=secure",
            f"protocols={protocols}",
            f"other-config:datapath-id={dpid_hex(dpid)}",
            "other-config:disable-in-band=true",
        ]  # fmt: skip
        existing = name in self.bridges()
        if targets and not existing:
            args += ["--", "set-controller", name, *targets]
        self.vsctl(*args)
        if controller is not None and not existing:
            # The notes: without max_backoff=1000 OVS's first connect out takes 1-4 s.
            self._set_controller_backoff(controller)

    def _set_controller_backoff(self, target: str) -> None:
        out = self.vsctl("--bare", "--columns=_uuid", "find", "controller", f'target="{target}"')
        for uuid in out.split():
            self.vsctl("set", "controller", uuid, "max_backoff=1000")

    def del_bridge(self, name: str) -> None:
        self.vsctl("--if-exists", "del-br", name)

    def bridges(self) -> list[str]:
        return self.vsctl("list-br").split()

    def add_port(self, bridge: str, ifname: str, ofport: int) -> None:
        """Attach an existing interface (in the daemons' namespace) as OpenFlow port `ofport`."""
        check_ifname(ifname)
        if not 1 <= ofport <= 0xFF00:
            raise ValueError(f"ofport {ofport} for {ifname}: must be 1..65280")
        self.vsctl(
            "--may-exist", "add-port", bridge, ifname,
            "--", "set", "interface", ifname, f"ofport_request={ofport}",
        )  # fmt: skip
        got = self.ofport(ifname)
        if got != ofport:
            raise OvsError(
                ["add-port", bridge, ifname], 1, f"got ofport {got}, wanted {ofport} (in use? missing?)"
            )

    def del_port(self, bridge: str, ifname: str) -> None:
        self.vsctl("--if-exists", "del-port", bridge, ifname)

    def ofport(self, ifname: str) -> int:
        """The OpenFlow port number OVS assigned to an interface (-1 if it failed to open it)."""
        return int(self.vsctl("get", "interface", ifname, "ofport").strip())

    def port_state(self, bridge: str, ifname_or_ofport: str | int) -> PortState:
        """Port config/state as OpenFlow reports it (ovs-ofctl show)."""
        want = str(ifname_or_ofport)
        out = self.ofctl(bridge, "show")
        current: dict[str, object] | None = None
        found: dict[str, object] | None = None
        for line in out.splitlines():
            stripped = line.strip()
            if line.startswith(" ") and "(" in stripped and "): addr:" in stripped:
                num, rest = stripped.split("(", 1)
                name = rest.split(")", 1)[0]
                current = {"ofport": num, "name": name, "config": "", "state": ""}
                if want in (num, name):
                    found = current
            elif current is not None and stripped.startswith("config:"):
                current["config"] = stripped.split(":", 1)[1]
            elif current is not None and stripped.startswith("state:"):
                current["state"] = stripped.split(":", 1)[1]
        if found is None or not str(found["ofport"]).isdigit():
            raise KeyError(f"port {ifname_or_ofport!r} not found on bridge {bridge}")
        return PortState(
            ofport=int(str(found["ofport"])),
            admin_up="PORT_DOWN" not in str(found["config"]),
            link_up="LINK_DOWN" not in str(found["state"]),
        )

    def add_flow(self, bridge: str, flow: str) -> None:
        self.ofctl(bridge, "add-flow", flow)

    def dump_flows(self, bridge: str) -> list[str]:
        out = self.ofctl(bridge, "dump-flows", "--no-stats")
        return [line.strip() for line in out.splitlines() if line.strip() and "reply" not in line]

    def dump_groups(self, bridge: str, protocol: str = "OpenFlow13") -> list[str]:
        out = self.ofctl(bridge, "dump-groups", protocol=protocol)
        return [line.strip() for line in out.splitlines() if line.strip().startswith("group_id=")]


def _alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (detached daemons are reaped by init)."""
    return proc_starttime(pid) is not None
