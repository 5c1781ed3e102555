"""Config changes on a running fabric, on real Open vSwitch (issue #21).

First the naive way: the operator rolls the change by restarting daemons one at a time.

The operator edits one link's weight in the lab's fabric.yaml and restarts the masters on it, then leaf-1's
client, then spine-1's, then every other client. Masters on the new config hear no switch on it at first
(every report carries the old digest): they must not publish an LSD they did not hear, and a client on
the new config must not program one it did not get, so every host pair keeps working at every step. Once
every switch runs the new config the masters publish, and the fabric converges on it.

Then the two-phase rollout (`firepath lab reload`, lab/reload.py): prepare on the masters, move clients
one by one (SIGHUP), abort and go back; then prepare again, restart a backup master mid-rollout, move every
client, commit; the re-weight takes effect on leaf-2 and every pair stays reachable throughout. A switch
moved to the prepared config follows a remote link failure before the commit (it is served the LSD under
the next config).

Bounded waits only; behaviour is asserted (pairs reachable, what the masters hold back), not timings.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import inject
from lab.fabric import (
    ADMIN_TOKEN,
    LAB_DEFAULT_TIMERS,
    OVS_BASE_PORT,
    REST_BASE_PORT,
    Lab,
    LabError,
    load_fabric,
    wait_until,
)
from lab.reload import _Poster, _token, reload_lab
from tests.harness.labs import running_lab

ovs = pytest.mark.ovs

TIMERS = tuple((k, v) for k, v in LAB_DEFAULT_TIMERS if k not in ("nd_interval_ms", "nd_dead_ms", "oam_interval_ms")) \
    + (("nd_interval_ms", 100), ("nd_dead_ms", 500), ("oam_interval_ms", 100))
CLOS = {"spines": 2, "pods": 0, "leaves": 4, "masters": 3, "timers": TIMERS}


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with running_lab("ro", CLOS, keep_logs_env="FIREPATH_KEEP_LOGS") as the_lab:
        yield the_lab


def _broken_pairs(lab: Lab, tries: float = 4.0) -> dict[tuple[str, str], int]:
    """Host pairs that lost more than one ping of 3 (a retry only covers ARP right after a restart)."""
    deadline = time.monotonic() + tries
    while True:
        res = lab.ping(count=3)
        bad = {p: v for p, v in res.items() if v < 2}
        if not bad or time.monotonic() > deadline:
            return bad


def _client_heard_master(lab: Lab, switch: str) -> bool:
    s = lab.client_states().get(switch)
    return isinstance(s, dict) and s.get("master") is not None


def _reweight(config: Path) -> None:
    """Give the link leaf-1:1 -- spine-1:1 weight 3 (a re-weight: same switches, same links)."""
    text = config.read_text()
    new = re.sub(r'(\{a: "leaf-1:1", b: "spine-1:1")\}', r'\1, weight: 3}', text, count=1)
    assert new != text
    config.write_text(new)


@ovs
def test_rolling_restart_on_a_new_config_keeps_every_pair(lab: Lab) -> None:
    assert lab.wait_converged(60.0, holds_ok=False), lab.convergence_problem(holds_ok=False)
    assert _broken_pairs(lab) == {}
    config = Path(lab.state.config)
    old_digest = lab.fabric.digest
    _reweight(config)
    new_digest = load_fabric(config).digest
    assert new_digest != old_digest

    # 1. every master restarted on the new config: they hear no switch on it
    for m in lab.fabric.masters:
        lab.stop_process(f"master:{m.id}", signal.SIGTERM)
    for m in lab.fabric.masters:
        lab.start_master(m.id)
    assert wait_until(lambda: lab.current_master() is not None, 30.0, 0.1), lab.master_states()
    assert _broken_pairs(lab) == {}, "masters restarted on the new config"     # leaf-1 next, at once

    # 2. leaf-1, 3. spine-1 restarted on the new config: they hear the masters, and get nothing to program
    for step, switch in ((2, "leaf-1"), (3, "spine-1")):
        inject.restart_client(lab, switch)
        assert wait_until(lambda sw=switch: _client_heard_master(lab, sw), 30.0, 0.1), lab.client_states()[switch]
        time.sleep(2.0)            # time for a full snapshot to arrive and be programmed, if one were sent
        bad = _broken_pairs(lab)
        assert bad == {}, (f"step {step}: {switch} restarted on the new config: {bad}; masters "
                           f"{lab.master_states()}; {switch}: {lab.client_states()[switch]}")
        _leader, st = lab.current_master()
        assert st.get("held") is True, st

    # 4. every other client on the new config: the masters publish, the fabric converges on it
    for sw in lab.fabric.switches:
        if sw.name not in ("leaf-1", "spine-1"):
            inject.restart_client(lab, sw.name)
    lab.fabric = load_fabric(config)
    assert lab.wait_converged(60.0, holds_ok=False), lab.convergence_problem(holds_ok=False)
    _leader, st = lab.current_master()
    assert st.get("held") is False and st["version"] > 0, st
    assert _broken_pairs(lab) == {}


def _select_buckets(lab: Lab, switch: str) -> list[int]:
    return [len(re.findall(r"bucket=", line)) for line in lab.dump_groups(switch) if "type=select" in line]


def _rollout(lab: Lab) -> dict:
    return lab.master_get("/v1/rollout")


def _set_weight(config: Path, link: str, weight: int | None) -> None:
    a, b = re.fullmatch(r"(.+?:\d+)-(.+:\d+)", link).groups()
    text = config.read_text()
    pat = re.compile(r'\{a: "' + re.escape(a) + r'", b: "' + re.escape(b) + r'"(, weight: \d+)?\}')
    extra = f", weight: {weight}" if weight else ""
    new = pat.sub(f'{{a: "{a}", b: "{b}"{extra}}}', text, count=1)
    assert new != text, link
    config.write_text(new)


@ovs
def test_two_phase_rollout_with_abort_a_restarted_backup_and_commit(lab: Lab) -> None:
    quiet = lambda m: None  # noqa: E731
    lab.fabric = load_fabric(lab.state.config)       # whatever the previous test left in force
    assert lab.wait_converged(60.0, holds_ok=False), lab.convergence_problem(holds_ok=False)
    config = Path(lab.state.config)
    before_text = config.read_text()
    running = lab.fabric.digest
    assert 2 in _select_buckets(lab, "leaf-2")         # leaf-2 spreads over both spines

    # an invalid file: `lab reload` refuses it; a master (REST) and a client (SIGHUP) told anyway refuse it too
    config.write_text(before_text.replace('b: "spine-1:2"', 'b: "spine-9:2"'))
    with pytest.raises(LabError, match="spine-9"):
        reload_lab(lab, "all", log=quiet)
    poster = _Poster(lab.state.netns)
    try:
        status, ans = poster.post(lab.fabric.masters[0].rest_port, "/v1/reload", _token(lab.fabric))
    finally:
        poster.close()
    assert status == 400 and "fabric.yaml:" in ans["error"] and "spine-9" in ans["error"], ans
    rec = lab.state.processes["client:leaf-1"]
    rec.send_signal(signal.SIGHUP)
    assert wait_until(lambda: "config-reload refused" in Path(rec.log).read_text(), 10.0, 0.1)
    assert rec.alive() and lab.client_states()["leaf-1"]["digest"] == running
    assert _rollout(lab)["phase"] == "idle"
    config.write_text(before_text)
    _set_weight(config, "leaf-2:1-spine-1:2", 3)

    # prepare on every master, move leaf-1: it holds the next config and programs nothing, all pairs fine
    for m in lab.fabric.masters:
        reload_lab(lab, m.id, log=quiet)
    st = _rollout(lab)
    assert st["phase"] == "prepared" and st["current"] == running and set(st["blockers"]) == \
        {s.name for s in lab.fabric.switches}, st
    reload_lab(lab, "leaf-1", log=quiet)
    st = _rollout(lab)
    assert st["switches"]["leaf-1"] == "next" and "leaf-1" not in st["blockers"], st
    # the operator's view: `firepath config rollout NEXT --status`, and a commit it refuses, naming who blocks
    cli = [sys.executable, "-c", "import sys; from proto.cli import main; sys.exit(main())", "config", "rollout",
           str(config), "--config", str(config), "--netns", lab.state.netns]
    shown = subprocess.run([*cli, "--status"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "prepared" in shown.stdout and "leaf-2: holds the current config" in \
        shown.stdout, shown.stdout + shown.stderr
    refused = subprocess.run([*cli, "--commit"], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 6 and "commit refused" in refused.stderr, refused.stdout + refused.stderr
    # leaf-1 is served the LSD under the next config (controller.nextlsd): no mismatch, a version programmed
    assert wait_until(lambda: lab.client_states()["leaf-1"].get("config_mismatch") is None and
                      (lab.client_states()["leaf-1"].get("programmed_version") or 0) > 0, 10.0, 0.1), \
        lab.client_states()["leaf-1"]
    assert _broken_pairs(lab) == {}, "leaf-1 on the prepared config"

    # abort, and leaf-1 back on the running config: it programs the masters' LSD again
    for m in lab.fabric.masters:
        poster = _Poster(lab.state.netns)
        try:
            assert poster.post(m.rest_port, "/v1/rollout/abort", _token(lab.fabric))[0] == 200
        finally:
            poster.close()
    assert _rollout(lab)["phase"] == "idle"
    # after the abort leaf-1 refuses the masters' LSD again (the running config's), as before the change
    assert wait_until(lambda: lab.client_states()["leaf-1"].get("config_mismatch") == running, 10.0, 0.1), \
        lab.client_states()["leaf-1"]
    config.write_text(before_text)
    reload_lab(lab, "leaf-1", log=quiet)
    assert wait_until(lambda: lab.client_states()["leaf-1"].get("config_mismatch") is None, 10.0, 0.1)
    assert lab.wait_converged(60.0, holds_ok=False), lab.convergence_problem(holds_ok=False)
    assert _broken_pairs(lab) == {}, "after the abort"

    # again, with a backup master restarted mid-rollout (it starts on the next config), then commit
    _set_weight(config, "leaf-2:1-spine-1:2", 3)
    for m in lab.fabric.masters:
        reload_lab(lab, m.id, log=quiet)
    leader, _st = lab.current_master()
    backup = next(m.id for m in lab.fabric.masters if m.id != leader)
    lab.stop_process(f"master:{backup}", signal.SIGTERM)
    lab.start_master(backup)
    probe = lab.probe("h-1-1", "h-3-1", flows=4, rate=250.0)
    probe.start()
    try:
        out = reload_lab(lab, "all", log=quiet)
        result = probe.stop()
    finally:
        probe.close()
    assert out["committed_version"] is not None
    assert _broken_pairs(lab) == {}, "after the commit"
    st = _rollout(lab)
    assert st["phase"] == "idle" and st["current"] == load_fabric(config).digest and st["last"]["outcome"] == \
        "committed", st
    assert max(_select_buckets(lab, "leaf-2")) == 1, lab.dump_groups("leaf-2")   # the re-weight is in force
    assert wait_until(lambda: lab.master_states()[backup].get("version") == out["committed_version"], 10.0, 0.1), \
        lab.master_states()
    # flows not touching the change: nothing lost but what a loaded 2-core machine drops while daemons restart
    assert result["lost"] <= result["sent"] * 0.02, result


def _installed_hops(lab: Lab, switch: str, prefix: str) -> tuple[set[str] | None, dict]:
    """The neighbours OVS forwards `prefix` to on `switch` (its client's GET /v1/routes, read back over its own
    OpenFlow connection), and the answer; None while the read fails or shows no installed group."""
    try:
        doc = lab.http.get(lab.rest_port(switch), f"/v1/routes?prefix={prefix}", timeout=2.0)
    except Exception as e:  # noqa: BLE001 - a client restarting: read again
        return None, {"error": repr(e)}
    rows = [r for r in doc.get("routes", []) if r.get("prefix") == prefix] if isinstance(doc, dict) else []
    if not rows or rows[0].get("installed") is None:
        return None, doc
    return {b["neighbour"] for b in rows[0]["installed"]["buckets"]}, doc


def _programmed_after(lab: Lab, switch: str, wall: float, above: int) -> float | None:
    """Wall time of the first `programmed` event of `switch`'s client (its log) at or after `wall` for a version
    above `above`; None if there is none (yet)."""
    from datetime import datetime

    from proto.logsetup import parse_event

    for line in Path(lab.state.processes[f"client:{switch}"].log).read_text(errors="replace").splitlines():
        name, fields = parse_event(line)
        if name != "programmed" or "ts" not in fields:
            continue
        ts = fields["ts"]
        t = float(ts) if not isinstance(ts, str) else datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
        version = fields.get("version")
        if t >= wall and version not in (None, "None") and int(version) > above:
            return t
    return None


@ovs
def test_a_moved_tor_follows_a_remote_link_failure_before_the_commit(lab: Lab) -> None:
    """Issue #21 follow-up: during a prepared re-weight rollout, leaf-1 reloaded onto the next config; a link NOT
    adjacent to it fails (leaf-3 -- spine-1): leaf-1 must stop sending leaf-3's traffic to spine-1, which no
    longer reaches leaf-3. Before, leaf-1 refused the masters' LSD (another digest) until the commit and kept
    both spines in its ECMP group for leaf-3 (local repair cannot see a remote link). It is now served the LSD
    under the next config: the group drops spine-1 within a bound, and still does after the commit."""
    quiet = lambda m: None  # noqa: E731
    lab.fabric = load_fabric(lab.state.config)
    assert lab.wait_converged(60.0, holds_ok=False), lab.convergence_problem(holds_ok=False)
    config = Path(lab.state.config)
    prefix = str(next(s for s in lab.fabric.switches if s.name == "leaf-3").prefixes[0])
    # the next config: no weight anywhere (an earlier test may have left leaf-1's uplink weighted) but a re-weight
    # of leaf-2:1-spine-1:2 — so leaf-1, computing on it, spreads leaf-3's prefix over both spines
    plain = re.sub(r", weight: \d+\}", "}", config.read_text())
    for weight in (3, 2):
        config.write_text(plain)
        _set_weight(config, "leaf-2:1-spine-1:2", weight)
        nxt = load_fabric(config)
        if nxt.digest != lab.fabric.digest:
            break
    for m in lab.fabric.masters:
        reload_lab(lab, m.id, log=quiet)
    reload_lab(lab, "leaf-1", log=quiet)
    # leaf-1 runs the next config and is served an LSD under it: no config mismatch, an LSD version held
    def served() -> bool:
        st = lab.client_states()["leaf-1"]
        return (isinstance(st, dict) and st.get("digest") == nxt.digest and st.get("config_mismatch") is None
                and st.get("programmed_version") is not None and st["programmed_version"] >= 0)
    if not wait_until(served, 15.0, 0.05):
        pytest.fail(f"leaf-1 not served under the next config: {json.dumps(lab.client_states()['leaf-1'], default=str)}"
                    f"; rollout {json.dumps(_rollout(lab), default=str)}; master {lab.current_master()}")
    st = _rollout(lab)
    assert st["phase"] == "prepared" and st["switches"]["leaf-1"] == "next" and st["next_version"] is not None, st
    hops, doc = _installed_hops(lab, "leaf-1", prefix)
    assert hops == {"spine-1", "spine-2"}, doc
    # the lab counts it converged on the LSD it is served (the master's `next_lsd`), not behind the running one
    assert lab.wait_converged(15.0, holds_ok=False), lab.convergence_problem(holds_ok=False)
    held_version = int(lab.client_states()["leaf-1"]["programmed_version"])
    other_version = int(lab.client_states()["leaf-2"]["programmed_version"])     # leaf-2: still on the running config

    fault = inject.fail_link(lab, "leaf-3", "spine-1")
    try:
        t0 = float(fault["at"])
        dropped = wait_until(lambda: _installed_hops(lab, "leaf-1", prefix)[0] == {"spine-2"}, 10.0, 0.01)
        delay = time.monotonic() - t0
        hops, doc = _installed_hops(lab, "leaf-1", prefix)
        assert dropped, f"leaf-1 (moved to the next config) still forwards {prefix} to {hops}: {doc}; " \
                        f"{lab.client_states()['leaf-1']}"
        wall = time.time() - (time.monotonic() - t0)
        logged = _programmed_after(lab, "leaf-1", wall, held_version)
        wait_until(lambda: _programmed_after(lab, "leaf-2", wall, other_version) is not None, 5.0, 0.05)
        other = _programmed_after(lab, "leaf-2", wall, other_version)

        def ms(t: float | None) -> str:
            return "?" if t is None else f"{(t - wall) * 1000:.0f}"
        print(f"moved leaf-1: remote link failure -> its OVS group without spine-1 read back after "
              f"{delay * 1000:.0f} ms (REST poll every 10 ms); its client logged `programmed` {ms(logged)} ms "
              f"after the carrier loss (leaf-2, on the running config: {ms(other)} ms); load average "
              f"{Path('/proc/loadavg').read_text().split()[0]}")
        assert delay < 5.0
        # commit: every other switch moves, the masters switch; the dead path stays out of leaf-1's group
        out = reload_lab(lab, "all", log=quiet)
        assert out["committed_version"] is not None, out
        lab.fabric = nxt
        assert wait_until(lambda: (lab.client_states()["leaf-1"].get("programmed_version") or 0)
                          >= out["committed_version"], 15.0, 0.05), lab.client_states()["leaf-1"]
        hops, doc = _installed_hops(lab, "leaf-1", prefix)
        assert hops == {"spine-2"}, doc
    finally:
        inject.heal(lab)
    assert lab.wait_converged(60.0, holds_ok=False), lab.convergence_problem(holds_ok=False)
    assert wait_until(lambda: _installed_hops(lab, "leaf-1", prefix)[0] == {"spine-1", "spine-2"}, 15.0, 0.1)
    assert _broken_pairs(lab) == {}


@ovs
def test_adding_a_tor_with_a_host_to_the_running_fabric(lab: Lab) -> None:
    """lab/grow.py + `lab reload all --grow`: leaf-5 with host h-5-1 joins; the 12 existing pairs stay up."""
    from proto.clos import ClosParams, generate_clos_yaml

    lab.fabric = load_fabric(lab.state.config)
    assert lab.wait_converged(60.0, holds_ok=False), lab.convergence_problem(holds_ok=False)
    config = Path(lab.state.config)
    params = ClosParams(name=lab.state.name, ovs_base_port=OVS_BASE_PORT, rest_base_port=REST_BASE_PORT,
                        key_file="fabric.key", admin_token_file=ADMIN_TOKEN, **{**CLOS, "leaves": 5})
    config.write_text(generate_clos_yaml(params))
    with pytest.raises(LabError, match="--grow"):
        reload_lab(lab, "all", log=lambda m: None)          # additions need the plumbing: said, nothing done
    old_pairs = [(a.name, b.name) for a in lab.fabric.hosts for b in lab.fabric.hosts if a != b]
    probe = lab.probe("h-1-1", "h-3-1", flows=4, rate=250.0, port=7300)
    probe.start()
    try:
        out = reload_lab(lab, "all", grow=True, log=lambda m: None)
        new_pairs = [("h-5-1", h) for h in ("h-1-1", "h-2-1", "h-3-1", "h-4-1")]
        reach = wait_until(lambda: all(v >= 2 for v in lab.ping(new_pairs, count=3).values()), 20.0, 0.05)
        reachable_after = time.monotonic() - out["committed_at"]
        result = probe.stop()
    finally:
        probe.close()
    assert out["grown"]["switches"] == ["leaf-5"] and out["grown"]["hosts"] == ["h-5-1"], out
    print(f"h-5-1 reachable {reachable_after:.2f} s after the commit; probe {result['lost']}/{result['sent']} lost")
    assert reach, lab.ping(new_pairs, count=3)
    bad = {p: v for p, v in lab.ping(old_pairs, count=3).items() if v < 2}
    assert bad == {}
    assert _broken_pairs(lab) == {}                          # all 20 pairs
    assert result["lost"] <= result["sent"] * 0.02, result
