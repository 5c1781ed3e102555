"""YAML for the config loader: libyaml composition that keeps every node's line, and `NodeReader`, the
checked conversion of one node to a scalar of the model (errors: ConfigError naming file, line and field)."""


import math
import re
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import yaml

# Key ids on the wire (a u8, 0 reserved); the single-secret form ``key_file`` is key id 1.
from proto.fabricmodel import ConfigError, cut, quoted

_T_STR = "tag:yaml.org,2002:str"
_T_INT = "tag:yaml.org,2002:int"
_T_FLOAT = "tag:yaml.org,2002:float"
_T_BOOL = "tag:yaml.org,2002:bool"
_T_NULL = "tag:yaml.org,2002:null"
_T_MERGE = "tag:yaml.org,2002:merge"    # an unquoted << key (YAML 1.1 merge key)
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\Z")
_MAC_RE = re.compile(r"[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){5}\Z")
_OVS_RE = re.compile(r"tcp:(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})\Z", re.ASCII)   # \d: ASCII digits only
_OCTET = r"(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_QUAD_RE = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}(?:/(3[0-2]|[12]?\d))?\Z", re.ASCII)


#: A number in scientific notation that YAML 1.1 (PyYAML) resolves to a string: its float needs a dot and a
#: signed exponent (1.0e+3), so `1e3`, `1e308`, `2.5e-1` came out as strings. Users write them (YAML 1.2 and
#: JSON read them as numbers): NodeReader.number takes them when unquoted (`"1e3"` stays a string).
_SCIENTIFIC_RE = re.compile(r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+\Z", re.ASCII)


def _scientific(node: yaml.Node) -> bool:
    """`node` is an unquoted scalar in scientific notation that the YAML 1.1 resolver left a string."""
    return (isinstance(node, yaml.ScalarNode) and node.tag == _T_STR and not node.style
            and _SCIENTIFIC_RE.match(node.value) is not None)


def _quad(text: str) -> tuple[int, int | None] | None:
    """Fast path for "a.b.c.d[/n]": (address as int, prefix length or None), None if not of that form."""
    m = _QUAD_RE.match(text)
    if m is None:
        return None
    a, b, c, d, plen = m.groups()
    return (int(a) << 24) | (int(b) << 16) | (int(c) << 8) | int(d), None if plen is None else int(plen)


#: Special-purpose IPv4 blocks (RFC 6890 / RFC 5735) that unicast forwarding never serves: (first, last,
#: "is" phrase, name, whether a master or an eBGP peer may be on it). The limited broadcast address comes
#: before the 240/4 block that holds it, so that it is named when it is the address.
_SPECIAL_BLOCKS = tuple(
    (int(net.network_address), int(net.broadcast_address), is_, what, local)
    for net, is_, what, local in (
        (IPv4Network("0.0.0.0/8"), 'in 0.0.0.0/8 ("this network", RFC 1122 3.2.1.3)',
         '0.0.0.0/8 ("this network", RFC 1122 3.2.1.3)', False),
        (IPv4Network("127.0.0.0/8"), "loopback (127.0.0.0/8, RFC 1122 3.2.1.3)",
         "127.0.0.0/8 (loopback, RFC 1122 3.2.1.3)", True),
        (IPv4Network("169.254.0.0/16"), "link-local (169.254.0.0/16, RFC 3927)",
         "169.254.0.0/16 (link-local, RFC 3927)", True),
        (IPv4Network("224.0.0.0/4"), "multicast (224.0.0.0/4, RFC 5771)", "224.0.0.0/4 (multicast, RFC 5771)", False),
        (IPv4Network("255.255.255.255/32"), "the limited broadcast address (RFC 919)",
         "the limited broadcast address 255.255.255.255 (RFC 919)", False),
        (IPv4Network("240.0.0.0/4"), "reserved (240.0.0.0/4, RFC 1112 4)", "240.0.0.0/4 (reserved, RFC 1112 4)",
         False),
    )
)
#: What a fabric address problem (`special_use`) is followed by in an error.
UNICAST_ROUTABLE = "the fabric's prefixes, loopbacks and hosts must be unicast-routable"


def special_use(first: int, last: int, local_ok: bool = False) -> str | None:
    """The problem ("is multicast (224.0.0.0/4, RFC 5771)", "contains 127.0.0.0/8 (loopback, ...)") if the
    addresses first..last (one address or a prefix) meet a special-purpose block that unicast forwarding never
    serves (RFC 6890; RFC 5735 section 3): "this network" 0/8, loopback 127/8, link-local 169.254/16 (RFC 3927:
    routers do not forward it), multicast 224/4, reserved 240/4 and the limited broadcast address; else None.
    Private (10/8, 172.16/12, 192.168/16) and shared (100.64/10) space is fine. `local_ok`: loopback and
    link-local are allowed (a master's or an eBGP peer's address, not a fabric address). One check for every
    address field and the generator's --base-prefix."""
    blocks = [b for b in _SPECIAL_BLOCKS if first <= b[1] and b[0] <= last and not (local_ok and b[4])]
    inside = next((b for b in blocks if b[0] <= first and last <= b[1]), None)
    return f"is {inside[2]}" if inside else f"contains {blocks[0][3]}" if blocks else None


_T_SEQ = "tag:yaml.org,2002:seq"
_T_MAP = "tag:yaml.org,2002:map"
_IMPLICIT: dict[str | None, list] = dict(yaml.CSafeLoader.yaml_implicit_resolvers)


class _FastLoader(yaml.CSafeLoader):
    """libyaml's CSafeLoader with a leaner resolver: the same tags, without the per-node path-resolver
    bookkeeping (no path resolvers are registered for safe loading). Tests check the tags are identical."""

    def descend_resolver(self, current_node: object, current_index: object) -> None:
        return None

    def ascend_resolver(self) -> None:
        return None

    def resolve(self, kind: type, value: Any, implicit: tuple[bool, bool]) -> str:
        if kind is yaml.ScalarNode:
            if implicit[0]:
                for tag, regexp in _IMPLICIT.get(value[:1], ()):
                    if regexp.match(value):
                        return tag
                for tag, regexp in _IMPLICIT.get(None, ()):
                    if regexp.match(value):
                        return tag
            return _T_STR
        return _T_SEQ if kind is yaml.SequenceNode else _T_MAP


_constructor = yaml.constructor.SafeConstructor()
#: an integer field's literal is at most this long (2**63 has 19 digits; 0x and underscores leave room)
_INT_CHARS = 64
#: 010, -007, 0_10: octal to YAML 1.1 (PyYAML, yq, Ansible), decimal to YAML 1.2 — refused as ambiguous
_LEADING_ZERO = re.compile(r"[-+]?0[0-9_]+")


def _no_base_60(reader: Any, node: yaml.ScalarNode, field: str) -> None:
    """YAML 1.1 reads 1:30 as the base-60 number 90: refused, it is never what a fabric config means."""
    if ":" in node.value:
        raise reader.fail(node, field, f"{cut(node.value)} is a YAML 1.1 base-60 number "
                                       f"({_constructor.construct_object(node)}): write the number, or quote a string")


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    tag = node.tag
    if _scientific(node):
        return f"the number {node.value}"
    if tag == _T_STR:
        return f"the string {quoted(node.value)}"
    if tag == _T_NULL:
        return "null"
    return f"{tag.rsplit(':', 1)[-1]} {cut(node.value)}"


class NodeReader:
    """Checked conversions of YAML nodes for one parse of `source` (relative paths against `base_dir`)."""

    def __init__(self, source: str, base_dir: Path) -> None:
        self.source = source
        self.base_dir = base_dir
        #: merge sources by (node id, allowed keys): each is read once however often it is merged
        self._merged: dict[tuple[int, tuple[str, ...]], dict[str, yaml.Node] | None] = {}

    def fail(self, where: yaml.Node | int | None, field: str, problem: str) -> ConfigError:
        line = _line(where) if isinstance(where, yaml.Node) else where
        return ConfigError(self.source, line, field, problem)

    def fields(self, node: yaml.Node, path: str, allowed: tuple[str, ...], required: tuple[str, ...]) -> dict:
        """The mapping's values by key, after checking its shape: no unknown, duplicate or missing keys."""
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, path, f"expected a mapping, got {_kind(node)}")
        out: dict[str, yaml.Node] = {}
        merged: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            if key_node.tag == _T_MERGE:
                where = f"{path}.<<" if path else "<<"
                if "<<" in out:
                    raise self.fail(key_node, where, f"duplicate merge key (first at line {_line(out['<<'])})")
                merged = self.merge(value_node, where, path, allowed)
                out["<<"] = key_node
                continue
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != _T_STR or key not in allowed:
                if isinstance(key_node, yaml.ScalarNode) and key_node.tag == _T_STR:
                    what = f"unknown key {quoted(key)}"
                else:
                    what = f"unknown key {_kind(key_node)}"
                if isinstance(key, str):
                    key = cut(key)
                where = f"{path}.{key}" if path and isinstance(key, str) else (key if isinstance(key, str) else path)
                raise self.fail(key_node, where, f"{what} (expected one of: {', '.join(allowed)})")
            if key in out:
                raise self.fail(
                    key_node, f"{path}.{key}" if path else key, f"duplicate key (first at line {_line(out[key])})"
                )
            out[key] = value_node
        if out.pop("<<", None) is not None:
            out = {**merged, **out}           # the mapping's own keys win
        for key in required:
            if key not in out:
                raise self.fail(node, f"{path}.{key}" if path else key, "missing required field")
        return out

    def merge(self, node: yaml.Node, field: str, path: str, allowed: tuple[str, ...]) -> dict[str, yaml.Node]:
        """The keys a YAML merge key brings in (`<<: *defaults` or `<<: [*a, *b]`, YAML 1.1 merge type): an
        earlier mapping's key wins over a later one's, the mapping's own keys over all (`fields`). Each source
        is checked like the mapping itself (unknown and duplicate keys, its own merge keys), and an error in a
        merged value names the line it is written on (the anchor's)."""
        sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
        out: dict[str, yaml.Node] = {}
        for src in sources:
            if not isinstance(src, yaml.MappingNode):
                raise self.fail(src, field, f"a merge key (<<) takes a mapping or a list of mappings, got {_kind(src)}")
            key = (id(src), allowed)
            if key not in self._merged:
                self._merged[key] = None
                self._merged[key] = self.fields(src, path, allowed, ())
            keys = self._merged[key]
            if keys is None:
                raise self.fail(src, field, "a merge key (<<) that merges the mapping it is in (a cycle)")
            for name, value in keys.items():
                out.setdefault(name, value)
        return out

    def string(self, node: yaml.Node, field: str) -> str:
        if isinstance(node, yaml.ScalarNode) and node.tag == _T_STR:
            return node.value
        hint = " (quote it)" if isinstance(node, yaml.ScalarNode) and node.tag != _T_NULL else ""
        raise self.fail(node, field, f"expected a string, got {_kind(node)}{hint}")

    def name(self, node: yaml.Node, field: str) -> str:
        value = self.string(node, field)
        if not _NAME_RE.match(value):
            raise self.fail(
                node, field, f"bad name {quoted(value)}: use 1-63 characters of letters, digits, '.', '_', '-'"
            )
        return value

    def integer(self, node: yaml.Node, field: str, lo: int, hi: int, what: str = "") -> int:
        """An integer in lo..hi; `what` says what the field is when it is out of range."""
        if not (isinstance(node, yaml.ScalarNode) and node.tag == _T_INT):
            # an id, port, weight or count is written as an integer (1000.0 is refused too); say which one
            hint = f" (write it as {float(node.value):.0f})" if _scientific(node) and float(node.value).is_integer() \
                and abs(float(node.value)) <= 2**63 else ""
            raise self.fail(node, field, f"expected an integer, got {_kind(node)}{hint}")
        _no_base_60(self, node, field)
        text = node.value
        if len(text) > _INT_CHARS:       # no field takes one this long; int() refuses > 4300 digits with a traceback
            raise self.fail(node, field, f"{cut(text)} out of range {lo}..{hi}" + (f": {what}" if what else ""))
        if _LEADING_ZERO.fullmatch(text):
            raise self.fail(node, field, f"{text} has a leading zero: YAML 1.1 tools read it as octal "
                                         f"({_constructor.construct_yaml_int(node)}), YAML 1.2 as decimal "
                                         f"({int(text.replace('_', ''))}): write the number without it")
        try:
            value = int(text)
        except ValueError:  # 0x1f, 1_000, 0b101 (YAML 1.1 forms)
            value = _constructor.construct_yaml_int(node)
        if not lo <= value <= hi:
            raise self.fail(node, field, f"{value} out of range {lo}..{hi}" + (f": {what}" if what else ""))
        return value

    def number(self, node: yaml.Node, field: str) -> float:
        """A finite number: an integer, a YAML float, or unquoted scientific notation (`1e3`, read as a string
        by YAML 1.1). ConfigError for anything else, .inf/.nan and what overflows (`1e400`); each field's
        caller checks its own range."""
        if _scientific(node):
            value = float(node.value)
        elif not (isinstance(node, yaml.ScalarNode) and node.tag in (_T_INT, _T_FLOAT)):
            raise self.fail(node, field, f"expected a number, got {_kind(node)}")
        elif node.tag == _T_INT:
            return float(self.integer(node, field, -(2**63), 2**63))
        else:
            _no_base_60(self, node, field)
            value = _constructor.construct_yaml_float(node)
        if not math.isfinite(value):
            raise self.fail(node, field, f"expected a finite number, got {cut(node.value)}")
        return value

    def seq(self, node: yaml.Node, field: str) -> list[yaml.Node]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(node, field, f"expected a list, got {_kind(node)}")
        return node.value

    def address(self, node: yaml.Node, field: str) -> IPv4Address:
        value = self.string(node, field)
        quad = _quad(value)
        if quad is not None and quad[1] is None:
            return IPv4Address(quad[0])
        try:
            return IPv4Address(value)
        except ValueError:
            raise self.fail(node, field, f"{quoted(value)} is not an IPv4 address") from None

    def unicast_address(self, node: yaml.Node, field: str) -> IPv4Address:
        """An IPv4 address a host can have (`special_use` with `local_ok`): loopback (127/8) and link-local
        (169.254/16) are allowed for masters and eBGP peers: the lab runs its masters on 127/8 and the CPN
        link to external masters on 169.254/16."""
        address = self.address(node, field)
        problem = special_use(int(address), int(address), local_ok=True)
        if problem is not None:
            raise self.fail(node, field, f"{address} {problem}: not a unicast address")
        return address

    def network(self, node: yaml.Node, field: str) -> IPv4Network:
        value = self.string(node, field)
        quad = _quad(value)
        if quad is not None and quad[1] is not None:
            addr, plen = quad
            if addr & ((1 << (32 - plen)) - 1) == 0:
                return IPv4Network((addr, plen))
        if "/" not in value:
            # ipaddress would take "0.0.0.0" as 0.0.0.0/32: a default route silently lost.
            raise self.fail(node, field, f"{quoted(value)} has no prefix length (write it as a.b.c.d/len)")
        try:
            return IPv4Network(value)
        except ValueError as e:
            raise self.fail(node, field, f"{quoted(value)} is not an IPv4 prefix ({e})") from None

    def mac(self, node: yaml.Node, field: str) -> str:
        value = self.string(node, field)
        if not _MAC_RE.match(value):
            raise self.fail(node, field, f"{quoted(value)} is not a MAC address (aa:bb:cc:dd:ee:ff)")
        value = value.lower()
        if int(value[:2], 16) & 1:
            raise self.fail(node, field, f"{value} is a multicast MAC address")
        if value == "00:00:00:00:00:00":      # Linux refuses it for an interface: lab up failed building the host
            raise self.fail(node, field, f"{value} is the all-zero MAC address, which no interface can have")
        return value

    def path(self, node: yaml.Node, field: str) -> Path:
        value = self.string(node, field)
        if not value:
            raise self.fail(node, field, "empty path")
        if "\0" in value:
            raise self.fail(node, field, f"path {quoted(value)} contains a NUL character")
        try:
            p = Path(value).expanduser()
        except RuntimeError:            # ~user of no such user, or ~ without a home directory
            raise self.fail(node, field, f"path {quoted(value)}: cannot expand {quoted(value.split('/')[0])}") from None
        return p if p.is_absolute() else self.base_dir / p

    def boolean(self, node: yaml.Node, field: str) -> bool:
        if isinstance(node, yaml.ScalarNode) and node.tag == _T_BOOL:
            return bool(_constructor.construct_yaml_bool(node))
        raise self.fail(node, field, f"expected true or false, got {_kind(node)}")
