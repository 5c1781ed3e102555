"""End-to-end key rollover on the lab (issue #21): the fabric secret rolled with key ids, one daemon at a time.

Real OVS, real namespaces, 3 master processes and a client per switch on the issue's 2-spine x 4-leaf fabric
(4 hosts, 12 host pairs). Each node runs its own copy of the lab's config that differs only in the
node-local `security:` section (proto/keyroll.py renders it; it is not in the digest). The three steps of
the rollover, (1) accept the new key, (2) sign with it, (3) retire the old one, are each rolled through the
masters and then the switches by restarting one daemon at a time with its new section. A UDP probe runs on
all 12 host pairs for the whole rollout: zero loss at every step, no frame rejected anywhere, no link down
in any replica's LSD. Then one switch restarted on the retired key alone is rejected by its neighbours and
the masters as `unknown_key_id`, counted and logged with its name and key id.
"""

from __future__ import annotations

import os
import re
import signal
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from client.of.sockets import enter_netns
from lab.fabric import LAB_DEFAULT_TIMERS, Lab, wait_until
from lab.probe import Probe
from lab.reload import reload_lab
from proto.keyroll import replace_security, security_yaml
from tests.harness.labs import running_lab
from tests.harness.labwatch import down_links

ovs = pytest.mark.ovs

LEAFSPINE = {"spines": 2, "pods": 0, "leaves": 4, "hosts_per_tor": 1, "masters": 3}
# ND at 100/500 ms and OAM at 100 ms as test_lab_e2e (robust next to other labs on a shared machine)
TIMERS = tuple((k, v) for k, v in LAB_DEFAULT_TIMERS if k not in ("nd_interval_ms", "nd_dead_ms", "oam_interval_ms")) \
    + (("nd_interval_ms", 100), ("nd_dead_ms", 500), ("oam_interval_ms", 100))
CONVERGE_S = 30.0
PROBE = {"flows": 2, "rate": 50.0}       # 12 pairs x 2 flows x 50 pps: 20 ms resolution per flow
#: Zero probe loss is the claim, and every control-plane invariant behind it (no frame rejected, the LSD
#: never changes, every daemon back healthy with the expected key set) is asserted strictly. As in
#: test_lab_e2e (LOSSLESS_ATTEMPTS), OVS's userspace datapath on a loaded 2-core machine drops packets when
#: vswitchd is starved of CPU with the forwarding state untouched (seen here: every one of the 12 pairs losing
#: the same 60-80 ms at once while a master, which never touches OVS, restarted, at load 11). So a lossy
#: rollover whose invariants all held is repeated once with the next key, and that one must be clean.
LOSSLESS_ATTEMPTS = 2


def steps(old: int, new: int) -> tuple[tuple[list, int, list | None], ...]:
    """(keys listed, send key, accepted) of the three steps from key `old` to `new`: (1) accept the new key,
    (2) sign with it, (3) retire the old key (still listed, no longer accepted: its frames log "retired")."""
    keys = [(old, _key_file(old)), (new, _key_file(new))]
    return ((keys, old, None), (keys, new, None), (keys, new, [new]))


def _key_file(key_id: int) -> str:
    return "fabric.key" if key_id == 1 else f"fabric-{key_id}.key"


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with running_lab("keys", {**LEAFSPINE, "timers": TIMERS}, keep_logs_env="FP_KEEP_LAB_LOGS") as the_lab:
        yield the_lab


# ---------------------------------------------------------------------------------------------- helpers

def _node_config(lab: Lab, node: str, keys: list, send: int, accept: list | None = None) -> Path:
    """The lab's config with `node`'s own security section."""
    d = Path(lab.state.dir)
    block = security_yaml(keys, send, accept, admin_token_file="admin.token")
    path = d / f"node-{node}.yaml"
    path.write_text(replace_security(Path(lab.state.config).read_text(), block))
    return path


def _rejections(lab: Lab) -> dict[str, dict]:
    """Every client's codec rejections other than `stale`/`replay` (what a restart legitimately causes)."""
    out = {}
    for name, s in lab.client_states().items():
        if isinstance(s, dict):
            bad = {r: n for r, n in s.get("codec_rejected", {}).items() if r not in ("stale", "replay", "answer_limited")}
            if bad:
                out[name] = bad
    return out


def _master_metric(lab: Lab, master_id: str, reason: str) -> float:
    """firepath_master_datagrams_rejected_total{reason=...} of one replica (its /metrics, in the lab netns)."""
    port = next(m.rest_port for m in lab.fabric.masters if m.id == master_id)

    def get() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2.0) as resp:
            return resp.read().decode()

    with ThreadPoolExecutor(1, initializer=enter_netns, initargs=(lab.state.netns,)) as pool:
        text = pool.submit(get).result(10)
    m = re.search(rf'^firepath_master_datagrams_rejected_total\{{reason="{reason}"\}} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def _healthy(lab: Lab) -> str:
    """'' when every replica answers with the serving master's version, one serving master, every client
    connected and programmed at that version, every link up; else what is not."""
    leader = lab.current_master()
    if leader is None:
        return "no single serving master"
    version = int(leader[1]["version"])
    for mid, st in lab.master_states().items():
        if not isinstance(st, dict) or int(st.get("version", -1)) != version:
            return f"replica {mid}: {st}"
    for name, st in lab.client_states().items():
        if not isinstance(st, dict) or not st.get("connected") or st.get("programmed_version") != version:
            return f"client {name}: {st if not isinstance(st, dict) else (st.get('connected'), st.get('programmed_version'))}"
    down = down_links(lab)
    return f"links down: {down}" if down else ""


def _keys_of(lab: Lab, kind: str, name: str) -> dict | None:
    """The key set a running daemon reports (master GET /v1/keys, client GET /v1/state "keys")."""
    if kind == "master":
        port = next(m.rest_port for m in lab.fabric.masters if m.id == name)
        doc = lab.http.get_many([(port, "/v1/keys")])[0]
    else:
        doc = lab.client_states()[name]
        doc = doc.get("keys") if isinstance(doc, dict) else doc
    return {k: doc[k] for k in ("send_key", "accepted", "retired")} if isinstance(doc, dict) else None


def _restart(lab: Lab, kind: str, name: str, config: Path, step: tuple) -> None:
    keys, send, accept = step
    accepted = sorted(accept or [i for i, _ in keys])
    want = {"send_key": send, "accepted": accepted, "retired": sorted({i for i, _ in keys} - set(accepted))}
    lab.stop_process(f"{kind}:{name}", signal.SIGTERM, 10.0)
    (lab.start_master if kind == "master" else lab.start_client)(name, config)
    assert wait_until(lambda: _healthy(lab) == "", CONVERGE_S, 0.1), f"after {kind} {name}: {_healthy(lab)}"
    assert _keys_of(lab, kind, name) == want


def _probes(lab: Lab) -> list[tuple[str, str, Probe]]:
    hosts = [h.name for h in lab.fabric.hosts]
    pairs = [(a, b) for a in hosts for b in hosts if a != b]
    return [(a, b, lab.probe(a, b, port=7400 + i, **PROBE)) for i, (a, b) in enumerate(pairs)]


# ------------------------------------------------------------------------------------------------ tests

def _rollover(lab: Lab, old: int, new: int) -> tuple[dict, list[str]]:
    """Roll key `old` to `new` through every daemon, step by step, under a probe on all 12 pairs; asserts the
    invariants, returns (the pairs that lost packets, with their holes; the log of steps)."""
    assert wait_until(lambda: _healthy(lab) == "", CONVERGE_S, 0.1), _healthy(lab)
    d = Path(lab.state.dir)
    (d / _key_file(new)).write_text(os.urandom(32).hex() + "\n")
    (d / _key_file(new)).chmod(0o600)
    masters = [m.id for m in lab.fabric.masters]
    serving = lab.current_master()[0]
    masters.sort(key=lambda m: m == serving)       # the serving replica last: one failover per step
    switches = [s.name for s in lab.fabric.switches]
    v0 = lab.lsd_version()
    probes = _probes(lab)
    log: list[str] = []
    try:
        for _, _, p in probes:
            p.start()
        t0 = time.monotonic()
        for i, step in enumerate(steps(old, new), 1):
            for kind, names in (("master", masters), ("client", switches)):
                for name in names:
                    _restart(lab, kind, name, _node_config(lab, name, *step), step)
                    log.append(f"{time.monotonic() - t0:6.1f}s step {i} {kind} {name}")
                    assert _rejections(lab) == {}, (log[-1], _rejections(lab))
        time.sleep(0.5)
        results = [(a, b, p.stop()) for a, b, p in probes]
    finally:
        for _, _, p in probes:
            p.close()
    # no link changed state at any moment of the rollover: the LSD has no change since before it
    changes = lab.master_get(f"/v1/lsd?since={v0}")
    assert changes["links"] == {} or (changes.get("full") and set(changes["links"].values()) == {"up"}), changes
    for m in lab.fabric.masters:
        assert _master_metric(lab, m.id, "unknown_key_id") == 0
        assert _master_metric(lab, m.id, "bad_hmac") == 0
    assert len(results) == 12 and all(r["received"] > 0 for _, _, r in results)
    lost = {f"{a}->{b}": (r["lost"], [(h[0] / PROBE["rate"], h[1]) for f in r["flows"] for h in f["holes"]])
            for a, b, r in results if r["lost"]}   # holes: (s after that probe started, packets)
    return lost, log


@ovs
def test_key_rollover_by_lab_reload_all_swaps_keys_in_place_without_loss(lab: Lab) -> None:
    """The operator's way: edit the lab's fabric.yaml's security section and `lab reload all`, three times
    (accept, sign, retire). A key-only change keeps the digest: nothing is prepared or committed, no daemon
    restarts, every master and client reports the file's key set after each step, no frame is rejected, no
    link changes and the probe on all 12 pairs loses nothing."""
    assert wait_until(lambda: _healthy(lab) == "", CONVERGE_S, 0.1), _healthy(lab)
    d, cfg = Path(lab.state.dir), Path(lab.state.config)
    (d / _key_file(2)).write_text(os.urandom(32).hex() + "\n")
    (d / _key_file(2)).chmod(0o600)
    pids = {name: rec.pid for name, rec in lab.state.processes.items() if name.split(":")[0] in ("master", "client")}
    digest, v0 = lab.fabric.digest, lab.lsd_version()
    probes = _probes(lab)
    try:
        for _, _, p in probes:
            p.start()
        for keys, send, accept in steps(1, 2):
            cfg.write_text(replace_security(cfg.read_text(), security_yaml(keys, send, accept, admin_token_file="admin.token")))
            out = reload_lab(lab, "all", log=lambda m: None)
            assert out["digest"] == digest and out["committed_version"] is None
            assert sorted(out["reloaded"]) == sorted(s.name for s in lab.fabric.switches)
            accepted = sorted(accept or [i for i, _ in keys])
            want = {"send_key": send, "accepted": accepted, "retired": sorted({i for i, _ in keys} - set(accepted))}
            for m in lab.fabric.masters:
                assert _keys_of(lab, "master", m.id) == want, m.id
            for s in lab.fabric.switches:
                assert _keys_of(lab, "client", s.name) == want, s.name
            assert _rejections(lab) == {}
        time.sleep(0.5)
        results = [(a, b, p.stop()) for a, b, p in probes]
    finally:
        for _, _, p in probes:
            p.close()
    assert {name: rec.pid for name, rec in lab.state.processes.items() if name in pids} == pids, "a daemon restarted"
    changes = lab.master_get(f"/v1/lsd?since={v0}")
    assert changes["links"] == {} or (changes.get("full") and set(changes["links"].values()) == {"up"}), changes
    for m in lab.fabric.masters:
        assert _master_metric(lab, m.id, "bad_hmac") == 0
    assert len(results) == 12 and all(r["received"] > 0 for _, _, r in results)
    assert {f"{a}->{b}": r["lost"] for a, b, r in results if r["lost"]} == {}


@ovs
def test_secret_rolled_with_key_ids_one_daemon_at_a_time_without_loss_then_retired_key_rejected(lab: Lab) -> None:
    assert len(lab.fabric.hosts) == 4
    old = _keys_of(lab, "master", lab.fabric.masters[0].id)["send_key"]    # 2 after the reload test above
    for attempt in range(1, LOSSLESS_ATTEMPTS + 1):
        lost, log = _rollover(lab, old, old + 1)
        print(f"attempt {attempt}: key {old} -> {old + 1}\n" + "\n".join(log))
        old += 1
        if not lost:
            break
        print(f"attempt {attempt}: invariants held but the probe lost packets: {lost}")
    assert lost == {}, f"probe loss during the rollover: {lost}\n" + "\n".join(log)
    _straggler_on_the_retired_key(lab, old - 1, steps(old - 1, old)[-1])


def _straggler_on_the_retired_key(lab: Lab, retired: int, last_step: tuple) -> None:
    """After the rollover, a switch restarted with only the retired key: its ND frames and reports are
    dropped as unknown_key_id by its neighbours and every master, counted and logged as retired."""
    leaf = next(s.name for s in lab.fabric.switches if s.role == "tor")
    neighbours = sorted({lk.b.switch if lk.a.switch == leaf else lk.a.switch
                         for lk in lab.fabric.links if leaf in (lk.a.switch, lk.b.switch)})
    before = {m.id: _master_metric(lab, m.id, "unknown_key_id") for m in lab.fabric.masters}
    lab.stop_process(f"client:{leaf}", signal.SIGTERM, 10.0)
    lab.start_client(leaf, _node_config(lab, leaf, [(retired, _key_file(retired))], retired))
    try:
        def rejected_everywhere() -> bool:
            states = lab.client_states()
            return (all(isinstance(states[n], dict) and states[n].get("codec_rejected", {}).get("unknown_key_id", 0) > 0
                        for n in neighbours)
                    and all(_master_metric(lab, m.id, "unknown_key_id") > before[m.id] for m in lab.fabric.masters))
        assert wait_until(rejected_everywhere, 20.0, 0.2), (_rejections(lab), before)
        for m in lab.fabric.masters:
            text = Path(lab.state.processes[f"master:{m.id}"].log).read_text()
            assert f"event=key_id_rejected local={m.id} peer={leaf} key_id={retired} why=retired" in text
        text = Path(lab.state.processes[f"client:{neighbours[0]}"].log).read_text()
        assert re.search(rf"event=key_id_rejected local={neighbours[0]} peer={leaf} key_id={retired} why=retired port=\d+",
                         text), text[-2000:]
    finally:
        lab.stop_process(f"client:{leaf}", signal.SIGTERM, 10.0)
        lab.start_client(leaf, _node_config(lab, leaf, *last_step))
    assert wait_until(lambda: _healthy(lab) == "", CONVERGE_S, 0.1), _healthy(lab)
