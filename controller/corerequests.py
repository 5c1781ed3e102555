"""LSD requests of clients at the master core (controller.core.MasterCore mixes this in): a client's
LsdRequest to the master (repair, or its first LSD), and a backup serving a switch that cannot hear its
master (issue #16). The state lives on MasterCore (`dist`, `lsd`, `deriver`, ...); this module only holds
the operations."""

from __future__ import annotations

from controller.actions import Action, PeerAcked, Rejected, Send
from controller.coretypes import Role
from proto.lsd import encode_changes
from proto.messages import MAX_LSD_BYTES, Keepalive, LsdDelta, LsdFull, LsdRequest


class RequestOps:
    """MasterCore's LsdRequest handling (a mixin: every attribute it uses is MasterCore's)."""

    def _on_lsd_request(self, sender: str, r: LsdRequest, now: float, arrived: float | None = None) -> list[Action]:
        kind = "LsdRequest"
        out: list[Action] = []
        if self.role != Role.MASTER and r.switch == sender and sender in self.switch_names:
            # its word (term, version) is kept: should we become master, a switch that holds no LSD gets ours
            # at once, without asking again (client.replica: a new term whose master has its request asks
            # nothing more)
            peer = self.dist.peer(sender, False, now)
            peer.kept = r.kept and r.version < 0
            self.dist.on_request(peer, r.term, r.version, self.lsd.version, now)
            if self.role == Role.BACKUP:
                return self._serve_as_backup(sender, r, now)
        if not self._admit_client(sender, kind, r.switch, r.term, now, out):
            return out
        peer = self.dist.peer(sender, False, now)
        peer.kept = r.kept and r.version < 0
        # a switch whose last report carried the prepared next config asks for the LSD under it (NextLsd)
        self.dist.set_moved(peer, self._holds_next(sender), now)
        self._next_refresh(now, out)
        view = self.dist.next
        current = view.version if peer.moved and view is not None and view.version >= 0 else self.lsd.version
        ours = peer.sent_term == self.term and peer.sent_version is not None and r.version <= peer.sent_version
        if self._unheard and self.dist.held and r.version >= 0 and sender not in self.deriver.views and not ours:
            # It forwards on an LSD we did not build and has not reported under our config: until it does
            # (or goes silent), publishing would be publishing what we did not hear (_maybe_release).
            self._unreported[sender] = ("unknown", now)
            self._maybe_release(now)
        self.dist.on_request(peer, r.term, r.version, current, now, arrived)
        if r.term == self.term and 0 <= r.version <= current:
            out.append(PeerAcked(sender, r.version, current - r.version))
        return out

    def _serve_as_backup(self, sender: str, r: LsdRequest, now: float) -> list[Action]:
        """Issue #16: a switch that cannot hear its master asks every replica; a backup holding the LSD of
        the current term answers from it (`backup=True`, under the master's term): a Keepalive if the switch
        is current, the minimal delta, or a snapshot. At most `max_update_rate` answers/s per switch."""
        kind = "LsdRequest"
        self.dist.peer(sender, False, now)
        out: list[Action] = []
        if self._higher_term(sender, kind, r.term, out):
            return out
        if self.lsd_term != self.term:
            return [Rejected(sender, kind, "not_master")]      # nothing of this term to give yet
        held = self.rollout.holds(sender)
        if self.other_config(now) or (held is not None and held != self.fabric.digest):
            # Live switches report under another config: the leader may be holding an LSD it did not hear
            # (MasterCore._maybe_release); a backup cannot tell, so it serves nothing (issue #21). And a switch
            # that moved to a prepared next config is served its LSD by the master alone (controller.nextlsd:
            # its versions are the master's): ours it would refuse, and a delta of ours names no config.
            return [Rejected(sender, kind, "other_config")]
        rate = self.fabric.timers.max_update_rate
        last = self._served_at.get(sender)
        if last is not None and rate > 0 and now - last < 1.0 / rate:
            return [Rejected(sender, kind, "rate_limited")]
        self._served_at[sender] = now
        v, term = self.lsd.version, self.term
        msg: Keepalive | LsdDelta | LsdFull | None = None
        if r.term == term and r.version >= v:
            msg = Keepalive(self.id, term, v, backup=True)
        elif r.term == term and r.version >= 0:
            changes = self.lsd.changes_since(r.version)
            if changes is not None:
                data = encode_changes(changes)
                if len(data) <= MAX_LSD_BYTES:
                    msg = LsdDelta(self.id, term, r.version, v, data, backup=True)
        if msg is None:
            msg = LsdFull(self.id, term, v, self.fabric.digest, self.lsd.snapshot(), backup=True)
        return [Send(sender, msg)]
