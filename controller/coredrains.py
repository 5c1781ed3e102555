"""Operator drains of the master core (controller.core.MasterCore mixes this in): resolve a link or switch
name, drain/undrain it as LSD states (DRAINED), and replicate the drain notes (who, why) to the backups.
The state lives on MasterCore (`drains`, `deriver`, `lsd`, ...); this module only holds the operations."""

from __future__ import annotations

import re
from collections.abc import Iterable

from controller.actions import (
    Action,
    Rejected,
    Send,
)
from controller.coretypes import DrainRefused, NotMaster, Role, UnknownTarget
from controller.drains import DrainBookFull, DrainResult, UndrainResult
from proto.drains import DrainNote, NoteError, decode_notes, encode_notes
from proto.messages import (
    DrainNotes,
    DrainNotesAck,
)

_LINK_NAME = re.compile(r"([^:\s]+):(\d{1,5})-([^:\s]+):(\d{1,5})", re.ASCII)  # OF ports <= 65279


class DrainOps:
    """MasterCore's drain operations (a mixin: every attribute it uses is MasterCore's)."""

    # ============================================================================ operator drains
    def link_index(self, name: str) -> int:
        """Index of the link named "a:1-b:2" (either orientation). Raises UnknownTarget with the reason."""
        m = _LINK_NAME.fullmatch(name)
        if m is None:
            raise UnknownTarget(f"link {name!r}: expected 'switch:port-switch:port'")
        parsed = [(m[1], int(m[2])), (m[3], int(m[4]))]
        for sw, _ in parsed:
            if sw not in self.switch_names:
                raise UnknownTarget(f"link {name!r}: unknown switch {sw!r}")
        ia = self._link_by_end.get(parsed[0])
        ib = self._link_by_end.get(parsed[1])
        # both ends the same port ("leaf-1:1-leaf-1:1"): ia == ib trivially, but no link is a self-loop
        if ia is None or ia != ib or parsed[0] == parsed[1]:
            raise UnknownTarget(f"link {name!r}: no such link in fabric {self.fabric.name!r}")
        return ia

    def resolve(self, kind: str, target: str) -> tuple[str, tuple[int, ...]]:
        """(canonical target name, its link indices) of a drain target; UnknownTarget with the reason."""
        if kind == "link":
            i = self.link_index(target)
            return self.fabric.links[i].name, (i,)
        if kind == "switch":
            return target, self._switch_links(target)
        raise UnknownTarget(f"drain target kind {kind!r}: expected 'link' or 'switch'")

    def drain(self, kind: str, target: str, now: float, *, who: str | None = None, reason: str | None = None,
              at: float = 0.0) -> tuple[list[Action], tuple[int, ...]]:
        """`drain_target` without its DrainResult: (actions, link indices)."""
        actions, indices, _result = self.drain_target(kind, target, now, who=who, reason=reason, at=at)
        return actions, indices

    def drain_target(self, kind: str, target: str, now: float, *, who: str | None = None,
                     reason: str | None = None, at: float = 0.0) -> tuple[list[Action], tuple[int, ...], DrainResult]:
        """Drain a link ("a:1-b:2", either orientation) or every link of a switch, noting who/when(`at`,
        Unix seconds)/why. Returns (actions, link indices, what happened to the target's note). A target
        drained before keeps its note when the request gives no reason or the same one (outcome
        ALREADY_DRAINED: no action, no replication, no LSD version) and gets the new note when it gives
        another (REASON_CHANGED); controller.drains.DrainBook.drain has the rule.
        Raises NotMaster, UnknownTarget, DrainRefused; nothing changes then."""
        self._check_master()
        name, indices = self.resolve(kind, target)
        try:
            # milliseconds: what the replicated note carries, so every replica shows the same time
            result = self.drains.drain(DrainNote(kind, name, who, round(at, 3), reason))
        except (NoteError, DrainBookFull) as e:
            raise DrainRefused(str(e)) from None
        if not result.changed:
            return [], indices, result
        return self._drains_changed(indices, now), indices, result

    def undrain(self, kind: str, target: str, now: float) -> tuple[list[Action], UndrainResult]:
        """Lift the drain of a link or switch. Links that another drain still covers stay drained (listed in
        the result's `still`). Raises NotMaster, UnknownTarget."""
        self._check_master()
        name, indices = self.resolve(kind, target)
        result = self.drains.undrain(kind, name)
        self._unnoted.difference_update(indices)
        return self._drains_changed(indices, now), result

    def drain_link(self, index: int, now: float) -> list[Action]:
        return self.drain("link", self._index_name(index), now)[0]

    def undrain_link(self, index: int, now: float) -> list[Action]:
        return self.undrain("link", self._index_name(index), now)[0]

    def drain_switch(self, switch: str, now: float) -> list[Action]:
        return self.drain("switch", switch, now)[0]

    def undrain_switch(self, switch: str, now: float) -> list[Action]:
        return self.undrain("switch", switch, now)[0]

    def _index_name(self, index: int) -> str:
        if not 0 <= index < len(self.fabric.links):
            raise UnknownTarget(f"link index {index}: out of range")
        return self.fabric.links[index].name

    def _switch_links(self, switch: str) -> tuple[int, ...]:
        if switch not in self.switch_names:
            raise UnknownTarget(f"switch {switch!r}: not in fabric {self.fabric.name!r}")
        return self._links_of[switch]

    def _set_drained(self) -> None:
        """The deriver's drained links from the book (and the LSD's unnoted drains, soft)."""
        self.deriver.drained = self.drains.drained() | self._unnoted
        self.deriver.drained_alone = self.drains.drained_alone()

    def _check_master(self) -> None:
        if self.role != Role.MASTER:
            raise NotMaster(f"{self.id} is {self.role.value} (term {self.term}, leader {self.leader})")

    def _drains_changed(self, indices: Iterable[int], now: float) -> list[Action]:
        """The book changed: send it to the backups first (before the LSD version that enacts it), then
        re-derive the touched links as one LSD version."""
        self._set_drained()
        out: list[Action] = []
        self._notes_acked.clear()
        self._notes_sent_at.clear()
        self._notes_tick(now, out)
        self._apply_timeouts(now, out)
        self._rederive(list(indices), now, "drain", out)
        return out

    # ---------------------------------------------------------------------------- drain notes replication
    def _notes_tick(self, now: float, out: list[Action]) -> None:
        """Send the book to every backup that has not acknowledged its serial, at most every `keepalive`.
        A book never written (serial 0) is empty, as is every backup's at the start of our term."""
        if self.role != Role.MASTER or self.drains.serial == 0:
            return
        msg: DrainNotes | None = None
        for mid in sorted(self.master_ids - {self.id}):
            if self._notes_acked.get(mid) == self.drains.serial:
                continue
            sent = self._notes_sent_at.get(mid)
            if sent is not None and now < sent + self.fabric.timers.keepalive:
                continue
            if msg is None:
                msg = DrainNotes(self.id, self.term, self.drains.serial, encode_notes(self.drains.notes))
            self._notes_sent_at[mid] = now
            out.append(Send(mid, msg))

    def _notes_deadline(self) -> float | None:
        if self.role != Role.MASTER or self.drains.serial == 0:
            return None
        pending = [self._notes_sent_at.get(mid, 0.0) + self.fabric.timers.keepalive
                   for mid in self.master_ids - {self.id} if self._notes_acked.get(mid) != self.drains.serial]
        return min(pending) if pending else None

    def _on_drain_notes(self, sender: str, m: DrainNotes) -> list[Action]:
        kind = "DrainNotes"
        out: list[Action] = []
        if not self._admit_from_leader(sender, kind, m.master, m.term, out):
            return out
        try:
            notes = decode_notes(m.notes)
        except NoteError:
            return [Rejected(sender, kind, "malformed")]
        self.drains.replace(m.serial, notes)
        self._notes_term = m.term
        return [Send(sender, DrainNotesAck(self.id, self.term, m.serial))]

    def _on_drain_notes_ack(self, sender: str, a: DrainNotesAck) -> list[Action]:
        kind = "DrainNotesAck"
        out: list[Action] = []
        if not self._admit_from_backup(sender, kind, a.backup, a.term, out):
            return out
        self._notes_acked[sender] = a.serial
        return []
