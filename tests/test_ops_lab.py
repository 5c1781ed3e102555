"""The operator commands against a real lab (OVS, namespaces, 3 masters, a client per switch), built once.

Each command runs as the operator runs it: `python -m proto.cli COMMAND --lab NAME ...` in a subprocess (it
enters the lab's network namespace itself). Checks the text output, the `--json` schema, the exit codes,
that a drain's who/when/why survives a master failover, and that `routes` marks a difference between
what the client computed and what OVS holds.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import inject
from lab.fabric import LAB_DEFAULT_TIMERS, Lab, wait_until
from tests.harness.labs import running_lab

pytestmark = [pytest.mark.ovs, pytest.mark.timeout(420)]

ROOT = Path(__file__).resolve().parent.parent
CLOS = {"spines": 2, "pods": 2, "aggs_per_pod": 2, "tors_per_pod": 2, "hosts_per_tor": 1, "masters": 3}
# ND at 100/500 ms like tests/test_lab_e2e.py: the machine is shared with other labs
TIMERS = tuple((k, v) for k, v in LAB_DEFAULT_TIMERS if k not in ("nd_interval_ms", "nd_dead_ms")) \
    + (("nd_interval_ms", 100), ("nd_dead_ms", 500))
CONVERGE_S = 30.0
HEADER = {"master", "role", "term", "leader", "version", "held"}


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with running_lab("cli", {**CLOS, "timers": TIMERS}) as the_lab:
        yield the_lab


def fp(lab: Lab, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "proto.cli", *argv, "--lab", lab.state.name], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def fp_json(lab: Lab, *argv: str, code: int = 0) -> dict:
    r = fp(lab, *argv, "--json")
    assert r.returncode == code, (argv, r.returncode, r.stderr)
    return json.loads(r.stdout)


def converge(lab: Lab, after: int | None = None) -> None:
    mv = None if after is None else after + 1      # holds_ok=False: the tests read the LSD right after it
    assert lab.wait_converged(CONVERGE_S, min_version=mv, holds_ok=False), \
        lab.convergence_problem(min_version=mv, holds_ok=False)


def test_reads_masters_clients_lsd(lab: Lab) -> None:
    converge(lab)
    m = fp_json(lab, "masters")
    assert set(m) == {"masters", "serving"} and len(m["serving"]) == 1
    assert set(m["masters"]) == {"m1", "m2", "m3"}
    assert all(set(v) >= HEADER and "replicas" in v and "url" in v for v in m["masters"].values())
    c = fp_json(lab, "clients")
    assert set(c) >= HEADER and len(c["clients"]) == len(lab.fabric.switches)
    assert {"switch", "address", "alive", "acked_version", "sent_version", "lag"} <= set(c["clients"][0])
    lsd = fp_json(lab, "lsd")
    assert set(lsd) >= HEADER and lsd["full"] is True
    assert lsd["links"] == {link.name: "up" for link in lab.fabric.links}
    since = fp_json(lab, "lsd", "--since", str(lsd["version"]))
    assert since["full"] is False and since["links"] == {}
    r = fp(lab, "masters")
    assert r.returncode == 0 and "master" in r.stdout.splitlines()[0] and "fmrp" in r.stdout
    r = fp(lab, "clients")
    assert r.returncode == 0 and r.stdout.startswith("10/10 clients alive")
    r = fp(lab, "lsd")
    assert r.returncode == 0 and "16 link(s): 16 up, 0 down, 0 drained" in r.stdout
    r = fp(lab, "status")                     # tester finding 6: status takes --lab like the others
    assert r.returncode in (0, 1) and "m1" in r.stdout and "10/10 alive" in r.stdout, r.stdout + r.stderr


def test_dry_run_refusal_drain_failover_undrain(lab: Lab) -> None:
    converge(lab)
    v0 = lab.lsd_version()
    # dry run of a spine: inter-pod pairs keep their width, lose half their paths, no capacity, nobody cut off
    dry = fp_json(lab, "drain", "--switch", "spine-1", "--dry-run")
    assert dry["dry_run"] is True and dry["refused"] is False and dry["target"] == {"kind": "switch", "name": "spine-1"}
    imp = dry["impact"]
    assert set(imp) >= {"master", "version", "links", "links_up_taken", "up_links", "links_lost", "pairs",
                        "disconnected"}
    assert len(imp["pairs"]) == 12 and imp["disconnected"] == [] and imp["links_lost"] == 0.25
    pair = next(p for p in imp["pairs"] if (p["src"], p["dst"]) == ("tor-1-1", "tor-2-1"))
    assert {k: pair[k] for k in ("width_before", "width_after", "paths_before", "paths_after", "lost")} == {
        "width_before": 2, "width_after": 2, "paths_before": 8, "paths_after": 4, "lost": 0.0}
    text = fp(lab, "drain", "--switch", "spine-1", "--dry-run")
    assert text.returncode == 0 and "dry run: drain switch spine-1: 4 link(s)" in text.stdout
    # one uplink of tor-1-1 fails: draining the other would cut tor-1-1 off, refused without --force (exit 6)
    first, second = (lab.fabric.link_at("tor-1-1", p) for p in (1, 2))
    inject.fail_link(lab, str(first.a), str(first.b))
    try:
        converge(lab, v0)
        v1 = lab.lsd_version()
        r = fp(lab, "drain", "--link", second.name, "--reason", "x")
        assert r.returncode == 6 and "refused" in r.stderr and "--force" in r.stderr and r.stderr.count("\n") == 1
        assert lab.lsd_version() == v1
        forced = fp_json(lab, "drain", "--link", second.name, "--dry-run", "--force")
        assert forced["refused"] is False and len(forced["impact"]["disconnected"]) == 6
    finally:
        inject.heal(lab)
    converge(lab)
    v0 = lab.lsd_version()
    # the real drain, with who and why
    r = fp(lab, "drain", "--switch", "spine-1", "--reason", "optics swap", "--who", "tester")
    assert r.returncode == 0 and r.stdout.startswith("drained switch spine-1: 4 link(s)"), r.stderr
    converge(lab, v0)
    drains = fp_json(lab, "drains")
    (d,) = drains["drains"]
    assert (d["kind"], d["target"], d["who"], d["reason"]) == ("switch", "spine-1", "tester", "optics swap")
    assert len(d["links"]) == 4 and sorted(drains["drained_links"]) == sorted(d["links"]) and d["at"] > 1.7e9
    text = fp(lab, "drains")
    assert text.returncode == 0 and "optics swap" in text.stdout and "tester" in text.stdout
    # the serving master dies: its successor shows the same drain, who/when/why included
    old = lab.current_master()
    assert old is not None
    inject.kill_master(lab, old[0])
    try:
        assert wait_until(lambda: (cur := lab.current_master()) is not None and cur[0] != old[0], 15.0, 0.05)
        after = fp_json(lab, "drains")
        assert after["master"] != old[0] and after["drains"] == drains["drains"]
        # undrain on the new master
        v1 = lab.lsd_version()
        r = fp(lab, "undrain", "--switch", "spine-1")
        assert r.returncode == 0 and r.stdout.startswith("undrained switch spine-1"), r.stderr
        converge(lab, v1)
        assert fp_json(lab, "drains")["drains"] == []
        again = fp(lab, "undrain", "--switch", "spine-1")
        assert again.returncode == 0 and "switch spine-1 was not drained" in again.stdout
        # tester: a re-drain replaced the reason silently; it now says what it found and what it did
        link = lab.fabric.links[0].name
        v2 = lab.lsd_version()
        assert fp(lab, "drain", "--link", link, "--reason", "A", "--who", "tester").returncode == 0
        converge(lab, v2)
        v3 = lab.lsd_version()
        same = fp(lab, "drain", "--link", link, "--reason", "A", "--who", "other")
        assert same.returncode == 0 and same.stdout.startswith(f"link {link} was already drained (by tester, since ")
        assert "reason 'A'): nothing changed (master " in same.stdout, same.stdout
        changed = fp(lab, "drain", "--link", link, "--reason", "B", "--who", "other")
        assert changed.returncode == 0 and "reason changed from 'A' to 'B' (master " in changed.stdout, changed.stdout
        assert lab.lsd_version() == v3
        assert [(d["who"], d["reason"]) for d in fp_json(lab, "drains")["drains"]] == [("other", "B")]
        assert fp(lab, "undrain", "--link", link).returncode == 0
        converge(lab, v3)
        assert set(fp_json(lab, "lsd")["links"].values()) == {"up"}
    finally:
        inject.heal(lab)


def test_errors_against_the_lab(lab: Lab, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.token"
    wrong.write_text("not-the-token\n")
    r = fp(lab, "drain", "--switch", "spine-2", "--token-file", str(wrong))
    assert r.returncode == 4 and "refused the token" in r.stderr and r.stderr.count("\n") == 1
    r = fp(lab, "drain", "--link", "tor-1-1:1-spine-2:7")
    assert r.returncode == 5 and "no link between tor-1-1:1 and spine-2:7" in r.stderr
    r = fp(lab, "undrain", "--switch", "spine-7")
    assert r.returncode == 5 and "unknown switch 'spine-7'" in r.stderr
    # the lab made the token and says where it is
    token = Path(lab.state.dir) / "admin.token"
    assert token.stat().st_mode & 0o777 == 0o600
    st = subprocess.run([sys.executable, "-m", "proto.cli", "lab", "status", "--name", lab.state.name], cwd=ROOT,
                        capture_output=True, text=True, timeout=60)
    assert st.returncode == 0 and f"admin token {token}" in st.stdout, st.stderr
    # tester finding 8: an unknown switch/host name in a lab command is a clear error listing the lab's names
    for argv in (["fail", "link", "nosuch:1", "spine-1:1"], ["fail", "switch", "nosuch"], ["kill", "client", "nosuch"],
                 ["restart", "client", "nosuch"], ["groups", "nosuch"], ["probe", "h-1-1-1", "nosuch"],
                 ["miscable", "nosuch:1", "tor-1-1:1"]):
        r = subprocess.run([sys.executable, "-m", "proto.cli", "lab", *argv, "--name", lab.state.name], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 1 and "unknown name 'nosuch'" in r.stderr, (argv, r.stderr)
        assert "switches: spine-1" in r.stderr and "hosts: h-1-1-1" in r.stderr, (argv, r.stderr)
    r = subprocess.run([sys.executable, "-m", "proto.cli", "lab", "kill", "master", "m9", "--name", lab.state.name],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "no master 'm9' in this lab (masters: m1, m2, m3)" in r.stderr, r.stderr
    assert not lab.state.load(lab.state.dir).faults          # nothing was injected
    # tester finding 11: the same fault twice is refused (it was recorded twice)
    inject.fail_switch(lab, "tor-2-2")
    try:
        r = subprocess.run([sys.executable, "-m", "proto.cli", "lab", "fail", "switch", "tor-2-2", "--name",
                            lab.state.name], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert r.returncode == 1 and "already injected: switch tor-2-2" in r.stderr, r.stderr
        assert len(lab.state.load(lab.state.dir).faults) == 1
    finally:
        inject.heal(lab)
    # tester: a silent failure on a link whose carrier is already down was accepted (it cannot be observed)
    link = lab.fabric.links[0]
    a, b = f"{link.a.switch}:{link.a.port}", f"{link.b.switch}:{link.b.port}"
    inject.fail_link(lab, a, b)
    try:
        r = subprocess.run([sys.executable, "-m", "proto.cli", "lab", "fail", "link", b, a, "--silent", "--name",
                            lab.state.name], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert r.returncode == 1 and "already injected on this link: link" in r.stderr, r.stderr
        assert len(lab.state.load(lab.state.dir).faults) == 1
    finally:
        inject.heal(lab)
    converge(lab)


def test_routes_as_computed_and_as_in_ovs(lab: Lab) -> None:
    converge(lab)
    assert wait_until(lambda: all(isinstance(s, dict) and not s.get("excluded_ports")
                                  for s in lab.client_states().values()), CONVERGE_S, 0.1)
    view = fp_json(lab, "routes", "tor-1-1")
    assert set(view) >= {"switch", "lsd_version", "programmed_version", "excluded_ports", "ovs_read", "routes"}
    assert view["ovs_read"] is True and {r["status"] for r in view["routes"]} == {"ok"}
    dst = str(lab.fabric.switch("tor-2-2").prefixes[0])
    far = next(r for r in view["routes"] if r["prefix"] == dst)
    assert set(far) == {"prefix", "computed", "installed", "status", "detail"}
    assert [h["neighbour"] for h in far["computed"]["next_hops"]] == ["agg-1-1", "agg-1-2"]
    assert [(b["neighbour"], b["weight"]) for b in far["installed"]["buckets"]] == [("agg-1-1", 1), ("agg-1-2", 1)]
    assert far["installed"]["group"] == far["computed"]["group"]
    # one address: the route that forwards it
    host = lab.fabric.hosts[-1]
    one = fp_json(lab, "routes", "tor-1-1", str(host.ip))
    assert [r["prefix"] for r in one["routes"]] == [dst]
    text = fp(lab, "routes", "tor-1-1", dst)
    assert text.returncode == 0 and "no differences" in text.stdout and "agg-1-2 (port 2) w=1" in text.stdout
    # take the flow out of OVS behind the client's back: marked missing, exit 1; then put it back
    bridge = lab.state.bridges["tor-1-1"]
    match = f"ip,nw_dst={dst}"
    lab.ovs_of("tor-1-1").ofctl(bridge, "del-flows", f"cookie=0xf1be000000000004/-1,{match}")
    try:
        r = fp(lab, "routes", "tor-1-1", dst)
        assert r.returncode == 1 and "1 difference(s) marked !" in r.stdout and f"!{dst}" in r.stdout
        missing = fp_json(lab, "routes", "tor-1-1", dst, code=1)["routes"][0]
        assert missing["status"] == "missing" and missing["installed"] is None
    finally:
        prio = 1000 + lab.fabric.switch("tor-2-2").prefixes[0].prefixlen
        lab.ovs_of("tor-1-1").ofctl(bridge, "add-flow",
                      f"cookie=0xf1be000000000004,priority={prio},{match},actions=group:{far['installed']['group']}")
    assert fp(lab, "routes", "tor-1-1", dst).returncode == 0
    r = fp(lab, "routes", "tor-1-1", "192.0.2.1")
    assert r.returncode == 5 and "no route for 192.0.2.1/32" in r.stderr


def test_a_drained_switch_whose_link_fails_stays_reachable_over_its_other_drained_link(lab: Lab) -> None:
    """A tester drained tor-2-1 (a drained switch: reachable, no transit), then failed one of its links:
    the LSD kept it `drained`, the spines kept sending tor-2-1's traffic to the dead link's agg, and 2 of 3
    probe packets were lost until the heal. The failed link is now `drained_down` (never used, still part of
    the drain), and tor-2-1 is reached over its other drained link. (Draining both uplinks one by one is
    refused now: link drains take their links out of use, which would cut tor-2-1 off.)"""
    converge(lab)
    tor = "tor-2-1"
    uplinks = sorted(n for n in lab.master_get("/v1/lsd")["links"] if n.startswith(f"{tor}:"))
    assert len(uplinks) == 2, uplinks
    fp_json(lab, "drain", "--link", uplinks[0], "--reason", "test: first uplink")
    refused = fp_json(lab, "drain", "--link", uplinks[1], code=6)     # the last way in: refused, nothing sent
    assert refused["refused"] and refused["impact"]["disconnected"], refused
    fp(lab, "undrain", "--link", uplinks[0])
    fp_json(lab, "drain", "--switch", tor, "--reason", "test: drained switch")
    converge(lab)
    assert {lab.master_get("/v1/lsd")["links"][n] for n in uplinks} == {"drained"}
    src = next(h.name for h in lab.fabric.hosts if h.tor == "tor-1-1")
    dst = next(h.name for h in lab.fabric.hosts if h.tor == tor)
    failed = uplinks[0]
    link = next(lk for lk in lab.fabric.links if lk.name == failed)
    try:
        v = lab.lsd_version()
        inject.fail_link(lab, f"{link.a.switch}:{link.a.port}", f"{link.b.switch}:{link.b.port}")
        assert wait_until(lambda: lab.master_get("/v1/lsd")["links"][failed] == "drained_down", 10.0), \
            lab.master_get("/v1/lsd")["links"]
        converge(lab, after=v)
        links = lab.master_get("/v1/lsd")["links"]
        assert links[uplinks[1]] == "drained"
        probe = lab.probe(src, dst, port=7300, flows=8, rate=500.0)
        probe.start()
        try:
            time.sleep(1.0)
            result = probe.stop()
        finally:
            probe.close()
        assert result["lost"] == 0 and result["received"] > 0, result
    finally:
        inject.heal(lab)
        fp(lab, "undrain", "--switch", tor)
        converge(lab)
