"""A lab config the lab cannot run is refused before anything is built or prepared (no OVS needed).

Tester findings: `lab up --config` of a fabric with a switch id over 65535 built every bridge, veth and host
and only then failed on the first client's CPN address (127.1.0.0 + id); `lab reload all --grow` of a file
adding such a ToR had every master prepare it first, so the refusal left a rollout prepared and the corrected
file was then refused ("a rollout to ... is prepared: commit or abort it first").
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from lab import plumbing
from lab.fabric import LabError
from lab.state import LabState
from proto.addtor import add_tor
from proto.clos import ClosParams, generate_clos_yaml
from proto.config import parse_fabric


def _clos3() -> str:
    return generate_clos_yaml(ClosParams(name="g", spines=2, pods=2, aggs_per_pod=2, tors_per_pod=2, hosts_per_tor=1,
                                         masters=1, ovs_base_port=41000, rest_base_port=40000, key_file="k.key"))


def _running_lab(tmp_path: Path, text: str, per_switch: bool = False) -> SimpleNamespace:
    """A lab record as lab up builds it for `text` (bridges, interfaces, hosts), without building anything."""
    (tmp_path / "k.key").write_text("0" * 64 + "\n")
    fabric = parse_fabric(text, source="fabric.yaml", base_dir=tmp_path)
    st = LabState(name="gx", dir=str(tmp_path), config=str(tmp_path / "fabric.yaml"), netns="fplab-gx")
    plumbing.plan_switches(st, fabric, fabric.switches, per_switch=per_switch)
    index = {sw.name: i for i, sw in enumerate(fabric.switches)}
    for link in fabric.links:
        for end in (link.a, link.b):
            st.ifaces[f"{end.switch}:{end.port}"] = f"s{index[end.switch]}p{end.port}"
    for h in fabric.hosts:
        st.host_netns[h.name] = f"fplab-gx-{h.name}"
        st.ifaces[f"{h.tor}:{h.port}"] = f"s{index[h.tor]}p{h.port}"
    st.save()
    return SimpleNamespace(state=st, fabric=fabric)


def _grown(text: str, tmp_path: Path, edit: tuple[str, str] | None = None) -> str:
    grown = add_tor(text, "fabric.yaml", "tor-2-2", base_dir=tmp_path).text
    if edit is not None:
        assert edit[0] in grown
        grown = grown.replace(edit[0], edit[1], 1)
    return grown


@pytest.mark.parametrize(("edit", "why"), [
    (("    id: 11\n", "    id: 70000\n"), r"switch ids must be 0\.\.65535 in a lab.*tor-2-3 \(id 70000\)"),
    (("    rest_port: 40011\n", "    rest_port: 40001\n"), r"TCP port 40001 is used twice in the lab"),
])
def test_reload_grow_refuses_before_any_master_prepares(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         edit: tuple[str, str], why: str) -> None:
    import lab.reload as reload

    text = _clos3()
    lab = _running_lab(tmp_path, text)
    (tmp_path / "fabric.yaml").write_text(_grown(text, tmp_path, edit))
    before = (tmp_path / "lab.json").read_text()

    def no_master(*_a: object, **_k: object) -> None:
        raise AssertionError("a master was asked to prepare a file the lab cannot grow to")

    monkeypatch.setattr(reload, "_Poster", no_master)
    monkeypatch.setattr(reload, "_running_digest", no_master)
    with pytest.raises(LabError, match=why):
        reload.reload_lab(lab, "all", grow=True, log=lambda _m: None)
    assert (tmp_path / "lab.json").read_text() == before          # nothing recorded as built or growing


def test_reload_grow_refuses_a_host_that_would_be_the_new_switchs_namespace(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """With one OVS per switch the new ToR (#10 in switches:) gets namespace fplab-gx-sw10: a host of it
    named sw10 would be that namespace too. Refused by name before the masters prepare."""
    import lab.reload as reload

    text = _clos3()
    lab = _running_lab(tmp_path, text, per_switch=True)
    (tmp_path / "fabric.yaml").write_text(_grown(text, tmp_path, ("{name: h-2-3-1,", "{name: sw10,")))
    monkeypatch.setattr(reload, "_Poster", lambda *_a: pytest.fail("prepared"))
    monkeypatch.setattr(reload, "_running_digest", lambda *_a: pytest.fail("asked the masters"))
    with pytest.raises(LabError, match=r"switch tor-2-3 and host sw10 would both be network namespace"):
        reload.reload_lab(lab, "all", grow=True, log=lambda _m: None)
    assert LabState.load(tmp_path).switch_ns.keys() == lab.state.switch_ns.keys()   # the record is untouched


def test_check_grow_accepts_a_plain_added_tor(tmp_path: Path) -> None:
    """The same checks pass for add-tor's own output (the check is not a blanket refusal)."""
    from lab.grow import check_grow

    text = _clos3()
    lab = _running_lab(tmp_path, text)
    new = parse_fabric(_grown(text, tmp_path), source="fabric.yaml", base_dir=tmp_path)
    ports = check_grow(lab, new)
    assert ports.rest["tor-2-3"] == 40011 and "tor-2-3" not in lab.state.bridges


def test_lab_up_refuses_an_id_beyond_the_cpn_range_before_building(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import lab.fabric as labfabric

    text = _clos3().replace("    id: 10\n", "    id: 65536\n", 1)
    (tmp_path / "k.key").write_text("0" * 64 + "\n")
    (tmp_path / "fabric.yaml").write_text(text)
    monkeypatch.setattr(labfabric, "preflight", lambda: None)
    monkeypatch.setattr(labfabric, "registered_dir", lambda _n: None)
    monkeypatch.setattr(labfabric, "register", lambda *_a: None)
    monkeypatch.setattr(labfabric.nsutil, "netns_exists", lambda _n: False)
    monkeypatch.setattr(labfabric.Lab, "_build_plumbing", lambda *_a: pytest.fail("plumbing built first"))
    monkeypatch.setattr(labfabric, "_teardown_locked", lambda *_a, **_k: [])
    with pytest.raises(LabError, match=r"switch ids must be 0\.\.65535 in a lab.*\(id 65536\)"):
        labfabric.Lab.up(name="gxup", lab_dir=tmp_path / "lab", config=tmp_path / "fabric.yaml",
                         log=lambda _m: None)
    assert not (tmp_path / "lab" / "lab.json").exists()         # nothing recorded: nothing to tear down
    # plumbing only (no daemons, no CPN addresses) is still allowed to get that far
    with pytest.raises(pytest.fail.Exception, match="plumbing built first"):
        labfabric.Lab.up(name="gxup", lab_dir=tmp_path / "lab2", config=tmp_path / "fabric.yaml",
                         daemons=False, log=lambda _m: None)


# ---------------------------------------------------------------------------------------------- the lab dir

def _foreign_dir(tmp_path: Path) -> Path:
    """A directory that is no lab's: a project with its own state/, logs/ and fabric secret."""
    d = tmp_path / "project"
    (d / "state").mkdir(parents=True)
    (d / "state" / "important.db").write_text("precious\n")
    (d / "logs").mkdir()
    (d / "logs" / "app.log").write_text("app\n")
    (d / "fabric.key").write_text("the real fabric secret\n")
    return d


def test_lab_up_refuses_a_directory_it_would_wipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tester: `lab up --dir DIR` on an existing directory removed DIR/state/ and DIR/logs.prev/, moved DIR/logs/
    aside and overwrote DIR/fabric.key (the generated config's secret); `lab down` then removed DIR/ovs/ and
    DIR/state/. A directory no lab made is refused if it holds anything the lab would remove or overwrite."""
    import lab.fabric as labfabric

    d = _foreign_dir(tmp_path)
    before = sorted(str(p.relative_to(d)) for p in d.rglob("*"))
    monkeypatch.setattr(labfabric, "preflight", lambda: None)
    monkeypatch.setattr(labfabric, "registered_dir", lambda _n: None)
    monkeypatch.setattr(labfabric, "register", lambda *_a: pytest.fail("registered"))
    with pytest.raises(LabError, match=r"--dir .*project is not a lab directory and holds state, logs, fabric\.key"):
        labfabric.Lab.up(name="gxdir", lab_dir=d, clos={"pods": 0, "leaves": 2}, log=lambda _m: None)
    assert sorted(str(p.relative_to(d)) for p in d.rglob("*")) == before          # not even a lock file
    assert (d / "fabric.key").read_text() == "the real fabric secret\n"


def test_what_may_be_a_lab_dir() -> None:
    import tempfile

    from lab.state import LAB_MARK, lab_dir_problem
    with tempfile.TemporaryDirectory() as t:
        root = Path(t)
        assert lab_dir_problem(root / "new", "x", generates=True) is None            # made by the lab
        (root / "empty").mkdir()
        assert lab_dir_problem(root / "empty", "x", generates=True) is None
        cfg = root / "cfg"
        cfg.mkdir()
        (cfg / "fabric.yaml").write_text("name: x\n")
        (cfg / "fabric.key").write_text("k\n")
        assert "fabric.yaml, fabric.key" in lab_dir_problem(cfg, "x", generates=True)
        assert lab_dir_problem(cfg, "x", generates=False) is None       # --config: the lab writes no config there
        (cfg / "logs").mkdir()
        assert "holds logs" in lab_dir_problem(cfg, "x", generates=False)
        (cfg / LAB_MARK).write_text("")
        assert lab_dir_problem(cfg, "x", generates=True) is None         # a lab up made it: its files are the lab's
        (root / "file").write_text("")
        assert "not a directory" in lab_dir_problem(root / "file", "x", generates=True)


def test_lab_down_of_a_directory_no_lab_made_removes_nothing_in_it(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import lab.fabric as labfabric

    d = _foreign_dir(tmp_path)
    (d / "ovs").mkdir()
    (d / "ovs" / "ovs-vswitchd.pid").write_text("4242\n")
    stopped: list[object] = []

    class Running:                  # an OVS whose run dir is d/ovs: someone else's, never stopped
        def pid(self, _daemon: str) -> int:
            return 4242

        def stop(self) -> None:
            stopped.append(self)

    monkeypatch.setattr(labfabric.plumbing, "instances_on_disk", lambda _d, _ns: [Running()])
    monkeypatch.setattr(labfabric.nsutil, "list_netns", lambda: [])
    monkeypatch.setattr(labfabric.nsutil, "netns_exists", lambda _n: False)
    labfabric.teardown(d, name="gxdown", keep_logs=False, log=lambda _m: None)
    for kept in ("state/important.db", "logs/app.log", "ovs/ovs-vswitchd.pid", "fabric.key"):
        assert (d / kept).exists(), kept
    assert stopped == []


# ---------------------------------------------------------------------------------------------- the running config

def test_lab_commands_see_the_config_the_lab_runs_not_an_edit_awaiting_reload(tmp_path: Path) -> None:
    """Tester: after `config add-tor --write` on a lab's fabric.yaml (README: edit, then `lab reload all --grow`)
    `lab status` showed the new ToR dead, `lab ping` failed on its host and `lab heal` exited 1 ('not converged:
    leaf-3 REST refused'); a typo in the file stopped every lab command. Lab commands now see the config the
    lab runs (kept by lab up and by a committed reload) until the edit is committed."""
    from lab.fabric import Lab
    from lab.labconfig import keep_running, lab_fabric
    from proto.config import ConfigError, load_fabric

    text = _clos3()
    (tmp_path / "k.key").write_text("0" * 64 + "\n")
    config = tmp_path / "fabric.yaml"
    config.write_text(text)
    running = load_fabric(config)
    st = LabState(name="gr", dir=str(tmp_path), config=str(config))
    assert lab_fabric(st).digest == running.digest            # a lab up before this change: the file, as before
    keep_running(st, running)
    st.save()
    config.write_text(_grown(text, tmp_path))                  # the edit, not rolled out yet
    assert load_fabric(config).digest != running.digest
    seen = Lab.open(tmp_path).fabric
    assert seen.digest == running.digest and "tor-2-3" not in {s.name for s in seen.switches}
    config.write_text(text + "  - {a: [\n")                   # mid-edit: a YAML error
    assert Lab.open(tmp_path).fabric.digest == running.digest
    config.write_text(text.replace("name: g\n", "name: g\n# a comment\n", 1))   # same digest: the file itself
    assert lab_fabric(st).source == str(config) and lab_fabric(st).digest == running.digest
    grown = _grown(text, tmp_path)
    config.write_text(grown)
    keep_running(st, load_fabric(config))                      # committed by `lab reload`
    assert "tor-2-3" in {s.name for s in lab_fabric(st).switches}
    old = LabState(name="gr", dir=str(tmp_path), config=str(config))      # no running record: the file's error
    config.write_text("switches: [\n")
    with pytest.raises(ConfigError):
        lab_fabric(old)


def test_a_rollout_committed_outside_lab_reload_is_what_the_lab_runs_from_then_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tester: after `firepath config rollout --commit` straight against the lab's masters (not `lab reload`),
    the lab kept the old config in its record: `lab ping`, `status`, `reload` worked on a fabric the masters no
    longer ran. Opening the lab now asks the serving master (`/v1/rollout` `current`): if it runs the edited
    file, the lab records it (running.yaml, `running`) and uses it; if it runs the old config, or no master
    answers, the edit still waits for `lab reload`."""
    from lab.fabric import Lab
    from lab.state import RUNNING_FILE
    from proto.config import load_fabric

    text = _clos3()
    (tmp_path / "k.key").write_text("0" * 64 + "\n")
    config = tmp_path / "fabric.yaml"
    config.write_text(text)
    from lab.labconfig import keep_running

    st = LabState(name="gc", dir=str(tmp_path), config=str(config))
    keep_running(st, load_fabric(config))
    st.save()
    old = st.running
    grown = _grown(text, tmp_path)
    config.write_text(grown)
    new = load_fabric(config).digest
    serving: dict[str, object] = {"current": old}
    asked: list[str] = []
    monkeypatch.setattr("lab.netns.netns_exists", lambda _ns: True)
    monkeypatch.setattr(Lab, "current_master", lambda self: ("m1", {"role": "master"}))
    monkeypatch.setattr(Lab, "http", property(lambda self: SimpleNamespace(
        get=lambda port, path, timeout: asked.append(path) or dict(serving))))
    assert Lab.open(tmp_path).fabric.digest == old and asked == ["/v1/rollout"]    # prepared at most: waits
    assert LabState.load(tmp_path).running == old
    serving["current"] = new                                   # committed with `config rollout --commit`
    lab = Lab.open(tmp_path)
    assert lab.fabric.digest == new and "tor-2-3" in lab.ports.rest
    assert LabState.load(tmp_path).running == new and (tmp_path / RUNNING_FILE).read_text() == grown
    asked.clear()
    assert Lab.open(tmp_path).fabric.digest == new and asked == []      # nothing edited since: nobody asked
    monkeypatch.setattr(Lab, "current_master", lambda self: None)      # no serving master: the record as is
    config.write_text(text)
    assert Lab.open(tmp_path).fabric.digest == new and LabState.load(tmp_path).running == new


def test_a_lab_dir_too_long_for_ovs_sockets_is_refused_before_building_and_can_be_torn_down(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tester: `lab up --dir <98 characters>` created the lab namespace and registered the lab, then failed on
    the OVS run dir ('path too long for unix sockets'); its teardown and every `lab down` failed on the same
    check (raised when an OvsInstance was only named), so the namespace and the registry entry stayed."""
    import lab.fabric as labfabric
    from lab.ovs import OvsInstance, run_dir_problem

    long_dir = tmp_path / ("d" * (120 - len(str(tmp_path))))
    assert run_dir_problem(long_dir / "ovs") is not None and run_dir_problem(tmp_path / "ovs") is None
    assert OvsInstance(long_dir / "ovs").pid("ovs-vswitchd") is None           # naming it is fine: teardown
    monkeypatch.setattr(labfabric, "preflight", lambda: None)
    monkeypatch.setattr(labfabric, "registered_dir", lambda _n: None)
    monkeypatch.setattr(labfabric, "register", lambda *_a: pytest.fail("registered before the check"))
    monkeypatch.setattr(labfabric.nsutil, "netns_exists", lambda _n: False)
    monkeypatch.setattr(labfabric.Lab, "_build_plumbing", lambda *_a: pytest.fail("plumbing built first"))
    with pytest.raises(LabError, match=r"path too long for unix sockets \(\d+ bytes .*use a shorter lab --dir"):
        labfabric.Lab.up(name="gxlong", lab_dir=long_dir, clos={"pods": 0, "leaves": 2}, log=lambda _m: None)
    # one OVS per switch: its run dir is one level deeper (ovs/<bridge>)
    short = tmp_path / ("s" * (100 - len(str(tmp_path)) - len("//ovs/ovs-vswitchd.ctl")))
    assert run_dir_problem(short / "ovs") is None
    with pytest.raises(LabError, match=r"ovs/spine-1: path too long"):
        labfabric.Lab.up(name="gxlong", lab_dir=short, clos={"pods": 0, "leaves": 2, "spines": 1},
                         ovs_per_switch=True, log=lambda _m: None)


def _one_client_lab(lab: SimpleNamespace, monkeypatch: pytest.MonkeyPatch, running: str) -> list[str]:
    """`lab` with a running client of tor-1-1 (the signals it gets are returned), no masters' REST, and the lab's
    running config `running` (for lab.reload)."""
    import lab.reload as reload

    signalled: list[str] = []
    lab.state.processes["client:tor-1-1"] = SimpleNamespace(alive=lambda: True, send_signal=signalled.append,
                                                            log="x.log")

    class Poster:
        def __init__(self, _netns: str) -> None:
            pass

        def close(self) -> None:
            pass

    monkeypatch.setattr(reload, "_Poster", Poster)
    monkeypatch.setattr(reload, "_running_digest", lambda _lab: running)
    return signalled


def test_reloading_one_switch_onto_a_config_no_master_holds_is_refused(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Tester: `lab reload leaf-1` after editing a link weight restarted leaf-1 on a config the masters neither
    ran nor had prepared, and said "restarted on config ... in 0.4s", exit 0: the client then refused every LSD
    (config_mismatch) and held no routes of its own. Refused, and no client is signalled, unless a master
    holds the file (prepared with `lab reload M`); the same file after the masters prepared it goes on."""
    import lab.reload as reload

    text = _clos3()
    lab = _running_lab(tmp_path, text)
    edited = text.replace('{a: "tor-1-1:1", b: "agg-1-1:1"}', '{a: "tor-1-1:1", b: "agg-1-1:1", weight: 3}', 1)
    assert edited != text
    (tmp_path / "fabric.yaml").write_text(edited)
    running = parse_fabric(text, source="fabric.yaml", base_dir=tmp_path).digest
    served = {running}
    signalled = _one_client_lab(lab, monkeypatch, running)
    monkeypatch.setattr(reload, "_served_digests", lambda _lab: served)
    with pytest.raises(LabError, match=r"refused, nothing changed: switch tor-1-1 would restart on config .* which "
                                       r"the serving master neither runs nor has prepared"):
        reload.reload_lab(lab, "tor-1-1", log=lambda _m: None)
    assert signalled == []
    served.add(parse_fabric(edited, source="fabric.yaml", base_dir=tmp_path).digest)    # the masters prepared it
    lab.rest_port = lambda _sw: 1
    monkeypatch.setattr(reload, "wait_until", lambda *_a, **_k: True)
    out = reload.reload_lab(lab, "tor-1-1", log=lambda _m: None)
    assert out["reloaded"] == ["tor-1-1"] and len(signalled) == 1


def _reweight_lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, on_disk: str):  # noqa: ANN202
    """A scripted 3-tier lab running the plain config, an edit re-weighting tor-1-1:1 -- agg-1-1:1 both masters
    serve, tor-1-1's client on the edit (`client_runs[0]`, changeable), fabric.yaml holding `on_disk`
    ("running" or "edited"). Returns (lab, running digest, edited digest, client_runs, signalled)."""
    import lab.reload as reload

    text = _clos3()
    lab = _running_lab(tmp_path, text)
    edited = text.replace('{a: "tor-1-1:1", b: "agg-1-1:1"}', '{a: "tor-1-1:1", b: "agg-1-1:1", weight: 3}', 1)
    (tmp_path / "fabric.yaml").write_text(text if on_disk == "running" else edited)
    running = parse_fabric(text, source="fabric.yaml", base_dir=tmp_path).digest
    edited_digest = parse_fabric(edited, source="fabric.yaml", base_dir=tmp_path).digest
    signalled = _one_client_lab(lab, monkeypatch, running)
    monkeypatch.setattr(reload, "_served_digests", lambda _lab: {running, edited_digest})
    monkeypatch.setattr(reload, "wait_until", lambda *_a, **_k: True)
    lab.rest_port = lambda _sw: 1
    client_runs = [edited_digest]
    monkeypatch.setattr(reload, "_client_digest", lambda _lab, _port: client_runs[0])
    return lab, running, edited_digest, client_runs, signalled


def test_a_switch_reverted_to_the_running_config_is_said_to_restart(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Tester: `lab reload leaf-1` onto an edit (prepared by the masters), then the file reverted and `lab reload
    leaf-1` again: the client restarted back onto the running config, yet the lab said "config unchanged, no
    restart" (it compared the file with the lab's running config, not with the client's)."""
    import lab.reload as reload

    lab, running, edited_digest, client_runs, signalled = _reweight_lab(tmp_path, monkeypatch, on_disk="running")
    said: list[str] = []
    reload.reload_lab(lab, "tor-1-1", log=said.append)          # the file is the running config again
    assert any(f"switch tor-1-1: restarted on config {running[:12]}" in m for m in said), said
    client_runs[0] = running                                    # a client already on it: keys only
    said.clear()
    reload.reload_lab(lab, "tor-1-1", log=said.append)
    assert any("switch tor-1-1: holds key set" in m and "no restart" in m for m in said), said
    assert len(signalled) == 2



def test_a_switch_already_moved_to_the_file_is_not_said_to_restart(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Tester: `lab reload leaf-4` mid-rollout, then `lab reload all`: leaf-4, already on the file, was said
    "restarted on config ... in 0.0s" (its SIGHUP changed nothing)."""
    import lab.reload as reload

    lab, running, edited_digest, client_runs, _signalled = _reweight_lab(tmp_path, monkeypatch, on_disk="edited")
    said: list[str] = []
    reload.reload_lab(lab, "tor-1-1", log=said.append)
    assert any("switch tor-1-1:" in m and "no restart" in m for m in said), said
    client_runs[0] = running
    said.clear()
    reload.reload_lab(lab, "tor-1-1", log=said.append)
    assert any(f"switch tor-1-1: restarted on config {edited_digest[:12]}" in m for m in said), said


def test_heal_starts_no_daemon_on_an_edit_the_lab_does_not_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stop 36 leftover: `lab heal` restarted a killed client on the lab's fabric.yaml as it was on disk: after
    an edit awaiting `lab reload` (a link re-weighted), the client ran a config no master had prepared, refused
    every LSD as a config mismatch and dropped its routes. Heal now restarts daemons only on the config the lab
    runs: on an edit it names the problem and the ways out, starts nothing and keeps the kill recorded; with the
    file restored (or changed outside the digest, e.g. a comment) it starts the daemon on it. `lab restart
    client` stays the explicit rolling restart onto an edit (tests/test_lab_rollout.py)."""
    import subprocess

    import lab.inject as inject
    from lab.fabric import Lab
    from lab.labconfig import keep_running
    from lab.state import ProcRecord
    from proto.config import load_fabric

    text = _clos3()
    rec = _running_lab(tmp_path, text)
    config = tmp_path / "fabric.yaml"
    config.write_text(text)
    keep_running(rec.state, load_fabric(config))
    dead = subprocess.Popen(["true"])
    dead.wait()
    for kind, name in (("master", "m1"), ("client", "tor-1-1")):
        rec.state.processes[f"{kind}:{name}"] = ProcRecord(kind=kind, name=name, pid=dead.pid, starttime=1, argv=[],
                                                           log="x.log")
    kill = {"kind": "client", "switch": "tor-1-1", "at": 0.0}
    rec.state.faults.append(kill)
    rec.state.save()
    spawned: list[list[str]] = []
    monkeypatch.setattr(Lab, "_spawn", lambda self, kind, name, argv, **_k: spawned.append(argv))
    monkeypatch.setattr(Lab, "ovs_of", lambda self, _sw: SimpleNamespace(db_target="unix:/x"))
    edited = text.replace('{a: "tor-1-1:1", b: "agg-1-1:1"}', '{a: "tor-1-1:1", b: "agg-1-1:1", weight: 3}', 1)
    assert edited != text
    for bad, why in ((edited, "was edited since the lab last ran it"), (text + "  - {a: [\n", "no longer loads")):
        config.write_text(bad)
        with pytest.raises(LabError, match=rf"not restarting client tor-1-1: .*fabric.yaml {why}.*lab reload all.*"
                                           rf"running.yaml.*lab restart client tor-1-1"):
            inject.heal(Lab.open(tmp_path))
        assert spawned == [] and Lab.open(tmp_path).state.faults == [kill]
    rec.state.faults.clear()                                    # the master, found dead
    client = rec.state.processes.pop("client:tor-1-1")
    rec.state.save()
    config.write_text(edited)
    with pytest.raises(LabError, match=r"not restarting master m1: .*edited since") as e:
        inject.heal(Lab.open(tmp_path))
    assert "restart client" not in str(e.value) and spawned == []
    config.write_text(text.replace("name: g\n", "name: g\n# a comment\n", 1))   # same digest: the file is run
    assert [f["kind"] for f in inject.heal(Lab.open(tmp_path))] == ["master"]
    rec.state.processes["client:tor-1-1"] = client
    rec.state.save()
    assert "client" in [f["kind"] for f in inject.heal(Lab.open(tmp_path))]   # (the fake spawn leaves m1 dead)
    assert len(spawned) >= 3 and all(argv[argv.index("--config") + 1] == str(config) for argv in spawned)


def test_a_master_killed_mid_rollout_is_started_on_the_file_the_masters_prepared_or_committed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tester: a master killed mid-rollout (the lab's fabric.yaml re-weighted, the masters prepared it) could be
    started again by nothing: `lab heal` refused the edit ("Roll the edit out (`firepath lab reload all`)"), and
    `lab reload all` waited 60 s for the dead master, then failed; after a commit by `firepath config rollout
    --commit` heal refused it for good. Heal starts it on the file the serving master has prepared (it follows
    the commit) or runs (which the lab then runs: running.yaml), and still refuses any other edit; `lab reload`
    skips a master that is not running, as a switch without a client, instead of waiting for it."""
    import subprocess

    import lab.inject as inject
    import lab.reload as reload
    from lab.fabric import Lab
    from lab.labconfig import keep_running
    from lab.state import ProcRecord
    from proto.config import load_fabric

    text = _clos3()
    rec = _running_lab(tmp_path, text)
    config = tmp_path / "fabric.yaml"
    config.write_text(text)
    keep_running(rec.state, load_fabric(config))
    running = rec.state.running
    dead = subprocess.Popen(["true"])
    dead.wait()
    rec.state.processes["master:m1"] = ProcRecord(kind="master", name="m1", pid=dead.pid, starttime=1, argv=[],
                                                  log="x.log")
    rec.state.faults.append({"kind": "master", "id": "m1", "at": 0.0})
    rec.state.save()
    spawned: list[list[str]] = []
    monkeypatch.setattr(Lab, "_spawn", lambda self, kind, name, argv, **_k: spawned.append(argv))
    edited = text.replace('{a: "tor-1-1:1", b: "agg-1-1:1"}', '{a: "tor-1-1:1", b: "agg-1-1:1", weight: 3}', 1)
    config.write_text(edited)
    edited_digest = load_fabric(config).digest
    view: dict[str, object] = {"current": running, "next": None}
    monkeypatch.setattr(reload, "_rollout_view", lambda _lab: view)
    with pytest.raises(LabError, match=r"not restarting master m1: .*edited since"):     # nobody prepared it
        inject.heal(Lab.open(tmp_path))
    assert spawned == []
    view["next"] = edited_digest                                # mid-rollout: the masters prepared the edit
    assert "master" in [f["kind"] for f in inject.heal(Lab.open(tmp_path))]     # (the fake spawn leaves it dead)
    assert spawned and spawned[-1][spawned[-1].index("--config") + 1] == str(config)
    assert Lab.open(tmp_path).state.running == running          # still the running config until the commit
    view.update(current=edited_digest, next=None)               # committed outside `lab reload`
    assert "master" in [f["kind"] for f in inject.heal(Lab.open(tmp_path))]
    assert Lab.open(tmp_path).state.running == edited_digest    # what the lab runs now
    assert (tmp_path / "running.yaml").read_text() == edited
    # `lab reload` skips the dead master at once (it waited 60 s for it, then failed the whole reload)
    lab = Lab.open(tmp_path)
    _one_client_lab(lab, monkeypatch, running)
    posted: list[int] = []
    monkeypatch.setattr(reload, "_retry", lambda call, _t: posted.append(1) or (_ for _ in ()).throw(OSError("x")))
    said: list[str] = []
    with pytest.raises(LabError, match=r"master m1: not running .*lab heal"):
        reload.reload_lab(lab, "m1", log=said.append)
    monkeypatch.setattr(reload, "_served_digests", lambda _lab: set())
    monkeypatch.setattr(reload, "_commit", lambda *_a: (1, 0.0))
    monkeypatch.setattr(reload, "wait_until", lambda *_a, **_k: True)
    lab.rest_port = lambda _sw: 1
    reload.reload_lab(lab, "all", log=said.append)
    assert posted == [] and any("master m1: not running: skipped" in m for m in said), said


def test_a_lab_too_big_for_this_machines_memory_is_refused_before_building(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tester: nothing stopped `lab up --config j.yaml` of the README's Jupiter preset (30,088 switches): it would
    build a bridge and start a client per switch (~25 MiB each, ~600 GB). A lab whose estimated memory exceeds
    80 % of MemAvailable is now refused, naming the sizes, before anything is built or registered."""
    import lab.fabric as labfabric
    from lab.sizing import lab_memory_problem
    from proto.clos import PRESETS

    big = SimpleNamespace(source="j.yaml", switches=[None] * PRESETS["jupiter"].n_switches)
    why = lab_memory_problem(big, available_mib=20 * 1024)
    assert why is not None and why.startswith("j.yaml: 30088 switches need ~734.6 GiB for a lab"), why
    assert "at most ~655 switches fit here. Nothing was built" in why, why
    assert lab_memory_problem(SimpleNamespace(source="s", switches=[None] * 48), available_mib=2048) is None
    assert lab_memory_problem(big, daemons=False, available_mib=20 * 1024) is not None
    monkeypatch.setattr(labfabric, "preflight", lambda: None)
    monkeypatch.setattr(labfabric, "registered_dir", lambda _n: None)
    monkeypatch.setattr(labfabric, "register", lambda *_a: pytest.fail("registered before the check"))
    monkeypatch.setattr(labfabric.nsutil, "netns_exists", lambda _n: False)
    monkeypatch.setattr(labfabric.Lab, "_build_plumbing", lambda *_a: pytest.fail("plumbing built first"))
    monkeypatch.setattr("lab.sizing.mem_available_mib", lambda: 100)        # 100 MiB: 3 switches fit
    with pytest.raises(LabError, match=r"10 switches need ~0\.2 GiB for a lab .* at most ~3 switches fit here"):
        labfabric.Lab.up(name="gxbig", lab_dir=tmp_path / "lab", clos={"pods": 2}, log=lambda _m: None)
    assert not (tmp_path / "lab" / "lab.json").exists()
