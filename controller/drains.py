"""DrainBook: the operator drains in force, each with who/when/why (pure; see proto.drains for the notes).

A drain names a link or a whole switch; the drained links are the union over all notes (a link between
two drained switches stays drained until both are undrained; a link drained on its own and as part of
its switch stays drained until both are lifted). The book is replicated to the backups as a whole with
a `serial` that grows with every change (controller.core), so a new master inherits the notes with
the LSD. The LSD stays the authority on what is drained: when a replica becomes master it drops the notes the
LSD does not enact (`prune`) and gives every DRAINED link that no note covers (an LSD from a master
without notes, a lost DrainNotes) an anonymous "inherited" note (`inherit`), so it can be listed and
undrained like any other.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from proto.config import Fabric
from proto.drains import MAX_NOTES, DrainNote, NoteError, encode_notes

#: the reason of an anonymous note made for an LSD-drained link that no note covered
INHERITED = "inherited: drained in the LSD without a note"
#: the same for a link the LSD held DRAINED_DOWN: drained on its own (or failed) — kept out of use (`drained_alone`)
INHERITED_OUT = "inherited: drained and out of use in the LSD without a note"

#: `DrainResult.outcome` (the REST answer's `outcome`): the target had no note and has one now
NEW_DRAIN = "drained"
#: the target had a note and the request gave no reason or the same one: nothing changed (the first who/when/why stay)
ALREADY_DRAINED = "already_drained"
#: the target had a note with another reason: the request's note (who, when, why) replaced it
REASON_CHANGED = "reason_changed"


class DrainBookFull(ValueError):
    """More drains than one replication datagram holds (proto.drains.MAX_NOTES)."""


@dataclass(frozen=True, slots=True)
class UndrainResult:
    removed: tuple[DrainNote, ...]                 # notes lifted
    undrained: tuple[int, ...]                     # links no note covers any more
    still: dict[int, tuple[DrainNote, ...]]        # links of the target that other notes keep drained


@dataclass(frozen=True, slots=True)
class DrainResult:
    """What a drain request did to its target's note (`DrainBook.drain`)."""

    outcome: str                    # NEW_DRAIN | ALREADY_DRAINED | REASON_CHANGED
    previous: DrainNote | None      # the target's note before the request (None: it had none)
    note: DrainNote                 # the target's note after it

    @property
    def changed(self) -> bool:
        return self.outcome != ALREADY_DRAINED

    def message(self) -> str:
        """One line for the operator: `switch spine-1 was already drained (by ann, since 2026-12-03 06:03:42Z,
        reason 'A'): reason changed from 'A' to 'B'` (or `: nothing changed`; `switch spine-1 drained`)."""
        what = f"{self.note.kind} {self.note.target}"
        prev = self.previous
        if prev is None:
            return f"{what} drained"
        seen = [f"by {prev.who}"] if prev.who else []
        if prev.at:
            seen.append("since " + datetime.fromtimestamp(prev.at, UTC).strftime("%Y-%m-%d %H:%M:%SZ"))
        seen.append(_reason(prev.reason, "reason "))
        head = f"{what} was already drained ({', '.join(seen)})"
        if not self.changed:
            return f"{head}: nothing changed"
        return f"{head}: reason changed from {_reason(prev.reason)} to {_reason(self.note.reason)}"


def _reason(reason: str | None, label: str = "") -> str:
    return "no reason" if reason is None else f"{label}{reason!r}"


class DrainBook:
    def __init__(self, fabric: Fabric) -> None:
        self.fabric = fabric
        self.serial = 0
        #: every change of the notes, local to this replica (the runtime saves the book when it moves)
        self.changes = 0
        #: the notes are this replica's saved ones (controller.durable.DrainStore.restore), not replicated
        self.restored = False
        self._notes: dict[tuple[str, str], DrainNote] = {}
        self._link_names = {link.name: link.index for link in fabric.links}
        self._switches = {s.name for s in fabric.switches}

    # ---------------------------------------------------------------------------------------- views
    @property
    def notes(self) -> tuple[DrainNote, ...]:
        return tuple(self._notes.values())

    def links_of(self, note: DrainNote) -> tuple[int, ...]:
        if note.kind == "link":
            i = self._link_names.get(note.target)
            return () if i is None else (i,)
        return self.fabric.links_of(note.target) if note.target in self._switches else ()

    def drained(self) -> set[int]:
        """Every link some note drains."""
        out: set[int] = set()
        for n in self._notes.values():
            out.update(self.links_of(n))
        return out

    def drained_alone(self) -> set[int]:
        """Every link a link note drains (out of service itself, not only as part of a switch drain; an
        inherited note only if the LSD held the link out of use, `INHERITED_OUT`)."""
        out: set[int] = set()
        for n in self._notes.values():
            if n.kind == "link" and not (n.who is None and n.reason == INHERITED):
                out.update(self.links_of(n))
        return out

    def covering(self, index: int) -> tuple[DrainNote, ...]:
        return tuple(n for n in self._notes.values() if index in self.links_of(n))

    # ---------------------------------------------------------------------------------------- changes
    def drain(self, note: DrainNote) -> DrainResult:
        """Add the note for its target, or, for a target drained before, replace its note when `note` gives
        another reason. A re-drain with the same reason or with none changes nothing (the first who/when/why
        stay: a drain repeated to make sure, or by a script, must not erase why it was drained); the result
        says which (tester: a re-drain replaced the reason silently). DrainBookFull past MAX_NOTES, or when
        the book would not fit its replication datagram; nothing changes then."""
        previous = self._notes.get(note.key)
        if previous is not None and note.reason in (None, previous.reason):
            return DrainResult(ALREADY_DRAINED, previous, previous)
        if note.key not in self._notes and len(self._notes) >= MAX_NOTES:
            raise DrainBookFull(f"{len(self._notes)} drains in force, the limit is {MAX_NOTES}: "
                                "undrain some, or drain whole switches")
        try:                        # the book must still fit its replication datagram (NoteError says why)
            encode_notes([*(n for k, n in self._notes.items() if k != note.key), note])
        except NoteError as e:
            raise DrainBookFull(str(e)) from None
        self._notes[note.key] = note
        self.serial += 1
        self.changes += 1
        return DrainResult(NEW_DRAIN if previous is None else REASON_CHANGED, previous, note)

    def undrain(self, kind: str, target: str) -> UndrainResult:
        """Lift the note of (kind, target); undraining a switch also lifts anonymous inherited notes of its
        links. Links still covered by other notes stay drained (reported in `still`)."""
        before = self.drained()
        removed = []
        note = self._notes.pop((kind, target), None)
        if note is not None:
            removed.append(note)
        if kind == "switch":
            for i in self.fabric.links_of(target):
                key = ("link", self.fabric.links[i].name)
                n = self._notes.get(key)
                if n is not None and n.who is None and n.reason in (INHERITED, INHERITED_OUT):
                    removed.append(self._notes.pop(key))
        if removed:
            self.serial += 1
            self.changes += 1
        after = self.drained()
        if kind == "link":
            targets: tuple[int, ...] = (self._link_names[target],)
        else:
            targets = self.fabric.links_of(target)
        return UndrainResult(tuple(removed), tuple(sorted(before - after)),
                             {i: self.covering(i) for i in targets if i in after})

    def replace(self, serial: int, notes: tuple[DrainNote, ...]) -> None:
        """Take the master's whole book (replication). Notes naming nothing in this fabric are dropped."""
        self._notes = {n.key: n for n in notes if self.links_of(n)}
        self.serial = serial
        self.changes += 1
        self.restored = False

    def prune(self, lsd_drained: set[int]) -> int:
        """Drop the notes whose links the LSD does not all say DRAINED (the LSD decides; a note that arrived
        without the LSD version enacting it was never in force). Returns how many were dropped."""
        stale = [k for k, n in self._notes.items() if not set(self.links_of(n)) <= lsd_drained]
        for k in stale:
            del self._notes[k]
        if stale:
            self.serial += 1
            self.changes += 1
        return len(stale)

    def inherit(self, lsd_drained: set[int], lsd_out: set[int] = frozenset()) -> int:
        """Add an anonymous note for every LSD-drained link no note covers (`INHERITED_OUT` for those in
        `lsd_out`, the LSD's DRAINED_DOWN: it cannot tell a link drain from a failure, and keeps both out of
        use); returns how many."""
        missing = sorted(lsd_drained - self.drained())
        for i in missing:
            reason = INHERITED_OUT if i in lsd_out else INHERITED
            try:
                self.drain(DrainNote("link", self.fabric.links[i].name, None, 0.0, reason))
            except (DrainBookFull, NoteError):
                break
        return len(missing)
