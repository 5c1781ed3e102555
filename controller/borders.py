"""The borders' eBGP sessions as the master knows them (issue #13; pure: reports and `now` in, a view out).

Each eBGP border summarises its sessions in its port reports (`PortReport.bgp`: per configured peer, its
index, state, whole seconds in that state, prefixes in and out, max-prefix teardowns). The master keeps
the newest summary of each border with the time it arrived and renders it for `GET /v1/borders`, with the
peer's address and AS from the config and the seconds aged by the report's age. Nothing here is routing
state: the LSD carries only what each border provides (its external slots); this is for operators.
"""

from __future__ import annotations

from typing import Any

from proto.config import Fabric
from proto.messages import BgpSession

__all__ = ["BorderSessions"]


class BorderSessions:
    def __init__(self) -> None:
        self._latest: dict[str, tuple[tuple[BgpSession, ...], float]] = {}

    def note(self, switch: str, sessions: tuple[BgpSession, ...], now: float) -> None:
        """The newest accepted report of `switch` carried `sessions` (a non-border reports none)."""
        if sessions or switch in self._latest:
            self._latest[switch] = (sessions, now)

    def view(self, fabric: Fabric, now: float, provided: dict[str, dict[str, bool]],
             alive: Any = None) -> dict[str, Any]:
        """Border name -> {report_age_s, alive, provides, sessions: [{peer, peer_as, state, uptime_s |
        down_s, prefixes_in, prefixes_out, max_prefix, teardowns}]}, for every switch with `bgp:` (a border
        not heard yet has `report_age_s` None and its sessions "unknown")."""
        out: dict[str, Any] = {}
        for sw in fabric.switches:
            if sw.bgp is None:
                continue
            sessions, at = self._latest.get(sw.name, ((), None))
            by_index = {s.peer: s for s in sessions}     # an index past the config's peers is not shown
            age = None if at is None else max(0.0, now - at)
            rows = []
            for k, peer in enumerate(sw.bgp.peers):
                row: dict[str, Any] = {"peer": str(peer.address), "peer_as": peer.peer_as,
                                       "max_prefix": peer.max_prefix}
                s = by_index.get(k)
                if s is None:
                    row["state"] = "unknown"
                else:
                    secs = round(s.seconds + (age or 0.0), 1)
                    row.update(state=BgpSession.STATE_NAMES[s.state], prefixes_in=s.prefixes_in,
                               prefixes_out=s.prefixes_out, teardowns=s.teardowns)
                    row["uptime_s" if s.state == BgpSession.STATE_ESTABLISHED else "down_s"] = secs
                rows.append(row)
            out[sw.name] = {"report_age_s": None if age is None else round(age, 3),
                            "alive": None if alive is None else bool(alive(sw.name)),
                            "provides": provided.get(sw.name, {}), "sessions": rows}
        return out
