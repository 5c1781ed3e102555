"""proto/logsetup.py: one event record, two renderings (key=value and JSON), read back by parse_event."""

from __future__ import annotations

import json
import logging

from proto.logsetup import Event, JsonFormatter, KvFormatter, kv, parse_event


def _record(msg: object, *args: object) -> logging.LogRecord:
    return logging.LogRecord("firepath.master", logging.INFO, __file__, 1, msg, args or None, None)


def test_an_event_renders_as_kv_and_as_typed_json_from_the_same_record():
    ev = kv("lsd_version", version=12, changes=3, cause="report", names="a b", error=ValueError("x=1"))
    assert isinstance(ev, Event) and isinstance(ev, str)
    assert ev == 'event=lsd_version version=12 changes=3 cause=report names="a b" error="x=1"'
    rec = _record(ev)
    line = KvFormatter().format(rec)
    assert line.startswith("ts=") and line.endswith(" logger=firepath.master " + ev)
    d = json.loads(JsonFormatter().format(rec))
    assert d["event"] == "lsd_version" and d["version"] == 12 and d["changes"] == 3  # typed, not re-parsed
    assert d["names"] == "a b" and d["error"] == "x=1" and d["level"] == "info"
    assert parse_event(json.dumps(d)) == ("lsd_version", {k: v for k, v in d.items() if k != "event"})
    name, fields = parse_event(line)
    assert name == "lsd_version" and fields["version"] == "12" and fields["names"] == "a b"


def test_plain_messages_and_garbage():
    d = json.loads(JsonFormatter().format(_record("signal=%s stopping", "SIGTERM")))
    assert d["msg"] == "signal=SIGTERM stopping" and "event" not in d
    assert parse_event("not an event")[0] is None and parse_event("{broken")[0] is None
    assert parse_event('a="unterminated') == (None, {})


def test_harness_reads_event_times_from_either_rendering():
    from tests.harness.compose import last_event_time

    rec = _record(kv("role", role="master", term=7, leader="m2"))
    kv_line, json_line = KvFormatter().format(rec), JsonFormatter().format(rec)
    other = KvFormatter().format(_record(kv("role", role="backup", term=8, leader="m1")))
    logs = "\n".join(["junk", kv_line, other])
    t = last_event_time(logs, "role", role="master", term=7)
    assert t is not None and abs(t - rec.created) < 0.001
    assert last_event_time(json_line, "role", role="master", term=7) == rec.created
    assert last_event_time(logs, "role", role="master", term=8) is None
