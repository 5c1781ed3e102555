"""Structured logging shared by the firepath daemons: key=value lines (default) or JSON lines.

An event is logged as `log.info(kv("lsd_version", version=12, changes=3, cause="report"))`. `kv` returns an
`Event`: a str (the key=value body, `event=lsd_version version=12 changes=3 cause=report`, so any handler
and `%s` formatting still work) that also keeps the name and the typed fields. Both formatters render from
that one record: `KvFormatter` prints the body after ts/level/logger, `JsonFormatter` writes the fields as
JSON values (integers stay integers) without re-parsing any text. Other messages (libraries, plain text)
are rendered as `msg`. Consumers (benchmarks, tests) read either rendering back with `parse_event`.
"""

from __future__ import annotations

import json
import logging
import shlex
import sys
import time
from typing import Any


def _kv_value(v: Any) -> str:
    s = str(v)
    if not s or any(c in s for c in ' "='):
        s = '"' + s.replace('"', '\\"') + '"'
    return s


class Event(str):
    """A log message body `event=<name> k=v ...` that also carries `name` and `fields` (unrendered)."""

    name: str
    fields: dict[str, Any]

    def __new__(cls, name: str, fields: dict[str, Any]) -> Event:
        body = " ".join([f"event={name}", *(f"{k}={_kv_value(v)}" for k, v in fields.items())])
        obj = super().__new__(cls, body)
        obj.name, obj.fields = name, fields
        return obj


def kv(event: str, **fields: Any) -> Event:
    """A structured log event: name + fields (see the module docstring)."""
    return Event(event, fields)


def _json_value(v: Any) -> Any:
    if v is None or isinstance(v, bool | int | float | str):
        return v
    if isinstance(v, list | tuple):
        return [_json_value(x) for x in v]
    return str(v)


class KvFormatter(logging.Formatter):
    """ts=... level=... logger=... <message (already key=value)>"""

    def format(self, record: logging.LogRecord) -> str:
        # microseconds: benchmarks read sub-10 ms timelines from these lines
        created = record.created
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1e6):06d}Z"
        line = f"ts={ts} level={record.levelname.lower()} logger={record.name} {record.getMessage()}"
        if record.exc_info:
            line += " exc=" + json.dumps(self.formatException(record.exc_info))
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, then the event's typed fields (or `msg`)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"ts": record.created, "level": record.levelname.lower(), "logger": record.name}
        if isinstance(record.msg, Event) and not record.args:
            out["event"] = record.msg.name
            for k, v in record.msg.fields.items():
                out.setdefault(k, _json_value(v))
        else:
            out["msg"] = record.getMessage()
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def parse_event(line: str) -> tuple[str | None, dict[str, Any]]:
    """(event name, fields) of one log line in either rendering; (None, {...}) for a line that is not an
    event. Values of the kv rendering are strings (the JSON rendering keeps their types)."""
    line = line.strip()
    if line.startswith("{"):
        try:
            d = json.loads(line)
        except ValueError:
            return None, {}
        if not isinstance(d, dict):
            return None, {}
        return d.pop("event", None), d
    try:
        parts = shlex.split(line)
    except ValueError:
        return None, {}
    fields = dict(p.split("=", 1) for p in parts if "=" in p)
    return fields.pop("event", None), fields


def setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else KvFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp").setLevel(max(logging.WARNING, root.level))
