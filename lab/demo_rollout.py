"""The demo's config-change steps (issue #21): re-weight a ToR uplink in the running lab's fabric.yaml and
roll it out in two phases under a probe (lab/reload.py), showing the ToR's ECMP groups before and after;
then add a rack: `firepath config add-tor` grows the fabric.yaml additively and `lab reload all --grow`
builds and rolls out the new ToR with its host under a probe.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def rollout_tour(lab: Any, src: str, dst: str, *, say: Callable[[str], None], firepath: Callable[..., int],
                 groups: Callable[[Any, str], list[str]], probe_line: Callable[[dict], str],
                 flows: int, rate: float) -> None:
    from lab.fabric import LabError
    from lab.reload import reload_lab

    tor = lab.fabric.host(src).tor
    link = lab.fabric.links[lab.fabric.links_of(tor)[0]]
    config = Path(lab.state.config)
    pat = re.compile(r'(\{a: "' + re.escape(str(link.a)) + r'", b: "' + re.escape(str(link.b)) + r'")\}')
    text = config.read_text()
    edited = pat.sub(r"\1, weight: 3}", text, count=1)
    if edited == text:
        raise LabError(f"cannot find link {link.name} in {config}")
    say(f"   ECMP groups of {tor} before:")
    for line in groups(lab, tor):
        say("     " + line)
    config.write_text(edited)
    say(f"   edited {config.name}: link {link.name} weight 3")
    for m in lab.fabric.masters:
        reload_lab(lab, m.id, log=lambda m: None)
    firepath("config", "rollout", str(config), "--status")
    probe = lab.probe(src, dst, flows=flows, rate=rate, port=7003)
    probe.start()
    try:
        time.sleep(0.5)
        t0 = time.monotonic()
        out = reload_lab(lab, "all", log=lambda m: say("   " + m))
        took = time.monotonic() - t0
        time.sleep(0.5)
        result = probe.stop()
    finally:
        probe.close()
    say(f"   rollout of {len(out['reloaded'])} clients and the commit took {took:.1f} s; "
        f"LSD version {out['committed_version']} on the new config")
    say("   " + probe_line(result))
    say(f"   ECMP groups of {tor} after (the re-weighted uplink is no longer a shortest path):")
    for line in groups(lab, tor):
        say("     " + line)


def add_tor_tour(lab: Any, src: str, dst: str, *, say: Callable[[str], None], firepath: Callable[..., int],
                 probe_line: Callable[[dict], str], flows: int, rate: float) -> None:
    from lab.fabric import LabError, load_fabric, wait_until
    from lab.reload import reload_lab

    like = lab.fabric.host(dst).tor
    config = lab.state.config
    if firepath("config", "add-tor", config, "--like", like, "--write") != 0:
        raise LabError(f"config add-tor --like {like} failed")
    new = next(s for s in load_fabric(config).switches if s.name not in {x.name for x in lab.fabric.switches})
    host = new.hosts[0].name
    probe = lab.probe(src, dst, flows=flows, rate=rate, port=7004)
    probe.start()
    try:
        time.sleep(0.5)
        out = reload_lab(lab, "all", grow=True, log=lambda m: say("   " + m) if "master" in m else None)
        pairs = [(host, h.name) for h in lab.fabric.hosts if h.name != host]
        reach = wait_until(lambda: all(v >= 1 for v in lab.ping(pairs, count=1).values()), 20.0, 0.02)
        took = time.monotonic() - out["committed_at"]
        time.sleep(0.5)
        result = probe.stop()
    finally:
        probe.close()
    say(f"   {new.name} ({', '.join(map(str, new.prefixes))}) with host {host} joined, "
        f"{len(out['reloaded'])} clients moved, LSD version {out['committed_version']}")
    say(f"   {host} reached all {len(pairs)} other hosts {took * 1000:.0f} ms after the commit" if reach
        else f"   {host} not reachable: {lab.ping(pairs, count=3)}")
    say("   " + probe_line(result))
