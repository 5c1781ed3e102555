"""One firepath client per switch: OpenFlow controller roles (pure; OpenFlow 1.5 section 6.3.6).

Two client processes started for one switch (a misconfiguration) both reach its OVS, which listens
passively and accepts both: each would send ND frames and program flows, the peers would see ND from two
incarnations and flap the links. So on every (re)connection, right after the features handshake and before
anything else, the driver asks for `Role.MASTER` with the process's `generation_id` (its start time in ns,
fixed for the process's life): a newer process always exceeds it, and a reconnect of the same process keeps
winning against an older one. The switch then demotes every other controller to SLAVE (OVS refuses a
SLAVE's packet-outs and flow/group mods with OFPBRC_IS_SLAVE, and tells it with an OFPT_ROLE_STATUS on
OpenFlow 1.4+), and refuses an older generation's request (OFPRRFC_STALE).

`RoleGuard` is fed what the switch says (role replies and statuses, errors) and decides, once, that another
firepath client took the switch over (`TakenOver`): the daemon then logs one ERROR line, stops sending
and exits non-zero (a supervisor restarts it; if the other one is still there it loses again at once).
"""

from __future__ import annotations

from dataclasses import dataclass

from client.ofmsg import Role

__all__ = ["OFPBRC_IS_SLAVE", "OFPET_BAD_REQUEST", "OFPET_ROLE_REQUEST_FAILED", "OFPRRFC_STALE", "RoleGuard",
           "TakenOver"]

# Error types and codes (same values in OpenFlow 1.3 and 1.5).
OFPET_BAD_REQUEST = 1
OFPBRC_IS_SLAVE = 10
OFPET_ROLE_REQUEST_FAILED = 11
OFPRRFC_STALE = 0


@dataclass(frozen=True, slots=True)
class TakenOver:
    """Another controller (another firepath client process) owns the switch now."""

    switch: str
    ours: int
    theirs: int | None  # the new master's generation_id, when the switch said it
    cause: str          # "role_status" | "stale_generation" | "is_slave"

    def message(self) -> str:
        theirs = "unknown (newer)" if self.theirs is None else str(self.theirs)
        return (f"switch {self.switch}: another firepath client took over the switch's OpenFlow connection "
                f"(cause={self.cause} our_generation_id={self.ours} their_generation_id={theirs}); "
                f"stopping ND and programming and exiting: run exactly one client per switch")


class RoleGuard:
    """Tracks this process's controller role on one switch; `taken_over` is set by the first evidence."""

    def __init__(self, switch: str, generation_id: int) -> None:
        self.switch = switch
        self.generation_id = generation_id
        self.role: Role | None = None       # as the switch last confirmed it
        self.taken_over: TakenOver | None = None

    def request(self) -> Role:
        return Role.MASTER

    def _lost(self, theirs: int | None, cause: str) -> TakenOver | None:
        if self.taken_over is not None:
            return None                      # decided once
        self.role = Role.SLAVE
        self.taken_over = TakenOver(self.switch, self.generation_id, theirs, cause)
        return self.taken_over

    def on_connected(self) -> None:
        """A new connection: the role is unknown until the switch answers the request sent on it."""
        if self.taken_over is None:
            self.role = None

    def on_role_reply(self, role: int, generation_id: int) -> TakenOver | None:
        """The switch's answer to our request."""
        if role == Role.SLAVE:
            return self._lost(generation_id if generation_id != self.generation_id else None, "role_reply")
        if self.taken_over is None:
            self.role = Role(role)
        return None

    def on_role_status(self, role: int, generation_id: int) -> TakenOver | None:
        """An OFPT_ROLE_STATUS: the switch changed our role (another controller became master)."""
        if role == Role.SLAVE:
            return self._lost(generation_id, "role_status")
        return None

    def on_error(self, type_: int, code: int) -> TakenOver | None:
        """An error of the switch: STALE (our generation is older than the master's) or IS_SLAVE."""
        if type_ == OFPET_ROLE_REQUEST_FAILED and code == OFPRRFC_STALE:
            return self._lost(None, "stale_generation")
        if type_ == OFPET_BAD_REQUEST and code == OFPBRC_IS_SLAVE:
            return self._lost(None, "is_slave")
        return None
