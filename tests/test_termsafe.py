"""No control character from another process's answer reaches the operator's terminal (tester bb40, F14).

A fake client REST answered `"master": "\\u001b[2J\\u001b]0;pwned\\u0007\\u001b[31mRED"` and `firepath lab
status` cleared the operator's screen and retitled the terminal. proto.termsafe escapes C0/C1 controls, DEL
and bidi overrides: per value in the tables (lab status, status, the ops commands' tables) and for the whole
output of every operator command (proto.cli)."""

from __future__ import annotations

import io
import re
import sys
from types import SimpleNamespace

import pytest

from proto.clos import clos_fabric
from proto.termsafe import SafeWriter, clean, clean_text, guarded_stdio

HOSTILE = "\u001b[2J\u001b]0;pwned\u0007\u001b[31mRED\r\n\x9b31m\u202eevil\x7f"
# anything a terminal acts on: C0 but newline and tab, DEL, C1, bidi overrides
ACTIVE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def test_clean_escapes_every_control_character_and_keeps_the_rest() -> None:
    assert clean(HOSTILE) == "\\x1b[2J\\x1b]0;pwned\\x07\\x1b[31mRED\\x0d\\x0a\\x9b31m\\u202eevil\\x7f"
    assert clean("leaf-1 é ✓ 名") == "leaf-1 é ✓ 名" and clean(5) == "5" and clean(None) == "None"
    assert clean("a\tb") == "a\\x09b"                                            # a cell stays one cell
    assert clean_text("row 1\trow\n2\u001b[2J") == "row 1\trow\n2\\x1b[2J"       # an output keeps its lines
    out = io.StringIO()
    w = SafeWriter(out)
    assert w.write(HOSTILE) == len(HOSTILE) and not ACTIVE.search(out.getvalue())
    assert w.getvalue is not None                                               # the rest is the stream's


def _lab(clients: dict, masters: dict) -> SimpleNamespace:
    f = clos_fabric(pods=0, leaves=2, spines=2, masters=1)
    return SimpleNamespace(fabric=f, http=SimpleNamespace(get=lambda port, path: {"borders": {}}),
                           state=SimpleNamespace(external_masters=False, processes={}, faults=[]),
                           master_states=lambda: masters, client_states=lambda: clients,
                           current_master=lambda: ("m1", {"role": "master"}))


def test_lab_status_shows_a_hostile_client_answer_escaped_on_one_line() -> None:
    from lab.report import format_status

    ok = {"ports": [], "routes": 1, "groups": 1, "master": "m1", "lsd_version": 5, "programmed_version": 5}
    clients = {"spine-1": ok, "spine-2": ok, "leaf-2": ok,
               "leaf-1": {**ok, "master": HOSTILE, "lsd_version": {"x": HOSTILE}, "programmed_version": HOSTILE,
                          "routes": [HOSTILE], "groups": None}}
    masters = {"m1": {"role": HOSTILE, "term": HOSTILE, "version": 3}}
    text = format_status(_lab(clients, masters))
    assert not ACTIVE.search(text), text
    row = [line for line in text.splitlines() if line.startswith("leaf-1 ")]
    assert len(row) == 1 and "\\x1b[2J\\x1b]0;pwned\\x07" in row[0], text
    assert [line for line in text.splitlines() if line.startswith("m1 ")][0].count("\\x1b[31mRED") == 2


def test_status_and_ops_tables_escape_what_masters_and_clients_answer() -> None:
    from controller.ops.cli import _table
    from controller.status_cli import _behind, render

    table = _table([["leaf-1", HOSTILE, None]], ["switch", "address", "x"])
    assert not ACTIVE.search(table) and len(table.splitlines()) == 3 and table.splitlines()[2].endswith("-")
    assert not ACTIVE.search(_behind("leaf-1", {"lsd_version": HOSTILE, "programmed_version": 1}))
    state = {"fabric": "clos", "leader": None, "serving": [], "clients": None, "masters": {
        "m1": {"address": "127.0.0.1", "rest_port": 1, "version": {"role": HOSTILE, "term": 1, "version": 2,
                                                                    "leader": HOSTILE}},
        "m2": {"address": "127.0.0.1", "rest_port": 2, "error": HOSTILE}}}
    text = render(state)
    assert not ACTIVE.search(text) and "\\x1b[2J" in text, text


def test_lab_status_command_writes_no_control_character(capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """`firepath lab status` end to end through proto.cli (the lab itself faked: its client answers the
    tester's string), and an error message quoting an answer on stderr: both through proto.cli's guard."""
    import lab.cli
    import lab.fabric
    from proto.cli import main

    ok = {"ports": [], "routes": 1, "groups": 1, "master": "m1", "lsd_version": 5, "programmed_version": 5}
    fake = _lab({"spine-1": ok, "spine-2": ok, "leaf-2": ok, "leaf-1": {**ok, "master": HOSTILE}},
                {"m1": {"role": "master", "term": 1, "version": 3}})
    fake.state.name, fake.state.config = "demo", "/nowhere/f.yaml"
    fake.close = lambda: None
    monkeypatch.setattr(lab.cli, "_open", lambda args: fake)
    monkeypatch.setattr(lab.fabric, "preflight", lambda: None)
    assert main(["lab", "status"]) == 0
    out, err = capsys.readouterr()
    assert not ACTIVE.search(out) and "leaf-1" in out and "\\x1b[2J" in out, out

    def boom(args: object) -> object:
        print(f"an answer: {HOSTILE}")
        raise lab.fabric.LabError(f"the master said {HOSTILE}")

    monkeypatch.setattr(lab.cli, "_open", boom)
    assert main(["lab", "status"]) == 1
    out, err = capsys.readouterr()
    assert not ACTIVE.search(out) and not ACTIVE.search(err), (out, err)
    assert "\\x1b[2J" in out and "\\x1b[2J" in err
    with guarded_stdio():
        assert isinstance(sys.stdout, SafeWriter)
    assert not isinstance(sys.stdout, SafeWriter)                                # restored
