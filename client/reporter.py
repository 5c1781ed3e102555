"""Port reports to the master: send on change, retransmit until acked, refresh, follow the term (pure).

Every report is *full* (all fabric ports' `PortStatus`), so a report replaces the previous one and loss
or reordering is harmless as long as the newest one gets through:

- `update(ports, now)`: if the ports differ from the last report, send a new report (report_seq + 1)
  at once. Reports carry the fabric digest and the highest master term known.
- Until a `ReportAck` for that seq (or a newer one) arrives from the master in use, the report is
  retransmitted with exponential backoff: report_retry_min, x2 each time, capped at report_retry_max
  (on a big fabric each wait stretched by up to `proto.budget.refresh_jitter`, so that switches that
  reported together do not retry together); and never less often than every report_refresh. A copy sent
  because a replica challenged the report counts as its second attempt (`retransmit_now`).
- Once acked, a refresh (a new report with the same content and seq + 1, so the master treats it like any
  other report and it is retransmitted like any other if lost) goes out every report_refresh; it keeps
  the switch alive at the master (switch_dead) even when nothing changes.

Which master: the one of the highest term known, learned from any authenticated master message
(`on_master_heard(master, term, now)` for Keepalive / LsdFull / LsdDelta; `on_ack` does it for acks).
A higher term switches to that master and re-sends at once (new seq, new term). Messages of a lower term
are ignored. Before any master is known, or when the master in use has been silent for
`master_silence` (proto.budget.master_silence: 3 x keepalive, more on a big fabric), reports go to *all* configured masters (one `SendToMaster`
each) and an ack from any of them is accepted, adopting it as the master in use.

Reachability (issue #16): every replica acknowledges the reports it hears (backups with
`ReportAck.backup`). Each report carries `reach`, a bitmap over the configured masters (fabric order): bit
i is set when replica i has acknowledged the newest report that was sent to everyone at least
`reach_timeout` ago (default 2 x keepalive; before any such report: when it acknowledged anything) — the
switch and that replica hear each other. A bit that drops is a change of the report: a new report goes
to every replica at once (a bit that comes back rides on the next report), so the replicas learn within `reach_timeout` + one report refresh that a
master became deaf or mute to this switch (controller.reach turns this into handover decisions).

`initial_seq`: report_seq of a restarted client must not go back, or the master would take its first
reports for stale duplicates; the runtime passes e.g. wall-clock milliseconds at start.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any

from proto.budget import jitter_fraction, refresh_jitter, retry_wait
from proto.budget import master_silence as budget_master_silence
from proto.config import Fabric
from proto.messages import BgpSession, PortReport, PortStatus, ReportAck

__all__ = ["Reporter", "SendToMaster"]

MAX_REACH_BITS = 63     # PortReport.reach is a u63: replicas beyond the 63rd are not tracked


@dataclass(frozen=True, slots=True)
class SendToMaster:
    """Unicast `msg` to master `master` (its configured address; signed with the switch's own key)."""

    master: str
    msg: Any      # PortReport (reporter) or LsdRequest (replica)


class Reporter:
    def __init__(self, fabric: Fabric, switch: str, *, now: float = 0.0, initial_seq: int = 0,
                 master_silence: float | None = None, reach_timeout: float | None = None) -> None:
        fabric.switch(switch)  # KeyError for an unknown switch
        if not fabric.masters:
            raise ValueError(f"{fabric.source}: masters: no master configured")
        timers = fabric.timers
        self.switch = switch
        self.digest = fabric.digest
        self.masters: tuple[str, ...] = tuple(m.id for m in fabric.masters)
        self.retry_min = timers.report_retry_min
        self.retry_max = max(timers.report_retry_max, timers.report_retry_min)
        self.refresh = timers.report_refresh
        self.refresh_jitter = refresh_jitter(len(fabric.switches))     # issue #18: proto.budget
        self.master_silence = (budget_master_silence(timers, len(fabric.switches))
                               if master_silence is None else master_silence)
        self.reach_timeout = 2 * timers.keepalive if reach_timeout is None else reach_timeout
        # Reachability: highest report_seq each replica acknowledged, reports sent to everyone (seq, time).
        self._acked_by: dict[str, int] = {}
        self._sent_all: deque[tuple[int, float]] = deque()
        self.reach = 0
        self.reach_changes = 0        # What we report.
        self.external = 0             # border with bgp: (issue #13) bitmap of its external prefixes provided now
        # border with bgp: its sessions (peer index, state, since, prefixes in, out, teardowns); `since` is
        # on the caller's clock, turned into whole seconds in the state when a report is built
        self.bgp: tuple[tuple[int, int, float, int, int, int], ...] = ()
        self.ports: tuple[PortStatus, ...] | None = None
        self.report_seq = initial_seq
        self.acked = True                        # nothing outstanding yet
        self._backoff = self.retry_min
        self._retry_at = math.inf
        self._refresh_at = math.inf
        # Whom we report to.
        self.term = 0
        self.master: str | None = None
        self._heard_at = -math.inf
        # Counters (metrics).
        self.sent = 0            # SendToMaster actions emitted
        self.reports = 0         # distinct report_seq values sent
        self.retransmits = 0
        self.refreshes = 0
        self.acks = 0
        self.term_changes = 0

    # ------------------------------------------------------------------------------------------ queries
    def master_alive(self, now: float) -> bool:
        return self.master is not None and now < self._heard_at + self.master_silence

    def targets(self, now: float) -> tuple[str, ...]:
        """The master in use if it is alive, else every configured master."""
        return (self.master,) if self.master is not None and self.master_alive(now) else self.masters

    def _resend_to(self, now: float) -> tuple[str, ...]:
        """Where a retransmission goes: `targets`, but while no master was ever heard in this life (a cold
        start) not to a replica that acknowledged this very report as a backup — it has it, and only the
        master's ack ends the retries (issue #18, stop 35: with three replicas every retry of a cold start
        cost each backup a report and an ack). A master once heard and now silent (a mute or deaf master,
        issue #16) still gets every replica's copy: the backups' view of who hears the master rides on them."""
        if self.master is not None:
            return self.targets(now)
        return tuple(m for m in self.masters if self._acked_by.get(m, -1) < self.report_seq)

    def _everyone(self, now: float) -> tuple[str, ...]:
        """Every configured master, the master in use first (if alive): it is the one that acts on the report
        (issue #20: a link down reaches the LSD before the backups' copies are even sent)."""
        if self.master is None or not self.master_alive(now):
            return self.masters
        return (self.master, *(m for m in self.masters if m != self.master))

    def report(self, now: float | None = None) -> PortReport | None:
        if self.ports is None:
            return None
        bgp = tuple(BgpSession(peer, state, 0 if now is None else max(0, min(int(now - since), 2**32 - 1)),
                               pin, pout, tear) for peer, state, since, pin, pout, tear in self.bgp)
        return PortReport(switch=self.switch, digest=self.digest, report_seq=self.report_seq, term=self.term,
                          ports=self.ports, reach=self.reach, external=self.external, bgp=bgp)

    def next_deadline(self) -> float:
        """Next retransmission or refresh; silence of the master is noticed lazily at that point."""
        if self.ports is None:
            return math.inf
        return min(self._retry_at, self._refresh_at, self._reach_deadline())

    # ------------------------------------------------------------------------------------------ inputs
    def update(self, ports: tuple[PortStatus, ...], now: float, *, send_now: bool = True) -> list[SendToMaster]:
        """The port table changed (pass `PortTable.statuses()`): send a new report unless nothing differs.

        With `send_now=False` (no usable bit changed) the new content only rides on the next refresh.
        """
        ports = tuple(ports)
        if ports == self.ports:
            return []
        first = self.ports is None
        self.ports = ports
        if send_now or first:
            return self._send_new(now)
        return []

    def set_external(self, bits: int, now: float) -> list[SendToMaster]:
        """A border's external prefixes changed (issue #13: `PortReport.external`): a new report at once,
        like a usable bit (the whole fabric's default route follows it). Before the first port report the
        bits only ride on it."""
        if bits == self.external:
            return []
        self.external = bits
        return [] if self.ports is None else self._send_new(now)

    def set_bgp(self, sessions: tuple[tuple[int, int, float, int, int, int], ...], now: float) -> list[SendToMaster]:
        """A border's eBGP sessions (issue #13: `PortReport.bgp`; (peer index, BgpSession.STATE_*, since,
        prefixes in, prefixes out, teardowns) each). A session changing state is reported at once; new
        counts ride on the next report (a change or the refresh), so a peer's UPDATEs never drive reports."""
        sessions = tuple(sessions)
        if sessions == self.bgp:
            return []
        moved = [(s[0], s[1]) for s in sessions] != [(s[0], s[1]) for s in self.bgp]
        self.bgp = sessions
        return self._send_new(now) if moved and self.ports is not None else []

    def on_master_heard(self, master: str, term: int, now: float, backup: bool = False,
                        report_taken: bool = False) -> list[SendToMaster]:
        """Any authenticated message of master `master` in `term` (Keepalive, LsdFull, LsdDelta, ReportAck).
        `backup`: the message says it comes from a backup serving us (issue #16): it names no master.
        `report_taken`: the message is that master's ack of our current report in `term` (only a master acks
        as one, in its own term): a newer term is followed without a new report (issue #18: in a cold start
        every switch's first ack is news of the master's term, and that report doubled every replica's
        intake)."""
        if backup or master not in self.masters or term < self.term:
            return []
        if term > self.term:
            self.term = term
            self.master = master
            self._heard_at = now
            self.term_changes += 1
            if report_taken:
                return []
            if (self.ports is not None and not self.acked
                    and self._acked_by.get(master, -1) < self.report_seq):
                # Our current report is outstanding and the new master never acknowledged it (as a backup):
                # its copy is still on the way to it, waiting in its queue (a cold start: the group's first
                # keepalive comes while every switch's first report waits), or lost — and then the pending
                # retry brings it, to the master in use. Either way it is taken under the new mastership: a
                # new report now would only queue behind it (issue #18). A master that acked it as a backup
                # took it before its mastership: that one gets a new report at once, below.
                return []
            return self._send_new(now) if self.ports is not None else []
        if master == self.master:
            self._heard_at = now
        elif not self.master_alive(now):
            # Same term, and the master in use is unknown or silent: follow the one we hear.
            self.master = master
            self._heard_at = now
        return []

    def on_ack(self, ack: ReportAck, now: float) -> list[SendToMaster]:
        if (ack.master in self.masters and ack.term >= self.term
                and self._acked_by.get(ack.master, -1) < ack.report_seq <= self.report_seq):
            self._acked_by[ack.master] = ack.report_seq
        if ack.backup:
            # A backup heard us: reachability only (it is not the master of any term).
            return self._reach_check(now)
        out = self.on_master_heard(ack.master, ack.term, now,
                                   report_taken=self.ports is not None and ack.report_seq >= self.report_seq)
        if ack.master != self.master or ack.term != self.term:
            return out          # from a lower term, or not from the master in use
        if not self.acked and ack.report_seq >= self.report_seq:
            self.acked = True
            self.acks += 1
            self._retry_at = math.inf
            self._backoff = self.retry_min
        return out + self._reach_check(now)

    def retransmit_now(self, now: float, master: str | None = None) -> list[SendToMaster]:
        """Send the outstanding report again at once (a master just proved its freshness handshake
        with us, so the copy it rejected as stale would now be accepted); [] if nothing is outstanding.

        `master`: the replica whose Challenge this answers — the copy goes to it alone, and the next retry
        waits a back-off from now (the copy that counts left now: in a cold start the master's queue holds it
        for seconds, and a retry timed from the stale first copy only added to that queue). The copy is the
        report's second attempt, so that back-off is the doubled one (`2 x report_retry_min` at least): the
        Challenge proves the replica alive and reading, and in a cold start the copy waits behind every
        switch's first frame — `report_retry_min` is sized to that queue's nominal drain time (proto.budget),
        so a retry one back-off after the copy fired for every switch as soon as the replica read a little
        slower than nominal (issue #18; BENCHMARKS.md "Stop 38: the retry cliff").
        Sending it to every replica (as a retransmission does while no master is known) made each Challenge
        bring a copy to the replicas that had accepted it, or were about to challenge it themselves: with 3
        replicas a cold start's first report cost each of them ~8 datagrams."""
        if self.ports is None or self.acked:
            return []
        self.retransmits += 1
        if master is None:
            return self._transmit(now)
        if master not in self.masters:
            return []
        report = self.report(now)
        assert report is not None
        self.sent += 1
        if self.master_alive(now) and master != self.master:
            # A backup's Challenge (it restarted): its copy is no attempt at the master, whose ack alone ends
            # the retries — the master's retry stays due when it was (its copy may be the one lost).
            return [SendToMaster(master, report)]
        # once per report, however many replicas challenge it (a retry's own doubling counts too)
        self._backoff = max(self._backoff, min(2.0 * self.retry_min, self.retry_max))
        self._retry_at = min(now + self._retry_wait(), self._refresh_at)
        return [SendToMaster(master, report)]

    def tick(self, now: float) -> list[SendToMaster]:
        if self.ports is None:
            return []
        changed = self._reach_check(now)
        if changed:
            return changed
        if not self.acked and now >= self._retry_at:
            self.retransmits += 1
            self._backoff = min(self._backoff * 2.0, self.retry_max)
            return self._transmit(now)
        if now >= self._refresh_at:
            self.refreshes += 1
            return self._send_new(now)
        return []

    # ------------------------------------------------------------------------------------------ reachability
    def reach_bits(self, now: float) -> int:
        """The `reach` bitmap as of `now` (see the module docstring)."""
        sent, timeout = self._sent_all, self.reach_timeout
        # Same expression as _reach_deadline (at + timeout <= now): ticking at the deadline must decide.
        while len(sent) >= 2 and sent[1][1] + timeout <= now:
            sent.popleft()                     # keep only the newest report older than the timeout
        due = sent[0][0] if sent and sent[0][1] + timeout <= now else None
        bits = 0
        for i, m in enumerate(self.masters[:MAX_REACH_BITS]):
            acked = self._acked_by.get(m)
            if acked is not None and (due is None or acked >= due):
                bits |= 1 << i
        return bits

    def _reach_deadline(self) -> float:
        """When a bit may drop next: the first report after the one every set bit acknowledged times out."""
        if not self.reach:
            return math.inf
        low = min((self._acked_by.get(m, -1) for i, m in enumerate(self.masters) if self.reach >> i & 1),
                  default=-1)
        for seq, at in self._sent_all:
            if seq > low:
                return at + self.reach_timeout
        return math.inf

    def _reach_check(self, now: float) -> list[SendToMaster]:
        if self.ports is None:
            return []
        bits = self.reach_bits(now)
        if bits == self.reach:
            return []
        lost = self.reach & ~bits
        self.reach = bits
        self.reach_changes += 1
        # A replica we no longer hear from is news (it may be a deaf or mute master): report at once. A
        # replica that answers again rides on the next report (refresh or change).
        return self._send_new(now) if lost else []

    # ------------------------------------------------------------------------------------------ internals
    def _retry_wait(self) -> float:
        """The current back-off, stretched on a big fabric by up to `refresh_jitter` and never past
        `retry_max` (proto.budget.retry_wait): switches that reported together (a cold start) must not retry
        together, or one late replica gets every switch's retry in one burst."""
        f = jitter_fraction(self.switch, self.report_seq + self.retransmits) if self.refresh_jitter else 0.0
        return retry_wait(self._backoff, self.retry_max, self.refresh_jitter, f)

    def _send_new(self, now: float) -> list[SendToMaster]:
        self.report_seq += 1
        self.reports += 1
        self.acked = False
        self._backoff = self.retry_min
        return self._transmit(now, everyone=True)

    def _transmit(self, now: float, everyone: bool = False) -> list[SendToMaster]:
        """Send the current report. Every new report (change, refresh, new term) goes to every configured
        master, so that backups know this switch and its address and can announce themselves to it the
        moment they take over; retransmissions go only to the master in use (or to all if none is, `_resend_to`)."""
        report = self.report(now)
        assert report is not None
        jitter = self.refresh_jitter * jitter_fraction(self.switch, self.reports) if self.refresh_jitter else 0.0
        self._refresh_at = now + self.refresh * (1 - jitter)
        self._retry_at = math.inf if self.acked else min(now + self._retry_wait(), self._refresh_at)
        if everyone:
            self._sent_all.append((self.report_seq, now))
        out = [SendToMaster(master, report) for master in (self._everyone(now) if everyone else self._resend_to(now))]
        self.sent += len(out)
        return out
