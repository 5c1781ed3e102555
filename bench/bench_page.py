"""The topology page's speed targets in a real headless Chromium (the topology page issue): the Jupiter page
(30,088 switches, 134,400 links) drawn within 3 s of navigation, and a failed link on the page within 1 s of
the port report leaving its switch — on the 3-tier demo fabric (three masters) and on Jupiter (one master).

    python -m bench.bench_page [--trials N] [--only demo|jupiter]

The worlds are those of tests/test_page_browser.py (tests/harness/page.py): real `firepath master` processes
on loopback, scripted switches over real UDP. Per trial: a link fails (both ends report it, as a cut cable
is seen; a report leaves), the page's
wall time when it applied the change is read from the page (`fp.appliedAt`), then the link is repaired.
The Jupiter page is opened afresh `--trials` times (navigation start → first drawing, `fp.readyAt`).
Prints one row per figure (n, p50, max, target) with the load average before and after.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.stats import summary
from tests.harness.browser import browser_missing, chromium, wait_js
from tests.harness.page import demo_world, fail_link, jupiter_world, open_page, wait_link, wait_pod_down

OPEN_TARGET_MS = 3000.0
LIVE_TARGET_MS = 1000.0
DEMO_PORTS = (("tor-1-1", 1), ("tor-1-2", 2), ("tor-2-1", 1), ("tor-2-2", 2), ("agg-1-1", 3), ("agg-2-2", 4))


def _load() -> str:
    return Path("/proc/loadavg").read_text().split(" ")[0]


def _link_of(fabric: Any, switch: str, port: int) -> Any:
    return next(lk for lk in fabric.links if (lk.a.switch, lk.a.port) == (switch, port)
                or (lk.b.switch, lk.b.port) == (switch, port))


def demo(driver: Any, tmp: Path, trials: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"demo: failed link on the page (ms)": [],
                                   "demo: repaired link on the page (ms)": []}
    with demo_world(tmp) as (cluster, fleet, pump):
        leader, _ = cluster.single_master()  # type: ignore[misc]
        open_page(driver, cluster.rest_port[leader])
        for i in range(trials):
            switch, port = DEMO_PORTS[i % len(DEMO_PORTS)]
            lk = _link_of(cluster.fabric, switch, port)
            link = lk.name
            for up, key in ((False, "failed"), (True, "repaired")):
                t = fail_link(pump, fleet, lk, up=up)
                applied = wait_link(driver, link, "up" if up else "down", 10.0)
                if applied is None:
                    from tests.harness.page import lsd_state, page_links
                    raise SystemExit(f"demo trial {i}: {link} never turned {'up' if up else 'down'} on the page "
                                     f"(page: {page_links(driver).get(link)}, LSD: {lsd_state(cluster, leader, link)})")
                out[f"demo: {key} link on the page (ms)"].append(1000.0 * (applied - t))
                time.sleep(0.2)
    return out


def jupiter(driver: Any, tmp: Path, trials: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"jupiter: page drawn from navigation (ms)": [],
                                   "jupiter: failed link counted in its pod (ms)": []}
    with jupiter_world(tmp) as (cluster, fleet, pump):
        f = cluster.fabric
        down = 128                                  # pod 1's agg-spine links: nobody reports the spines
        for i in range(trials):
            ready_ms, _ = open_page(driver, cluster.rest_port["m1"])
            out["jupiter: page drawn from navigation (ms)"].append(ready_ms)
            assert wait_js(driver, "return fp.mode === 'groups'", 5)
            switch = f"tor-1-{i + 1}"
            link = _link_of(f, switch, 2)
            t = fail_link(pump, fleet, link)
            applied = wait_pod_down(driver, link.index, down + 1, 10.0)
            if applied is None:
                raise SystemExit(f"jupiter trial {i}: {link.name} not counted down in pod 1 on the page")
            out["jupiter: failed link counted in its pod (ms)"].append(applied - 1000.0 * t)
            fail_link(pump, fleet, link, up=True)
            if wait_pod_down(driver, link.index, down, 10.0) is None:
                raise SystemExit(f"jupiter trial {i}: {link.name} not counted up again in pod 1 on the page")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench_page", description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=10, help="link failures (and Jupiter page loads) per world")
    ap.add_argument("--only", choices=("demo", "jupiter"), default=None)
    args = ap.parse_args(argv)
    if not 1 <= args.trials <= 100:
        ap.error("--trials must be within 1..100")
    missing = browser_missing()
    if missing:
        print(f"bench_page: {missing}", file=sys.stderr)
        return 2
    load0 = _load()
    rows: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="fp-bench-page-") as d, chromium(Path(d)) as driver:
        if args.only in (None, "demo"):
            rows.update(demo(driver, Path(d) / "demo", args.trials))
        if args.only in (None, "jupiter"):
            rows.update(jupiter(driver, Path(d) / "jupiter", args.trials))
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  load {load0} -> {_load()}  trials {args.trials}")
    print(f"{'figure':48}{'n':>4}{'p50':>9}{'max':>9}{'target':>9}  verdict")
    for name, values in rows.items():
        s = summary(values, digits=1)
        target = OPEN_TARGET_MS if "drawn" in name else LIVE_TARGET_MS
        verdict = "met" if s["max"] <= target else "missed"
        print(f"{name:48}{s['n']:>4}{s['p50']:>9}{s['max']:>9}{target:>9.0f}  {verdict} (max)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
