"""What one FMRP replica remembers besides its term and role, grouped by what it is for (controller.fmrp
holds the rules; these are plain records it owns and mutates)."""

from __future__ import annotations

from dataclasses import dataclass, field

#: "long ago": a time before any event
NEVER = float("-inf")


@dataclass(frozen=True, slots=True)
class Config:
    """The replica set and the timers, fixed for the life of the replica."""

    priorities: dict[str, int]
    priority: int                   # ours
    peers: tuple[str, ...]          # the other replicas
    ids: tuple[str, ...]            # configured order: the index of Hello.reach / PortReport.reach entries
    index: dict[str, int]
    majority: int                   # of the configured replicas
    hello: float                    # hello_interval (s)
    dead: float                     # master_dead (s)
    round_first: float              # first candidacy round (s); doubles per failed one up to round_max
    round_max: float
    reach_margin: int               # issue #16: how many more switches a successor must reach
    reach_dwell: float              # ... for how long (s)
    # A new master's reachability views still describe the previous mastership (the switches' bits for it
    # rise with their next reports): no hand-over before they have settled (s).
    reach_settle: float


@dataclass(slots=True)
class Candidacy:
    """Our own stands for election: as a candidate (ELECTING) or as a master re-anchoring (issue #19)."""

    at: float | None = None         # when we stand next (None: not scheduled)
    until: float | None = None      # end of the running round (None: no round running)
    next_request: float = NEVER    # next re-send of our VoteRequest to those that have not voted
    votes: set[str] = field(default_factory=set)
    failed: int = 0                 # failed candidacies since we last had a master
    yield_until: float = NEVER     # a better candidate stood in our term: retry only after its next round
    stood_term: int = -1            # term of our latest stand (its votes count until we move on)
    reanchor_at: float = NEVER     # MASTER: earliest next re-anchoring round
    # a live master below our durable term: we neither follow it nor stand against it (it re-anchors)
    lower_master: str | None = None
    lower_heard: float = NEVER

    def end_round(self) -> None:
        self.until = None
        self.votes.clear()


@dataclass(slots=True)
class Lease:
    """MASTER: who follows us (CheckQuorum) and what LSD version each backup acknowledged, in our term."""

    since: float = NEVER
    followers: dict[str, float] = field(default_factory=dict)   # replica -> last heard following us
    acked: dict[str, int] = field(default_factory=dict)         # replica -> ReplicationAck version


@dataclass(slots=True)
class HandoverPlan:
    """Mastership follows reachability (issue #16): the successor we are about to hand over to (MASTER), or
    the one a StepDown named, which alone gets votes for a round."""

    since: float | None = None
    to: str | None = None
    favour: str | None = None
    favour_until: float = NEVER


@dataclass(frozen=True, slots=True)
class PeerView:
    """What we last heard from another replica (for `GET /v1/masters`)."""

    id: str
    state: str | None
    term: int | None
    version: int | None
    priority: int
    leader: str | None
    last_hello_age: float | None  # seconds; None = never heard
    reach: tuple[int, ...] = ()    # its reachability view (Hello.reach), issue #16


class Unknown:
    """Sentinel for voted_for after a restart: we may have voted in the durable term, we do not know for whom."""

    def __repr__(self) -> str:
        return "<unknown>"


UNKNOWN = Unknown()
