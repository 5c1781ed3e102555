"""Config changes without an outage (issue #21), pure parts: a master never publishes an LSD it did not hear
(a fresh mastership holds while live switches report under another config), a client never programs an LSD
of a config it does not run."""

from __future__ import annotations

import pytest

from controller.core import MasterCore, NotMaster
from controller.rollout import IncompatibleConfig, Phase, Rollout, RolloutError, carry_states
from proto.lsd import LinkState, decode_snapshot
from proto.messages import Keepalive, LsdDelta, LsdFull, LsdRequest
from tests.test_master_core import NO_GUARD, make_fabric, master, rejected, report, sends

OTHER = "0" * 64


def fresh_master(f, now: float = 0.0) -> MasterCore:
    """Every replica restarted: no valid LSD (the hold lasts switch_dead at most, unless ...)."""
    core = MasterCore(f, "m1")
    core.become_master(1, now)
    return core


def test_a_fresh_master_publishes_nothing_while_switches_report_another_config() -> None:
    f = make_fabric(NO_GUARD)
    core = fresh_master(f)
    others = [s.name for s in f.switches if s.name != "leaf-1"]
    for i, sw in enumerate(others):
        assert rejected(core.handle(sw, report(f, sw, digest=OTHER), 0.01 * i)) == ["digest_mismatch"]
    assert core.other_config(0.1) == dict.fromkeys(others, OTHER)
    # leaf-1 restarted on our config: it reports and asks for the LSD holding none (-1) ...
    core.handle("leaf-1", report(f, "leaf-1"), 0.2)
    acts = core.handle("leaf-1", LsdRequest("leaf-1", 0, -1), 0.2)
    t, got = 0.2, list(acts)
    while t < f.timers.switch_dead * 1.5:         # well past the usual end of the hold
        t += 0.5
        for sw in others:                          # they stay alive, on their config
            core.handle(sw, report(f, sw, digest=OTHER, seq=int(t * 10)), t)
        got += core.handle("leaf-1", report(f, "leaf-1", seq=int(t * 10)), t)
        got += core.tick(t)
    # ... and gets nothing: its links are DOWN for want of a report we can read, and it would program that
    assert sends(got, "leaf-1", LsdFull) == [] and core.held
    assert core.next_deadline() is not None and core.next_deadline() > t      # no spinning timer
    # every switch on our config: the LSD is published, heard from both ends of every link
    for sw in others:
        core.handle(sw, report(f, sw, seq=10_000), t)
    assert not core.held and core.other_config(t) == {}
    got = []
    for k in range(1, 20):
        got += core.tick(t + 0.05 * k)
    full = sends(got, "leaf-1", LsdFull)
    assert len(full) == 1 and full[0].version > 0


def test_a_switch_on_another_config_that_goes_silent_stops_blocking() -> None:
    f = make_fabric(NO_GUARD)
    core = fresh_master(f)
    core.handle("spine-1", report(f, "spine-1", digest=OTHER), 0.0)
    for sw in (s.name for s in f.switches if s.name != "spine-1"):
        core.handle(sw, report(f, sw), 0.0)
    dead = f.timers.switch_dead
    core.tick(dead * 0.9)
    assert core.held
    t = dead + 2 * f.timers.keepalive
    core.tick(t)
    assert not core.held and core.other_config(t) == {}


def test_a_replicated_mastership_is_not_blocked_by_another_config() -> None:
    """A new master with the replicated LSD publishes what clients already have: the old rule applies."""
    f = make_fabric(NO_GUARD)
    core = fresh_master(f)
    core.end_hold(0.0)
    core.become_master(2, 1.0)                 # its LSD is valid (built in term 1)
    core.handle("spine-1", report(f, "spine-1", digest=OTHER, term=2), 1.0)
    core.tick(1.0 + f.timers.keepalive + 0.01)
    assert not core.held


def test_a_fresh_master_does_not_replicate_what_it_did_not_hear() -> None:
    """Or a backup would serve it to a switch that asks (the issue's restart order, leaf-1 restarted fast)."""
    f = make_fabric(NO_GUARD)
    b = MasterCore(f, "m2")
    b.become_backup(1, "m1", 0.0)
    leader = MasterCore(f, "m1")
    acts = leader.become_master(1, 0.0)
    for k in range(1, 10):
        acts += leader.tick(0.1 * k)
    for m in sends(acts, "m2", LsdFull):
        b.handle("m1", m, 1.0)
    assert not b.lsd_valid
    assert rejected(b.handle("leaf-1", LsdRequest("leaf-1", 1, -1), 1.0)) == ["not_master"]


def test_a_backup_does_not_serve_while_switches_report_another_config() -> None:
    f = make_fabric(NO_GUARD)
    b = MasterCore(f, "m2")
    b.become_backup(1, "m1", 0.0)
    leader = MasterCore(f, "m1")
    acts = leader.become_master(1, 0.0) + leader.end_hold(0.0) + leader.tick(0.01)
    for m in sends(acts, "m2", LsdFull):
        b.handle("m1", m, 0.01)
    assert b.lsd_valid
    b.handle("spine-1", report(f, "spine-1", digest=OTHER), 0.1)
    assert rejected(b.handle("leaf-1", LsdRequest("leaf-1", 1, -1), 0.2)) == ["other_config"]


# ------------------------------------------------------------------------------------------ rollout (pure)

UP, DOWN, DRAINED = LinkState.UP, LinkState.DOWN, LinkState.DRAINED



def test_carry_states_keeps_links_by_name_starts_new_ones_down_and_drops_removed() -> None:
    old, new = make_fabric(NO_GUARD), make_fabric(NO_GUARD, leaves=4)
    states = bytes([UP, DRAINED, DOWN, UP, UP, UP])
    both_up = carry_states(old, states, new, lambda sw, p: True)
    assert list(both_up) == [UP, DRAINED, DOWN, UP, UP, UP, UP, UP]
    one_end = carry_states(old, states, new, lambda sw, p: sw != "leaf-4")
    assert list(one_end[6:]) == [DOWN, DOWN]                    # new links: down until both ends report
    # removing leaf-4 again: its links disappear, every other keeps its state
    assert bytes(carry_states(new, bytes(both_up), old, lambda sw, p: False)) == states


def test_rollout_state_machine_prepare_commit_abort() -> None:
    cur, nxt = make_fabric(NO_GUARD), make_fabric(NO_GUARD, leaves=4)
    ro = Rollout(cur)
    with pytest.raises(RolloutError, match="nothing to roll out"):
        ro.prepare(cur, 0.0)
    with pytest.raises(RolloutError, match="no rollout prepared"):
        ro.commit(0.0)
    assert ro.prepare(nxt, 0.0) and not ro.prepare(nxt, 0.1)       # idempotent
    assert ro.phase is Phase.PREPARED and ro.digests == (cur.digest, nxt.digest)
    with pytest.raises(RolloutError, match="commit or abort"):
        ro.prepare(make_fabric(NO_GUARD, leaves=5), 0.1)
    ro.note("leaf-1", cur.digest, 1.0)
    ro.note("leaf-2", nxt.digest, 1.0)
    assert ro.blockers(1.0) == {"leaf-1": "holds the current config"}
    with pytest.raises(RolloutError, match="leaf-1"):
        ro.commit(1.0)
    st = ro.status(1.0)
    assert st["switches"]["leaf-1"] == "current" and st["switches"]["leaf-2"] == "next"
    assert st["switches"]["leaf-4"] == "unheard"
    # a switch silent for switch_dead no longer blocks ("every switch still alive")
    assert ro.commit(1.0 + cur.timers.switch_dead) is nxt
    assert ro.phase is Phase.IDLE and ro.current is nxt and ro.last[0] == "committed"
    assert not ro.abort(2.0)


def test_a_pending_config_is_taken_only_when_the_leader_runs_it_and_an_abort_drops_it() -> None:
    """A replica restarted mid-rollout on the next config's file runs the recorded running config with that
    file pending (controller.durable.RolloutStore): a leader's snapshot under the pending digest (a commit
    it missed) makes it current; one under the running digest does not; a prepare or an abort drops it."""
    cur, nxt = make_fabric(NO_GUARD), make_fabric(NO_GUARD, leaves=4)
    core = MasterCore(cur, "m2")
    core.rollout.pending = nxt
    assert core.rollout.status(0.0)["pending"] == nxt.digest and core.rollout.status(0.0)["next"] is None
    assert core.rollout.pending_for(cur.digest, 0.0) is None and core.rollout.next is None
    assert core.rollout.pending_for(nxt.digest, 0.0) is nxt and core.rollout.next is nxt
    assert core.rollout.pending is None                       # prepared now: a commit adopts it, as any
    core.rollout_abort(1.0)
    core.rollout.pending = nxt
    assert core.rollout_abort(1.0) and core.rollout.pending is None and core.fabric is cur   # abort: back, not on
    assert core.rollout.last[0] == "aborted" and not core.rollout_abort(1.1)


def test_rollout_refuses_to_change_the_masters() -> None:
    cur = make_fabric(NO_GUARD)
    with pytest.raises(RolloutError, match="masters"):
        Rollout(cur).prepare(make_fabric(NO_GUARD, masters=3), 0.0)


@pytest.mark.parametrize(("old", "new", "field"), [
    ("rest_port: 6802", "rest_port: 6902", "masters[1].rest_port"),
    ("rest_port: 6801}", "rest_port: 6801, priority: 7}", "masters[0].priority"),
    ("address: 127.0.0.1, client_port: 6602", "address: 127.0.0.2, client_port: 6602", "masters[1].address"),
    ("peer_port: 6701", "peer_port: 6711", "masters[0].peer_port"),
    ("id: m2", "id: m9", "masters[1].id"),
])
def test_rollout_names_any_field_of_a_master_it_cannot_change(old: str, new: str, field: str) -> None:
    """Only id, address and the client and peer ports were compared: a next config moving m3's REST port
    was prepared by every replica. Every field of every master is compared, the first that differs named."""
    from proto.clos import ClosParams, generate_clos_yaml
    from proto.config import parse_fabric

    text = generate_clos_yaml(ClosParams(pods=0, spines=2, leaves=3, masters=2)) + NO_GUARD
    assert old in text
    cur = parse_fabric(text, source="cur.yaml")
    nxt = parse_fabric(text.replace(old, new).replace('{a: "leaf-1:1", b: "spine-1:1"}',
                                                      '{a: "leaf-1:1", b: "spine-1:1", weight: 3}'), source="next.yaml")
    ro = Rollout(cur)
    with pytest.raises(IncompatibleConfig) as info:
        ro.prepare(nxt, 0.0)
    assert info.value.field == field and str(info.value).startswith(f"next.yaml: {field}: "), info.value
    assert ro.phase == Phase.IDLE and ro.next is None and ro.digests == (cur.digest,)


def all_report(core: MasterCore, f, now: float, seq: int, digest: str | None = None) -> list:
    out: list = []
    for s in f.switches:
        out += core.handle(s.name, report(f, s.name, seq=seq, digest=digest), now)
    return out


def lsd_by_name(core: MasterCore) -> dict[str, LinkState]:
    return {link.name: LinkState(st) for link, st in zip(core.fabric.links, core.lsd.states(), strict=True)}


def test_master_commit_adds_a_tor_keeping_every_link_and_sending_a_full_under_the_new_digest() -> None:
    cur, nxt = make_fabric(NO_GUARD), make_fabric(NO_GUARD, leaves=4)
    core = master(cur)
    all_report(core, cur, 0.0, 1)
    before = lsd_by_name(core)
    assert set(before.values()) == {UP}
    v = core.version
    assert core.rollout_prepare(nxt, 0.1)
    # switches move to the next config one by one (restart or reload); reports under both are accepted
    for i, s in enumerate(nxt.switches):
        acts = core.handle(s.name, report(nxt, s.name, seq=10 + i), 0.2 + 0.01 * i)
        assert rejected(acts) == []
    assert core.version == v and lsd_by_name(core) == before   # nothing published on the next index yet
    acts = core.rollout_commit(1.0)
    assert core.fabric is nxt and core.version == v + 1
    after = lsd_by_name(core)
    assert {k: after[k] for k in before} == before               # every existing link kept its state
    assert after["leaf-4:1-spine-1:4"] == UP and after["leaf-4:2-spine-2:4"] == UP   # both ends reported
    fulls = sends(acts, "leaf-1", LsdFull)
    assert len(fulls) == 1 and fulls[0].digest == nxt.digest and fulls[0].version == v + 1
    assert decode_snapshot(fulls[0].snapshot, len(nxt.links)) == core.lsd.states()
    # a report under the old config is now another config's
    assert rejected(core.handle("leaf-1", report(cur, "leaf-1", seq=99), 1.1)) == ["digest_mismatch"]


def test_master_commit_refused_while_a_live_switch_holds_the_current_config_then_abort() -> None:
    cur, nxt = make_fabric(NO_GUARD), make_fabric(NO_GUARD, leaves=4)
    core = master(cur)
    all_report(core, cur, 0.0, 1)
    states, v = core.lsd.states(), core.version
    core.rollout_prepare(nxt, 0.1)
    core.handle("leaf-1", report(nxt, "leaf-1", seq=5), 0.2)
    with pytest.raises(RolloutError, match="spine-1"):
        core.rollout_commit(0.3)
    assert core.rollout_status(0.3)["blockers"]["leaf-2"] == "holds the current config"
    assert core.rollout_abort(0.4)
    assert core.fabric is cur and core.lsd.states() == states and core.version == v
    # the next config's digest is another config again, and its new switch unknown
    assert rejected(core.handle("leaf-1", report(nxt, "leaf-1", seq=6), 0.5)) == ["digest_mismatch"]
    assert rejected(core.handle("leaf-4", report(nxt, "leaf-4", seq=1), 0.5)) == ["unknown_switch"]


def test_master_commit_removes_a_tor_and_keeps_drains() -> None:
    big, small = make_fabric(NO_GUARD, leaves=4), make_fabric(NO_GUARD)
    core = master(big)
    all_report(core, big, 0.0, 1)
    core.drain("link", "leaf-2:1-spine-1:2", 0.05)
    core.rollout_prepare(small, 0.1)
    all_report(core, small, 0.2, 5)
    core.handle("leaf-4", report(big, "leaf-4", seq=5), 0.2)     # leaf-4 leaves: it still runs the old config
    core.rollout_commit(0.3)                                     # not in the next config: it does not block
    after = lsd_by_name(core)
    assert len(after) == len(small.links) and after["leaf-2:1-spine-1:2"] == LinkState.DRAINED_DOWN   # out of use
    assert all(st == UP for name, st in after.items() if name != "leaf-2:1-spine-1:2")


def test_commit_is_for_the_master_and_a_backup_follows_the_leaders_snapshot() -> None:
    cur, nxt = make_fabric(NO_GUARD), make_fabric(NO_GUARD, leaves=4)
    a, b = MasterCore(cur, "m1"), MasterCore(cur, "m2")
    b.become_backup(1, "m1", 0.0)
    acts = a.become_master(1, 0.0) + all_report(a, cur, 0.0, 1) + a.end_hold(0.0)
    for m in sends(acts, "m2"):
        b.handle("m1", m, 0.0)
    for core in (a, b):
        core.rollout_prepare(nxt, 0.1)
    with pytest.raises(NotMaster):
        b.rollout_commit(0.2)
    all_report(a, nxt, 0.2, 7)
    acts = a.rollout_commit(0.3)
    full = sends(acts, "m2", LsdFull)
    assert full and full[0].digest == nxt.digest
    assert rejected(b.handle("m1", full[0], 0.31)) == []
    assert b.fabric is nxt and b.lsd.states() == a.lsd.states() and b.version == a.version
    assert b.rollout.next is None and b.rollout.last[0] == "committed"


def test_a_client_holding_an_lsd_that_has_not_reported_under_our_config_blocks_a_fresh_master() -> None:
    """The issue's restart order, with leaf-1 restarted before the others' next report: their LsdRequests
    (holding an LSD of the old masters) are enough to hold the snapshot back from leaf-1 (at -1)."""
    f = make_fabric(NO_GUARD)
    core = fresh_master(f)
    core.handle("spine-1", LsdRequest("spine-1", 1, 7), 0.1)        # on the old config: it only asks
    assert core.other_config(0.1) == {"spine-1": "unknown"}
    core.handle("leaf-1", report(f, "leaf-1"), 0.2)
    got = core.handle("leaf-1", LsdRequest("leaf-1", 0, -1), 0.2)
    for k in range(1, 12):
        got += core.tick(0.2 + 0.1 * k)
    assert sends(got, "leaf-1", LsdFull) == [] and core.held
    # spine-1 does report under our config: it no longer blocks (the others never asked: bring-up rules)
    core.handle("spine-1", report(f, "spine-1"), 1.5)
    assert core.other_config(1.5) == {}


def test_a_client_held_back_still_hears_its_master() -> None:
    """A client that first speaks during a strict hold gets keepalives (it learns its master) but no LSD."""
    f = make_fabric(NO_GUARD)
    core = fresh_master(f)
    core.handle("spine-1", report(f, "spine-1", digest=OTHER), 0.1)
    core.handle("leaf-1", report(f, "leaf-1"), 0.2)
    got = core.handle("leaf-1", LsdRequest("leaf-1", 0, -1), 0.2)
    for k in range(1, 6):
        got += core.tick(0.2 + 0.05 * k)
    assert sends(got, "leaf-1", LsdFull) == [] and sends(got, "leaf-1", Keepalive)



def _client_sends(actions: list) -> list[tuple[str, object]]:
    """(destination, message) of every Send to a switch (peers of the FMRP table are masters: left out)."""
    from controller.actions import Send

    return [(a.dest, a.msg) for a in actions if isinstance(a, Send) and not a.dest.startswith("m")]


def test_prepare_changes_nothing_any_client_receives() -> None:
    """Phase one is invisible to the fabric: a prepared master sends every switch exactly what an unprepared
    one sends for the same input (reports under the current config, a link going down, timer ticks), and a
    report under the next config changes nothing in the running LSD: the switch that sent it is served the
    LSD under the next config, nobody else."""
    cur, nxt = make_fabric(NO_GUARD), make_fabric(NO_GUARD, leaves=4)
    plain, prepared = master(cur), master(cur)
    for core in (plain, prepared):
        all_report(core, cur, 0.0, 1)
    assert prepared.rollout_prepare(nxt, 0.1)
    steps = [(0.2 + 0.01 * i, s.name, report(cur, s.name, seq=2)) for i, s in enumerate(cur.switches)]
    ports = cur.fabric_ports("leaf-1")
    steps.append((0.5, "leaf-1", report(cur, "leaf-1", usable=set(ports[1:]), seq=3)))   # a link goes down
    t = 0.6
    for now, sender, msg in steps:
        assert _client_sends(prepared.handle(sender, msg, now)) == _client_sends(plain.handle(sender, msg, now))
    while t < 3.0:                                  # keepalives, refresh timers
        assert _client_sends(prepared.tick(t)) == _client_sends(plain.tick(t))
        t += 0.05
    v, states = prepared.version, prepared.lsd.states()
    assert (v, states) == (plain.version, plain.lsd.states())
    acts = prepared.handle("leaf-2", report(nxt, "leaf-2", seq=4), 3.0)
    assert rejected(acts) == [] and not [m for _, m in _client_sends(acts) if isinstance(m, LsdFull)]
    assert (prepared.version, prepared.lsd.states()) == (v, states)
    # leaf-2 moved: it alone is served an LSD under the next config (controller.nextlsd); the running LSD and
    # what every other switch receives stay the same
    got = []
    t = 3.0
    while t < 3.5:
        got += prepared.tick(t)
        t += 0.05
    fulls = [m for d, m in _client_sends(got) if isinstance(m, LsdFull)]
    assert fulls and all(m.digest == nxt.digest for m in fulls) and \
        {d for d, m in _client_sends(got) if isinstance(m, LsdFull | LsdDelta)} == {"leaf-2"}
    assert (prepared.version, prepared.lsd.states()) == (v, states)


def test_a_client_holding_the_snapshot_this_master_sent_it_does_not_block_the_hold() -> None:
    """Multicast cold start (issue #18): a switch at -1 gets this mastership's snapshot during the hold, then
    asks again (a group keepalive announced a newer version) before its report is read. What it holds came
    from us: it is no 'unknown' LSD and must not make the hold strict; an LSD we never sent it still is."""
    f = make_fabric(NO_GUARD)
    core = fresh_master(f)
    got = core.handle("leaf-1", LsdRequest("leaf-1", 0, -1), 0.1)       # bring-up: no LSD, not held back
    for k in range(1, 4):
        got += core.tick(0.1 + 0.05 * k)
    (full,) = sends(got, "leaf-1", LsdFull)
    core.handle("leaf-1", LsdRequest("leaf-1", full.term, full.version), 0.3)
    assert core.other_config(0.3) == {}
    core.handle("leaf-2", LsdRequest("leaf-2", full.term, full.version), 0.3)   # never sent to leaf-2
    assert core.other_config(0.3) == {"leaf-2": "unknown"}


def test_the_carry_map_is_built_once_per_prepare_and_only_for_its_two_configs() -> None:
    """The link index map (controller.rollout.Carry, ~0.35 s at Jupiter size when links change) is built off the
    event loop by the reload's check and handed to the prepare; the moved switches' LSD and the commit use that
    one. A map of another pair of configs is not taken."""
    from controller.rollout import Carry

    cur, nxt = make_fabric(NO_GUARD), make_fabric(NO_GUARD, leaves=4)
    built = Carry(cur, nxt)
    r = Rollout(cur)
    assert r.prepare(nxt, 0.0, built) and r.carry() is built
    r.abort(1.0)
    with pytest.raises(RolloutError):
        r.carry()
    other = Carry(nxt, cur)                                   # the reverse pair: refused, built anew
    assert r.prepare(nxt, 2.0, other)
    mine = r.carry()
    assert mine is not other and mine.key == (cur.digest, nxt.digest) and r.carry() is mine
    states = bytes([LinkState.UP] * cur.lsd_size)
    assert mine(states, lambda sw, port: True) == carry_states(cur, states, nxt, lambda sw, port: True)
