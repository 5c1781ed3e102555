"""What the pure master cores emit: datagrams to send, durable writes, and events for metrics/logs.

The runtime executes actions in order (so a `PersistTerm` lands on disk before any message of that term
is sent) and turns events into metrics and structured log lines. Keeping these as plain values is what
lets the cores be tested with a fake clock and no sockets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: `Send.dest` for the multicast group (distribution.mode == multicast); signed with the group key.
GROUP = "@group"


@dataclass(frozen=True, slots=True)
class Send:
    """Send `msg` to `dest`: a switch name (signed with that switch's key), a master id (signed with our
    master key) or `GROUP`. The runtime maps names to the last UDP address seen / the configured address."""

    dest: str
    msg: Any


@dataclass(frozen=True, slots=True)
class PersistTerm:
    """Write the highest term seen (and the vote cast in it, for FMRP) durably before going on."""

    term: int
    voted_for: str | None = None


# ------------------------------------------------------------------------------------------------ events
#: Rejections by the core (of authenticated messages) that normal operation does not produce — a message about
#: a switch, master or port the config does not have, or on behalf of another node — logged like the codec's
#: (controller.server, proto.bounded.RejectLog). The others (not_master, stale_term, higher_term,
#: stale_report, digest_mismatch, ...) come with every election, failover and rollout: debug only.
HOSTILE_REJECTIONS = frozenset({"malformed", "sender_mismatch", "unknown_master", "unknown_port",
                                "unknown_switch"})


@dataclass(frozen=True, slots=True)
class Rejected:
    """A decoded message the core refused; `reason` is a short stable metric label (the runtime logs those in
    HOSTILE_REJECTIONS, within a budget; the rest at debug)."""

    sender: str
    msg_type: str
    reason: str


@dataclass(frozen=True, slots=True)
class ReportAccepted:
    switch: str
    report_seq: int
    changes: int           # links whose state changed because of this report


@dataclass(frozen=True, slots=True)
class VersionChanged:
    version: int
    changes: int
    cause: str             # "report", "drain", "replication", "guard" (a held change released)


@dataclass(frozen=True, slots=True)
class NextVersion:
    """While a rollout is prepared, the LSD served to switches that moved to the next config got `version`
    (carried from the running LSD's `from_version`; `changes`: entries that differ from the previous one,
    all of them for the first; `urgent`: some link went out of use). controller.nextlsd."""

    version: int
    from_version: int
    changes: int
    urgent: bool


@dataclass(frozen=True, slots=True)
class TermSeen:
    """A message carried a term higher than ours: FMRP must react (step down / adopt the term)."""

    sender: str
    term: int


@dataclass(frozen=True, slots=True)
class RoleChanged:
    role: str
    term: int
    leader: str | None


@dataclass(frozen=True, slots=True)
class SwitchSilent:
    """A switch's client has not reported for `switch_dead` (or `silent=False`: it reported again). Its
    links keep their state (silence is not evidence, see controller.linkstate): this is for logs/metrics."""

    switch: str
    silent: bool = True


@dataclass(frozen=True, slots=True)
class InputLoss:
    """The runtime told the core it dropped input (`dropped` datagrams); nobody is declared silent for it."""

    dropped: int


@dataclass(frozen=True, slots=True)
class GuardEvent:
    """The drastic-change guard (controller.guard) acted. `kind`: "hold" (links newly held, `reason` says
    why), "release" (published: `reason` "corroborated" or "confirmed"), "withdraw" (no longer wanted
    DOWN, nothing published). `links`: link indices, sorted."""

    kind: str
    links: tuple[int, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class DampEvent:
    """Master-side damping (controller.damping) acted. `kind`: "suppress" (a link's penalty passed the
    suppress threshold: held DOWN), "reuse" (it decayed below reuse: re-derived), "defer" (`switch` has no
    UP token left: these links' UPs wait), "storm" (flaps of many links from several switches within the storm
window: not charged, earlier ones refunded; `links` = the storm's links so far). `penalty`: the link's
penalty then (0 for "defer" and "storm")."""

    kind: str
    links: tuple[int, ...]
    switch: str | None
    penalty: int


@dataclass(frozen=True, slots=True)
class Handover:
    """Issue #16: master `master` of `term` steps down in favour of `successor`, which is two-way with
    `theirs` switches against `ours` (successor's view; `own` = the master's own count of itself)."""

    master: str
    successor: str
    term: int
    own: int
    theirs: int
    ours: int


@dataclass(frozen=True, slots=True)
class PeerAcked:
    """A client (LsdRequest) or backup (ReplicationAck) told us the version it has; lag = ours - its."""

    peer: str
    version: int
    lag: int


Event = (Rejected | ReportAccepted | VersionChanged | NextVersion | TermSeen | RoleChanged | PeerAcked | SwitchSilent
         | InputLoss | GuardEvent | DampEvent
         | Handover)
Action = Send | PersistTerm | Event


# ------------------------------------------------------------------------------------------ FMRP actions
# What controller.fmrp returns besides PersistTerm and Handover (re-exported there; roles.FmrpDriver
# translates them for the master core).
@dataclass(frozen=True, slots=True)
class SendPeer:
    """Send `msg` to the master replica `to` (signed with our master key)."""

    to: str
    msg: Any


@dataclass(frozen=True, slots=True)
class BecomeMaster:
    term: int


@dataclass(frozen=True, slots=True)
class BecomeBackup:
    term: int
    leader: str


@dataclass(frozen=True, slots=True)
class BecomeInactive:
    """Neither master nor backup (init wait over, electing, lease lost, stepped down). `term` is the highest
    term in which a master is known to exist (never decreases; safe to pass to MasterCore.become_inactive)."""

    term: int
