"""Durable master state (controller.durable) and the single-master role driver (controller.roles)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from controller.actions import PersistTerm, Send, TermSeen
from controller.core import MasterCore, Role
from controller.durable import STATE_FILE, DurableState, DurableStateError, StateStore
from controller.roles import SingleMasterDriver
from proto.clos import ClosParams, clos_fabric, generate_clos_yaml
from proto.messages import LsdFull


def test_missing_state_is_term_zero(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "d")
    assert store.load() == DurableState(0, None)
    assert (tmp_path / "d").is_dir()


def test_save_is_atomic_and_monotonic(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.save(DurableState(3, "m2"))
    assert StateStore(tmp_path).load() == DurableState(3, "m2")
    assert oct((tmp_path / STATE_FILE).stat().st_mode & 0o777) == oct(0o600)
    assert [p.name for p in tmp_path.iterdir()] == [STATE_FILE]          # no temp file left behind
    store.save(DurableState(3, None))
    with pytest.raises(DurableStateError, match="refusing to lower term 3 -> 2"):
        store.save(DurableState(2, None))
    assert StateStore(tmp_path).load().term == 3


@pytest.mark.parametrize("text", ["", "{", '{"term": -1}', '{"term": "3"}', '{"voted_for": "x"}',
                                  '{"term": 1, "voted_for": 5}', "[]",
                                  # nested past json's recursion limit: a RecursionError traceback at start
                                  "[" * 30_000 + "]" * 30_000, '{"term": 1, "voted_for": ' + '{"a": ' * 10_000 + "1"
                                  + "}" * 10_001])
def test_corrupt_state_is_reported(tmp_path: Path, text: str) -> None:
    (tmp_path / STATE_FILE).write_text(text)
    with pytest.raises(DurableStateError, match=STATE_FILE):
        StateStore(tmp_path).load()


def _start_on_corrupt_file(tmp_path: Path, name: str, data: bytes) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """A one-master cluster config; its state dir holding `name` with `data`; `firepath master` run on it."""
    from tests.harness.loopcluster import write_cluster_config

    config = write_cluster_config(tmp_path, masters=1)
    state = tmp_path / "state"
    state.mkdir()
    (state / name).write_bytes(data)
    proc = subprocess.run(
        [sys.executable, "-m", "controller.cli", "master", "--config", str(config), "--id", "m1",
         "--state-dir", str(state)], capture_output=True, text=True, timeout=60)
    return state, proc


def test_corrupt_state_is_one_line_at_master_start(tmp_path: Path) -> None:
    state, proc = _start_on_corrupt_file(tmp_path, STATE_FILE, b"\xff\xfe{ not json")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert str(state / STATE_FILE) in proc.stderr


@pytest.mark.parametrize(("voted_for", "why"), [
    ('"m9"', "voted_for 'm9' is not a master of the fabric (masters: m1, m2, m3)"),
    ('""', "voted_for '' is not a master of the fabric"),
    ('"m1\\nm2"', "voted_for 'm1\\nm2' is not a master of the fabric"),
    ("5", "voted_for must be a string or null, got 5"),
    ("true", "voted_for must be a string or null, got True"),
    ('["m1"]', "voted_for must be a string or null, got ['m1']"),
    ('"' + "x" * 500 + '"', "voted_for 'xxx"),
])
def test_a_vote_for_no_master_of_the_fabric_is_refused(tmp_path: Path, voted_for: str, why: str) -> None:
    """A state file whose voted_for named no master of the fabric (a replica name from another fabric, a
    hand edit) loaded as it was: like a bad term, the file is refused, naming the file, the field and why."""
    text = f'{{"term": 4, "voted_for": {voted_for}}}'
    (tmp_path / STATE_FILE).write_text(text)
    store = StateStore(tmp_path, ["m1", "m2", "m3"])
    with pytest.raises(DurableStateError) as info:
        store.load()
    assert str(info.value).startswith(f"{tmp_path / STATE_FILE}: invalid state file: {why}"), str(info.value)
    assert "\n" not in str(info.value) and len(str(info.value)) < 200 + len(str(tmp_path))
    assert (tmp_path / STATE_FILE).read_text() == text                  # nothing changed, nothing cached
    with pytest.raises(DurableStateError):
        store.save(DurableState(5, "m1"))
    assert (tmp_path / STATE_FILE).read_text() == text
    for ok in ("m1", "m3", None):
        (tmp_path / STATE_FILE).write_text(json.dumps({"term": 4, "voted_for": ok}))
        assert StateStore(tmp_path, ["m1", "m2", "m3"]).load() == DurableState(4, ok)


def test_a_vote_for_no_master_stops_the_master_at_start(tmp_path: Path) -> None:
    from tests.harness.loopcluster import write_cluster_config

    config = write_cluster_config(tmp_path, masters=1)
    state = tmp_path / "state"
    state.mkdir()
    (state / STATE_FILE).write_text('{"term": 3, "voted_for": "m7"}')
    proc = subprocess.run(
        [sys.executable, "-m", "controller.cli", "master", "--config", str(config), "--id", "m1",
         "--state-dir", str(state)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == (f"firepath master: state: {state / STATE_FILE}: invalid state file: voted_for 'm7' is "
                           "not a master of the fabric (masters: m1)\n"), proc.stderr
    assert (state / STATE_FILE).read_text() == '{"term": 3, "voted_for": "m7"}'


def test_a_state_dir_that_cannot_be_created_is_an_error_not_term_zero(tmp_path: Path) -> None:
    """mkdir's "No such file or directory" (a state dir under /proc, a vanished mount) was taken for a missing
    state file: the master started on term 0 and failed every save (under --election single it then wedged)."""
    for where in (Path("/proc/firepath-no-such-dir/state"), tmp_path / "f" / "state"):
        if where.parent == tmp_path / "f":
            (tmp_path / "f").write_text("a file, not a directory")
        with pytest.raises(DurableStateError, match="cannot create the state directory") as info:
            StateStore(where).load()
        assert str(where) in str(info.value)


@pytest.mark.timeout(20)
def test_a_state_file_that_is_not_a_regular_file_is_an_error_not_a_hang(tmp_path: Path) -> None:
    """A FIFO at the state file's path blocked the master's start for good; /dev/zero there filled memory."""
    os.mkfifo(tmp_path / STATE_FILE)
    with pytest.raises(DurableStateError, match="not a regular file"):
        StateStore(tmp_path).load()
    other = tmp_path / "zero"
    other.mkdir()
    (other / STATE_FILE).symlink_to("/dev/zero")
    with pytest.raises(DurableStateError, match="not a regular file"):
        StateStore(other).load()


def test_crash_mid_save_leaves_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = StateStore(tmp_path)
    store.save(DurableState(1, None))
    # A crash between write and rename leaves a temp file behind: the next load removes it.
    (tmp_path / f".{STATE_FILE}.99999.tmp").write_text('{"term": 7}')
    assert StateStore(tmp_path).load().term == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [STATE_FILE]

    # A save that fails (full disk) removes its own temp file and keeps the old state.
    def full_disk(fd: int, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("controller.durable.os.write", full_disk)
    with pytest.raises(OSError, match="No space"):
        store.save(DurableState(2, "m1"))
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == [STATE_FILE]
    assert StateStore(tmp_path).load() == DurableState(1, None)


def test_single_master_driver_waits_then_takes_next_term() -> None:
    f = clos_fabric(pods=0, spines=2, leaves=2, masters=1)
    core = MasterCore(f, "m1")
    d = SingleMasterDriver(core, durable_term=4)
    acts = d.start(10.0)
    assert core.role == Role.INACTIVE and core.term == 4
    assert d.next_deadline() == pytest.approx(10.0 + f.timers.master_dead)
    assert d.tick(10.1) == []
    acts = d.tick(10.0 + f.timers.master_dead)
    assert acts[0] == PersistTerm(5)                     # persisted before anything of term 5
    assert core.role == Role.MASTER and core.term == 5 and d.next_deadline() is None
    view = d.view(11.0)
    assert view["replicas"][0] == {"id": "m1", "self": True, "state": "master", "term": 5, "version": 0,
                                   "leader": "m1"}


def test_single_master_driver_gives_up_a_term_it_could_not_persist_and_tries_again() -> None:
    """A state dir that cannot be written (`--state-dir /proc/x`, a full disk): the failed save used to raise
    ValueError (become_inactive below the current term) inside the master's timer callback, which then never
    ran again — no keepalives, no LSD, a wedged master."""
    f = clos_fabric(pods=0, spines=2, leaves=2, masters=1)
    core = MasterCore(f, "m1")
    d = SingleMasterDriver(core, durable_term=0)
    d.start(0.0)
    assert d.tick(f.timers.master_dead)[0] == PersistTerm(1) and core.role == Role.MASTER
    now = f.timers.master_dead + 0.01
    d.persist_failed(1, now)                                # the save of term 1 failed
    assert core.role == Role.INACTIVE and d.next_deadline() == pytest.approx(now + f.timers.master_dead)
    acts = d.tick(now + f.timers.master_dead)               # tries the same term again
    assert acts[0] == PersistTerm(1) and core.role == Role.MASTER and core.term == 1


def test_the_last_term_is_refused_or_never_stood_in(tmp_path: Path) -> None:
    """A state file at 2^63-1 made a single master take term 2^63, which no message can carry: the first
    Keepalive raised in the timer callback and the master was wedged. Beyond u63 the file is invalid."""
    (tmp_path / STATE_FILE).write_text('{"term": 9223372036854775808}')
    with pytest.raises(DurableStateError, match="out of range"):
        StateStore(tmp_path).load()
    f = clos_fabric(pods=0, spines=2, leaves=2, masters=1)
    core = MasterCore(f, "m1")
    d = SingleMasterDriver(core, durable_term=2**63 - 1)
    d.start(0.0)
    assert d.tick(f.timers.master_dead) == [] and core.role == Role.INACTIVE and d.next_deadline() is None


def test_single_master_driver_steps_down_on_higher_term() -> None:
    f = clos_fabric(pods=0, spines=2, leaves=2, masters=2)
    core = MasterCore(f, "m1")
    d = SingleMasterDriver(core, durable_term=0)
    d.start(0.0)
    d.tick(1.0)
    assert core.role == Role.MASTER and core.term == 1
    evs = core.handle("m2", LsdFull("m2", 7, 0, f.digest, core.lsd.snapshot()), 1.1)
    assert TermSeen("m2", 7) in evs
    acts = d.observe(evs, 1.1)
    assert acts[0] == PersistTerm(7) and core.role == Role.INACTIVE and core.term == 7
    assert not [a for a in acts if isinstance(a, Send)]
    assert d.tick(5.0) == []


def test_state_dir_survives_restart_sequence(tmp_path: Path) -> None:
    for expected in (1, 2, 3):
        store = StateStore(tmp_path)
        core = MasterCore(clos_fabric(pods=0, spines=2, leaves=2, masters=1), "m1")
        d = SingleMasterDriver(core, store.load().term)
        d.start(0.0)
        for a in d.tick(1.0):
            if isinstance(a, PersistTerm):
                store.save(DurableState(a.term, a.voted_for))
        assert core.term == expected
    assert os.listdir(tmp_path) == [STATE_FILE]


def test_corrupt_saved_drain_notes_stop_the_master_at_start_with_one_line(tmp_path: Path) -> None:
    """Tester: a drains.msgpack of garbage stopped `firepath master` with a Python traceback and status 1 (the
    message was inside it); a bad master-state.json is one line and status 2. Now both are."""
    from controller.durable import DRAINS_FILE
    state, proc = _start_on_corrupt_file(tmp_path, DRAINS_FILE, b"garbage\n")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.endswith(f"firepath master: state: {state / DRAINS_FILE}: invalid drain notes: notes: bad "
                                "msgpack (ExtraData) (move the file away to start without them)\n"), proc.stderr
    assert (state / DRAINS_FILE).read_bytes() == b"garbage\n"


def test_rollout_record_restarts_a_replica_on_the_config_it_ran_not_the_one_prepared_over_it(tmp_path: Path) -> None:
    """controller.durable.RolloutStore: restarted on the config it had prepared (a file edited in place), a
    replica runs the recorded one; any other file is run as given (a deliberate restart on a new config),
    and so is the given one when the record is missing, broken or names another running text."""
    from controller.durable import RolloutStore
    from proto.config import parse_file_text

    cfg = tmp_path / "fabric.yaml"
    cur_text = generate(tmp_path, leaves=2)
    nxt_text = generate(tmp_path, leaves=3)
    cur, nxt = parse_file_text(cfg, cur_text), parse_file_text(cfg, nxt_text)
    store = RolloutStore(tmp_path / "state")
    assert store.load() is None and store.restart_config(nxt) is None
    store.set_next(nxt.digest)                   # no record of the running config: nothing written
    assert store.load() is None
    store.save_running(cur.digest, str(cfg), cur_text)
    assert store.restart_config(nxt) is None     # nothing prepared: a new file is run as given
    store.set_next(nxt.digest)
    back = store.restart_config(nxt)
    assert back is not None and back.digest == cur.digest and back.source == str(cfg.resolve())
    assert store.restart_config(cur) is None     # restarted on the running file: run as given
    (tmp_path / "state" / "running.yaml").write_text(nxt_text)       # not the recorded running config
    assert store.restart_config(nxt) is None
    (tmp_path / "state" / "rollout.json").write_text("[")
    assert store.load() is None and store.restart_config(nxt) is None
    leftover = tmp_path / "state" / ".running.yaml.4242.tmp"      # a crash mid-write
    leftover.write_text(nxt_text)
    store.load()
    assert not leftover.exists()


def generate(directory: Path, leaves: int) -> str:
    """A leaf-spine config's text whose key file exists in `directory`."""
    (directory / "fabric.key").write_text("ab" * 32 + "\n")
    return generate_clos_yaml(ClosParams(pods=0, spines=2, leaves=leaves))


def test_a_sole_master_restarted_on_its_prepared_file_has_it_prepared_again(tmp_path: Path) -> None:
    """Review: with one master (`--election single`) a restart on the file it had prepared held it pending —
    taken only when a leader runs it, and there is none: the master ran the old config for good and
    `config rollout --commit` found nothing prepared. A sole master has it prepared again; a replica of a
    cluster holds it pending (its leader decides)."""
    from controller.server import MasterServer
    from proto.auth import KeyRing
    from proto.config import parse_file_text

    cfg = tmp_path / "fabric.yaml"
    cur = parse_file_text(cfg, generate(tmp_path, leaves=2))
    nxt_text = generate(tmp_path, leaves=3)
    nxt = parse_file_text(cfg, nxt_text)
    for sole in (True, False):
        server = MasterServer(cur, "m1", KeyRing.load(tmp_path / "fabric.key"), tmp_path / f"state-{sole}",
                              bind="127.0.0.1", client_port=0, peer_port=0, rest_port=0)
        server.hold_pending(nxt, nxt_text, sole=sole)
        rollout = server.core.rollout
        assert server.core.fabric.digest == cur.digest
        if sole:
            assert rollout.next is not None and rollout.next.digest == nxt.digest and rollout.pending is None
        else:
            assert rollout.next is None and rollout.pending is not None and rollout.pending.digest == nxt.digest
