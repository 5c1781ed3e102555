"""Observations of a running lab over REST, shared by the CPN e2e tests and bench/bench_cpn.py.

Every replica's LSD (REST works on backups too), the links some replica holds down, and the moment a link
failure has reached every switch: a serving master has the link down at LSD version V and every client has
programmed a version >= V in that master's term (client REST `programmed_version`, set after the OpenFlow
barrier reply). Polled, so a time is late by up to one polling round (a few tens of ms).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from lab.fabric import wait_until


def lsds(lab: Any) -> dict[str, dict]:
    """Every reachable replica's /v1/lsd (header: master, role, term, version; links: name -> state)."""
    masters = lab.fabric.masters
    got = lab.http.get_many([(m.rest_port, "/v1/lsd") for m in masters], 1.0)
    return {m.id: r for m, r in zip(masters, got, strict=True) if isinstance(r, dict)}


def down_links(lab: Any) -> dict[str, list[str]]:
    """Links not UP in each replica's LSD, by master id (replicas with every link up are left out)."""
    out = {}
    for mid, doc in lsds(lab).items():
        down = sorted(n for n, st in doc["links"].items() if st != "up")
        if down:
            out[mid] = down
    return out


def link_story(lab: Any, link_name: str, last: int = 6) -> str:
    """Each end's last `last` port_state log lines for link `link_name` ("a:1-b:2"): why a link went down
    (phy, live, nd, damped), for a test's failure message. Ends whose log is missing say so."""
    out = []
    ends = re.fullmatch(r"(.+):(\d+)-(.+):(\d+)", link_name)
    if ends is None:
        return f"{link_name}: not a link name"
    for switch, port in ((ends[1], ends[2]), (ends[3], ends[4])):
        log = Path(lab.state.dir) / "logs" / f"client-{switch}.log"
        try:
            lines = [_short(ln) for ln in log.read_text(errors="replace").splitlines()
                     if f"port={port} " in ln and ("port_state" in ln or "damp" in ln)]
        except OSError as e:
            lines = [f"no log: {e}"]
        out.append(f"{switch} port {port}: " + " | ".join(lines[-last:]))
    return "; ".join(out)


def _short(line: str) -> str:
    """A client log line without its level and logger: time of day and the fields."""
    m = re.match(r"ts=\S*T(\S+)Z .*?logger=\S+ (.*)", line.strip())
    return f"{m[1]} {m[2]}" if m else line.strip()


def serving(lab: Any) -> str | None:
    """The one replica whose role is master, None if none or several."""
    leader = lab.current_master()
    return None if leader is None else leader[0]


def link_everywhere(lab: Any, link_name: str, since: float, timeout: float,
                    interval: float = 0.02) -> tuple[float | None, str]:
    """Bounded wait until `link_name` is down in a serving master's LSD at version V and every client has
    programmed a version >= V of that term or later. Returns (seconds since the monotonic time `since`, or
    None on timeout; a one-line detail: the version, its master, the clients still behind)."""
    found: dict[str, Any] = {}
    detail = ""

    def done() -> bool:
        nonlocal detail
        if "v" not in found:
            for doc in lsds(lab).values():
                if doc.get("role") == "master" and doc["links"].get(link_name) == "down":
                    found.update(v=int(doc["version"]), term=int(doc["term"]), by=doc["master"])
                    break
            else:
                detail = "no serving master has the link down"
                return False
        behind = {}
        for name, s in lab.client_states().items():
            if not isinstance(s, dict):
                behind[name] = "REST unreachable"
            elif not (int(s.get("programmed_version") or -1) >= found["v"] and int(s.get("term") or -1) >= found["term"]):
                behind[name] = (s.get("programmed_version"), s.get("term"), s.get("master"))
        detail = f"LSD v{found['v']} (term {found['term']}, {found['by']}); behind: {behind}"
        return not behind

    if wait_until(done, timeout, interval):
        return time.monotonic() - since, detail
    return None, detail
