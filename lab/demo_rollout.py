"""The demo's config-rollout step (issue #21): re-weight a ToR uplink in the running lab's fabric.yaml and
roll it out in two phases under a probe (lab/reload.py), showing the ToR's ECMP groups before and after.

Adding a ToR with a host is not part of the demo (the 3-tier generator renumbers switch ids when a pod
grows); `lab reload all --grow` does it on a leaf-spine lab (tests/test_lab_rollout.py).
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
