"""End-to-end: gray failures of the control-plane network (CPN) on the lab (issue #16).

Real OVS, real namespaces, 3 real master processes and a real client per switch, on the 2-spine x 4-leaf
fabric of the issue (4 hosts, 12 host pairs). A CPN fault is an nftables drop of one master's client UDP
port in one direction on the lab namespace's loopback (`firepath lab fail cpn`, lab/inject.py); FMRP between
the replicas is untouched, so the replica under the fault is alive and healthy for its peers.

What is asserted is behaviour: pairs reachable throughout, no link taken down in any replica's LSD without a
physical cause, a backup taking over, a real link failure reaching every switch. Bounds are the issue's
target (1 s for a link failure during the fault) plus the lab's scheduling margin; bench/bench_cpn.py
measures the figures. `switch_dead` is 4 s here (lab timers) so the silence it used to punish happens within
a few seconds.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from lab import inject, nft
from lab.fabric import LAB_DEFAULT_TIMERS, Lab, wait_until
from tests.harness.labs import running_lab
from tests.harness.labwatch import down_links, link_everywhere, link_story, serving

ovs = pytest.mark.ovs

LEAFSPINE = {"spines": 2, "pods": 0, "leaves": 4, "hosts_per_tor": 1, "masters": 3}
SWITCH_DEAD_S = 4.0
# The lab defaults with ND at 100/500 ms (as test_lab_e2e: robust next to other labs on a shared machine) and
# switch_dead at 4 s, so a silent master link outlives switch_dead within a short test.
TIMERS = tuple((k, v) for k, v in LAB_DEFAULT_TIMERS if k not in ("nd_interval_ms", "nd_dead_ms", "switch_dead_ms")) \
    + (("nd_interval_ms", 100), ("nd_dead_ms", 500), ("switch_dead_ms", SWITCH_DEAD_S * 1000))
CONVERGE_S = 30.0
MARGIN_S = 3.0            # REST polling + scheduling on a loaded 2-core machine
LINK_TARGET_S = 1.0       # issue #16: a link failure during a CPN fault reaches every switch within 1 s
TAKEOVER_S = SWITCH_DEAD_S + MARGIN_S     # a backup serves within this after a one-way fault of the master

# While the controller side of #16 is not merged, the tests below reproduce the issue and must fail
# (strict xfail); each reason says which piece it waits for. None = expected to pass.
XFAIL_REPORTS_DROPPED: str | None = None
XFAIL_MASTER_MUTE: str | None = None
XFAIL_SWITCH_CUT: str | None = None


def _xfail(reason: str | None):  # noqa: ANN202 - a decorator
    return pytest.mark.xfail(reason=reason, strict=True) if reason else (lambda f: f)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with running_lab("graylab", {**LEAFSPINE, "timers": TIMERS}) as the_lab:
        yield the_lab


# ---------------------------------------------------------------------------------------------- helpers

def _baseline(lab: Lab) -> tuple[str, int]:
    """A healed fabric every client has programmed, every link up; returns (serving master, LSD version)."""
    if lab.state.faults:
        inject.heal(lab)
    assert lab.wait_converged(CONVERGE_S, holds_ok=False), lab.convergence_problem(holds_ok=False)
    assert wait_until(lambda: all(isinstance(s, dict) and not s.get("excluded_ports")
                                  for s in lab.client_states().values()), CONVERGE_S, 0.05)
    leader = lab.current_master()
    assert leader is not None
    assert down_links(lab) == {}, down_links(lab)
    return leader[0], int(leader[1]["version"])


def _bad_pairs(lab: Lab) -> dict[tuple[str, str], int]:
    """One round of pings over all 12 pairs (3 each): the pairs that got fewer than 2 replies."""
    return {p: n for p, n in lab.ping(count=3).items() if n < 2}


def _watch(lab: Lab, seconds: float, allowed_down: set[str] = frozenset()) -> list[str]:
    """Ping every pair and read every replica's LSD, round after round, for `seconds`; returns what went
    wrong (pairs unreachable, links down in some replica's LSD other than `allowed_down`), timestamped."""
    problems = []
    told: set[str] = set()
    t0 = time.monotonic()
    rounds = 0
    while time.monotonic() - t0 < seconds and rounds < 200:
        rounds += 1
        t = time.monotonic() - t0
        bad = _bad_pairs(lab)
        if bad:
            n = len(lab.fabric.hosts)
            problems.append(f"{t:.1f}s: {n * (n - 1) - len(bad)}/{n * (n - 1)} pairs reachable, "
                            f"lost {sorted(bad)[:4]}")
        down = {m: [n for n in links if n not in allowed_down] for m, links in down_links(lab).items()}
        down = {m: links for m, links in down.items() if links}
        if down:
            problems.append(f"{t:.1f}s: links down in the LSD: {down}")
            for name in sorted({n for links in down.values() for n in links} - told):
                told.add(name)          # each end's port history, once: a real flap or the master's doing?
                problems.append(f"  {link_story(lab, name)}")
        time.sleep(0.2)
    return problems


def _serving_other_than(lab: Lab, master_id: str) -> str | None:
    leader = serving(lab)
    return leader if leader != master_id else None


def _assert_sticky_after_heal(lab: Lab) -> None:
    """After `lab heal` the healed replica does not take mastership back: the serving master and its term
    stay as they are (sticky election; no flapping between equally good replicas)."""
    assert lab.wait_converged(CONVERGE_S, holds_ok=False), lab.convergence_problem(holds_ok=False)
    before = lab.current_master()
    assert before is not None
    time.sleep(1.5)
    after = lab.current_master()
    assert after is not None and (after[0], after[1]["term"]) == (before[0], before[1]["term"]), (before, after)


def _leaf_spine_link(lab: Lab, leaf: str, spine: str = "spine-1") -> str:
    return inject.find_link(lab, leaf, spine).name


# ---------------------------------------------------------------------------------------------- tests

@ovs
@_xfail(XFAIL_REPORTS_DROPPED)
def test_reports_to_the_master_dropped_keep_the_fabric_up(lab: Lab) -> None:
    """Issue #16, story 1: the master cannot hear the switches (it still sends) for longer than switch_dead."""
    master, _v = _baseline(lab)
    fault = inject.fail_cpn(lab, master, "from-switches")
    try:
        problems = _watch(lab, SWITCH_DEAD_S + MARGIN_S)
        assert nft.cpn_dropped(str(fault["table"]), lab.state.netns) > 0      # the fault did bite
        assert problems == [], problems
        # the backups hear every report (clients send them to all replicas): one of them serves now
        assert wait_until(lambda: _serving_other_than(lab, master) is not None, MARGIN_S, 0.05), \
            lab.master_states()
        roles = [s.get("role") for s in lab.master_states().values() if isinstance(s, dict)]
        assert roles.count("master") == 1, roles
    finally:
        inject.heal(lab)
    _assert_sticky_after_heal(lab)


@ovs
@_xfail(XFAIL_MASTER_MUTE)
def test_master_to_switches_dropped_a_backup_takes_over_and_a_link_failure_reaches_every_switch(lab: Lab) -> None:
    """Issue #16, story 2: the master still hears the switches but cannot reach them; a leaf-spine link fails
    during the fault and must reach every switch within the target (plus the lab margin)."""
    master, _v = _baseline(lab)
    leaf = lab.fabric.hosts[0].tor
    link = _leaf_spine_link(lab, leaf)
    fault = inject.fail_cpn(lab, master, "to-switches")
    try:
        time.sleep(0.5)                                   # the link fails while the fault is on
        cut = inject.fail_link(lab, leaf, "spine-1")
        took, detail = link_everywhere(lab, link, float(cut["at"]), LINK_TARGET_S + MARGIN_S)
        assert took is not None, f"{link} down did not reach every switch: {detail}"
        print(f"link {link} down on every switch {took * 1000:.0f} ms after the cut "
              f"({(float(cut['at']) - float(fault['at'])) * 1000:.0f} ms into the fault): {detail}")
        assert wait_until(lambda: _serving_other_than(lab, master) is not None, TAKEOVER_S, 0.05), \
            lab.master_states()
        assert nft.cpn_dropped(str(fault["table"]), lab.state.netns) > 0
        problems = _watch(lab, 2.0, allowed_down={link})
        assert problems == [], problems
    finally:
        inject.heal(lab)
    _assert_sticky_after_heal(lab)


@ovs
@_xfail(XFAIL_SWITCH_CUT)
def test_one_switch_cut_from_the_master_gets_the_lsd_through_a_backup(lab: Lab) -> None:
    """A client-side CPN fault: one leaf neither hears nor reaches the serving master; the backups hear it.
    Past switch_dead its links stay up, and a link failure elsewhere still reaches it."""
    master, _v = _baseline(lab)
    leaves = [h.tor for h in lab.fabric.hosts]
    cut_leaf, other_leaf = leaves[0], leaves[1]
    fault = inject.fail_cpn(lab, master, "both", switch=cut_leaf)
    try:
        problems = _watch(lab, SWITCH_DEAD_S + MARGIN_S)
        assert problems == [], problems
        assert nft.cpn_dropped(str(fault["table"]), lab.state.netns) > 0
        link = _leaf_spine_link(lab, other_leaf)
        cut = inject.fail_link(lab, other_leaf, "spine-1")
        took, detail = link_everywhere(lab, link, float(cut["at"]), LINK_TARGET_S + MARGIN_S)
        assert took is not None, f"{link} down did not reach every switch: {detail}"
        # the cut leaf is served by a backup, and says which replicas it hears two-way (not the cut master)
        def served_by_backup() -> bool:
            st = lab.client_states()[cut_leaf]
            return isinstance(st, dict) and st.get("served_by") not in (None, master) \
                and master not in st.get("reach", [master])
        assert wait_until(served_by_backup, MARGIN_S, 0.05), lab.client_states()[cut_leaf]
        state = lab.client_states()[cut_leaf]
        assert master in lab.client_states()[other_leaf]["reach"]
        print(f"{cut_leaf} cut from {master}: served by {state['served_by']}, reach {state['reach']}; link {link} "
              f"down everywhere in {took * 1000:.0f} ms: {detail}")
        roles = [s.get("role") for s in lab.master_states().values() if isinstance(s, dict)]
        assert roles.count("master") == 1, roles
        # one switch is not "clearly fewer" (guard.reach_margin: at least 2 switches): no handover for it
        assert serving(lab) == master, lab.master_states()
    finally:
        inject.heal(lab)
    _assert_sticky_after_heal(lab)


@ovs
def test_a_corroborated_fabric_wide_failure_passes_the_drastic_change_guard(lab: Lab) -> None:
    """The guard holds *uncorroborated* downs beyond `guard.down_share` (25 %) of the fabric; a spine chassis
    failure takes down 4 of the 8 links (50 %) on evidence from both ends of each, so it must be published
    at once and routed around -- the guard must never turn a real failure into a black hole."""
    _baseline(lab)
    v = lab.lsd_version()
    spine = "spine-1"
    inject.fail_switch(lab, spine)
    try:
        # holds_ok=False: until nothing is held. The leaves' reports can reach the master before spine-1's
        # own: past the guard's budget (2 of 8 links, fewer when an earlier test's uncorroborated downs are
        # within its 10 s window) the rest are held until spine-1's report corroborates them, a moment later.
        # A wait that counted that hold as converged let the assertions below read it (held_links != []) on
        # a run where the reports came in that order; a hold that does not end fails the wait, naming it.
        assert lab.wait_converged(CONVERGE_S, min_version=v + 1, holds_ok=False), \
            lab.convergence_problem(min_version=v + 1, holds_ok=False)
        links = {lab.fabric.links[i].name for i in lab.fabric.links_of(spine)}
        assert len(links) / len(lab.fabric.links) > lab.fabric.guard.down_share
        leader = serving(lab)
        assert leader is not None
        assert set(down_links(lab).get(leader, [])) == links, down_links(lab)
        guard = lab.master_get("/v1/guard")
        assert guard["held_links"] == [], guard
        assert _bad_pairs(lab) == {}
    finally:
        inject.heal(lab)
    assert lab.wait_converged(CONVERGE_S, holds_ok=False), lab.convergence_problem(holds_ok=False)


@ovs
def test_lab_cli_fail_cpn_shows_in_status_and_heals(lab: Lab) -> None:
    """`firepath lab fail cpn` as an operator runs it: recorded, listed in `lab status`, undone by `lab heal`."""
    import subprocess

    from lab.fabric import python_argv

    master, _v = _baseline(lab)
    where = ["--name", lab.state.name, "--dir", lab.state.dir]

    def firepath(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(python_argv("lab", *args, *where), capture_output=True, text=True, timeout=60)

    try:
        done = firepath("fail", "cpn", master, "--to-switches", "--switch", "leaf-2")
        assert done.returncode == 0, done.stderr
        assert f"injected: cpn {master} to-switches (switch leaf-2 only)" in done.stdout
        assert [t for t in nft.tables(lab.state.netns, "inet") if "_cpn" in t], nft.tables(lab.state.netns, "inet")
        status = firepath("status")
        assert status.returncode == 0, status.stderr
        assert f"active faults: cpn {master} to-switches (switch leaf-2 only)" in status.stdout, status.stdout
        bad = firepath("fail", "cpn", "m9")
        assert bad.returncode == 1 and "no master 'm9'" in bad.stderr, bad.stderr
        healed = firepath("heal", "--wait", "0")
        assert healed.returncode == 0 and f"healed: cpn {master} to-switches" in healed.stdout, healed
        assert [t for t in nft.tables(lab.state.netns, "inet") if "_cpn" in t] == []
    finally:
        lab.state.faults = type(lab.state).load(lab.state.dir).faults      # the CLI changed the record on disk
        if lab.state.faults:
            inject.heal(lab)
