"""Convergence benchmark on the emulated fabric (real OVS): outage and control-plane timeline per failure kind.

    python -m bench.bench_convergence [--quick] [--trials N] [--scenarios clos3,clos3-fast,leafspine]
                                      [--kinds KIND,...] [--flows F] [--rate PPS] [--name bench]

Needs root, Open vSwitch and nftables (like `firepath lab`). One lab (default name ``bench``) at a time.

Scenarios (each is one `lab up`, trials, `lab down`):

* ``clos3``       3-tier Clos, 2 spines / 2 pods x (2 aggs + 2 ToRs), lab ND timers (30 ms / 150 ms):
                  the four Table-4 kinds, a silent link failure, a master kill, an idle baseline.
* ``clos3-fast``  the same fabric with the fabric-default ND timers 10 ms / 30 ms: silent failure (the
                  kind whose detection is the ND dead interval) and a baseline.
* ``leafspine``   2 spines / 4 leaves: bring-up to full ECMP (repeated), leaf-spine link, spine chassis,
                  silent link, master kill, baseline.
* ``clos4``       one size up (3 spines / 2 pods x (3 aggs + 3 ToRs)), not in the default set.
* ``clos3-oam``, ``leafspine-oam``  the same fabrics with `liveness: oam` (the default): ovs-vswitchd's CFM
                  at ``oam_interval`` (10 ms) checks every fabric port and ND only checks identity (1 s):
                  silent failure and repair, bring-up, and the idle cost. The ND scenarios above set
                  `liveness: nd` (software ND as the heartbeat) to stay comparable with earlier runs.

After each bring-up the fabric idles for ``--idle-s`` seconds (no probes, no failure): CPU share of one core
and RSS of every client and master, and ovs-vswitchd's CPU share (it runs every CFM hello), from
/proc/PID/stat and /proc/PID/status.

Failure kinds: ``s2s3_link`` (agg-spine link, carrier down both ends), ``s3_chassis`` (every port of a
spine), ``s2_chassis`` (every port of an agg), ``tor_s2_link`` (ToR-agg link; leaf-spine on two tiers),
``silent`` (an agg-spine / leaf-spine link stays up, nftables drops every frame both ways),
``master_kill`` (SIGKILL of the current master). The element failed rotates over the trials.

Per trial: two UDP probes (lab.probe, ``--flows`` flows each at ``--rate`` pps) between hosts on either
side of the failure, one each way, run across the failure; the failure is injected at a time taken right
before the syscall (carrier changes are ioctl(SIOCSIFFLAGS) from a thread inside the lab namespace, so
no process start-up is in the measured window); after a hold the fabric's convergence is checked over REST,
the probes stopped, the daemons' logs read (all processes share one clock; log timestamps are ms UTC):

  inject -> ``event=port_state port=N usable=False`` at each end (client logs) -> the master's
  ``event=lsd_version`` -> each affected switch's ``event=programmed version=V`` (after the barrier reply);
  the logs are read as structured events (proto.logsetup.parse_event), never by matching wording

Affected switches are computed, not guessed: the switches (other than a failed one) whose next-hop sets
toward ToR/border prefixes differ between the all-up LSD and the failed one (client.routes). An end of a
failed link repairs locally (its log line has ``excluded=[port]``); the others need the master's LSD.
"Reprogrammed" (repaired) is, for an end, its first ``programmed`` line that excludes the failed port, for
any other affected switch its first ``programmed`` line of the new LSD version; "final" is the switch's last
``programmed`` line in the failure window (e.g. an end's reprogramming when the LSD confirms its repair).

Then the failure is healed (same way, timed) and the repair timeline is read: heal -> ports usable again
-> LSD version -> the affected switches programmed ("repaired link back in use").

Probe outage per flow = lost x interval, and the longest gap between arrivals; a flow is "affected" when it
lost a packet. An idle baseline (probes, no failure) shows what the userspace datapath alone costs.

Flap damping is set off in the bench labs (flap_threshold 1000): every trial flaps links on purpose, and
damping would otherwise hold links down between trials; it does not change detection or repair.

Results: a table on stdout and bench/results/convergence.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.procstat import cpu_s, mem_mib
from bench.stats import summary
from proto.logsetup import parse_event

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "convergence.json"

# -------------------------------------------------------------------------------------------------- targets
TARGETS = {
    "reprogram_p50_ms": 10.0,       # every affected switch reprogrammed after the port goes down
    "reprogram_p99_ms": 40.0,
    "outage_p50_ms": 15.0,          # probe outage, Table-4 kinds
    "silent_ms": 50.0,              # silent failure
    "repair_ms": 100.0,             # repaired link back in use
    "bringup_s": 1.0,               # 2-spine/4-leaf to full ECMP
    "master_serving_ms": 300.0,     # master kill: new master serving, zero probe loss
}
PAPER_TABLE4_MS = {"s2s3_link": 125, "s3_chassis": 325, "s2_chassis": 325, "tor_s2_link": 4000}

LAB_TIMERS = (("nd_interval_ms", 30), ("nd_dead_ms", 150), ("flap_threshold", 1000))
FAST_TIMERS = (("nd_interval_ms", 10), ("nd_dead_ms", 30), ("flap_threshold", 1000))
OAM_TIMERS = (("oam_interval_ms", 10), ("nd_identity_interval_ms", 1000), ("nd_identity_dead_ms", 3500),
              ("nd_interval_ms", 50), ("nd_dead_ms", 250), ("flap_threshold", 1000))


def override_timers(timers: tuple[tuple[str, float], ...], overrides: list[str]) -> tuple[tuple[str, float], ...]:
    """A scenario's timers with `--timer KEY=VALUE` overrides applied (added if absent)."""
    out = dict(timers)
    for item in overrides:
        key, _, value = item.partition("=")
        out[key.strip()] = float(value)
    return tuple(out.items())


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    clos: dict[str, Any]
    timers: tuple[tuple[str, float], ...]
    kinds: tuple[str, ...]
    bringups: int = 1            # lab up repetitions measured (the first one stays up for the trials)


_CLOS3 = {"spines": 2, "pods": 2, "aggs_per_pod": 2, "tors_per_pod": 2}
_LEAFSPINE = {"spines": 2, "pods": 0, "leaves": 4}
SCENARIOS: dict[str, Scenario] = {
    "clos3-oam": Scenario("clos3-oam", {**_CLOS3, "liveness": "oam"}, OAM_TIMERS,
                          ("baseline", "silent", "s2s3_link", "master_kill")),
    "leafspine-oam": Scenario("leafspine-oam", {**_LEAFSPINE, "liveness": "oam"}, OAM_TIMERS,
                              ("baseline", "silent", "tor_s2_link", "master_kill"), bringups=3),
    "clos3": Scenario("clos3", {"spines": 2, "pods": 2, "aggs_per_pod": 2, "tors_per_pod": 2, "liveness": "nd"}, LAB_TIMERS,
                      ("baseline", "s2s3_link", "s3_chassis", "s2_chassis", "tor_s2_link", "silent",
                       "master_kill")),
    "clos3-fast": Scenario("clos3-fast", {"spines": 2, "pods": 2, "aggs_per_pod": 2, "tors_per_pod": 2,
                                          "liveness": "nd"},
                           FAST_TIMERS, ("baseline", "silent")),
    "leafspine": Scenario("leafspine", {"spines": 2, "pods": 0, "leaves": 4, "liveness": "nd"}, LAB_TIMERS,
                          ("baseline", "tor_s2_link", "s3_chassis", "silent", "master_kill"), bringups=3),
    "clos4": Scenario("clos4", {"spines": 3, "pods": 2, "aggs_per_pod": 3, "tors_per_pod": 3, "liveness": "nd"},
                      LAB_TIMERS,
                      ("baseline", "s2s3_link", "s3_chassis", "s2_chassis", "tor_s2_link")),
}
# Bring-up at scale (issue #20: <= 20 s from `lab up`), CFM sized to the fabric as `lab up` does it
# (lab.sizing.oam_interval_fit: 4 x 16 = 128 link ends -> 40 ms; 48 switches, 288 ends -> 90 ms).
def _oam_timers(interval_ms: int) -> tuple[tuple[str, float], ...]:
    return tuple((k, interval_ms if k == "oam_interval_ms" else v) for k, v in OAM_TIMERS)


SCENARIOS["ls4x16-oam"] = Scenario("ls4x16-oam", {"spines": 4, "pods": 0, "leaves": 16, "liveness": "oam"},
                                   _oam_timers(40), ("baseline", "tor_s2_link", "silent"), bringups=2)
SCENARIOS["clos48-oam"] = Scenario("clos48-oam", {"spines": 4, "pods": 4, "aggs_per_pod": 3, "tors_per_pod": 8,
                                                  "liveness": "oam"}, _oam_timers(90), ("baseline",), bringups=2)
DEFAULT_SCENARIOS = ("clos3-oam", "leafspine-oam", "clos3", "clos3-fast", "leafspine")

# -------------------------------------------------------------------------------------------------- logs
def parse_ts(text: str) -> float:
    return datetime.strptime(text.rstrip("Z"), "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=UTC).timestamp()


@dataclass(slots=True)
class LogLine:
    """One structured event of a daemon log (either rendering, proto.logsetup.parse_event): its time (s,
    wall clock; the kv rendering has ms resolution), name and fields (kv values are strings)."""

    ts: float
    event: str | None
    fields: dict[str, Any]


def _flag(v: Any) -> bool:
    return v is True or v == "True"


def _ints(v: Any) -> frozenset[int]:
    """A list field: a JSON list, or its kv rendering "[1, 2]"."""
    if isinstance(v, list):
        return frozenset(int(x) for x in v)
    return frozenset(int(x) for x in str(v).strip("[]").replace(" ", "").split(",") if x)


class LogTail:
    """Reads what a daemon log gained since the last mark()."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.mark()

    def mark(self) -> None:
        try:
            self.offset = self.path.stat().st_size
        except FileNotFoundError:
            self.offset = 0

    def read(self) -> list[LogLine]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        out = []
        for raw in data.decode(errors="replace").splitlines():
            event, fields = parse_event(raw)
            ts = fields.pop("ts", None)
            if event is None or ts is None:
                continue
            out.append(LogLine(float(ts) if isinstance(ts, int | float) else parse_ts(str(ts)), event, fields))
        return out


class Logs:
    """Every daemon log of a lab, tailed from one mark."""

    def __init__(self, lab: Any) -> None:
        d = Path(lab.state.dir) / "logs"
        self.clients = {sw.name: LogTail(d / f"client-{sw.name}.log") for sw in lab.fabric.switches}
        self.masters = {m.id: LogTail(d / f"master-{m.id}.log") for m in lab.fabric.masters}

    def mark(self) -> None:
        for t in (*self.clients.values(), *self.masters.values()):
            t.mark()

    def read(self) -> tuple[dict[str, list[LogLine]], dict[str, list[LogLine]]]:
        return ({k: t.read() for k, t in self.clients.items()}, {k: t.read() for k, t in self.masters.items()})


def port_events(lines: list[LogLine], port: int, usable: bool, after: float) -> float | None:
    """Time of the first `port_state` event of `port` with `usable` at or after `after` (log ts are
    truncated to ms)."""
    for ln in lines:
        if ln.ts < after - 0.001 or ln.event != "port_state":
            continue
        if int(ln.fields["port"]) == port and _flag(ln.fields["usable"]) == usable:
            return ln.ts
    return None


@dataclass(slots=True)
class Prog:
    ts: float
    version: int | None
    messages: int
    excluded: frozenset[int]
    ms: float


def programmed(lines: list[LogLine]) -> list[Prog]:
    """The client's `programmed` events (logged after the OpenFlow barrier reply)."""
    out = []
    for ln in lines:
        if ln.event == "programmed":
            f = ln.fields
            v = str(f["version"])
            out.append(Prog(ln.ts, int(v) if v.lstrip("-").isdigit() else None, int(f["messages"]),
                            _ints(f["excluded"]), float(f["ms"])))
    return out


def lsd_versions(master_lines: dict[str, list[LogLine]]) -> list[tuple[float, int, str]]:
    out = []
    for mid, lines in master_lines.items():
        for ln in lines:
            if ln.event == "lsd_version":
                out.append((ln.ts, int(ln.fields["version"]), mid))
    return sorted(out)


# -------------------------------------------------------------------------------------------------- stats
def _added(per: dict[str, dict[str, Any]], prefix: str) -> dict[str, Any] | None:
    """CPU % and RSS of every process whose key starts with `prefix`, added up (the lab's OVS instances)."""
    rows = [v for k, v in per.items() if k.startswith(prefix)]
    if not rows:
        return None
    cpu = [v["cpu_pct"] for v in rows if v["cpu_pct"] is not None]
    rss = [v["rss_mib"] for v in rows if v["rss_mib"] is not None]
    return {"cpu_pct": round(sum(cpu), 2) if cpu else None, "rss_mib": round(sum(rss), 1) if rss else None,
            "instances": len(rows)}


def ms(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round((a - b) * 1000.0, 2)


# -------------------------------------------------------------------------------------------------- faults
@dataclass(slots=True)
class Fault:
    kind: str
    target: str                      # link name, switch name or master id
    failed_ports: dict[str, set[int]]   # switch -> its ports that go down (local repair expected there)
    dead_switch: str | None = None
    links: list[int] = field(default_factory=list)
    record: dict[str, Any] | None = None
    t_inject: float = 0.0
    t_inject_end: float = 0.0


def _wall(at_monotonic: float) -> float:
    """A time.monotonic() reading of lab.inject as wall-clock time (the daemons' logs are wall clock)."""
    return time.time() - (time.monotonic() - at_monotonic)


class Injector:
    """Timed failures and repairs through lab.inject (the faults the lab CLI makes, recorded in the lab state,
    so `firepath lab heal` and the lab's convergence check see them); each carries the time right before the
    change (lab.inject's `at`, converted to wall clock)."""

    def __init__(self, lab: Any) -> None:
        self.lab = lab

    def fail(self, kind: str, target: str) -> Fault:
        from lab import inject

        lab, fabric = self.lab, self.lab.fabric
        if kind in ("s2s3_link", "tor_s2_link", "silent"):
            link = next(lk for lk in fabric.links if lk.name == target)
            ports = {link.a.switch: {link.a.port}, link.b.switch: {link.b.port}}
            fault = Fault(kind, target, ports, links=[link.index])
            rec = inject.fail_link(lab, f"{link.a.switch}:{link.a.port}", f"{link.b.switch}:{link.b.port}",
                                   silent=kind == "silent")
        elif kind in ("s3_chassis", "s2_chassis"):
            ports: dict[str, set[int]] = {}
            links = []
            for p in fabric.fabric_ports(target):
                peer = fabric.peer_of(target, p)
                ports.setdefault(peer.switch, set()).add(peer.port)
                ports.setdefault(target, set()).add(p)
                links.append(fabric.link_at(target, p).index)
            fault = Fault(kind, target, ports, dead_switch=target, links=links)
            rec = inject.fail_switch(lab, target)
        elif kind == "master_kill":
            # the master of this very moment (asked again: under load FMRP may have moved since the plan)
            leader = lab.current_master()
            if leader is None:
                raise RuntimeError("no single master to kill")
            fault = Fault(kind, leader[0], {})
            rec = inject.kill_master(lab, leader[0])
        else:
            raise ValueError(f"unknown kind {kind}")
        fault.t_inject_end = time.time()
        fault.t_inject = _wall(float(rec["at"]))
        fault.record = rec
        return fault

    def heal(self, fault: Fault) -> tuple[float, float]:
        """Undo the fault; returns (wall time right before the repair, right after)."""
        from lab import inject

        rec = fault.record
        assert rec is not None
        at = inject.undo(self.lab, rec)
        t1 = time.time()
        with contextlib.suppress(ValueError):
            self.lab.state.faults.remove(rec)
        self.lab.state.save()
        return _wall(at), t1


# -------------------------------------------------------------------------------------------------- routing
def data_prefixes(fabric: Any) -> set[Any]:
    return {p for sw in fabric.switches if str(sw.role) in ("tor", "border") for p in sw.prefixes}


class AffectedOracle:
    """Which switches' next hops toward ToR/border prefixes change when some links go down."""

    def __init__(self, fabric: Any) -> None:
        from client.routes import RouteComputer

        self.fabric = fabric
        self.prefixes = data_prefixes(fabric)
        self.rcs = {sw.name: RouteComputer(fabric, sw.name) for sw in fabric.switches}
        up = bytes([1]) * len(fabric.links)
        self.base = {name: self._routes(name, up) for name in self.rcs}

    def _routes(self, name: str, states: bytes) -> dict[Any, frozenset[int]]:
        routes = self.rcs[name].compute(states)
        return {p: hops for p, hops in routes.items() if p in self.prefixes}

    def affected(self, down_links: Iterable[int], dead: str | None) -> list[str]:
        states = bytearray([1]) * len(self.fabric.links)
        for i in down_links:
            states[i] = 0
        out = []
        for name in self.rcs:
            if name == dead:
                continue
            if self._routes(name, bytes(states)) != self.base[name]:
                out.append(name)
        return out


# -------------------------------------------------------------------------------------------------- plans
@dataclass(slots=True)
class TrialPlan:
    kind: str
    target: str
    probes: list[tuple[str, str]]


def host_of(fabric: Any, tor: str) -> str:
    return next(h.name for h in fabric.hosts if h.tor == tor)


def pod_of(name: str) -> str | None:
    parts = name.split("-")
    return parts[1] if len(parts) == 3 else None


def make_plan(fabric: Any, kind: str, i: int, current_master: str | None) -> TrialPlan:
    """The element to fail in trial i of `kind` (rotating) and two probe pairs crossing it, one each way."""
    tors = [sw.name for sw in fabric.switches if str(sw.role) == "tor" and any(h.tor == sw.name for h in fabric.hosts)]
    spines = [sw.name for sw in fabric.switches if str(sw.role) == "spine"]
    aggs = [sw.name for sw in fabric.switches if str(sw.role) == "agg"]
    rng = random.Random(1000 * i + len(kind))
    three_tier = bool(aggs)

    def other_tor(tor: str, same_pod: bool = False) -> str:
        if three_tier:
            cands = [t for t in tors if t != tor and ((pod_of(t) == pod_of(tor)) == same_pod)]
        else:
            cands = [t for t in tors if t != tor]
        return cands[i % len(cands)] if cands else rng.choice([t for t in tors if t != tor])

    def pair_around(tor: str, second_same_pod: bool = False) -> list[tuple[str, str]]:
        a, b = other_tor(tor), other_tor(tor, same_pod=second_same_pod)
        return [(host_of(fabric, tor), host_of(fabric, a)), (host_of(fabric, b), host_of(fabric, tor))]

    if kind in ("s2s3_link", "silent") and three_tier:
        links = [lk for lk in fabric.links if {str(fabric.switch(lk.a.switch).role), str(fabric.switch(lk.b.switch).role)}
                 == {"agg", "spine"}]
        lk = links[i % len(links)]
        agg = lk.a.switch if lk.a.switch in aggs else lk.b.switch
        pod_tors = [t for t in tors if pod_of(t) == pod_of(agg)]
        return TrialPlan(kind, lk.name, pair_around(pod_tors[(i // len(links)) % len(pod_tors)]))
    if kind in ("tor_s2_link", "silent", "s2s3_link"):
        links = [lk for lk in fabric.links if "tor" in (str(fabric.switch(lk.a.switch).role),
                                                         str(fabric.switch(lk.b.switch).role))]
        lk = links[i % len(links)]
        tor = lk.a.switch if lk.a.switch in tors else lk.b.switch
        return TrialPlan(kind, lk.name, pair_around(tor, second_same_pod=three_tier and i % 2 == 1))
    if kind == "s3_chassis":
        spine = spines[i % len(spines)]
        tor = tors[(i // len(spines)) % len(tors)]
        return TrialPlan(kind, spine, pair_around(tor))
    if kind == "s2_chassis":
        agg = aggs[i % len(aggs)]
        pod_tors = [t for t in tors if pod_of(t) == pod_of(agg)]
        return TrialPlan(kind, agg, pair_around(pod_tors[(i // len(aggs)) % len(pod_tors)]))
    if kind in ("master_kill", "baseline"):
        tor = tors[i % len(tors)]
        return TrialPlan(kind, current_master or "", pair_around(tor))
    raise ValueError(f"kind {kind!r} does not apply to this fabric")


# -------------------------------------------------------------------------------------------------- the bench
class Bench:
    def __init__(self, args: argparse.Namespace, log: Callable[[str], None]) -> None:
        self.args = args
        self.log = log
        self.lab: Any = None
        self.logs: Logs | None = None
        self.injector: Injector | None = None
        self.oracle: AffectedOracle | None = None

    # --- lab life cycle ---------------------------------------------------------------------------
    def lab_up(self, sc: Scenario) -> dict[str, Any]:
        """`lab up` and the bring-up timeline from the logs (the lab stays up)."""
        from lab.fabric import Lab

        clos = dict(sc.clos)
        clos.setdefault("damping", (("enabled", False),))   # trials flap links on purpose (as flap_threshold)
        clos["timers"] = override_timers(sc.timers, self.args.timer)
        marks: dict[str, float] = {}

        def on_log(msg: str) -> None:
            now = time.time()
            if msg.startswith("plumbing ready"):
                marks["plumbing"] = now
            elif msg.startswith("control plane converged"):
                marks["rest_converged"] = now
            if self.args.verbose:
                self.log(f"    lab: {msg}")

        t0 = time.time()
        lab = Lab.up(name=self.args.name, clos=clos, clean=True, timeout=self.args.up_timeout, log=on_log,
                     ovs_per_switch=self.args.ovs_per_switch)
        t_end = time.time()
        self.lab = lab
        self.logs = Logs(lab)
        self.oracle = AffectedOracle(lab.fabric)
        timeline = self._bringup_timeline(t0, marks, t_end)
        timeline["settle_s"] = self.settle()
        return timeline

    def idle(self, seconds: float) -> dict[str, Any]:
        """CPU (% of one core) and RSS (MiB) of every daemon and of ovs-vswitchd over `seconds` of idling."""
        cpu, rss = cpu_s, mem_mib
        pids = {rec.key: rec.pid for rec in self.lab.state.processes.values()}
        for i, vswitchd in enumerate(self.lab.vswitchd_pids()):
            pids[f"ovs-vswitchd:{i}"] = vswitchd
        before = {k: cpu(p) for k, p in pids.items()}
        t0 = time.monotonic()
        time.sleep(seconds)
        wall = time.monotonic() - t0
        after = {k: cpu(p) for k, p in pids.items()}
        per: dict[str, dict[str, float | None]] = {}
        for k, p in pids.items():
            b, a = before[k], after[k]
            per[k] = {"cpu_pct": None if a is None or b is None else round(100 * (a - b) / wall, 2),
                      "rss_mib": None if rss(p) is None else round(rss(p), 1)}

        def summary(prefix: str) -> dict[str, Any]:
            rows = [v for k, v in per.items() if k.startswith(prefix) and v["cpu_pct"] is not None]
            if not rows:
                return {}
            cpus = sorted(v["cpu_pct"] for v in rows)
            rsss = sorted(v["rss_mib"] for v in rows if v["rss_mib"] is not None)
            return {"n": len(rows), "cpu_pct_mean": round(statistics.fmean(cpus), 2), "cpu_pct_max": cpus[-1],
                    "rss_mib_mean": round(statistics.fmean(rsss), 1) if rsss else None,
                    "rss_mib_max": rsss[-1] if rsss else None}

        return {"seconds": round(wall, 1), "loadavg": os.getloadavg(), "clients": summary("client:"),
                "masters": summary("master:"), "ovs_vswitchd": _added(per, "ovs-vswitchd:"), "per_process": per}

    def soak(self, seconds: float) -> dict[str, Any]:
        """Idle `seconds` and count what moved: LSD versions (every link flap makes one) and, per client,
        ports that went unusable and CFM faults (REST counters). Zero everywhere = no flap."""
        def counts() -> dict[str, int]:
            total: dict[str, int] = {"usable_false": 0, "oam_fault": 0}
            for st in self.lab.client_states().values():
                if isinstance(st, dict):
                    c = st.get("counters", {})
                    total["oam_fault"] += int(c.get("oam_fault", 0))
            return total

        v0, c0, t0 = self.lab.lsd_version(), counts(), time.monotonic()
        marks = Logs(self.lab)
        time.sleep(seconds)
        v1, c1 = self.lab.lsd_version(), counts()
        clients, _ = marks.read()
        downs = sum(1 for lines in clients.values() for ln in lines
                    if ln.event == "port_state" and not _flag(ln.fields["usable"]))
        return {"seconds": round(time.monotonic() - t0, 1), "lsd_versions": (v1 or 0) - (v0 or 0),
                "ports_went_unusable": downs, "oam_faults": c1["oam_fault"] - c0["oam_fault"],
                "loadavg": os.getloadavg()}

    def settle(self, quiet: float = 1.5, timeout: float = 30.0) -> float | None:
        """Bounded wait until the fabric is converged and the LSD version has not moved for `quiet` s
        (trials must not start in a bring-up's tail of flaps); seconds waited, None if it never settled."""
        t0 = time.monotonic()
        last_v, since = None, time.monotonic()
        while time.monotonic() - t0 < timeout:
            v = self.lab.lsd_version()
            if v != last_v:
                last_v, since = v, time.monotonic()
            elif time.monotonic() - since >= quiet and self.lab.convergence_problem() is None:
                return round(time.monotonic() - t0, 2)
            time.sleep(0.1)
        self.log(f"    fabric not settled after {timeout:.0f}s: {self.lab.convergence_problem()} (version {last_v})")
        return None

    def _bringup_timeline(self, t0: float, marks: dict[str, float], t_end: float) -> dict[str, Any]:
        lab = self.lab
        d = Path(lab.state.dir) / "logs"
        connected: dict[str, float] = {}
        last_prog: dict[str, Prog] = {}
        first_prog: dict[str, Prog] = {}
        for sw in lab.fabric.switches:
            lines = LogTail(d / f"client-{sw.name}.log")
            lines.offset = 0
            ls = lines.read()
            for ln in ls:
                if ln.event == "switch_connected" and sw.name not in connected:
                    connected[sw.name] = ln.ts
            progs = [p for p in programmed(ls) if p.ts <= t_end]
            if progs:
                last_prog[sw.name] = progs[-1]
                first_prog[sw.name] = progs[0]
        master_role = None
        for m in lab.fabric.masters:
            t = LogTail(d / f"master-{m.id}.log")
            t.offset = 0
            for ln in t.read():
                if ln.event == "role" and ln.fields.get("role") == "master" and (master_role is None
                                                                                 or ln.ts < master_role):
                    master_role = ln.ts
        version = lab.lsd_version()
        # full ECMP: every link UP in the master's LSD, every switch programmed that version with all ports
        # usable and none excluded, and every ToR's groups have a bucket per uplink (checked in OVS).
        problem = lab.convergence_problem()
        all_up = False
        leader = lab.current_master()
        if leader is not None:
            m = lab.fabric.master(leader[0])
            lsd = lab.http.get(m.rest_port, "/v1/lsd", 2.0)
            all_up = all(v == "up" for v in lsd.get("links", {}).values())
        excluded = [n for n, p in last_prog.items() if p.excluded]
        buckets_ok = self._ecmp_buckets_ok()
        t_connected = max(connected.values()) if len(connected) == len(lab.fabric.switches) else None
        t_ecmp = max(p.ts for p in last_prog.values()) if len(last_prog) == len(lab.fabric.switches) else None
        return {
            "lsd_version": version,
            "full_ecmp": problem is None and all_up and not excluded and buckets_ok,
            "problem": problem, "all_links_up": all_up, "excluded_left": excluded, "tor_buckets_ok": buckets_ok,
            "plumbing_s": round(marks["plumbing"] - t0, 3) if "plumbing" in marks else None,
            "daemons_to_all_connected_s": round(t_connected - marks["plumbing"], 3)
            if t_connected and "plumbing" in marks else None,
            "daemons_to_master_elected_s": round(master_role - marks["plumbing"], 3)
            if master_role and "plumbing" in marks else None,
            "all_connected_to_full_ecmp_s": round(t_ecmp - t_connected, 3) if t_ecmp and t_connected else None,
            "daemons_to_full_ecmp_s": round(t_ecmp - marks["plumbing"], 3) if t_ecmp and "plumbing" in marks else None,
            "lab_up_to_full_ecmp_s": round(t_ecmp - t0, 3) if t_ecmp else None,
            "lab_up_returned_s": round(t_end - t0, 3),
            "rest_poll_converged_s_after_daemons": round(marks["rest_converged"] - marks["plumbing"], 3)
            if "rest_converged" in marks and "plumbing" in marks else None,
        }

    def _ecmp_buckets_ok(self) -> bool:
        """Every group of every ToR (towards remote prefixes) has one bucket per uplink."""
        lab = self.lab
        ok = True
        for sw in lab.fabric.switches:
            if str(sw.role) != "tor":
                continue
            uplinks = len(lab.fabric.fabric_ports(sw.name))
            groups = [g for g in lab.dump_groups(sw.name) if "group_id" in g]
            counts = [g.count("bucket=") or g.count("bucket_id") for g in groups]
            if not counts or max(counts) != uplinks:
                ok = False
        return ok

    def lab_down(self) -> None:
        self.injector = None                 # it holds nothing but the lab: `lab.down` removes every fault
        if self.lab is not None:
            self.lab.down(log=lambda _m: None)
            self.lab = None

    # --- probes -----------------------------------------------------------------------------------
    def start_probes(self, pairs: list[tuple[str, str]]) -> list[Any]:
        """Start the probes concurrently (each start spawns two Python processes and primes ARP)."""
        probes = [self.lab.probe(src, dst, flows=self.args.flows, rate=self.args.rate, port=7100 + k)
                  for k, (src, dst) in enumerate(pairs)]
        with ThreadPoolExecutor(max_workers=len(probes)) as pool:
            futures = [pool.submit(p.start) for p in probes]
            errors = [f.exception() for f in futures]
        if any(errors):
            for p in probes:
                p.close()
            raise next(e for e in errors if e is not None)
        return probes

    def stop_probes(self, probes: list[Any], pairs: list[tuple[str, str]]) -> list[dict[str, Any]]:
        def stop(p: Any, src: str, dst: str) -> dict[str, Any]:
            try:
                return {"src": src, "dst": dst, **p.stop(drain=0.1)}
            except Exception as e:  # noqa: BLE001 - recorded in the trial
                return {"src": src, "dst": dst, "error": repr(e)}
            finally:
                p.close()

        with ThreadPoolExecutor(max_workers=len(probes)) as pool:
            futures = [pool.submit(stop, p, src, dst) for p, (src, dst) in zip(probes, pairs, strict=True)]
            return [f.result() for f in futures]

    # --- trials -----------------------------------------------------------------------------------
    def converge(self, timeout: float, min_version: int | None = None) -> bool:
        return self.lab.wait_converged(timeout, min_version=min_version)

    def trial(self, kind: str, i: int, hold: float) -> dict[str, Any]:
        lab, logs = self.lab, self.logs
        assert logs is not None
        if self.injector is None:
            self.injector = Injector(lab)
        leader = lab.current_master()
        plan = make_plan(lab.fabric, kind, i, leader[0] if leader else None)
        v0 = lab.lsd_version()
        out: dict[str, Any] = {"kind": kind, "trial": i, "target": plan.target, "probes": plan.probes,
                               "lsd_version_before": v0}
        probes = self.start_probes(plan.probes)
        fault = None
        try:
            time.sleep(self.args.pre)
            logs.mark()
            if kind == "baseline":
                time.sleep(hold)
            else:
                fault = self.injector.fail(kind, plan.target)
                out["target"] = fault.target
                out["inject_window_ms"] = ms(fault.t_inject_end, fault.t_inject)
                if kind == "master_kill" and self.args.follow_poll:
                    # which master the clients follow is only visible over REST: poll during the hold
                    # (costs CPU: 10 REST state dumps every ~10 ms compete with the datapath; see
                    # --no-follow-poll)
                    out["t_follow"] = self._poll_following(fault.target, fault.t_inject + 5.0)
                    time.sleep(max(0.0, fault.t_inject + hold - time.time()))
                else:
                    time.sleep(hold)
        finally:
            out["probe"] = self.stop_probes(probes, plan.probes)
        if fault is None:
            return out
        if kind == "master_kill":
            t_follow = out.pop("t_follow", None)
            if not self.args.follow_poll:     # after the probes only: an upper bound (not below the hold)
                t_follow = self._poll_following(fault.target, fault.t_inject + 10.0)
                out["follow_polled_after_hold"] = True
            out.update(self._master_timeline(fault, logs, t_follow))
            self.injector.heal(fault)
            # the killed replica restarts and must rejoin (as a backup) before the next trial
            ok = wait_for(lambda: all(isinstance(s, dict) for s in lab.master_states().values())
                          and lab.current_master() is not None, 20.0)
            out["rejoined"] = ok
            return out
        converged = self.converge(self.args.converge_timeout, min_version=(v0 or 0) + 1)
        out["converged"] = converged
        if not converged:
            out["problem"] = lab.convergence_problem()
        client_lines, master_lines = logs.read()
        out.update(self._failure_timeline(fault, client_lines, master_lines, v0))
        # --- heal
        v1 = lab.lsd_version()
        logs.mark()
        t_heal, t_heal_end = self.injector.heal(fault)
        out["heal_window_ms"] = ms(t_heal_end, t_heal)
        time.sleep(self.args.heal_hold)
        healed = self.converge(self.args.converge_timeout, min_version=(v1 or 0) + 1)
        out["healed"] = healed
        if not healed:
            out["heal_problem"] = lab.convergence_problem()
        client_lines, master_lines = logs.read()
        out["repair"] = self._repair_timeline(fault, t_heal, client_lines, master_lines, v1)
        return out

    def _failure_timeline(self, fault: Fault, clients: dict[str, list[LogLine]],
                          masters: dict[str, list[LogLine]], v0: int | None) -> dict[str, Any]:
        assert self.oracle is not None
        t0 = fault.t_inject
        affected = self.oracle.affected(fault.links, fault.dead_switch)
        detect = {}
        for sw, ports in fault.failed_ports.items():
            if sw == fault.dead_switch:
                continue
            for p in sorted(ports):
                detect[f"{sw}:{p}"] = ms(port_events(clients.get(sw, []), p, False, t0), t0)
        versions = [(ts, v, mid) for ts, v, mid in lsd_versions(masters) if ts >= t0 - 0.001
                    and (v0 is None or v > v0)]
        v_first = versions[0][1] if versions else None
        per_switch = {}
        for sw in affected:
            progs = [p for p in programmed(clients.get(sw, [])) if p.ts >= t0 - 0.001]
            local = sw in fault.failed_ports
            first = progs[0] if progs else None
            last = progs[-1] if progs else None
            by_lsd = next((p for p in progs if p.version is not None and v_first is not None
                           and p.version >= v_first), None)
            # repaired: traffic moved off the failed element -- an end by its local repair (the failed
            # port excluded from its groups), any other switch by programming the new LSD version
            if local:
                rep = next((p for p in progs if p.excluded & fault.failed_ports[sw]), None) or by_lsd
            else:
                rep = by_lsd
            per_switch[sw] = {
                "local": local,
                "repaired_ms": ms(rep.ts if rep else None, t0),
                "first_ms": ms(first.ts if first else None, t0),
                "last_ms": ms(last.ts if last else None, t0),
                "lsd_ms": ms(by_lsd.ts if by_lsd else None, t0),
                "rounds": len(progs),
                "program_ms": [p.ms for p in progs],
                "messages": [p.messages for p in progs],
            }
        unaffected_programmed = sorted(sw for sw, lines in clients.items()
                                       if sw not in affected and sw != fault.dead_switch
                                       and any(p.ts >= t0 - 0.001 for p in programmed(lines)))
        return {
            "t_inject": round(t0, 6),
            "affected": affected,
            "detect_ms": detect,
            "lsd_versions": [{"ms": ms(ts, t0), "version": v, "master": mid} for ts, v, mid in versions],
            "first_lsd_ms": ms(versions[0][0], t0) if versions else None,
            "switches": per_switch,
            "reprogrammed_ms": max((s["repaired_ms"] for s in per_switch.values() if s["repaired_ms"] is not None),
                                   default=None),
            "final_ms": max((s["last_ms"] for s in per_switch.values() if s["last_ms"] is not None), default=None),
            "missing_reprogram": sorted(sw for sw, s in per_switch.items() if s["repaired_ms"] is None),
            "also_programmed": unaffected_programmed,
        }

    def _repair_timeline(self, fault: Fault, t_heal: float, clients: dict[str, list[LogLine]],
                         masters: dict[str, list[LogLine]], v1: int | None) -> dict[str, Any]:
        assert self.oracle is not None
        up = {}
        for sw, ports in fault.failed_ports.items():
            for p in sorted(ports):
                up[f"{sw}:{p}"] = ms(port_events(clients.get(sw, []), p, True, t_heal), t_heal)
        versions = [(ts, v) for ts, v, _ in lsd_versions(masters) if v1 is None or v > v1]
        # every switch whose routes the failure had changed (and the revived switch itself) is back
        switches = set(self.oracle.affected(fault.links, fault.dead_switch)) | set(fault.failed_ports)
        per = {}
        for sw in sorted(switches):
            progs = programmed(clients.get(sw, []))
            last = progs[-1] if progs else None
            per[sw] = {"last_ms": ms(last.ts if last else None, t_heal), "rounds": len(progs),
                       "excluded_left": sorted(last.excluded) if last else None}
        back = [s["last_ms"] for s in per.values() if s["last_ms"] is not None]
        return {
            "port_usable_ms": up,
            "lsd_versions_ms": [ms(ts, t_heal) for ts, _ in versions],
            "switches": per,
            "back_in_use_ms": max(back) if back and len(back) == len(per) else None,
        }

    def _poll_following(self, killed: str, deadline: float) -> float | None:
        """Wall time at which every client's REST says it follows one master other than `killed` (polled
        every ~10 ms plus the round trip of 10 parallel GETs); None if not by `deadline`."""
        while time.time() < deadline:
            states = self.lab.client_states(timeout=0.5)
            masters = {s.get("master") for s in states.values() if isinstance(s, dict)}
            if len(masters) == 1 and None not in masters and killed not in masters:
                return time.time()
            time.sleep(0.01)
        return None

    def _master_timeline(self, fault: Fault, logs: Logs, t_follow: float | None) -> dict[str, Any]:
        t0 = fault.t_inject
        killed = fault.target
        _, master_lines = logs.read()
        elected = None
        new_master = None
        for mid, lines in master_lines.items():
            for ln in lines:
                if (ln.event == "role" and ln.fields.get("role") == "master" and mid != killed and ln.ts >= t0
                        and (elected is None or ln.ts < elected)):
                    elected, new_master = ln.ts, mid
        return {"t_inject": round(t0, 6), "killed": killed, "new_master": new_master,
                "elected_ms": ms(elected, t0), "clients_following_ms_polled": ms(t_follow, t0)}


def wait_for(pred: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if pred():
                return True
        except Exception:  # noqa: BLE001 - REST not up yet
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


# -------------------------------------------------------------------------------------------------- analysis
def flow_outages(trial: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for pr in trial.get("probe", []):
        for f in pr.get("flows", []):
            out.append({"pair": f"{pr['src']}->{pr['dst']}", "flow": f["flow"], "lost": f["lost"],
                        "loss_ms": f["loss_ms"], "gap_ms": f["max_gap_ms"], "net_gap_ms": f["max_net_gap_ms"]})
    return out


def analyse_kind(kind: str, trials: list[dict[str, Any]]) -> dict[str, Any]:
    flows = [f for t in trials for f in flow_outages(t)]
    affected = [f for f in flows if f["lost"] > 0]
    res: dict[str, Any] = {
        "kind": kind, "trials": len(trials),
        "flows": len(flows), "affected_flows": len(affected),
        "loss_ms_affected": summary(f["loss_ms"] for f in affected),
        "gap_ms_affected": summary(f["gap_ms"] for f in affected),
        "gap_ms_all_flows": summary(f["gap_ms"] for f in flows),
        "trial_worst_loss_ms": summary(max((f["loss_ms"] for f in flow_outages(t)), default=0) for t in trials),
        "trial_worst_gap_ms": summary(max((f["gap_ms"] or 0 for f in flow_outages(t)), default=0) for t in trials),
        "lost_packets_total": sum(f["lost"] for f in flows),
    }
    if kind == "baseline":
        return res
    if kind == "master_kill":
        res["elected_ms"] = summary(t.get("elected_ms") for t in trials)
        res["clients_following_ms_polled"] = summary(t.get("clients_following_ms_polled") for t in trials)
        return res
    sw_rows = [(sw, s) for t in trials for sw, s in t.get("switches", {}).items()]
    res["reprogram_ms_all"] = summary(s["repaired_ms"] for _, s in sw_rows)
    res["reprogram_ms_local"] = summary(s["repaired_ms"] for _, s in sw_rows if s["local"])
    res["reprogram_ms_remote"] = summary(s["repaired_ms"] for _, s in sw_rows if not s["local"])
    res["final_program_ms_all"] = summary(s["last_ms"] for _, s in sw_rows)
    res["first_program_ms_local"] = summary(s["first_ms"] for _, s in sw_rows if s["local"])
    res["program_duration_ms"] = summary(x for _, s in sw_rows for x in s["program_ms"])
    res["detect_ms"] = summary(v for t in trials for v in t.get("detect_ms", {}).values())
    res["first_lsd_ms"] = summary(t.get("first_lsd_ms") for t in trials)
    res["remote_lsd_program_ms"] = summary(s["lsd_ms"] for _, s in sw_rows if not s["local"])
    res["all_reprogrammed_ms"] = summary(t.get("reprogrammed_ms") for t in trials)
    res["all_final_ms"] = summary(t.get("final_ms") for t in trials)
    res["missing_reprogram"] = sum(len(t.get("missing_reprogram", [])) for t in trials)
    res["not_converged"] = sum(1 for t in trials if not t.get("converged", True))
    res["repair_back_in_use_ms"] = summary(t.get("repair", {}).get("back_in_use_ms") for t in trials)
    res["repair_port_usable_ms"] = summary(v for t in trials for v in t.get("repair", {}).get("port_usable_ms", {}).values())
    res["repair_first_lsd_ms"] = summary((t.get("repair", {}).get("lsd_versions_ms") or [None])[0] for t in trials)
    res["inject_window_ms"] = summary(t.get("inject_window_ms") for t in trials)
    return res


def verdicts(kind: str, a: dict[str, Any], scenario: str) -> dict[str, Any]:
    v: dict[str, Any] = {}

    def check(name: str, value: float | None, limit: float) -> None:
        v[name] = {"value": value, "limit": limit, "met": value is not None and value <= limit}

    if kind == "master_kill":
        check("new_master_elected_p99_ms", a["elected_ms"].get("p99") if a["elected_ms"]["n"] else None,
              TARGETS["master_serving_ms"])
        v["zero_probe_loss"] = {"value": a["lost_packets_total"], "limit": 0, "met": a["lost_packets_total"] == 0}
        return v
    if kind == "baseline":
        return v
    check("reprogram_p50_ms", a["reprogram_ms_all"].get("p50"), TARGETS["reprogram_p50_ms"])
    check("reprogram_p99_ms", a["reprogram_ms_all"].get("p99"), TARGETS["reprogram_p99_ms"])
    # outage judged both ways: lost x interval (counts every loss, also a CPU-starved datapath's scattered
    # drops) and the longest gap between arrivals (one contiguous outage) of the affected flows
    limit = TARGETS["silent_ms"] if kind == "silent" else TARGETS["outage_p50_ms"]
    name = "silent_outage" if kind == "silent" else "outage"
    check(f"{name}_p50_ms (lost x interval)",
          a["loss_ms_affected"].get("p50", 0.0) if a["affected_flows"] else 0.0, limit)
    check(f"{name}_p50_ms (max gap)", a["gap_ms_affected"].get("p50", 0.0) if a["affected_flows"] else 0.0, limit)
    check("repair_back_in_use_p50_ms", a["repair_back_in_use_ms"].get("p50"), TARGETS["repair_ms"])
    return v


def fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.1f}"
    return str(x)


def print_tables(report: dict[str, Any]) -> None:
    print()
    hdr = (f"{'scenario':<11}{'kind':<12}{'n':>3} {'detect':>7} {'1st LSD':>8} {'repr p50':>9} {'p99':>7} "
           f"{'local':>6} {'remote':>7} {'outage p50':>11} {'p99':>7} {'gap p50':>8} {'max':>7} "
           f"{'aff/fl':>7} {'repair':>7} {'paper':>6}")
    print(hdr)
    print("-" * len(hdr))
    for sc in report["scenarios"]:
        if sc.get("error"):
            print(f"{sc['name']:<11}aborted: {sc['error'][:150]}")
        for a in sc["kinds"]:
            k = a["kind"]
            if k == "master_kill":
                print(f"{sc['name']:<11}{k:<12}{a['trials']:>3} elected p50 {fmt(a['elected_ms'].get('p50'))} ms, "
                      f"p99 {fmt(a['elected_ms'].get('p99'))} ms; clients following (polled) p50 "
                      f"{fmt(a['clients_following_ms_polled'].get('p50'))} ms; probe packets lost "
                      f"{a['lost_packets_total']}")
                continue
            if k == "baseline":
                print(f"{sc['name']:<11}{k:<12}{a['trials']:>3} (no failure) flows {a['flows']}, lost "
                      f"{a['lost_packets_total']}, per-flow max gap p50 {fmt(a['gap_ms_all_flows'].get('p50'))} "
                      f"p99 {fmt(a['gap_ms_all_flows'].get('p99'))} max {fmt(a['gap_ms_all_flows'].get('max'))} ms")
                continue
            print(f"{sc['name']:<11}{k:<12}{a['trials']:>3} {fmt(a['detect_ms'].get('p50')):>7} "
                  f"{fmt(a['first_lsd_ms'].get('p50')):>8} {fmt(a['reprogram_ms_all'].get('p50')):>9} "
                  f"{fmt(a['reprogram_ms_all'].get('p99')):>7} {fmt(a['reprogram_ms_local'].get('p50')):>6} "
                  f"{fmt(a['reprogram_ms_remote'].get('p50')):>7} {fmt(a['loss_ms_affected'].get('p50')):>11} "
                  f"{fmt(a['loss_ms_affected'].get('p99')):>7} {fmt(a['gap_ms_affected'].get('p50')):>8} "
                  f"{fmt(a['gap_ms_affected'].get('max')):>7} {a['affected_flows']:>3}/{a['flows']:<3} "
                  f"{fmt(a['repair_back_in_use_ms'].get('p50')):>7} {fmt(PAPER_TABLE4_MS.get(k)):>6}")
    print("\ncolumns (ms, p50 over trials x switches / flows unless noted): detect = inject -> `port_state usable=False` at an "
          "end; 1st LSD = inject -> master's new LSD version; repr = inject -> an affected switch's traffic moved "
          "off the failure (`programmed` line: local repair at an end, the new LSD elsewhere); outage = lost x interval per affected flow; "
          "gap = longest arrival gap of affected flows; repair = heal -> every affected switch programmed again")
    for sc in report["scenarios"]:
        if sc.get("bringup"):
            for b in sc["bringup"]:
                print(f"bring-up {sc['name']}: lab up -> full ECMP {fmt(b.get('lab_up_to_full_ecmp_s'))} s "
                      f"(plumbing {fmt(b.get('plumbing_s'))} s, daemons -> all clients connected "
                      f"{fmt(b.get('daemons_to_all_connected_s'))} s, all connected -> full ECMP "
                      f"{fmt(b.get('all_connected_to_full_ecmp_s'))} s; full ECMP: {b.get('full_ecmp')})")
    print("\ntargets:")
    for sc in report["scenarios"]:
        for k, vs in sc.get("verdicts", {}).items():
            for name, v in vs.items():
                print(f"  {sc['name']:<11}{k:<12}{name:<36} {fmt(v['value']):>8} <= {v['limit']:<6} "
                      f"{'met' if v['met'] else 'MISSED'}")


def run_scenario(bench: Bench, sc: Scenario, trials: int, kinds: list[str] | None) -> dict[str, Any]:
    args = bench.args
    out: dict[str, Any] = {"name": sc.name, "clos": sc.clos, "timers": dict(override_timers(sc.timers, args.timer)),
                           "bringup": [],
                           "kinds": [], "verdicts": {}, "trials": {}}
    nd_dead = dict(sc.timers).get("nd_dead_ms", 30) / 1000.0
    bringups = 1 if args.quick else sc.bringups
    try:
        for b in range(bringups):
            bench.log(f"[{sc.name}] lab up ({b + 1}/{bringups}) load {os.getloadavg()[0]:.2f}")
            if b > 0:
                bench.lab_down()
            out["bringup"].append(bench.lab_up(sc))
            bench.log(f"    {json.dumps(out['bringup'][-1])}")
        out["fabric"] = {"switches": len(bench.lab.fabric.switches), "links": len(bench.lab.fabric.links),
                         "hosts": len(bench.lab.fabric.hosts), "masters": len(bench.lab.fabric.masters)}
        out["loadavg_start"] = os.getloadavg()
        if args.idle_s > 0:
            bench.settle(quiet=0.5, timeout=15.0)
            out["idle"] = bench.idle(args.idle_s)
            bench.log(f"    idle {args.idle_s:g}s: clients {out['idle']['clients']} "
                      f"ovs-vswitchd {out['idle']['ovs_vswitchd']} load {out['idle']['loadavg'][0]:.2f}")
        if args.soak_s > 0:
            out["soak"] = bench.soak(args.soak_s)
            bench.log(f"    soak {args.soak_s:g}s: {out['soak']}")
        for kind in sc.kinds:
            if kinds and kind not in kinds:
                continue
            hold = args.hold + (3 * nd_dead if kind == "silent" else 0.0)
            n = max(2, trials // 2) if kind == "baseline" else trials
            if bench.settle(quiet=0.5, timeout=15.0) is None:
                bench.log(f"    [{sc.name}] not settled before {kind}; running anyway")
            rows = []
            for i in range(n):
                try:
                    t = bench.trial(kind, i, hold)
                except Exception as e:  # noqa: BLE001 - a failed trial is recorded, the run goes on
                    t = {"kind": kind, "trial": i, "error": repr(e), "traceback": traceback.format_exc()}
                    bench.log(f"    trial {kind} {i} failed: {e!r}")
                    with contextlib.suppress(Exception):
                        from lab import inject

                        inject.heal(bench.lab)
                        bench.converge(10.0)
                rows.append(t)
                brief = {k: t.get(k) for k in ("target", "reprogrammed_ms", "first_lsd_ms", "elected_ms",
                                               "converged", "error") if k in t}
                lost = sum(p.get("lost", 0) for p in t.get("probe", []))
                bench.log(f"    {kind} #{i}: {brief} lost={lost} "
                          f"repair={t.get('repair', {}).get('back_in_use_ms')}")
                time.sleep(args.gap)
            good = [t for t in rows if "error" not in t]
            a = analyse_kind(kind, good)
            a["errors"] = len(rows) - len(good)
            out["kinds"].append(a)
            out["verdicts"][kind] = verdicts(kind, a, sc.name)
            out["trials"][kind] = rows
        out["loadavg_end"] = os.getloadavg()
    except Exception as e:  # noqa: BLE001 - e.g. the fabric never converged: recorded, next scenario
        out["error"] = repr(e)
        bench.log(f"[{sc.name}] aborted: {e!r}")
    finally:
        bench.lab_down()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_convergence", description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2 trials per kind, one bring-up")
    ap.add_argument("--hogs", type=int, default=0,
                    help="run N CPU-bound processes (python -c 'while 1: pass') for the whole run, killed by PID after")
    ap.add_argument("--trials", type=int, default=None, help="trials per kind (default 20, quick 2)")
    ap.add_argument("--scenarios", default=",".join(DEFAULT_SCENARIOS),
                    help=f"comma-separated, of {', '.join(SCENARIOS)} (default {','.join(DEFAULT_SCENARIOS)})")
    ap.add_argument("--kinds", default="", help="only these kinds (comma-separated)")
    ap.add_argument("--name", default="bench", help="lab name (namespaces fplab-NAME*)")
    ap.add_argument("--timer", action="append", default=[], metavar="KEY=VALUE",
                    help="override a timer in every scenario, e.g. oam_interval_ms=5 (repeatable)")
    ap.add_argument("--soak-s", type=float, default=0.0,
                    help="after the idle measurement, idle this long and count flaps (LSD versions, ports)")
    ap.add_argument("--idle-s", type=float, default=10.0,
                    help="after bring-up, idle this long and record CPU/RSS per daemon (0: skip)")
    ap.add_argument("--flows", type=int, default=4, help="flows per probe (2 probes per trial)")
    ap.add_argument("--rate", type=float, default=1000.0, help="packets/s per flow")
    ap.add_argument("--pre", type=float, default=0.25, help="s of probe before the failure")
    ap.add_argument("--hold", type=float, default=0.4, help="s of probe after the failure (+3 x nd_dead for silent)")
    ap.add_argument("--heal-hold", type=float, default=0.3, help="s after the repair before checking convergence")
    ap.add_argument("--gap", type=float, default=0.1, help="s between trials")
    ap.add_argument("--converge-timeout", type=float, default=10.0)
    ap.add_argument("--up-timeout", type=float, default=90.0)
    ap.add_argument("--ovs-per-switch", action="store_true",
                    help="one OVS instance per switch in its own namespace (`lab up --ovs-per-switch`)")
    ap.add_argument("--no-follow-poll", dest="follow_poll", action="store_false",
                    help="master kill: do not poll the clients' REST during the probe (the poll load costs the "
                         "software datapath packets); clients-following time is then only known after the hold")
    ap.add_argument("--output", type=Path, default=RESULTS)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    from lab.fabric import preflight

    problem = preflight()
    if problem:
        print(problem, file=sys.stderr)
        return 2
    trials = args.trials or (2 if args.quick else 20)
    names = [s for s in args.scenarios.split(",") if s]
    unknown = [s for s in names if s not in SCENARIOS]
    if unknown:
        ap.error(f"unknown scenario(s) {unknown}")
    kinds = [k for k in args.kinds.split(",") if k] or None

    def log(msg: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)

    bench = Bench(args, log)
    report: dict[str, Any] = {
        "benchmark": "convergence", "quick": args.quick, "trials_per_kind": trials,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": {"cpus": os.cpu_count(), "loadavg_start": os.getloadavg(), "python": sys.version.split()[0]},
        "probe": {"flows_per_probe": args.flows, "probes_per_trial": 2, "rate_pps_per_flow": args.rate},
        "targets": TARGETS, "paper_table4_ms": PAPER_TABLE4_MS, "scenarios": [],
    }
    signal.signal(signal.SIGTERM, _interrupt)
    from bench.hogs import CpuHogs

    hogs = CpuHogs(args.hogs).__enter__()
    report["host"]["hogs"] = args.hogs
    try:
        for name in names:
            report["scenarios"].append(run_scenario(bench, SCENARIOS[name], trials, kinds))
            _write(args.output, report)
    except KeyboardInterrupt:
        log("interrupted: writing what was measured")
    finally:
        bench.lab_down()
        hogs.__exit__(None, None, None)
        report["host"]["loadavg_end"] = os.getloadavg()
        report["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        _write(args.output, report)
    print_tables(report)
    print(f"\nwrote {args.output}  (load average at the end {os.getloadavg()[0]:.2f} on {os.cpu_count()} cpus)")
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _write(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1, default=str) + "\n")


if __name__ == "__main__":
    sys.exit(main())
