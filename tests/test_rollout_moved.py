"""A switch that moved to the prepared next config follows the fabric before the commit (issue #21 follow-up).

During a two-phase rollout a switch reloaded onto the next config N refuses the masters' LSD of the running
config C (another digest): before this change it followed no remote link change until the commit, and a
failure elsewhere left it routing into dead paths. Now the serving master gives it an LSD under N on every
version (controller.nextlsd): the running LSD carried by link identity, new links UP only once both ends
reported them under N. Pure: real cores (master and client replica), a fake clock (`now` in), no sockets.
"""

from __future__ import annotations

from collections.abc import Iterable

from client.replica import LsdApplied, LsdReplica
from client.reporter import SendToMaster
from controller.actions import GROUP, NextVersion, Send
from controller.core import MasterCore
from proto.config import Fabric, parse_fabric
from proto.lsd import LinkState, decode_snapshot
from proto.messages import Keepalive, LsdDelta, LsdFull, LsdRequest, ReportAck
from tests.test_master_core import NO_GUARD, make_fabric, master, rejected, report, sends

UP, DOWN = LinkState.UP, LinkState.DOWN
MULTICAST = "distribution: {mode: multicast, group: 239.1.1.1, port: 6800}\n"


def fabrics(extra: str = NO_GUARD) -> tuple[Fabric, Fabric]:
    """C, and N: the link leaf-2:1 -- spine-1:2 weighted 3 (a re-weight: same links, same index)."""
    from proto.clos import ClosParams, generate_clos_yaml

    text = generate_clos_yaml(ClosParams(pods=0, spines=2, leaves=3, masters=2)) + extra
    new = text.replace('{a: "leaf-2:1", b: "spine-1:2"}', '{a: "leaf-2:1", b: "spine-1:2", weight: 3}')
    assert new != text
    return parse_fabric(text, source="<cur>"), parse_fabric(new, source="<next>")


class Switches:
    """Real client replicas (client.replica.LsdReplica), one per switch, each on the config it runs; every
    master datagram (unicast or group) is handed to them as the client daemon does."""

    def __init__(self, fabric: Fabric) -> None:
        self.replicas = {s.name: LsdReplica(fabric, s.name, now=0.0) for s in fabric.switches}
        self.applied: dict[str, list[LsdApplied]] = {name: [] for name in self.replicas}
        self.requests: dict[str, int] = dict.fromkeys(self.replicas, 0)

    def move(self, name: str, fabric: Fabric, now: float) -> None:
        """The switch's client restarts on `fabric` (a reload: a new process, no LSD)."""
        self.replicas[name] = LsdReplica(fabric, name, now=now)
        self.applied[name] = []

    def take(self, name: str, msg: object, now: float) -> list:
        r = self.replicas[name]
        if isinstance(msg, LsdFull):
            out = r.on_full(msg, now)
        elif isinstance(msg, LsdDelta):
            out = r.on_delta(msg, now)
        elif isinstance(msg, Keepalive):
            out = r.on_keepalive(msg, now)
        elif isinstance(msg, ReportAck):
            out = r.on_report_ack(msg.master, msg.term, msg.backup, now)
        else:
            out = []
        self.applied[name] += [a for a in out if isinstance(a, LsdApplied)]
        return out

    def pump(self, cores: dict[str, MasterCore], actions: Iterable, now: float) -> list:
        """Deliver the masters' sends, feed the replicas' requests back (same instant), until quiet. Returns
        every action seen (for NextVersion events)."""
        queue = [(None, a) for a in actions]
        seen: list = []
        while queue:
            src, a = queue.pop(0)
            seen.append(a)
            if not isinstance(a, Send):
                continue
            dests = list(self.replicas) if a.dest == GROUP else [a.dest] if a.dest in self.replicas else []
            for d in dests:
                for out in self.take(d, a.msg, now):
                    if isinstance(out, SendToMaster) and out.master in cores:
                        self.requests[d] += 1
                        queue += [(d, x) for x in cores[out.master].handle(d, out.msg, now)]
        return seen

    def run(self, cores: dict[str, MasterCore], t0: float, t1: float, dt: float = 0.005) -> list:
        """Tick the masters and the replicas from t0 to t1."""
        seen: list = []
        t = t0
        while t < t1 + 1e-9:
            acts = [a for c in cores.values() for a in c.tick(t)]
            for name, r in self.replicas.items():
                for out in r.tick(t):
                    if isinstance(out, SendToMaster) and out.master in cores:
                        self.requests[name] += 1
                        acts += cores[out.master].handle(name, out.msg, t)
            seen += self.pump(cores, acts, t)
            t += dt
        return seen


def report_all(core: MasterCore, f: Fabric, sw: Switches, now: float, seq: int,
               digest_of: dict[str, Fabric] | None = None) -> None:
    for s in f.switches:
        run_on = (digest_of or {}).get(s.name, f)
        sw.pump({core.id: core}, core.handle(s.name, report(run_on, s.name, seq=seq, term=core.term), now), now)


def moved_setup(multicast: bool = False):  # noqa: ANN201
    """A master of C with every switch synced, N prepared, leaf-1 moved (reloaded onto N, reported, synced)."""
    cur, nxt = fabrics(NO_GUARD + (MULTICAST if multicast else ""))
    assert nxt.digest != cur.digest and len(nxt.links) == len(cur.links)
    core = master(cur)
    cores = {core.id: core}
    sw = Switches(cur)
    report_all(core, cur, sw, 0.0, 1)
    sw.run(cores, 0.0, 0.3)
    assert all(r.version == core.version for r in sw.replicas.values())
    assert core.rollout_prepare(nxt, 0.3)
    sw.move("leaf-1", nxt, 0.4)
    sw.pump(cores, core.handle("leaf-1", report(nxt, "leaf-1", seq=10), 0.4), 0.4)
    sw.run(cores, 0.4, 0.7)
    return cur, nxt, core, cores, sw


def added_leaf_setup():  # noqa: ANN201
    """C, and N with leaf-4 and its links to spine-1/-2 new; a master of C with every switch synced, N prepared."""
    cur = make_fabric(NO_GUARD)
    nxt = make_fabric(NO_GUARD, leaves=4)
    core = master(cur)
    cores = {core.id: core}
    sw = Switches(cur)
    report_all(core, cur, sw, 0.0, 1)
    sw.run(cores, 0.0, 0.3)
    core.rollout_prepare(nxt, 0.3)
    return cur, nxt, core, cores, sw


def link_index(f: Fabric, name: str) -> int:
    return next(link.index for link in f.links if link.name == name)


# ------------------------------------------------------------------------------------------------------ tests
def test_a_moved_switch_takes_an_lsd_under_the_next_config_and_follows_a_remote_failure_at_once() -> None:
    cur, nxt, core, cores, sw = moved_setup()
    leaf1 = sw.replicas["leaf-1"]
    assert leaf1.has_data and leaf1.config_mismatch is None and leaf1.counters["refused_digest"] == 0
    assert leaf1.states() == core.lsd.states()              # a re-weight: the same link states, on N's index
    v_moved = leaf1.version
    assert v_moved > core.version                           # a version of its own, from the master's sequence
    # a link far from leaf-1 fails: leaf-3's uplink to spine-1 (it takes spine-1 out of leaf-1's ECMP to leaf-3)
    far = link_index(cur, "leaf-3:1-spine-1:3")
    t = 1.0
    acts = core.handle("leaf-3", report(cur, "leaf-3", usable={2}, seq=20), t)
    assert core.lsd.state(far) == DOWN
    seen = sw.pump(cores, acts + core.tick(t), t)           # bad news: in the same turn, not paced
    assert leaf1.states()[far] == DOWN and leaf1.version > v_moved, (leaf1.version, leaf1.states())
    assert [e for e in seen if isinstance(e, NextVersion) and e.urgent]
    # every switch still on C followed too, and none of them ever got anything under N
    for name, r in sw.replicas.items():
        assert r.states()[far] == DOWN, name
        if name != "leaf-1":
            assert r.digest == cur.digest and r.config_mismatch is None
    # the C deltas never start at a version leaf-1 holds: one content per (term, version)
    sw.run(cores, t, t + 0.5)
    nxt_versions = {a.version for a in sw.applied["leaf-1"]}
    c_versions = {a.version for name, lst in sw.applied.items() if name != "leaf-1" for a in lst}
    assert not nxt_versions & c_versions, (nxt_versions, c_versions)


def test_before_this_change_the_moved_switch_was_refused_so_check_what_it_is_sent() -> None:
    """What the master sends a moved switch is the LSD under the next digest, not the running one's."""
    _cur, nxt, _core, cores, sw = moved_setup()
    fulls = sends(cores["m1"].handle("leaf-1", LsdRequest("leaf-1", 1, -1), 0.8) + cores["m1"].tick(0.81),
                  "leaf-1", LsdFull)
    assert fulls and all(m.digest == nxt.digest for m in fulls)


def test_a_link_new_in_the_next_config_is_up_only_once_both_ends_reported_it_under_it() -> None:
    cur, nxt, core, cores, sw = added_leaf_setup()
    new1, new2 = link_index(nxt, "leaf-4:1-spine-1:4"), link_index(nxt, "leaf-4:2-spine-2:4")
    sw.move("spine-1", nxt, 0.4)
    sw.pump(cores, core.handle("spine-1", report(nxt, "spine-1", seq=10), 0.4), 0.4)
    sw.run(cores, 0.4, 0.6)
    sp1 = sw.replicas["spine-1"]
    assert sp1.has_data and sp1.digest == nxt.digest
    assert sp1.states()[new1] == DOWN and sp1.states()[new2] == DOWN      # leaf-4 not heard: nothing published
    for link in cur.links:                                                 # the others: carried by identity
        assert sp1.states()[link_index(nxt, link.name)] == core.lsd.state(link.index)
    # leaf-4 (only in N) starts and reports: its link to spine-1 has both ends usable under N; spine-2 is on C
    sw.replicas["leaf-4"] = LsdReplica(nxt, "leaf-4", now=0.7)
    sw.applied["leaf-4"], sw.requests["leaf-4"] = [], 0
    sw.pump(cores, core.handle("leaf-4", report(nxt, "leaf-4", seq=1), 0.7), 0.7)
    sw.run(cores, 0.7, 0.9)
    assert sp1.states()[new1] == UP and sp1.states()[new2] == DOWN
    assert sw.replicas["leaf-4"].states() == sp1.states()
    assert core.lsd.n_links == len(cur.links) + len(cur.external_slots)   # the running LSD is untouched
    # spine-1 loses its port to leaf-4: the new link goes DOWN again in the moved switches' LSD, at once
    acts = core.handle("spine-1", report(nxt, "spine-1", usable={1, 2, 3}, seq=11), 1.0)
    sw.pump(cores, acts + core.tick(1.0), 1.0)
    assert sp1.states()[new1] == DOWN


def test_the_commit_snapshot_is_newer_than_what_a_moved_switch_holds_and_it_takes_it() -> None:
    cur, nxt, core, cores, sw = moved_setup()
    v_moved = sw.replicas["leaf-1"].version
    for i, s in enumerate(cur.switches):                    # every other switch moves
        if s.name != "leaf-1":
            sw.move(s.name, nxt, 0.8 + 0.01 * i)
            sw.pump(cores, core.handle(s.name, report(nxt, s.name, seq=30), 0.8 + 0.01 * i), 0.8 + 0.01 * i)
    sw.run(cores, 0.9, 1.1)
    held = {name: r.version for name, r in sw.replicas.items()}
    assert all(v >= v_moved for v in held.values()) and len(set(held.values())) == 1, held
    acts = core.rollout_commit(1.2)
    assert core.fabric is nxt and core.version == max(held.values()) + 1
    seen = sw.pump(cores, acts, 1.2)
    for name, r in sw.replicas.items():
        assert r.version == core.version and r.data_term == core.term, (name, r.version)
        assert r.counters["ignored_stale"] == 0 and r.counters["refused_digest"] == 0, (name, r.counters)
        assert r.states() == core.lsd.states()
    assert not [e for e in seen if isinstance(e, NextVersion)]
    # and after the commit the fabric goes on with deltas under N
    acts = core.handle("leaf-3", report(nxt, "leaf-3", usable={2}, seq=40), 1.3)
    sw.pump(cores, acts + core.tick(1.3), 1.3)
    assert sw.replicas["leaf-1"].states()[link_index(nxt, "leaf-3:1-spine-1:3")] == DOWN
    assert sw.replicas["leaf-1"].counters["applied_delta"] >= 1


def test_abort_refuses_the_moved_switch_again_and_one_moved_back_takes_the_running_lsd() -> None:
    cur, _nxt, core, cores, sw = moved_setup()
    leaf1 = sw.replicas["leaf-1"]
    assert leaf1.has_data and leaf1.config_mismatch is None      # served under N while prepared
    held = leaf1.states()
    assert core.rollout_abort(1.0)
    sw.run(cores, 1.0, 1.3)
    assert leaf1.config_mismatch == cur.digest and leaf1.counters["refused_digest"] >= 1
    assert leaf1.states() == held                          # it keeps what it has (and forwards on it)
    # a change now: C deltas never apply to leaf-1's LSD under N (their versions are not its version)
    acts = core.handle("leaf-3", report(cur, "leaf-3", usable={2}, seq=20), 1.4)
    sw.pump(cores, acts + core.tick(1.4), 1.4)
    sw.run(cores, 1.4, 1.6)
    assert leaf1.states() == held and leaf1.counters["applied_delta"] == 0
    # the operator reloads it back onto C: a new process, which takes the running LSD
    sw.move("leaf-1", cur, 1.7)
    sw.pump(cores, core.handle("leaf-1", report(cur, "leaf-1", seq=50), 1.7), 1.7)
    sw.run(cores, 1.7, 2.0)
    back = sw.replicas["leaf-1"]
    assert back.config_mismatch is None and back.version == core.version and back.states() == core.lsd.states()


def test_a_new_master_holds_the_moved_switches_lsd_as_any_update_then_serves_it() -> None:
    cur, nxt = fabrics()
    m1, m2 = MasterCore(cur, "m1"), MasterCore(cur, "m2")
    m2.become_backup(1, "m1", 0.0)
    acts = m1.become_master(1, 0.0) + m1.end_hold(0.0)
    cores = {"m1": m1, "m2": m2}
    sw = Switches(cur)
    for s in cur.switches:                                 # clients report to every replica
        for c in cores.values():
            acts += c.handle(s.name, report(cur, s.name, seq=1), 0.0)
    for c in cores.values():
        c.rollout_prepare(nxt, 0.1)

    def replicate(actions: list, now: float) -> None:
        for m in sends(actions, "m2"):
            back = m2.handle("m1", m, now)
            for r in sends(back, "m1"):
                replicate(m1.handle("m2", r, now), now)

    replicate(acts, 0.0)
    sw.pump(cores, acts, 0.0)
    sw.move("leaf-1", nxt, 0.2)
    for c in cores.values():
        sw.pump(cores, c.handle("leaf-1", report(nxt, "leaf-1", seq=10), 0.2), 0.2)
    for k in range(1, 20):
        t = 0.2 + 0.01 * k
        a = m1.tick(t)
        replicate(a, t)
        sw.pump(cores, a, t)
    assert sw.replicas["leaf-1"].digest == nxt.digest and sw.replicas["leaf-1"].has_data
    v1 = sw.replicas["leaf-1"].version
    assert m2.version == m1.version and m2.lsd.states() == m1.lsd.states()
    # m1 dies. m2 takes over: it holds LSD updates (until every switch reported or keepalive passed): the moved
    # switch's LSD under N is held too — it already holds one; a new term's LSD built before the switches spoke
    # is not sent to it
    del cores["m1"]
    t = 0.5
    acts = m2.become_master(2, t)
    assert m2.held
    # a link fails before the switches report to the new master: leaf-3 reports it
    far = link_index(cur, "leaf-3:1-spine-1:3")
    acts += m2.handle("leaf-3", report(cur, "leaf-3", usable={2}, seq=20, term=2), t + 0.01)
    seen = sw.pump(cores, acts + m2.tick(t + 0.01), t + 0.01)
    assert not sends(seen, "leaf-1", LsdFull) and sw.replicas["leaf-1"].version == v1
    assert m2.held
    # everyone reports to the new master: the hold ends, the moved switch gets the new term's LSD under N
    for i, s in enumerate(cur.switches):
        if s.name not in ("leaf-1", "leaf-3"):
            sw.pump(cores, m2.handle(s.name, report(cur, s.name, seq=30, term=2), t + 0.02 + 0.001 * i), t + 0.03)
    sw.pump(cores, m2.handle("leaf-1", report(nxt, "leaf-1", seq=31, term=2), t + 0.04), t + 0.04)
    assert not m2.held
    sw.run(cores, t + 0.05, t + 0.3)
    leaf1 = sw.replicas["leaf-1"]
    assert leaf1.data_term == 2 and leaf1.config_mismatch is None and leaf1.states()[far] == DOWN


def test_a_backup_serves_no_lsd_to_a_moved_switch_but_still_to_the_others() -> None:
    cur, nxt = fabrics()
    b = MasterCore(cur, "m2")
    b.become_backup(1, "m1", 0.0)
    leader = MasterCore(cur, "m1")
    acts = leader.become_master(1, 0.0) + leader.end_hold(0.0) + leader.tick(0.01)
    for m in sends(acts, "m2", LsdFull):
        b.handle("m1", m, 0.01)
    b.rollout_prepare(nxt, 0.05)
    b.handle("leaf-1", report(nxt, "leaf-1"), 0.1)          # moved: the backup notes it (reports go to all)
    b.handle("leaf-2", report(cur, "leaf-2"), 0.1)
    assert rejected(b.handle("leaf-1", LsdRequest("leaf-1", 1, -1), 0.2)) == ["other_config"]
    assert sends(b.handle("leaf-2", LsdRequest("leaf-2", 1, -1), 0.2), "leaf-2", LsdFull)


def test_multicast_a_moved_switch_is_served_unicast_and_keepalives_do_not_make_it_ask() -> None:
    cur, nxt, core, cores, sw = moved_setup(multicast=True)
    leaf1 = sw.replicas["leaf-1"]
    assert leaf1.has_data and leaf1.digest == nxt.digest
    # changes on the group for a while: leaf-1 hears every group delta and keepalive, and follows by unicast
    asked = sw.requests["leaf-1"]
    t = 1.0
    for k in range(6):
        usable = {2} if k % 2 == 0 else {1, 2}
        acts = core.handle("leaf-3", report(cur, "leaf-3", usable=usable, seq=100 + k, term=core.term), t)
        sw.pump(cores, acts + core.tick(t), t)
        sw.run(cores, t, t + 0.4)
        t += 0.5
        assert leaf1.states() == core.lsd.states(), k
    sw.run(cores, t, t + 2.0)                               # quiet: 20 group keepalives
    assert leaf1.states() == core.lsd.states() and leaf1.counters["applied_delta"] == 0
    assert leaf1.counters["refused_digest"] == 0
    # asks: none at all after it was first served (it is never behind what a keepalive names)
    assert sw.requests["leaf-1"] - asked == 0, sw.requests["leaf-1"] - asked
    # the switches on C followed by group deltas
    assert sw.replicas["leaf-2"].counters["applied_delta"] >= 6


def test_a_switch_flapping_between_configs_changes_nothing_but_what_it_is_sent() -> None:
    """Hostile or broken: a switch's reports alternate digests. Each is accepted (both are prepared); it is sent
    the LSD of the config it last named, within the per-peer rate limit, and the running LSD is untouched."""
    cur, nxt, core, cores, sw = moved_setup()
    v, states = core.version, core.lsd.states()
    out: list = []
    for k in range(40):
        f = cur if k % 2 else nxt
        out += core.handle("leaf-1", report(f, "leaf-1", seq=100 + k), 1.0 + 0.001 * k)
        out += core.tick(1.0 + 0.001 * k)
    assert rejected(out) == []
    assert (core.version, core.lsd.states()) == (v, states)
    fulls = sends(out, "leaf-1", LsdFull)
    assert len(fulls) <= 0.04 * core.fabric.timers.max_update_rate + 1
    # a report under a digest neither config has is dropped and counted as before; it does not un-move leaf-1
    out = core.handle("leaf-1", report(nxt, "leaf-1", seq=200), 1.1)
    assert rejected(core.handle("leaf-1", report(cur, "leaf-1", seq=201, digest="0" * 64), 1.1)) \
        == ["digest_mismatch"]
    assert core.dist.peers["leaf-1"].moved
    snap = sends(core.tick(1.2), "leaf-1", LsdFull)
    assert snap and snap[0].digest == nxt.digest and decode_snapshot(snap[0].snapshot, len(nxt.links)) == states


# ------------------------------------------------------------------------------ mixed metrics (tester, 3 tiers)
def _clos3(extra: str = NO_GUARD, hosts: int = 1) -> str:
    from proto.clos import ClosParams, generate_clos_yaml

    return generate_clos_yaml(ClosParams(pods=2, spines=2, aggs_per_pod=2, tors_per_pod=2, masters=2,
                                         hosts_per_tor=hosts)) + extra


def test_where_relays_meet_a_metric_change_is_a_hazard_for_moved_switches_elsewhere_none() -> None:
    """A moved switch routes on the next config's metric next to switches on the running one's: a loop needs two
    relays (transit switches) linked to each other. Leaf-spine: none, whatever changes; 3 tiers (agg -- spine):
    a re-weight, a transit role, a prefix moving, a new link between existing switches are hazards; a ToR added,
    a link removed, timers are not."""
    from controller.rollout import mixed_routing_hazard
    from proto.addtor import add_tor

    cur2, nxt2 = fabrics()
    assert mixed_routing_hazard(cur2, nxt2) is None                  # leaf-spine: nothing can loop
    text = _clos3(hosts=0)
    cur = parse_fabric(text, source="<cur>")

    def nxt(old: str, new: str) -> Fabric:
        assert old in text
        return parse_fabric(text.replace(old, new, 1), source="<next>")

    heavy = nxt('{a: "tor-1-1:1", b: "agg-1-1:1"}', '{a: "tor-1-1:1", b: "agg-1-1:1", weight: 10}')
    why = mixed_routing_hazard(cur, heavy)
    assert why is not None and why.startswith("relays meet (link ") and \
        why.endswith("link tor-1-1:1-agg-1-1:1 is re-weighted (1 -> 10)"), why
    moved_prefix = parse_fabric(text.replace("prefixes: [10.0.0.0/24]", "prefixes: [10.0.9.0/24]", 1).replace(
        "prefixes: [10.0.1.0/24]", "prefixes: [10.0.1.0/24, 10.0.0.0/24]", 1), source="<next>")
    assert "prefix 10.0.0.0/24 moves (tor-1-1 -> tor-1-2)" in str(mixed_routing_hazard(cur, moved_prefix))
    assert "switch tor-1-1 relays traffic" in str(mixed_routing_hazard(
        cur, nxt("  - name: tor-1-1\n", "  - name: tor-1-1\n    transit: true\n")))
    removed = nxt('  - {a: "tor-1-1:1", b: "agg-1-1:1"}\n', "")
    assert mixed_routing_hazard(cur, removed) is None
    grown = parse_fabric(add_tor(text, "<f>", "tor-2-2").text, source="<next>")
    assert mixed_routing_hazard(cur, grown) is None                  # a rack: only its own links are new
    timers = nxt("timers: {", "timers: {switch_dead_ms: 30000, ") if "timers: {" in text else None
    assert timers is None or mixed_routing_hazard(cur, timers) is None


def test_a_moved_switch_is_not_served_a_next_config_that_could_loop_and_keeps_its_routes() -> None:
    """Tester, 3-tier lab: tor-1-1 -- agg-1-1 re-weighted to 10, agg-1-1 alone moved and served the LSD under
    the next config: it sent tor-1-1's traffic up to the spines, which (on the running config) sent half of it
    back: a loop, 34 % of the flows to tor-1-1 lost with no failure. Such a next config is not served before
    the commit (the moved switch refuses the running LSD and keeps its routes, as before); the status says
    why; the commit still works and serves it."""
    text = _clos3()
    cur = parse_fabric(text, source="<cur>")
    nxt = parse_fabric(text.replace('{a: "tor-1-1:1", b: "agg-1-1:1"}',
                                    '{a: "tor-1-1:1", b: "agg-1-1:1", weight: 10}', 1), source="<next>")
    core = master(cur)
    cores = {core.id: core}
    sw = Switches(cur)
    report_all(core, cur, sw, 0.0, 1)
    sw.run(cores, 0.0, 0.3)
    assert core.rollout_prepare(nxt, 0.3)
    st = core.rollout_status(0.3)
    assert st["next_withheld"] is not None and "tor-1-1:1-agg-1-1:1 is re-weighted" in st["next_withheld"]
    sw.move("agg-1-1", nxt, 0.4)
    seen = sw.pump(cores, core.handle("agg-1-1", report(nxt, "agg-1-1", seq=10), 0.4), 0.4)
    seen += sw.run(cores, 0.4, 0.8)
    agg = sw.replicas["agg-1-1"]
    assert not agg.has_data and agg.config_mismatch == cur.digest        # refuses the running LSD: keeps its flows
    assert not [e for e in seen if isinstance(e, NextVersion)] and core.next_lsd_version() is None
    assert "agg-1-1" not in core.dist.moved
    for s in cur.switches:                                               # the rest moves; the commit serves N
        if s.name != "agg-1-1":
            sw.move(s.name, nxt, 0.9)
            sw.pump(cores, core.handle(s.name, report(nxt, s.name, seq=30), 0.9), 0.9)
    acts = core.rollout_commit(1.0)
    sw.pump(cores, acts, 1.0)
    sw.run(cores, 1.0, 1.2)
    assert agg.version == core.version and agg.config_mismatch is None and agg.states() == core.lsd.states()



def test_a_switch_moving_onto_the_next_config_carries_the_lsd_again_only_if_it_ends_a_new_link() -> None:
    """Review 39: every moved switch's first report under N (and every flip) marked the evidence dirty, and the
    next tick carried the whole LSD again (O(links): 8-15 ms at Jupiter size, in the master's turn) to find the
    content unchanged — once per tick while switches move, though only the ends of N's new links can change
    it (a carried link follows the running LSD, whose new versions refresh it anyway)."""
    cur, nxt, core, cores, sw = added_leaf_setup()
    sw.move("leaf-1", nxt, 0.4)
    sw.pump(cores, core.handle("leaf-1", report(nxt, "leaf-1", seq=10), 0.4), 0.4)
    sw.run(cores, 0.4, 0.6)
    view = core._next_lsd
    assert view is not None and sw.replicas["leaf-1"].has_data
    carried: list[int] = []
    real = view._carry

    class Counting:                             # the index map, counting its O(links) calls
        new_link_switches = getattr(real, "new_link_switches", frozenset())

        def __call__(self, states: bytes, end_up):  # noqa: ANN001, ANN204
            carried.append(1)
            return real(states, end_up)

    view._carry = Counting()                    # type: ignore[assignment]
    v = core.version
    # leaf-2 and leaf-3 move (same ports as before: the running LSD does not change): nothing to carry again
    for i, name in enumerate(("leaf-2", "leaf-3")):
        t = 0.7 + 0.1 * i
        sw.move(name, nxt, t)
        sw.pump(cores, core.handle(name, report(nxt, name, seq=20), t), t)
        sw.run(cores, t, t + 0.05)
    assert core.version == v and carried == [], carried
    assert all(sw.replicas[n].has_data and sw.replicas[n].digest == nxt.digest for n in ("leaf-2", "leaf-3"))
    # spine-1 moves: it ends the new link to leaf-4, which its report under N may make usable: carried again
    sw.move("spine-1", nxt, 1.0)
    sw.pump(cores, core.handle("spine-1", report(nxt, "spine-1", seq=30), 1.0), 1.0)
    sw.run(cores, 1.0, 1.05)
    assert carried == [1]
    # leaf-4 (only in N) reports: the new link leaf-4 -- spine-1 is UP for every moved switch
    sw.replicas["leaf-4"] = LsdReplica(nxt, "leaf-4", now=1.1)
    sw.applied["leaf-4"], sw.requests["leaf-4"] = [], 0
    sw.pump(cores, core.handle("leaf-4", report(nxt, "leaf-4", seq=1), 1.1), 1.1)
    sw.run(cores, 1.1, 1.3)
    new1 = link_index(nxt, "leaf-4:1-spine-1:4")
    assert all(sw.replicas[n].states()[new1] == UP for n in ("leaf-1", "leaf-2", "spine-1", "leaf-4"))


def test_the_next_config_lsd_calls_bad_news_what_the_running_lsd_does() -> None:
    """Review 39: the view treated a drain (UP -> DRAINED) as good news, paced, where the running LSD sends it at
    once. Any entry that becomes other than UP is urgent; only UPs are paced."""
    from controller.nextlsd import NextLsd
    from controller.rollout import Carry

    cur, nxt = fabrics()
    view = NextLsd(nxt, Carry(cur, nxt))
    base = bytes([UP] * nxt.lsd_size)
    assert view.publish(1, 1, base) == (nxt.lsd_size, False)
    drained = bytearray(base)
    drained[0] = LinkState.DRAINED
    assert view.publish(2, 2, bytes(drained)) == (1, True)
    down = bytearray(drained)
    down[1] = DOWN
    assert view.publish(3, 3, bytes(down)) == (1, True)
    assert view.publish(4, 4, base) == (2, False)                   # back UP: paced


def test_a_moved_switch_that_holds_the_next_config_lsd_shows_no_lag() -> None:
    """Review 39: `/v1/clients` measured a moved switch's confirmed version against the running LSD's, above which
    the view's versions lie: its lag read None (or a number) while it held exactly what it was sent."""
    _cur, _nxt, core, _cores, sw = moved_setup()
    held = sw.replicas["leaf-1"].version
    assert held == core.next_lsd_version() and held > core.version
    core.handle("leaf-1", LsdRequest("leaf-1", core.term, held), 0.8)          # its word: it holds that version
    row = next(c for c in core.clients(0.8) if c.switch == "leaf-1")
    assert row.acked_version == held and row.lag == 0
