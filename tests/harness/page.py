"""The topology page's worlds and probes, shared by tests/test_page_browser.py and bench/bench_page.py.

    with demo_world(tmp) as (cluster, fleet, pump):      # 3 masters, the 3-tier demo fabric, scripted switches
        ready_ms, wall = open_page(driver, cluster.rest_port[leader])
        t = fail_port(pump, fleet, "tor-1-1", 1)         # the report leaves at wall time t
        applied = wait_link(driver, "tor-1-1:1-agg-1-1:1", "down")   # the page's wall time, or None

`jupiter_world` is one master with the Jupiter preset (30,088 switches, 134,400 links) whose pod 1 (234
switches) is played by scripted switches. Times are wall-clock seconds unless a name says ms.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from proto.auth import KeyRing
from tests.harness.browser import PumpThread, wait_js
from tests.harness.loopcluster import LoopCluster
from tests.harness.simclient import SimFleet

TOKEN = "page-browser-token"
TIMERS = (("hello_interval_ms", 50), ("master_dead_ms", 400))
BRING_UP = 60.0
JUPITER_UP = 230 * 4          # pod 1's ToR-agg links, reported up by the scripted switches

World = tuple[LoopCluster, SimFleet, PumpThread]


@contextlib.contextmanager
def demo_world(tmp: Path) -> Iterator[World]:
    """Three masters on loopback and every switch of the demo fabric (2 spines, 2 pods of 2 aggs + 2 ToRs)
    scripted, converged with every link up. AssertionError if it does not come up within BRING_UP s."""
    cluster = LoopCluster(tmp, masters=3, timers=TIMERS, admin_token=TOKEN,
                          name="demo", pods=2, spines=2, aggs_per_pod=2, tors_per_pod=2, leaves=0)
    fleet = SimFleet(cluster.fabric, KeyRing.load(cluster.fabric.security.key_file), cluster.client_addr,
                     n_sockets=2)
    pump = PumpThread(fleet)
    try:
        cluster.start_all()
        fleet.report()
        pump.start()
        assert cluster.wait(lambda: cluster.single_master(), BRING_UP), cluster.versions()
        up = bytes([1]) * len(cluster.fabric.links)

        def converged() -> bool:
            got = cluster.single_master()
            with pump.lock:
                return bool(got) and fleet.converged(got[1]["term"], got[1]["version"], up)

        assert cluster.wait(converged, BRING_UP), "scripted switches did not converge"
        yield cluster, fleet, pump
    finally:
        pump.stop()
        cluster.stop_all()
        fleet.close()


@contextlib.contextmanager
def jupiter_world(tmp: Path) -> Iterator[World]:
    """One master with the Jupiter preset; pod 1's 234 switches scripted, their JUPITER_UP links up."""
    cluster = LoopCluster(tmp, masters=1, name="jupiter", spines=128, pods=128, aggs_per_pod=4,
                          tors_per_pod=230, hosts_per_tor=0, border_pods=2, planes=4, leaves=0)
    f = cluster.fabric
    assert (len(f.switches), len(f.links)) == (30_088, 134_400)
    # The scripted switches report and ignore LSD updates (a 134,400-link snapshot per switch would only
    # load this machine). Unacked reports are retried every 1 s: they have no backoff (the real client has),
    # and at the default 50 ms a master slowed for a moment gets a retry storm that delays it for minutes.
    # They refresh every 5 s (switch_dead is 15 s), not 0.5 s: on a loaded 2-core machine 470 reports/s
    # with their acks keep the master itself a second behind, which is not what the page is measured on.
    played = [s.name for s in f.switches if s.name.startswith(("agg-1-", "tor-1-"))]
    fleet = SimFleet(f, KeyRing.load(f.security.key_file), cluster.client_addr, names=played, ack_updates=False,
                     report_retry=1.0, report_refresh=5.0)
    pump = PumpThread(fleet, skip_lsd=True)
    try:
        cluster.start_all()
        fleet.report()
        pump.start()
        # Only pod 1 reports, so this cold mastership holds its first LSD from the clients for switch_dead
        # (derived from the fabric's size: 72 s at Jupiter size, proto.budget). The page shows a held master
        # as it shows any other ("(holding)"): an operator watches a cold start on it. Not waiting for the
        # hold to end keeps this test ~70 s shorter.
        assert cluster.wait(lambda: cluster.masters_now(), 240), cluster.versions()
        assert cluster.wait(lambda: count_up(cluster) == JUPITER_UP, 60), count_up(cluster)
        yield cluster, fleet, pump
    finally:
        pump.stop()
        cluster.stop_all()
        fleet.close()


def count_up(cluster: LoopCluster, mid: str = "m1") -> int:
    """Links up in master `mid`'s LSD (-1 if it does not answer)."""
    v = cluster.get(mid, "/v1/lsd", 5.0)
    return sum(1 for s in v["links"].values() if s == "up") if isinstance(v, dict) else -1


def link_between(cluster: LoopCluster, a: str, b: str) -> str:
    return next(lk.name for lk in cluster.fabric.links if {lk.a.switch, lk.b.switch} == {a, b})


def lsd_state(cluster: LoopCluster, mid: str, link: str) -> str | None:
    v = cluster.get(mid, "/v1/lsd", 2.0)
    return v["links"][link] if isinstance(v, dict) else None


def fail_port(pump: PumpThread, fleet: SimFleet, switch: str, port: int, up: bool = False) -> float:
    """Make `switch` report `port` (un)usable; returns the wall time just before the report leaves."""
    with pump.lock:
        sw = fleet.switches[switch]
        fleet.set_usable(switch, (sw.usable | {port}) if up else (sw.usable - {port}))
        t = time.time()
        fleet.report([switch])
    return t


def fail_link(pump: PumpThread, fleet: SimFleet, link: Any, up: bool = False) -> float:
    """Make both ends of `link` (a proto.config link) report it (un)usable, as a cut cable is seen: one end
    alone is uncorroborated evidence, which the master's guard holds back beyond a budget. Returns the wall
    time just before the first report leaves."""
    with pump.lock:
        for end in (link.a, link.b):
            sw = fleet.switches[end.switch]
            fleet.set_usable(end.switch, (sw.usable | {end.port}) if up else (sw.usable - {end.port}))
        t = time.time()
        fleet.report([link.a.switch, link.b.switch])
    return t


def open_page(driver: Any, port: int) -> tuple[float, float]:
    """Navigate to a master's page; (ms from navigation start to the first drawing, wall seconds).
    AssertionError (with the page's text) if it is not drawn within 30 s."""
    t0 = time.monotonic()
    driver.get(f"http://127.0.0.1:{port}/")
    ready = wait_js(driver, "return window.fp && fp.ready && fp.readyAt", 30)
    assert ready, driver.execute_script("return document.body.innerText")
    return float(ready), time.monotonic() - t0


def page_links(driver: Any) -> dict[str, str]:
    return driver.execute_script(
        "return Object.fromEntries([...document.querySelectorAll('#topo [data-link]')]"
        ".map(e => [e.dataset.link, e.dataset.state]))")


def wait_link(driver: Any, name: str, state: str, timeout: float = 5.0) -> float | None:
    """Wait until the page shows `name` in `state`; the page's wall time (s) when it applied the change."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = driver.execute_script(
            "const e = document.querySelector(`#topo [data-link=\"${arguments[0]}\"]`);"
            "return e && e.dataset.state === arguments[1] ? (fp.appliedAt[e.dataset.i] || -1) : null", name, state)
        if got is not None:
            return got / 1000.0
        time.sleep(0.01)
    return None


def wait_pod_down(driver: Any, link_index: int, down: int, timeout: float = 5.0) -> float | None:
    """Jupiter's aggregated view: wait until pod 1's row counts `down` links down and the page applied link
    `link_index`; the page's wall time (ms) when it applied it, else None."""
    got = wait_js(driver, "const r = document.querySelector('#groups tr[data-group=\"pod 1\"]');"
                          f"return r.cells[6].textContent === '{down}' && fp.appliedAt[{link_index}]", timeout)
    return float(got) if got else None
