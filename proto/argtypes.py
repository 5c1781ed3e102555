"""argparse value types shared by the `firepath` subcommands: a bad value is refused by argparse with one
line naming the option and the problem (`error: argument --rest-port: 99999 is not a port (1..65535)`) and
exit status 2, before anything starts."""

from __future__ import annotations

import argparse
import ipaddress
import math
from collections.abc import Callable
from typing import TypeVar

__all__ = ["OutOfRange", "at_most", "ipv4", "ipv4_list", "ipv4_prefix", "non_negative_float", "ovsdb_target",
           "non_negative_int", "parse_prefix", "parse_uint", "port", "port_or_zero", "positive_float", "positive_int",
           "positive_seconds"]


_N = TypeVar("_N", int, float)


class OutOfRange(ValueError):
    """parse_uint: well-formed digits, but a value above the maximum (an HTTP layer may answer it otherwise,
    e.g. a Content-Length over the body limit is a 413, not a 400)."""


def _shown(text: str, keep: int = 40) -> str:
    """`text` as an error quotes it: its repr, cut to `keep` characters (a peer's 60 KB value is not echoed)."""
    return f"{text[:keep]!r}... ({len(text)} characters)" if len(text) > keep else repr(text)


def parse_uint(text: str, name: str, maximum: int) -> int:
    """A non-negative integer as a query parameter, header or path carries it (`?since=41`, `Content-Length`):
    ASCII digits 0-9 only, 0..`maximum`; the one parser of such values in both REST APIs.

    Why not int(): it also reads "-1", " 5 ", "+5", "1_0" and other scripts' digits ("٣" is 3), so
    `?since=%D9%A3` answered for version 3, and above 4300 digits it raises a ValueError of its own.
    Raises ValueError naming `name` and quoting the value cut short; OutOfRange (a ValueError) for digits
    above `maximum` (never converted when they have more digits than `maximum`)."""
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"{name}: expected a whole number written with digits 0-9, got {_shown(text)}")
    if len(text.lstrip("0")) > len(str(maximum)) or int(text) > maximum:
        raise OutOfRange(f"{name}: {_shown(text)} is above the maximum {maximum}")
    return int(text)


def _int(text: str) -> int:
    """An option's integer: an optional '-' and ASCII digits (int() also took "+5", " 5", "1_0", "٣")."""
    digits = text[1:] if text.startswith("-") else text
    if not (digits.isascii() and digits.isdigit() and len(digits) <= 30):
        raise argparse.ArgumentTypeError(f"{_shown(text)} is not an integer")
    return int(text, 10)


def port(text: str) -> int:
    """A TCP/UDP port, 1..65535."""
    value = _int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port (1..65535)")
    return value


def port_or_zero(text: str) -> int:
    """A port, or 0 (= none: the service is not started)."""
    value = _int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port (1..65535, or 0 for none)")
    return value


def positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: must be at least 1")
    return value


def non_negative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value}: must be 0 or more")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{text}: must be a positive finite number")
    return value


#: the longest duration an option takes (seconds): `--timeout 1e300` passed positive_float and then failed in
#: socket.settimeout / threading.Timer with an OverflowError traceback
MAX_SECONDS = 1e6


def at_most(parse: Callable[[str], _N], limit: _N, why: str = "") -> Callable[[str], _N]:
    """An argparse type: `parse`, then refuse a value above `limit` ("TEXT: at most LIMIT WHY")."""
    def check(text: str) -> _N:
        value = parse(text)
        if value > limit:
            raise argparse.ArgumentTypeError(f"{text}: at most {limit:g}{why}")
        return value
    return check


#: A duration in seconds: a positive finite number, at most MAX_SECONDS.
positive_seconds = at_most(positive_float, MAX_SECONDS, " seconds")


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{text}: must be a finite number >= 0")
    return value


def ipv4(text: str) -> str:
    """One IPv4 address (0.0.0.0: every address), returned normalised."""
    try:
        return str(ipaddress.IPv4Address(text.strip()))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IPv4 address") from None


def parse_prefix(text: str, name: str = "prefix") -> ipaddress.IPv4Network:
    """An IPv4 prefix "a.b.c.d/len", or an address "a.b.c.d" (its /32), as typed by an operator: the one
    parser of every query parameter or option that takes one (the client's `GET /v1/routes?prefix=`, `firepath
    routes SWITCH PREFIX`). ValueError whose text names `name` and why: not an address or prefix, or host bits
    set. Why refuse host bits: "10.0.0.1/8" is ambiguous (the address 10.0.0.1, or the prefix 10.0.0.0/8?),
    and reading it as 10.0.0.0/8 (strict=False) silently answered for another prefix than the one typed."""
    shown = f"{text[:40]!r}..." if len(text) > 40 else repr(text)     # a peer's 60 KB value is not echoed
    try:
        return ipaddress.IPv4Network(text)
    except ipaddress.NetmaskValueError:
        pass
    except ValueError as e:
        if "has host bits set" in str(e):
            loose = ipaddress.IPv4Network(text, strict=False)
            raise ValueError(f"{name} {text} has host bits set; did you mean {loose} (or the address "
                             f"{text.split('/')[0]})?") from None
    raise ValueError(f"{name}: {shown} is not an IPv4 address or prefix")


def ipv4_prefix(text: str) -> ipaddress.IPv4Network:
    """argparse type of parse_prefix."""
    try:
        return parse_prefix(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def ipv4_list(text: str) -> str:
    """A comma-separated list of IPv4 addresses, returned normalised ("127.0.0.11,127.0.0.12")."""
    items = [a.strip() for a in text.split(",") if a.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected one or more IPv4 addresses, comma-separated")
    out = []
    for a in items:
        try:
            out.append(str(ipaddress.IPv4Address(a)))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{a!r} is not an IPv4 address") from None
    return ",".join(out)


def ovsdb_target(text: str) -> str:
    """An OVSDB remote the client can open: unix:PATH or tcp:IPV4:PORT (what `ovs.stream` connects to)."""
    kind, _, rest = text.partition(":")
    if kind == "unix" and rest and "\0" not in rest:
        return text
    if kind == "tcp":
        host, _, p = rest.rpartition(":")
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            pass
        else:
            port(p)
            return text
    raise argparse.ArgumentTypeError(f"{text!r}: expected unix:PATH or tcp:IP:PORT")
