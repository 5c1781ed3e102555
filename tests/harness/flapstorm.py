"""A flap storm against a real master process: one scripted switch (valid key) reports a port down and up
every `period` seconds (issue #19 item 5). Shared by tests/test_master_damping_loopback.py and
bench/bench_damping.py.

    stats = flap_storm(fleet, "leaf-1", 1, duration=2.0, period=0.001)
    # {"reports": 2000, "elapsed": 2.0, "deltas": {switch: LsdDeltas it received during the storm}, ...}
"""

from __future__ import annotations

import time
from typing import Any

from tests.harness.simclient import SimFleet


def flap_storm(fleet: SimFleet, switch: str, port: int, *, duration: float, period: float,
               during: Any = None) -> dict[str, Any]:
    """Alternate `switch`'s `port` unusable/usable every `period` for `duration` s (each a new full report,
    pumping the fleet in between, so every switch applies and acknowledges what the master sends), then
    leave the port usable. `during(elapsed)` is called between reports (e.g. to fail another link once).
    Returns what was sent and what every switch received meanwhile."""
    sw = fleet.switches[switch]
    all_ports = set(fleet.fabric.fabric_ports(switch))
    before = {name: dict(s.counts) for name, s in fleet.switches.items()}
    t0 = time.monotonic()
    next_at = t0
    k = 0
    while True:
        now = time.monotonic()
        if now - t0 >= duration:
            break
        fleet.set_usable(switch, all_ports - {port} if k % 2 == 0 else all_ports)
        fleet.report([switch], now)
        k += 1
        if during is not None:
            during(now - t0)
        next_at += period
        fleet.pump(max(0.0, next_at - time.monotonic()))
    elapsed = time.monotonic() - t0
    fleet.set_usable(switch, all_ports)
    fleet.report([switch])
    delta = {name: s.counts["delta"] - before[name]["delta"] for name, s in fleet.switches.items()}
    full = {name: s.counts["full"] - before[name]["full"] for name, s in fleet.switches.items()}
    return {"reports": k, "elapsed": elapsed, "deltas": delta, "fulls": full, "last_seq": sw.report_seq}


def metric(text: str, name: str, labels: str = "") -> float:
    """The value of one series in a Prometheus exposition (0 if absent): `labels` like 'kind="suppress"'."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            if series == name or (labels and series.startswith(name + "{") and labels in series):
                total += float(value)
    return total
