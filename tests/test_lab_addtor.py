"""A rack added to a running 3-tier fabric (issue #21's target), on real Open vSwitch.

`firepath config add-tor --like tor-2-2 --write` grows the lab's fabric.yaml additively (proto/addtor.py),
then `lab reload all --grow` builds the new ToR's bridge, veths and host and rolls the change out (prepare,
every client moved by SIGHUP, commit). Probes on every existing host pair run throughout: no pair loses more
than a loaded machine's restart noise; the new host reaches every other host soon after the commit.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.fabric import LAB_DEFAULT_TIMERS, Lab, load_fabric, wait_until
from proto.cli import main as firepath
from tests.harness.labs import running_lab

ovs = pytest.mark.ovs

TIMERS = tuple((k, v) for k, v in LAB_DEFAULT_TIMERS if k not in ("nd_interval_ms", "nd_dead_ms", "oam_interval_ms")) \
    + (("nd_interval_ms", 100), ("nd_dead_ms", 500), ("oam_interval_ms", 100))
CLOS3 = {"spines": 2, "pods": 2, "aggs_per_pod": 2, "tors_per_pod": 2, "hosts_per_tor": 1, "masters": 1,
         "timers": TIMERS}


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with running_lab("at", CLOS3) as the_lab:
        yield the_lab


@ovs
def test_a_tor_with_a_host_joins_a_running_three_tier_fabric(lab: Lab) -> None:
    assert lab.wait_converged(60.0, holds_ok=False), lab.convergence_problem(holds_ok=False)
    old_hosts = [h.name for h in lab.fabric.hosts]
    assert len(old_hosts) == 4
    assert firepath(["config", "add-tor", lab.state.config, "--like", "tor-2-2", "--write"]) == 0
    assert load_fabric(lab.state.config).switch("tor-2-3").hosts[0].name == "h-2-3-1"
    pairs = [(a, b) for a in old_hosts for b in old_hosts if a != b]
    probes = [lab.probe(a, b, flows=2, rate=100.0, port=7500 + i) for i, (a, b) in enumerate(pairs)]
    for p in probes:
        p.start()
    try:
        # as an operator does it: the CLI, a fresh process that only has the (already edited) file and the lab's
        # record (the running config comes from the serving master, the additions from what the lab built)
        cli = subprocess.run([sys.executable, "-m", "proto.cli", "lab", "reload", "all", "--grow", "--name",
                              lab.state.name], capture_output=True, text=True, timeout=180)
        done = time.monotonic()
        assert cli.returncode == 0, cli.stdout + cli.stderr
        grown = Lab.open(lab.state.dir)            # the lab as the CLI left it on disk (bridges, host namespaces)
        new_pairs = [(x, y) for h in old_hosts for x, y in (("h-2-3-1", h), (h, "h-2-3-1"))]
        reach = wait_until(lambda: all(v >= 1 for v in grown.ping(new_pairs, count=1).values()), 20.0, 0.02)
        reachable_after = time.monotonic() - done
        time.sleep(0.3)
        results = [p.stop() for p in probes]
    finally:
        for p in probes:
            p.close()
    assert "committed, LSD version" in cli.stdout + cli.stderr, cli.stdout + cli.stderr
    assert "switch tor-2-3" in cli.stdout + cli.stderr
    assert "tor-2-3" in grown.state.bridges and "h-2-3-1" in grown.state.host_netns
    rollout = grown.master_get("/v1/rollout")
    assert rollout["phase"] != "prepared" and rollout["current"] == grown.fabric.digest, rollout
    assert reach, grown.ping(new_pairs, count=3)
    lost = {f"{a}->{b}": (r["lost"], r["sent"]) for (a, b), r in zip(pairs, results, strict=True) if r["lost"]}
    print(f"h-2-3-1 reachable {reachable_after:.2f} s after `lab reload` returned; lost on existing pairs: "
          f"{lost or 'none'}")
    assert all(r["received"] > 0 for r in results)
    # flows not touching the change: nothing lost but what a loaded 2-core machine drops while daemons restart
    assert all(r["lost"] <= r["sent"] * 0.02 for r in results), lost
    assert all(v >= 2 for v in grown.ping(count=3).values()), grown.ping(count=3)      # all 20 pairs
    grown.close()


@ovs
def test_the_added_tor_is_removed_again_without_loss(lab: Lab) -> None:
    """Removing a rack (issue #21): the config without tor-2-3 (its links, prefix and host) rolled out by the
    CLI; the 12 original pairs lose nothing, the masters commit the smaller config and every remaining switch
    programs it. The removed switch's client keeps running on the old config: it does not block the commit."""
    view = Lab.open(lab.state.dir)
    if "tor-2-3" not in {s.name for s in view.fabric.switches}:      # run alone: add the rack first
        assert firepath(["config", "add-tor", view.state.config, "--like", "tor-2-2", "--write"]) == 0
        grow = subprocess.run([sys.executable, "-m", "proto.cli", "lab", "reload", "all", "--grow", "--name",
                               view.state.name], capture_output=True, text=True, timeout=180)
        assert grow.returncode == 0, grow.stdout + grow.stderr
        view = Lab.open(lab.state.dir)
    text = Path(view.state.config).read_text()
    start = text.index("  - name: tor-2-3\n")
    end = text.index("links:\n", start)
    smaller = text[:start] + text[end:]
    smaller = "".join(line for line in smaller.splitlines(keepends=True) if '"tor-2-3:' not in line)
    Path(view.state.config).write_text(smaller)
    hosts = [h.name for h in view.fabric.hosts if h.name != "h-2-3-1"]
    pairs = [(a, b) for a in hosts for b in hosts if a != b]
    probes = [view.probe(a, b, flows=2, rate=100.0, port=7600 + i) for i, (a, b) in enumerate(pairs)]
    for p in probes:
        p.start()
    try:
        cli = subprocess.run([sys.executable, "-m", "proto.cli", "lab", "reload", "all", "--name", view.state.name],
                             capture_output=True, text=True, timeout=180)
        time.sleep(0.3)
        results = [p.stop() for p in probes]
    finally:
        for p in probes:
            p.close()
    assert cli.returncode == 0 and "committed, LSD version" in cli.stdout + cli.stderr, cli.stdout + cli.stderr
    now = Lab.open(view.state.dir)
    rollout = now.master_get("/v1/rollout")
    assert rollout["current"] == now.fabric.digest and "tor-2-3" not in {s.name for s in now.fabric.switches}
    lsd = now.master_get("/v1/lsd")
    assert len(lsd["links"]) == len(now.fabric.links) and set(lsd["links"].values()) == {"up"}, lsd
    lost = {f"{a}->{b}": (r["lost"], r["sent"]) for (a, b), r in zip(pairs, results, strict=True) if r["lost"]}
    print(f"tor-2-3 removed; lost on the 12 pairs: {lost or 'none'}")
    assert len(results) == 12 and all(r["received"] > 0 for r in results)
    assert all(r["lost"] <= r["sent"] * 0.02 for r in results), lost
    assert all(v >= 2 for v in now.ping(pairs, count=3).values())
    now.close()
    view.close()
