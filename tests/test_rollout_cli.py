"""Reload decisions of a client (client.reload), the `firepath config rollout` command's local checks, and
what `firepath lab reload` says when it refuses (lab.reload, on a stand-in lab)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from client.reload import check
from controller.ops.rollout_cli import render
from proto.clos import ClosParams, generate_clos_yaml
from proto.config import ConfigError, load_fabric


def _write(tmp: Path, name: str, text: str) -> Path:
    (tmp / "fabric.key").write_bytes(b"k" * 32)
    p = tmp / name
    p.write_text(text)
    return p


def _text(leaves: int = 3) -> str:
    return generate_clos_yaml(ClosParams(pods=0, spines=2, leaves=leaves, masters=2))


def test_client_reload_same_changed_invalid_and_gone(tmp_path: Path) -> None:
    cur = load_fabric(_write(tmp_path, "f.yaml", _text()))
    assert check(tmp_path / "f.yaml", "leaf-1", cur).outcome == "unchanged"
    p = _write(tmp_path, "f.yaml", _text().replace('{a: "leaf-1:1", b: "spine-1:1"}',
                                                   '{a: "leaf-1:1", b: "spine-1:1", weight: 2}'))
    d = check(p, "leaf-1", cur)
    assert d.outcome == "changed" and d.fabric.digest != cur.digest
    _write(tmp_path, "f.yaml", _text().replace("weight", "x").replace("role: tor", "role: toaster", 1))
    with pytest.raises(ConfigError, match=r"f\.yaml:\d+: .*role"):
        check(p, "leaf-1", cur)
    _write(tmp_path, "f.yaml", _text(leaves=2))
    with pytest.raises(ConfigError, match="no switch named 'leaf-3'"):
        check(p, "leaf-3", cur)


def test_config_rollout_refuses_an_invalid_next_config_before_contacting_anyone(tmp_path: Path) -> None:
    cur = _write(tmp_path, "f.yaml", _text())
    bad = _write(tmp_path, "next.yaml", _text().replace('b: "spine-1:1"', 'b: "spine-7:1"'))
    proc = subprocess.run([sys.executable, "-c", "import sys; from proto.cli import main; sys.exit(main())",
                           "config", "rollout", str(bad), "--config", str(cur)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "next.yaml:" in proc.stderr and "spine-7" in proc.stderr


def test_render_names_who_holds_what_and_what_blocks() -> None:
    st = {"phase": "prepared", "current": "a" * 64, "next": "b" * 64, "version": 7, "term": 2,
          "switches": {"leaf-1": "next", "leaf-2": "current", "leaf-3": "unheard"},
          "blockers": {"leaf-2": "holds the current config"}, "last": None}

    def table(rows: list, headers: list) -> str:
        return "\n".join(" ".join(str(c) for c in r) for r in [headers, *rows])

    text = render(st, "m1", "b" * 64, table)
    assert "prepared" in text and "current 1 leaf-2" in text and "next 1 leaf-1" in text
    assert "commit blocked by 1 live switch(es)" in text and "leaf-2: holds the current config" in text


def test_render_warns_of_switches_left_on_another_config_after_an_abort() -> None:
    """Tester: masters prepared, tor-1-1 moved (`lab reload tor-1-1`), then `config rollout --abort`: tor-1-1
    kept the aborted config and refused every LSD (lsd -1, no reroute), and the abort's answer named it only as
    "other" in the table. It now warns, naming the switches and how to bring them back."""
    st = {"phase": "idle", "current": "a" * 64, "next": None, "version": 9, "term": 1,
          "switches": {"tor-1-1": "other", "tor-1-2": "current", "tor-2-1": "unheard"},
          "blockers": {}, "last": {"outcome": "aborted", "digest": "c" * 64}}

    def table(rows: list, headers: list) -> str:
        return "\n".join(" ".join(str(c) for c in r) for r in [headers, *rows])

    text = render(st, "m3", "a" * 64, table)
    assert "warning: 1 switch(es) hold another config than the running one and refuse its LSD" in text, text
    assert "refuse its LSD (no reroute but local repair): tor-1-1; reload them onto the running config" in text
    st["switches"]["tor-1-1"] = "current"
    assert "warning" not in render(st, "m3", "a" * 64, table)
    st.update(phase="prepared", next="b" * 64, switches={"tor-1-1": "next"})       # moved during a rollout: fine
    assert "warning" not in render(st, "m3", "b" * 64, table)


def test_client_rest_reload_needs_the_token_and_refuses_an_invalid_file(tmp_path: Path) -> None:
    from client.rest import RestServer
    from tests.harness.http import request

    calls: list[str] = []

    def reload() -> dict:
        calls.append("reload")
        if len(calls) == 2:
            raise ConfigError(str(tmp_path / "f.yaml"), 7, "links[0].b", "unknown switch 'spine-7'")
        return {"outcome": "unchanged", "digest": "d"}

    rest = RestServer(lambda: {}, "127.0.0.1", 0, reload=reload, token="tok")
    rest.start()
    try:
        url = f"http://127.0.0.1:{rest.port}/v1/reload"
        assert request("POST", url)[0] == 401
        assert request("POST", url, headers={"Authorization": "Bearer nope"})[0] == 403
        status, ok = request("POST", url, headers={"Authorization": "Bearer tok"})
        assert status == 200 and ok["outcome"] == "unchanged"
        status, bad = request("POST", url, headers={"Authorization": "Bearer tok"})
        assert status == 400 and "f.yaml:7: links[0].b" in bad["error"]
    finally:
        rest.stop()
    assert calls == ["reload", "reload"]          # never called without the right token


def _rollout_cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "import sys; from proto.cli import main; sys.exit(main())",
                           "config", "rollout", *argv], capture_output=True, text=True, timeout=60)


def test_config_rollout_refuses_a_master_or_key_change_before_contacting_anyone(tmp_path: Path) -> None:
    """What every master refuses at prepare is refused here first (exit 2, nothing sent: no master runs
    here, so a request would have been exit 3 "unreachable"), naming file:line: field."""
    from proto.auth import write_secret_file

    write_secret_file(tmp_path / "fabric.key")
    cur, moved = tmp_path / "f.yaml", tmp_path / "next.yaml"
    cur.write_text(_text())
    reweighted = _text().replace('{a: "leaf-1:1", b: "spine-1:1"}', '{a: "leaf-1:1", b: "spine-1:1", weight: 2}')
    moved.write_text(reweighted.replace("rest_port: 6802", "rest_port: 6902"))
    line = next(i for i, ln in enumerate(moved.read_text().splitlines(), 1) if "6902" in ln)
    proc = _rollout_cli(str(moved), "--config", str(cur))
    assert proc.returncode == 2, proc.stderr
    assert f"next.yaml:{line}: masters[1].rest_port: 6902 here, 6802 in the running config" in proc.stderr
    other = tmp_path / "x"
    other.mkdir()
    rekeyed = other / "next.yaml"
    rekeyed.write_text(reweighted)
    write_secret_file(other / "fabric.key")                             # another secret under key id 1
    proc = _rollout_cli(str(rekeyed), "--config", str(cur))
    assert proc.returncode == 2, proc.stderr
    assert "x/next.yaml:" in proc.stderr and ": security: " in proc.stderr and "key set" in proc.stderr


def test_a_client_reload_to_another_config_never_changes_its_keys(tmp_path: Path) -> None:
    """A client SIGHUPed onto an edit that changes the config AND the key set swapped the keys in, then
    restarted: cut off from the masters, which verify it with the running keys until the commit. Refused
    now (nothing changes); a key-only change of the running config still swaps the set in."""
    import logging
    from types import SimpleNamespace

    from client.cli import _reload
    from proto.auth import KeySet, write_secret_file
    from proto.messages import Codec

    path = _write(tmp_path, "f.yaml", _text())
    (tmp_path / "fabric.key").unlink()
    write_secret_file(tmp_path / "fabric.key")
    cur = load_fabric(path)
    codec = Codec(KeySet.from_security(cur.security), "m1", [s.name for s in cur.switches], ["m1", "m2"])
    daemon = SimpleNamespace(core=SimpleNamespace(codec=codec))
    keys = codec.keys
    log = logging.getLogger("test")
    write_secret_file(tmp_path / "other.key")
    path.write_text(_text().replace('{a: "leaf-1:1", b: "spine-1:1"}', '{a: "leaf-1:1", b: "spine-1:1", weight: 2}')
                    .replace('key_file: "fabric.key"', 'key_file: "other.key"'))
    assert _reload(log, str(path), "leaf-1", cur, daemon) is False          # refused: no restart
    assert codec.keys is keys
    path.write_text(_text().replace('key_file: "fabric.key"', 'key_file: "other.key"'))
    assert _reload(log, str(path), "leaf-1", cur, daemon) is False          # key-only: no restart ...
    assert codec.keys is not keys and not codec.keys.same_as(keys)          # ... and the new key in force


def test_lab_reload_of_a_moved_master_names_the_field_not_a_raw_dict(tmp_path: Path) -> None:
    """`lab reload all` after m2's rest_port was edited failed with the raw states dict (`{'m1': {...},
    'm2': URLError(...)}`) or a URLError traceback. Now it is refused before anything is sent, naming the
    master and the field at its line; the states read as words."""
    import urllib.error
    from types import SimpleNamespace

    from lab.fabric import LabError
    from lab.reload import describe_masters, reload_lab
    from proto.auth import write_secret_file

    write_secret_file(tmp_path / "fabric.key")
    path = tmp_path / "fabric.yaml"
    path.write_text(_text().replace("rest_port: 6802", "rest_port: 6902"))
    fabric = load_fabric(path)
    refused = urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))
    states = {"m1": {"role": "backup", "term": 2}, "m2": refused}       # m2 serves, on port 6802
    posted: list = []
    lab = SimpleNamespace(
        state=SimpleNamespace(config=str(path), bridges={s.name: s.name for s in fabric.switches}, netns="x",
                              ifaces={f"{e.switch}:{e.port}": "if" for k in fabric.links for e in (k.a, k.b)},
                              processes={}),
        fabric=fabric, master_states=lambda timeout=0.5: states, current_master=lambda: None,
        http=SimpleNamespace(get=lambda *a, **k: posted.append(a)))
    with pytest.raises(LabError) as info:
        reload_lab(lab, "all", timeout=1.0, log=lambda m: None)
    msg = str(info.value)
    assert msg.startswith("refused, nothing changed: "), msg
    # the masters are asked where the edited file says: m2 is not there, and the message says so in words
    assert "m2: no answer on REST port 6902 (Connection refused)" in msg, msg
    assert "URLError" not in msg and "{" not in msg and posted == []
    assert describe_masters(states) == "m1: backup (term 2), m2: no answer (Connection refused)"


def test_the_running_config_copied_elsewhere_never_changes_keys(tmp_path: Path) -> None:
    """Tester (HIGH): the lab's fabric.yaml copied to another directory (its key_file then names another
    secret) and rolled out: every master said "unchanged", swapped its keys in and every switch went
    fail-static. A same-digest file changes keys only when it is the running config's own file."""
    from proto.auth import KeySet, write_secret_file
    from proto.keyroll import keys_for_reload

    write_secret_file(tmp_path / "fabric.key")
    cur = tmp_path / "f.yaml"
    cur.write_text(_text())
    other = tmp_path / "copy"
    other.mkdir()
    copy = other / "f.yaml"
    copy.write_text(_text())
    write_secret_file(other / "fabric.key")                             # another secret under key id 1
    running, nxt = load_fabric(cur), load_fabric(copy)
    assert nxt.digest == running.digest
    held = KeySet.from_security(running.security)
    with pytest.raises(ConfigError, match=r"the running config from another file than .*f\.yaml, naming another key "
                                          r"set \(the same key ids .* with other key material; its key files, read "
                                          r"from its own directory: .*copy/fabric\.key\): keys change only by "
                                          r"reloading the running config's own file"):
        keys_for_reload(held, nxt, running.digest, running.source)
    proc = _rollout_cli(str(copy), "--config", str(cur))                  # refused before contacting anyone
    assert proc.returncode == 2 and "copy/f.yaml:" in proc.stderr and ": security: " in proc.stderr, proc.stderr
    # the running file itself, edited to the other secret: a key-only change, swapped in
    (tmp_path / "fabric.key").unlink()
    write_secret_file(tmp_path / "fabric.key")
    assert keys_for_reload(held, load_fabric(cur), running.digest, running.source) is not None
    assert keys_for_reload(held, load_fabric(copy), running.digest) is not None   # a client's own file: no path check


def test_a_client_reload_of_the_running_config_reads_its_admin_token_file_again(tmp_path: Path) -> None:
    """Tester (the master's twin): a client started from a config without `security.admin_token_file`; the
    operator added one and sent SIGHUP (an unchanged config): its POST /v1/reload still answered 403 "no
    security.admin_token_file". A reload of the running config now reads the token file again (a rotation too);
    another config, or an unusable token file, leaves it."""
    import logging
    from types import SimpleNamespace

    from client.cli import _apply_token
    from client.rest import RestServer
    from tests.harness.http import request

    log = logging.getLogger("test")
    token_file = tmp_path / "admin.token"
    token_file.write_text("tok-1\n")
    running = SimpleNamespace(digest="d" * 64, security=SimpleNamespace(admin_token_file=None,
                                                                         admin_token_where="f.yaml:3"))
    edited = SimpleNamespace(digest="d" * 64, security=SimpleNamespace(admin_token_file=token_file,
                                                                        admin_token_where="f.yaml:3"))
    rest = RestServer(lambda: {}, "127.0.0.1", 0, reload=lambda: {"outcome": "unchanged", "digest": "d"})
    rest.start()
    try:
        url = f"http://127.0.0.1:{rest.port}/v1/reload"
        assert request("POST", url, headers={"Authorization": "Bearer tok-1"})[0] == 403
        _apply_token(log, rest, edited, running)
        assert request("POST", url, headers={"Authorization": "Bearer tok-1"})[0] == 200
        token_file.write_text("tok-2\n")                                  # rotated
        _apply_token(log, rest, edited, running)
        assert request("POST", url, headers={"Authorization": "Bearer tok-1"})[0] == 403
        assert request("POST", url, headers={"Authorization": "Bearer tok-2"})[0] == 200
        token_file.write_text("")                                         # unusable: kept
        _apply_token(log, rest, edited, running)
        assert request("POST", url, headers={"Authorization": "Bearer tok-2"})[0] == 200
        token_file.write_text("tok-3\n")
        other = SimpleNamespace(digest="e" * 64, security=edited.security)     # another config: no change
        _apply_token(log, rest, other, running)
        assert request("POST", url, headers={"Authorization": "Bearer tok-2"})[0] == 200
        _apply_token(log, None, edited, running)                          # no REST: nothing to do
    finally:
        rest.stop()
