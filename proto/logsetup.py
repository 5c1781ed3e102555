"""Structured logging shared by the firepath daemons: key=value lines (default) or JSON lines."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any


class KvFormatter(logging.Formatter):
    """ts=... level=... logger=... <message (already key=value)>"""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        line = f"ts={ts} level={record.levelname.lower()} logger={record.name} {record.getMessage()}"
        if record.exc_info:
            line += " exc=" + json.dumps(self.formatException(record.exc_info))
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line; the key=value message body is parsed into fields."""

    def format(self, record: logging.LogRecord) -> str:
        import shlex

        out: dict[str, Any] = {"ts": record.created, "level": record.levelname.lower(), "logger": record.name}
        msg = record.getMessage()
        try:
            for part in shlex.split(msg):
                k, sep, v = part.partition("=")
                if sep:
                    out[k] = v
                else:
                    out.setdefault("msg", part)
        except ValueError:
            out["msg"] = msg
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else KvFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp").setLevel(max(logging.WARNING, root.level))
