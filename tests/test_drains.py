"""Drain notes (who/when/why): the book's semantics, their codec, replication to backups and failover, REST."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.core import DrainRefused, MasterCore
from controller.drains import ALREADY_DRAINED, INHERITED, NEW_DRAIN, REASON_CHANGED, DrainBook, DrainBookFull
from controller.server import MasterServer
from proto.clos import clos_fabric
from proto.drains import MAX_NOTES, DrainNote, NoteError, decode_notes, encode_notes
from proto.lsd import LinkState
from proto.messages import DrainNotes, DrainNotesAck
from tests.test_controller_rest import AUTH, run
from tests.test_master_core import all_up, report, sends, wire

DRAINED, UP = LinkState.DRAINED, LinkState.UP


@pytest.fixture
def fabric():
    return clos_fabric(pods=0, spines=2, leaves=3, masters=3)


def note(kind: str, target: str, who: str | None = "ann", reason: str | None = "optics") -> DrainNote:
    return DrainNote(kind, target, who, 1_700_000_000.5, reason)


# ------------------------------------------------------------------------------------------ the book
def test_book_union_semantics(fabric) -> None:
    book = DrainBook(fabric)
    spine1 = set(fabric.links_of("spine-1"))
    shared = fabric.link_at("leaf-1", 1).index               # leaf-1 -- spine-1
    book.drain(note("switch", "spine-1"))
    book.drain(note("switch", "leaf-1"))
    book.drain(note("link", fabric.links[shared].name))
    assert book.drained() == spine1 | set(fabric.links_of("leaf-1")) and book.serial == 3
    r = book.undrain("switch", "spine-1")
    # the link is still drained by leaf-1's drain and by its own
    assert shared in r.still and {n.kind for n in r.still[shared]} == {"switch", "link"}
    assert set(r.undrained) == spine1 - {shared}
    r = book.undrain("switch", "leaf-1")
    assert shared not in r.undrained and book.drained() == {shared}
    r = book.undrain("link", fabric.links[shared].name)
    assert r.undrained == (shared,) and not book.drained() and book.serial == 6
    # undraining what is not drained changes nothing
    assert book.undrain("switch", "spine-2").removed == () and book.serial == 6


def test_book_inherit_prune_replace_and_limit(fabric) -> None:
    book = DrainBook(fabric)
    book.drain(note("switch", "spine-2"))
    i = fabric.link_at("leaf-2", 1).index
    # the LSD says only link i is drained: the spine-2 note was never enacted, link i has no note
    assert book.prune({i}) == 1 and book.inherit({i}) == 1
    (n,) = book.notes
    assert n.target == fabric.links[i].name and n.who is None and n.reason == INHERITED
    # undraining a switch lifts the anonymous notes of its links, never a named one
    book.drain(note("link", fabric.links[fabric.links_of("spine-1")[1]].name))
    book.undrain("switch", "spine-1")
    assert [x.who for x in book.notes] == ["ann"]
    other = DrainBook(fabric)
    other.replace(7, (*book.notes, note("switch", "nosuch")))      # unknown targets are dropped
    assert other.serial == 7 and other.notes == book.notes
    big = DrainBook(clos_fabric(pods=0, spines=4, leaves=40, masters=1))
    for link in big.fabric.links[:MAX_NOTES]:
        big.drain(note("link", link.name))
    with pytest.raises(DrainBookFull):
        big.drain(note("link", big.fabric.links[MAX_NOTES].name))
    big.drain(note("link", big.fabric.links[0].name, reason="again"))  # replacing one is fine


def test_book_redrain_says_what_it_found(fabric) -> None:
    """Tester: `drain spine-1 --reason A` then `--reason B` replaced A silently. A re-drain now keeps the note
    when it gives the same reason or none (idempotent: the first who/when/why stay) and replaces it when it
    gives another; the result says which, with the note found."""
    book = DrainBook(fabric)
    first = book.drain(note("switch", "spine-1", "ann", "A"))
    assert (first.outcome, first.previous, first.changed) == (NEW_DRAIN, None, True)
    assert first.message() == "switch spine-1 drained" and book.serial == 1
    for again in (note("switch", "spine-1", "bob", "A"), note("switch", "spine-1", "bob", None)):
        r = book.drain(again)
        assert (r.outcome, r.previous, r.note, r.changed) == (ALREADY_DRAINED, first.note, first.note, False)
        assert r.message() == ("switch spine-1 was already drained (by ann, since 2023-11-14 22:13:20Z, reason "
                               "'A'): nothing changed")
        assert book.notes == (first.note,) and (book.serial, book.changes) == (1, 1)
    r = book.drain(note("switch", "spine-1", "bob", "B"))
    assert (r.outcome, r.previous, r.note.who, r.note.reason) == (REASON_CHANGED, first.note, "bob", "B")
    assert r.message() == ("switch spine-1 was already drained (by ann, since 2023-11-14 22:13:20Z, reason 'A'): "
                           "reason changed from 'A' to 'B'")
    assert book.notes == (r.note,) and book.serial == 2
    # an anonymous note (no who, no time, no reason) is named for what it is
    link = fabric.links[0].name
    book.drain(DrainNote("link", link, None, 0.0, None))
    r = book.drain(note("link", link, "ann", "cabling"))
    assert r.message() == f"link {link} was already drained (no reason): reason changed from no reason to 'cabling'"


def test_core_redrain_changes_nothing_or_only_the_note(fabric) -> None:
    """The master: an idempotent re-drain sends nothing (no replication, no LSD version); a new reason goes to
    the backups like any change of the book, and the LSD stays as it was."""
    a, b = MasterCore(fabric, "m1"), MasterCore(fabric, "m2")
    b.become_backup(1, "m1", 0.0)
    acts = a.become_master(1, 0.0) + all_up(a, fabric, 0.0) + a.tick(0.01)
    wire(a, b, acts, 0.0)
    acts, links, r = a.drain_target("switch", "spine-1", 0.1, who="ann", reason="A", at=1_700_000_000.0)
    assert r.outcome == NEW_DRAIN and set(links) == set(fabric.links_of("spine-1"))
    wire(a, b, acts + a.tick(0.11), 0.11)
    version, serial, states = a.version, a.drains.serial, a.lsd.states()
    acts, links, r = a.drain_target("switch", "spine-1", 0.2, who="bob", reason="A", at=1_700_000_100.0)
    assert (acts, r.outcome, r.previous.who) == ([], ALREADY_DRAINED, "ann")
    assert set(links) == set(fabric.links_of("spine-1"))
    assert (a.version, a.drains.serial, a.drains.notes) == (version, serial, (r.previous,))
    assert a.drain("switch", "spine-1", 0.25)[0] == []                 # no reason: nothing changes either
    acts, _links, r = a.drain_target("switch", "spine-1", 0.3, who="bob", reason="B", at=1_700_000_200.0)
    assert r.outcome == REASON_CHANGED and r.previous.reason == "A"
    acts += a.tick(0.31)
    assert [n.reason for n in decode_notes(sends(acts, "m2", DrainNotes)[0].notes)] == ["B"]
    wire(a, b, acts, 0.31)
    assert [(n.who, n.reason) for n in b.drains.notes] == [("bob", "B")]
    assert (a.version, a.lsd.states()) == (version, states)


def test_notes_codec_round_trip_and_errors() -> None:
    notes = (note("link", "a:1-b:2"), DrainNote("switch", "spine-1", None, 0.0, None))
    assert decode_notes(encode_notes(notes)) == notes
    full = tuple(note("link", "x" * 140, "w" * 64, "r" * 200) for _ in range(MAX_NOTES))
    assert len(encode_notes(full)) < 60_000
    for bad in (b"", b"\xc1", encode_notes(notes)[:-3], b"\x91\x93\xa4link\xa1x\xc0",
                b"\x91\x95\xa4port\xa1x\xc0\x00\xc0", b"\x91\x95\xa4link\xa1x\xc0\xff\xc0"):
        with pytest.raises(NoteError):
            decode_notes(bad)
    for kwargs in ({"kind": "port"}, {"target": ""}, {"who": "x" * 65}, {"reason": "a\nb"}, {"at": -1}):
        with pytest.raises(NoteError):
            DrainNote(**{"kind": "link", "target": "a:1-b:2", "who": None, "at": 0.0, "reason": None, **kwargs})


def test_a_drain_whose_notes_would_not_fit_one_datagram_is_refused_and_changes_nothing() -> None:
    """The limits are characters: 128 notes of 4-byte UTF-8 text are ~150 KB, not the ~45 KB of ASCII. The
    59th such drain used to change the book and the LSD, then raise MessageError building the DrainNotes
    (a 500) — and again at every timer turn: the master never replicated or ticked again."""
    f = clos_fabric(pods=0, spines=2, leaves=70, masters=2)
    m = MasterCore(f, "m1")
    m.become_master(1, 0.0)
    m.end_hold(0.0)
    all_up(m, f, 0.1)
    wide = "\U0001F600"
    refused = None
    for i, link in enumerate(f.links[:MAX_NOTES]):
        try:
            m.drain("link", link.name, 1.0 + i / 1000, who=wide * 64, reason=wide * 200, at=1.7e9)
        except DrainRefused as e:
            refused = (i, str(e))
            break
    assert refused is not None and "datagram" in refused[1], refused
    i = refused[0]
    assert len(m.drains.notes) == i and m.lsd.state(f.links[i].index) == UP        # nothing changed
    acts = m.tick(10.0)
    (msg,) = [a.msg for a in acts if isinstance(getattr(a, "msg", None), DrainNotes)]
    assert len(decode_notes(msg.notes)) == i
    m.drain("link", f.links[i].name, 11.0, who="ann", reason="short")   # a short note still fits


# ------------------------------------------------------------------------------------------ replication
def test_notes_reach_the_backups_before_the_lsd_and_survive_failover(fabric) -> None:
    a, b, c = (MasterCore(fabric, m) for m in ("m1", "m2", "m3"))
    b.become_backup(1, "m1", 0.0)
    c.become_backup(1, "m1", 0.0)
    acts = a.become_master(1, 0.0) + all_up(a, fabric, 0.0) + a.tick(0.01)
    wire(a, b, acts, 0.0)
    wire(a, c, acts, 0.0)
    assert not sends(acts, "m2", DrainNotes)                   # an empty book is not sent
    acts, links = a.drain("switch", "spine-1", 0.1, who="ann@ops", reason="optics swap", at=1_700_000_000.0)
    assert set(links) == set(fabric.links_of("spine-1"))
    acts += a.tick(0.11)
    to_b = sends(acts, "m2")
    kinds = [type(m).__name__ for m in to_b]
    assert kinds.index("DrainNotes") < kinds.index("LsdDelta")   # notes first, then the version enacting them
    back = wire(a, b, acts, 0.11)
    assert sends(back, "m1", DrainNotesAck) == [DrainNotesAck("m2", 1, a.drains.serial)]
    for m in sends(back, "m1"):
        a.handle("m2", m, 0.12)
    # m3 lost it: m1 sends the book again one keepalive later, and only to m3
    k = fabric.timers.keepalive
    assert not sends(a.tick(0.11 + k / 2), "m3", DrainNotes)
    again = a.tick(0.11 + k)
    assert sends(again, "m3", DrainNotes) and not sends(again, "m2", DrainNotes)
    wire(a, c, again, 0.2)
    assert c.drains.notes == b.drains.notes == a.drains.notes
    # m1 dies; m2 takes over with the notes and the drained links
    b.become_master(2, 1.0)
    (n,) = b.drains.notes
    assert (n.kind, n.target, n.who, n.reason, n.at) == ("switch", "spine-1", "ann@ops", "optics swap",
                                                         1_700_000_000.0)
    for sw in ("spine-1", "leaf-1"):
        b.handle(sw, report(fabric, sw, seq=5, term=2), 1.1)
    assert {b.lsd.state(i) for i in fabric.links_of("spine-1")} == {DRAINED}
    acts, result = b.undrain("switch", "spine-1", 1.2)
    assert not result.still and not b.drains.notes and b.drains.serial > a.drains.serial


def test_backup_checks_the_sender_and_drops_a_stale_book(fabric) -> None:
    b = MasterCore(fabric, "m2")
    b.become_backup(1, "m1", 0.0)
    notes = encode_notes((note("switch", "spine-2"),))
    rejected = [x.reason for x in b.handle("m3", DrainNotes("m3", 1, 1, notes), 0.0)]
    assert rejected == ["not_leader"]
    assert [x.reason for x in b.handle("m1", DrainNotes("m1", 1, 1, b"\xc1"), 0.0)] == ["malformed"]
    b.handle("m1", DrainNotes("m1", 1, 1, notes), 0.0)
    assert len(b.drains.notes) == 1
    # a new master's term: the old book goes (its own follows), and on promotion the LSD decides
    b.become_backup(2, "m3", 1.0)
    assert not b.drains.notes
    b.handle("m3", DrainNotes("m3", 2, 4, notes), 1.0)
    b.become_master(3, 2.0)                    # the LSD has nothing drained: the note was never enacted
    assert not b.drains.notes and not b.deriver.drained
    with pytest.raises(DrainRefused):
        b.drain("link", fabric.links[0].name, 2.1, reason="bad\x00text")
    assert not b.drains.notes and b.version == 0


# ------------------------------------------------------------------------------------------ REST
def test_rest_drain_with_reason_and_list(tmp_path: Path) -> None:
    async def body(server: MasterServer, c) -> None:
        r = await c.post("/v1/drain", json={"switch": "spine-1", "reason": "optics", "who": "ann"}, headers=AUTH)
        j = await r.json()
        assert r.status == 200 and j["target"] == "spine-1" and len(j["links"]) == 2
        r = await c.post("/v1/drain", json={"link": "spine-1:1-leaf-1:1"}, headers=AUTH)   # either orientation
        assert (await r.json())["target"] == "leaf-1:1-spine-1:1"
        d = await (await c.get("/v1/drains")).json()
        assert [(x["kind"], x["target"], x["who"], x["reason"]) for x in d["drains"]] == [
            ("switch", "spine-1", "ann", "optics"), ("link", "leaf-1:1-spine-1:1", "unknown@127.0.0.1", None)]
        assert d["drains"][0]["at"] > 1.7e9 and sorted(d["drained_links"]) == sorted(j["links"])
        r = await c.delete("/v1/drain", json={"switch": "spine-1"}, headers=AUTH)
        j = await r.json()
        assert [n["target"] for n in j["lifted"]] == ["spine-1"]
        assert list(j["still_drained"]) == ["leaf-1:1-spine-1:1"]
        r = await c.delete("/v1/drain", json={"switch": "spine-1"}, headers=AUTH)      # again: nothing to lift
        assert (await r.json())["lifted"] == []
        assert j["still_drained"]["leaf-1:1-spine-1:1"][0]["kind"] == "link"
        for bad in ({"switch": "spine-1", "reason": 5}, {"switch": "spine-1", "who": "x" * 65},
                    {"switch": "spine-1", "colour": "red"}):
            assert (await c.post("/v1/drain", json=bad, headers=AUTH)).status == 400, bad
        # tester finding 11: each reason says what is wrong with the field
        for bad, want in (({"switch": "spine-1", "who": 5}, "who: expected a string (at most 64 printable "
                                                             "characters), got int 5"),
                          ({"switch": "spine-1", "who": ["ann"]}, "who: expected a string"),
                          ({"switch": "spine-1", "who": "x" * 65}, "who: 65 characters, at most 64"),
                          ({"switch": "spine-1", "reason": "a\nb"}, "reason: non-printable character(s)")):
            r = await c.post("/v1/drain", json=bad, headers=AUTH)
            assert r.status == 400 and (await r.json())["error"].startswith(want), (bad, await r.json())
        r = await c.post("/v1/drain", json={"link": "leaf-1:9-spine-1:1"}, headers=AUTH)
        assert r.status == 400 and (await r.json())["unknown"] is True

    run(tmp_path, body)


def test_rest_redrain_answers_what_it_found(tmp_path: Path) -> None:
    """POST /v1/drain of a drained target: the answer keeps its fields and adds `outcome`, `previous` (the note
    found) and `message`; the same reason changes nothing, another one replaces the note."""
    async def body(server: MasterServer, c) -> None:
        r = await c.post("/v1/drain", json={"switch": "spine-1", "reason": "A", "who": "ann"}, headers=AUTH)
        first = await r.json()
        assert r.status == 200 and (first["outcome"], first["previous"]) == ("drained", None)
        assert first["message"] == "switch spine-1 drained"
        v = first["version"]
        r = await c.post("/v1/drain", json={"switch": "spine-1", "reason": "A", "who": "bob"}, headers=AUTH)
        same = await r.json()
        assert r.status == 200 and same["outcome"] == "already_drained" and same["version"] == v
        assert {k: same[k] for k in ("drained", "target", "links", "still_drained")} == {
            k: first[k] for k in ("drained", "target", "links", "still_drained")}        # the old contract
        assert (same["previous"]["who"], same["previous"]["reason"]) == ("ann", "A")
        assert same["message"].startswith("switch spine-1 was already drained (by ann, since ")
        assert same["message"].endswith(", reason 'A'): nothing changed")
        r = await c.post("/v1/drain", json={"switch": "spine-1", "reason": "B", "who": "bob"}, headers=AUTH)
        changed = await r.json()
        assert changed["outcome"] == "reason_changed" and changed["previous"]["reason"] == "A"
        assert changed["message"].endswith("reason changed from 'A' to 'B'") and changed["version"] == v
        d = await (await c.get("/v1/drains")).json()
        assert [(x["who"], x["reason"]) for x in d["drains"]] == [("bob", "B")]

    run(tmp_path, body)


def test_cli_redrain_says_what_it_found(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`firepath drain` against a real master REST: the tester's `--reason A` then `--reason B`."""
    import asyncio
    import re

    from proto.cli import main
    from tests.harness.loopcluster import free_ports

    async def body(server: MasterServer, c) -> list[tuple[int, str, str]]:
        ports = iter([c.server.port, free_ports(1)[0]])      # m1 serves here, m2 is down
        text = re.sub(r"rest_port: 680\d", lambda _m: f"rest_port: {next(ports)}", (tmp_path / "f.yaml").read_text())
        (tmp_path / "cli.yaml").write_text(text)

        def drain(*argv: str) -> tuple[int, str, str]:
            code = main(["drain", "--config", str(tmp_path / "cli.yaml"), "--switch", "spine-1", *argv])
            out, err = capsys.readouterr()
            return code, out, err

        return [await asyncio.to_thread(drain, *argv) for argv in (
            ("--dry-run",), ("--reason", "A", "--who", "ann"), ("--reason", "A", "--who", "bob"), ("--who", "bob"),
            ("--reason", "B", "--who", "bob"), ("--dry-run",))]

    dry_before, first, same, bare, changed, dry_after = run(tmp_path, body)
    assert dry_before[0] == 0 and dry_before[1].startswith("dry run: drain switch spine-1: 2 link(s)\n")
    # a dry run of a drained target says so (tester: a zero-impact table and nothing else)
    assert dry_after[0] == 0 and dry_after[1].startswith(
        "dry run: drain switch spine-1: 2 link(s) — already drained: no link would change"), dry_after[1]
    assert first[0] == 0 and first[1].startswith("drained switch spine-1: 2 link(s), LSD version 1 on master m1")
    for code, out, _err in (same, bare):          # stderr: the in-process master's log lines, not the CLI's
        assert code == 0 and re.fullmatch(
            r"switch spine-1 was already drained \(by ann, since \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ, reason 'A'\): "
            r"nothing changed \(master m1, LSD version 1, term 1\)\n", out), out
    assert changed[0] == 0 and re.fullmatch(
        r"switch spine-1 was already drained \(by ann, since [^)]*, reason 'A'\): reason changed from 'A' to 'B' "
        r"\(master m1, LSD version 1, term 1\)\n", changed[1]), changed[1]


def test_drained_links_past_the_note_limit_stay_drained_until_undrained() -> None:
    f = clos_fabric(pods=0, spines=4, leaves=40, masters=2)          # 160 links
    b = MasterCore(f, "m2")
    b.become_backup(1, "m1", 0.0)
    b.lsd.apply({i: DRAINED for i in range(MAX_NOTES + 2)})           # an LSD drained without notes
    b.lsd_term = 1
    b.become_master(2, 1.0)
    assert len(b.drains.notes) == MAX_NOTES and all(n.reason == INHERITED for n in b.drains.notes)
    unnoted = {MAX_NOTES, MAX_NOTES + 1}
    assert unnoted <= b.deriver.drained
    b.undrain("link", f.links[0].name, 1.1)                           # another change keeps them drained
    assert unnoted <= b.deriver.drained and 0 not in b.deriver.drained
    b.undrain("link", f.links[MAX_NOTES].name, 1.2)
    assert MAX_NOTES not in b.deriver.drained and MAX_NOTES + 1 in b.deriver.drained
    assert b.lsd.state(MAX_NOTES + 1) == DRAINED and b.lsd.state(MAX_NOTES) != DRAINED


def test_a_link_name_of_non_ascii_digits_is_unknown(fabric) -> None:
    """'leaf-1:\u0661' matched \\d and int() made it port 1: another spelling of a link than the API names."""
    from controller.core import UnknownTarget

    m = MasterCore(fabric, "m1")
    m.become_master(1, 0.0)
    with pytest.raises(UnknownTarget, match="expected 'switch:port-switch:port'"):
        m.drain("link", f"leaf-1:\u0661-spine-1:{fabric.link_at('leaf-1', 1).b.port}", 1.0)
