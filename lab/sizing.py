"""What this machine can sustain: liveness timers sized to the fabric (issue #20).

Two liveness mechanisms cost CPU per frame, so the timers a lab can run depend on its size:

- software ND (`liveness: nd`, or a port that fell back): ~0.34 ms of CPU per frame end to end (client +
  ovs-vswitchd, os-ken packet-in/out); `nd_load_warning` says when the fabric's `nd_interval` does not fit;
- link OAM (CFM in ovs-vswitchd, the default): ~37 us of ovs-vswitchd per continuity message sent or
  received, i.e. 2 endpoints per link x 2 frames per interval. At the fabric default of 10 ms a 2 x 4
  leaf-spine (16 endpoints) costs ~0.12 core, a 4 x 16 (128 endpoints) ~0.95 core and a 48-switch
  3-tier (~290 endpoints) more than the 2 cores of this machine. In the userspace datapath the CCMs are
  handled by ovs-vswitchd's main thread, which also serves OpenFlow and OVSDB: a late thread misses 3.5
  intervals and CFM faults every link at once (the "all links drop together" storm measured under two CPU
  hogs, BENCHMARKS "Bring-up and stability under CPU load"). `oam_interval_fit` gives the shortest
  interval whose CFM load stays within OAM_CPU_BUDGET of one core; the lab uses it for generated configs
  (with a warning) and warns about a given config whose `oam_interval_ms` is shorter.
"""

from __future__ import annotations

import math
import os
from typing import Any

# Software ND cost (issue #20, measured on this 2-core machine, userspace OVS): ~120 us of client CPU plus
# ~50 us of ovs-vswitchd for every ND frame sent or received, i.e. ~0.34 ms per frame from one end to the
# other. ND_CPU_BUDGET: the share of the machine's cores ND may take before links flap under load (the
# 10-switch demo fabric at ND 30/150 needs ~0.36 core of 2 and collapsed under load; 50/250, ~0.22, holds).
ND_FRAME_COST_S = 0.34e-3
ND_CPU_BUDGET = 0.15

# CFM cost: ~37 us of ovs-vswitchd per CCM sent or received (issue #20's measurement; the lab's 2 x 4 at
# 10 ms: 3,200 CCM/s, ovs-vswitchd 9.3 % of a core = 29 us each). OAM_CPU_BUDGET: the share of ONE core the
# CFM of a lab may take (ovs-vswitchd's main thread is one thread): 0.25 keeps the 2 x 4 and the 10-switch
# 3-tier at 10 ms and puts the 4 x 16 at 40 ms. OAM_MIN_INTERVAL_MS: the fabric default, the fastest
# interval measured stable here.
CFM_FRAME_COST_S = 37e-6
OAM_CPU_BUDGET = 0.25
OAM_MIN_INTERVAL_MS = 10


def oam_endpoints(fabric: Any) -> int:
    """CFM endpoints of a fabric: both ends of every switch-to-switch link."""
    return 2 * len(fabric.links)


def oam_cpu(endpoints: int, interval_ms: float) -> float:
    """Cores of ovs-vswitchd the CCMs take: each endpoint sends one and receives one per interval."""
    return endpoints * 2 / (interval_ms / 1000.0) * CFM_FRAME_COST_S


def oam_interval_fit(endpoints: int, budget: float = OAM_CPU_BUDGET) -> int:
    """The shortest CFM interval (ms, a multiple of 10, at least OAM_MIN_INTERVAL_MS) within `budget`."""
    need_ms = endpoints * 2 * CFM_FRAME_COST_S / budget * 1000.0
    return max(OAM_MIN_INTERVAL_MS, int(math.ceil(need_ms / 10.0 - 1e-9)) * 10)


def oam_load_warning(fabric: Any) -> str | None:
    """A warning when the fabric runs CFM at an interval this machine cannot sustain; else None."""
    if getattr(fabric, "liveness", "oam") != "oam":
        return None
    interval_ms = fabric.timers.oam_interval * 1000.0
    endpoints = oam_endpoints(fabric)
    fit = oam_interval_fit(endpoints)
    if interval_ms >= fit:
        return None
    return (f"CFM every {interval_ms:g} ms on {endpoints} link ends needs ~{oam_cpu(endpoints, interval_ms):.2f} "
            f"core of ovs-vswitchd (~{CFM_FRAME_COST_S * 1e6:.0f} us per CCM), more than the "
            f"{OAM_CPU_BUDGET:g} it can spare: a late ovs-vswitchd faults every link at once. "
            f"A timer that fits here: oam_interval_ms: {fit}.")


def nd_load_warning(fabric: Any, cores: int | None = None) -> str | None:
    """A warning when software ND at the fabric's `nd_interval` needs more CPU than this machine can give
    it (ND_CPU_BUDGET of its cores at ND_FRAME_COST_S per frame), with timers that would fit; else None.
    None with `liveness: oam` (ovs-vswitchd's CFM is the heartbeat; ND runs at the identity cadence)."""
    if getattr(fabric, "liveness", "nd") == "oam":
        return None
    cores = cores or os.cpu_count() or 1
    links = len(fabric.links)
    interval = fabric.timers.nd_interval
    need = links * 2 / interval * ND_FRAME_COST_S          # one frame each way per link and interval
    budget = ND_CPU_BUDGET * cores
    if need <= budget:
        return None
    fit_ms = -(-links * 2 * ND_FRAME_COST_S / budget * 1000 // 10) * 10   # rounded up to 10 ms
    dead_ratio = fabric.timers.nd_dead / interval
    return (f"ND every {interval * 1000:g} ms on {links} links needs ~{need:.2f} core(s) of this machine's "
            f"{cores} (~{ND_FRAME_COST_S * 1e3:.2f} ms of CPU per ND frame, client + ovs-vswitchd), more "
            f"than the {budget:.2f} it can spare: links will flap and be damped. Timers that fit here: "
            f"nd_interval_ms: {fit_ms:g}, nd_dead_ms: {fit_ms * max(dead_ratio, 5):g}.")


# Memory per switch of a lab (BENCHMARKS: a lab client's PSS 19-20 MiB with the zygote, RSS 46 MiB; a bridge
# and its ports in ovs-vswitchd a few MiB): LAB_SWITCH_MIB with daemons, LAB_BRIDGE_MIB without
# (`--no-daemons`). A lab that would need more than LAB_MEMORY_SHARE of what the machine has available is
# refused before anything is built: `lab up --config` of the Jupiter preset (30,088 switches, `config clos
# --preset jupiter` in the README's quick tour) started building 30,088 bridges and clients (~600 GB).
LAB_SWITCH_MIB = 25
LAB_BRIDGE_MIB = 5
LAB_MEMORY_SHARE = 0.8


def mem_available_mib() -> int | None:
    """MemAvailable of /proc/meminfo in MiB, None where it cannot be read."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def lab_memory_problem(fabric: Any, daemons: bool = True, available_mib: int | None = None) -> str | None:
    """Why this machine cannot hold a lab of `fabric` (its estimated memory over LAB_MEMORY_SHARE of
    MemAvailable), or None. `available_mib` defaults to /proc/meminfo's; None there: no check."""
    available = mem_available_mib() if available_mib is None else available_mib
    if available is None:
        return None
    n = len(fabric.switches)
    per = LAB_SWITCH_MIB if daemons else LAB_BRIDGE_MIB
    need = n * per
    if need <= LAB_MEMORY_SHARE * available:
        return None
    fit = int(LAB_MEMORY_SHARE * available // per)
    return (f"{fabric.source}: {n} switches need ~{need / 1024:.1f} GiB for a lab (~{per} MiB a switch: "
            f"{'its client and ' if daemons else ''}its bridge), more than {LAB_MEMORY_SHARE:.0%} of the "
            f"{available / 1024:.1f} GiB this machine has available: at most ~{fit} switches fit here. "
            f"Nothing was built. A fabric of this size is for the scale benchmarks (bench.bench_scale, "
            f"bench.bench_coldstart), not a lab")
