"""Text from another process as an operator's terminal shows it: control characters escaped, never sent.

What an operator command prints comes partly from other processes' answers — a switch client's REST
(`firepath lab status`, `status`/`clients --client-rest`), a master's REST (`drains`, `masters`, `status`,
errors quoted from answers) — and whatever binds a client's REST port answers in its place. A string
holding ESC sequences cleared the operator's screen and retitled the terminal (tester bb40, F14:
`"master": "\\u001b[2J\\u001b]0;pwned\\u0007"` in `lab status`). So:

- `clean(value)`: one value as a table cell or a message quotes it: `str(value)` with every C0 control
  (newline and tab included: a cell stays one line), DEL, C1 control and Unicode bidi override shown as
  `\\xNN` / `\\uNNNN`;
- `clean_text(text)`: a whole output, keeping its own newlines and tabs;
- `guarded_stdio()`: for the duration, sys.stdout and sys.stderr pass every write through `clean_text`
  (proto.cli runs every operator command under it: one place, whatever a command prints).
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Iterator
from typing import Any, TextIO

__all__ = ["SafeWriter", "clean", "clean_text", "guarded_stdio"]

# C0, DEL, C1, and the bidi embeddings/overrides/isolates and marks that reorder what a terminal shows
_BIDI = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_CONTROL = re.compile(f"[\x00-\x1f\x7f-\x9f{_BIDI}]")
_CONTROL_BUT_LINES = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{_BIDI}]")        # keeps \t and \n


def _escape(m: re.Match[str]) -> str:
    o = ord(m.group())
    return f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}"


def clean(value: Any) -> str:
    """`value` as text for one cell or quote: every control character escaped (see the module docstring)."""
    s = value if type(value) is str else str(value)
    return _CONTROL.sub(_escape, s)


def clean_text(text: str) -> str:
    """`text` with every control character but newline and tab escaped."""
    return _CONTROL_BUT_LINES.sub(_escape, text)


class SafeWriter:
    """A text stream that writes `clean_text` of what it is given to `inner`; everything else (flush,
    fileno, encoding, isatty, ...) is `inner`'s."""

    def __init__(self, inner: TextIO) -> None:
        self.inner = inner

    def write(self, s: str) -> int:
        self.inner.write(clean_text(s))
        return len(s)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@contextlib.contextmanager
def guarded_stdio() -> Iterator[None]:
    """sys.stdout and sys.stderr as SafeWriters until the block ends (then what they were before)."""
    out, err = sys.stdout, sys.stderr
    sys.stdout = SafeWriter(out)  # type: ignore[assignment]
    sys.stderr = SafeWriter(err)  # type: ignore[assignment]
    try:
        yield
    finally:
        sys.stdout, sys.stderr = out, err
