"""The cluster config: one YAML file describing the whole fabric, loaded into an immutable `Fabric`.

Every switch and master loads the same file. Two things in it are shared protocol state:

* the **link index** -- the order of `links:` in the file -- is the order of the link-state database (LSD);
* the **digest** -- sha256 over a canonical serialization of the normalized model -- is what masters and
  clients compare to be sure they route over the same fabric. It ignores key order, comments, whitespace,
  flow/block style and defaults written out or left implicit. Local file paths (`security:`) are not part
  of it: machines may keep their key files in different places.

The loader parses with `yaml.compose` (libyaml) so every node keeps its line, and converts the node tree
itself: every error is a `ConfigError` naming the file, the YAML line and the field.
"""

from __future__ import annotations

import bisect
import gc
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from enum import StrEnum
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import yaml

# Key ids on the wire (a u8, 0 reserved); the single-secret form ``key_file`` is key id 1.
from proto.auth import LEGACY_KEY_ID, MAX_KEY_ID, MIN_KEY_ID
from proto.budget import derive as derive_timers

__all__ = [
    "ConfigError",
    "Damping",
    "Distribution",
    "Endpoint",
    "LIVENESS_MODES",
    "Fabric",
    "Host",
    "Link",
    "Guard",
    "BgpPeer",
    "BgpSettings",
    "LsdSettings",
    "MAX_CONFIG_BYTES",
    "MAX_OF_PORT",
    "Master",
    "Role",
    "Routing",
    "KeyRef",
    "Security",
    "Switch",
    "Timers",
    "default_hash_basis",
    "load_fabric",
    "parse_fabric",
]

MAX_OF_PORT = 65279  # OFPP_MAX: highest physical OpenFlow port number
MAX_SWITCH_ID = 2**31 - 1
MAX_HASH_BASIS = 2**32 - 1  # the datapath hash action (struct ovs_action_hash) takes a 32-bit basis
#: Roles whose switches relay fabric traffic by default (RFC 7938 / RIFT valley-free: a ToR or a border
#: never carries traffic between two other switches).
DEFAULT_TRANSIT_ROLES = ("agg", "spine")


def default_hash_basis(switch_id: int) -> int:
    """The ECMP hash basis of a switch without a `hash_basis` in the config: its id times the 32-bit
    golden-ratio constant, mod 2**32 (Knuth's multiplicative hashing). An odd multiplier is a bijection
    mod 2**32, so distinct ids get distinct bases, and neighbouring ids get far-apart ones."""
    return (switch_id * 0x9E3779B1) & MAX_HASH_BASIS


class ConfigError(ValueError):
    """A config problem: `str(e) == f"{file}:{line}: {field}: {problem}"`.

    `line` is None when the problem has no YAML line (unreadable file); it is then left out of the message,
    and so is an empty `field`.
    """

    def __init__(self, file: str, line: int | None, field: str, problem: str) -> None:
        self.file = file
        self.line = line
        self.field = field
        self.problem = problem
        where = file if line is None else f"{file}:{line}"
        super().__init__(f"{where}: {field}: {problem}" if field else f"{where}: {problem}")


class Role(StrEnum):
    TOR = "tor"
    AGG = "agg"
    SPINE = "spine"
    BORDER = "border"


@dataclass(frozen=True, slots=True)
class Host:
    name: str
    tor: str
    port: int
    ip: IPv4Address
    mac: str  # "aa:bb:cc:dd:ee:ff", lower-case


#: Peers per border (its port report carries one `proto.messages.BgpSession` per peer).
MAX_BGP_PEERS = 256


@dataclass(frozen=True, slots=True)
class BgpPeer:
    """One external eBGP neighbour of a border switch (YAML `switches[i].bgp.peers[j]`).

    `port`: the border's OpenFlow port facing the peer (external, not a fabric link); `local_address`:
    the border's own address and prefix length on that link (the session's source, the next hop the peer
    sees); hold/keepalive in seconds (RFC 4271: hold 0 or >= 3, keepalive < hold); `max_prefix`: more
    prefixes than this from the peer tear the session down (RFC 4486 cease subcode 1); `password_file`:
    TCP MD5 (RFC 2385) key, a local path (not in the digest)."""

    address: IPv4Address
    peer_as: int
    port: int
    local_address: IPv4Interface
    local_as: int
    hold_time: int = 9
    keepalive: int = 3
    max_prefix: int = 100
    password_file: Path | None = None


@dataclass(frozen=True, slots=True)
class BgpSettings:
    """A border's eBGP (YAML `switches[i].bgp`, issue #13): its ASN, the cluster aggregates it announces
    while the fabric reaches them, damping of flapping external routes, and its peers. The external
    prefixes it may originate into the fabric are the switch's `prefixes` (0.0.0.0/0 when none): each is
    a dynamic LSD entry (`Fabric.external_slots`), UP while some session provides it."""

    local_as: int
    announce: tuple[IPv4Network, ...]
    peers: tuple[BgpPeer, ...]
    router_id: IPv4Address | None = None
    damping: bool = True
    #: Link-state tracking: while the border reaches no fabric prefix its external ports are taken down
    #: (the routers outside drop it from their ECMP at carrier loss, without waiting for BGP).
    track_fabric: bool = True


@dataclass(frozen=True, slots=True)
class Switch:
    name: str
    id: int  # 1..2**31-1, unique; also the OpenFlow datapath id
    role: Role
    prefixes: tuple[IPv4Network, ...]  # originated (ToR subnets; border: e.g. 0.0.0.0/0)
    loopback: IPv4Network | None  # a /32, also originated
    mac: str  # router MAC; default "0e:00:" + id as 4 bytes hex
    gateway: IPv4Address | None  # ToR only: default first usable address of its first prefix
    hosts: tuple[Host, ...]  # ToR only
    ovs: str | None  # how the client reaches its OVS: "tcp:IP:PORT"
    rest_port: int | None  # client REST/metrics port (None = disabled)
    # ECMP hash basis of the switch's select groups (0..2**32-1): None = `default_hash_basis(id)`, so
    # that the tiers of a Clos hash a flow independently (no polarization).
    hash_basis: int | None = None
    # May relay traffic between two other switches. None = by role (DEFAULT_TRANSIT_ROLES); the loader
    # always sets it from the fabric's `routing.transit_roles` and the switch's own `transit:`.
    transit: bool | None = None
    # Border only: eBGP with the outside (issue #13); None = a static border (its prefixes always originated).
    bgp: BgpSettings | None = None

    def __post_init__(self) -> None:
        if self.hash_basis is None:
            object.__setattr__(self, "hash_basis", default_hash_basis(self.id))
        if self.transit is None:
            object.__setattr__(self, "transit", self.role.value in DEFAULT_TRANSIT_ROLES)


class Endpoint(msgspec.Struct, frozen=True, array_like=True, forbid_unknown_fields=True):
    """One end of a link. A msgspec struct: on the wire (proto.wire) it is the array [switch, port], and
    decoding checks the constraints below (construction from config does not: config checks names first)."""

    switch: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    port: Annotated[int, msgspec.Meta(ge=1, le=65279)]  # OpenFlow port number

    def __post_init__(self) -> None:
        if not self.switch.isprintable() or (not self.switch.isascii() and len(self.switch.encode()) > 255):
            raise ValueError(f"switch: {self.switch!r} is not a name of 1..64 printable characters")

    def __str__(self) -> str:
        return f"{self.switch}:{self.port}"


@dataclass(frozen=True, slots=True)
class Link:
    index: int
    a: Endpoint
    b: Endpoint
    weight: int = 1
    capacity: float | None = None  # Gbit/s; None = unknown (buckets of unknown capacity are equal)

    @property
    def name(self) -> str:
        return f"{self.a.switch}:{self.a.port}-{self.b.switch}:{self.b.port}"


@dataclass(frozen=True, slots=True)
class Master:
    id: str
    address: IPv4Address
    client_port: int
    peer_port: int
    rest_port: int
    priority: int = 100


@dataclass(frozen=True, slots=True)
class Timers:
    """All durations in seconds (the YAML keys are in milliseconds: `nd_interval_ms` ...)."""

    nd_interval: float = 0.010
    nd_dead: float = 0.030
    keepalive: float = 0.100
    report_refresh: float = 0.500
    switch_dead: float = 15.0  # also the default graceful-restart hold of a client (see client.cli)
    report_retry_min: float = 0.020
    report_retry_max: float = 1.0
    pacing: float = 0.002  # coalescing window for LSD updates to a client
    max_update_rate: float = 200.0  # updates/s per client at most
    hello_interval: float = 0.030  # FMRP
    master_dead: float = 0.150  # FMRP
    flap_threshold: int = 3
    flap_window: float = 10.0
    damp_initial: float = 1.0
    damp_max: float = 60.0
    # Link liveness in the datapath (`liveness: oam`, client.oam): CFM continuity-check interval that
    # ovs-vswitchd runs on every fabric port. OVS fixes the multiplier (a fault after 3.5 intervals without
    # a CCM, checked every 3.5 intervals, IEEE 802.1ag), so a silent failure is detected in 3.5-7 intervals.
    oam_interval: float = 0.010
    # With OAM, ND only checks identity (expected vs discovered peer, two-way): a frame every
    # nd_identity_interval, and at once on every PHY/liveness change; silence for nd_identity_dead = DOWN.
    nd_identity_interval: float = 1.0
    nd_identity_dead: float = 3.5


#: How fabric ports are checked for liveness (top-level `liveness:` key). "oam": ovs-vswitchd runs CFM on
#: every fabric port and ND runs at the slow identity cadence; "nd": the client's software ND is both the
#: heartbeat and the identity check (nd_interval / nd_dead), for switches without OVS OAM.
LIVENESS_MODES = ("oam", "nd")


@dataclass(frozen=True, slots=True)
class KeyRef:
    """One entry of ``security.keys``: key ``id`` (1..255) read from ``file``; ``where`` is the entry's
    ``file:line: field`` for errors about the file's content (``proto.auth.KeySet.from_security``)."""

    id: int
    file: Path
    where: str




@dataclass(frozen=True, slots=True)
class Security:
    """The node-local ``security:`` section (excluded from the digest: nodes differ during a key rollover).

    Either ``key_file`` (one fabric secret, key id 1) or ``keys`` (a key set by id) with ``send_key`` (the id
    this node signs with) and ``accept`` (ids it verifies; default: every listed key; a listed key not
    accepted is retired, its file is not read). ``key_file`` is always the send key's file.
    """

    key_file: Path  # resolved against the config file's directory
    admin_token_file: Path | None
    keys: tuple[KeyRef, ...] = ()  # empty: the single-secret form (key_file, id 1)
    send_key: int = LEGACY_KEY_ID
    accept: tuple[int, ...] = ()  # empty: every key of key_refs()

    def key_refs(self) -> tuple[KeyRef, ...]:
        return self.keys or (KeyRef(LEGACY_KEY_ID, self.key_file, f"{self.key_file}"),)

    def accepted_ids(self) -> tuple[int, ...]:
        return self.accept or tuple(r.id for r in self.key_refs())


@dataclass(frozen=True, slots=True)
class Distribution:
    mode: Literal["unicast", "multicast"] = "unicast"
    group: IPv4Address | None = None
    port: int | None = None


@dataclass(frozen=True, slots=True)
class Routing:
    """Fabric-wide routing policy (YAML `routing:`); every switch must agree, so it is in the digest."""

    transit_roles: tuple[str, ...] = DEFAULT_TRANSIT_ROLES


@dataclass(frozen=True, slots=True)
class Guard:
    """Control-network gray-failure policy (issue #16; YAML section `guard:`, durations in ms there).

    - `down_share`: an LSD change that would take down more than this share of the fabric's links (or
      leave more than this share of its switches with every link down) through *uncorroborated* evidence,
      counting what was published so within `window`, is held until corroborated or confirmed by an
      operator (controller.guard). 0 < down_share <= 1; 1 disables the guard in practice.
    - `reach_margin`: a leader hands mastership over when a backup is two-way with at least this share of
      the switches more than the leader is (and at least 2 switches more), for `reach_dwell` seconds in a
      row (controller.reach). 0 < reach_margin <= 1.
    """

    down_share: float = 0.25
    window: float = 10.0
    reach_margin: float = 0.05
    reach_dwell: float = 0.3


@dataclass(frozen=True, slots=True)
class Damping:
    """Master-side damping (issue #19; YAML section `damping:`, durations in ms there; controller.damping).

    A backstop behind each client's own damping (client.damping): a broken or hostile client must not be
    able to make the fabric churn. Per link, an exponential penalty in the style of RFC 2439 and of IS-IS /
    interface dampening (Cisco and Junos defaults): every time a link's evidence goes from UP to DOWN it
    gains `penalty`; the penalty halves every `half_life`; above `suppress` the link is held DOWN in the
    LSD (its UPs are not published) until the penalty decays below `reuse`. The penalty is capped so a
    hold lasts at most `max_suppress` after the last flap. A DOWN is always published at once.
    Per switch, a token bucket: the reports of one switch may bring links UP in at most `up_rate` LSD
    versions per second (burst `up_burst`); later UPs wait for a token (their DOWNs do not).
    `enabled: false` turns it off (benchmarks that flap links on purpose, like `timers.flap_threshold`).
    A correlated storm is not charged: flaps of at least max(3, `storm_share` x links) distinct links
    reported by at least `storm_switches` switches within `storm_window` are one event (a stall), not a
    flap of each link; flaps charged earlier in that window are refunded (controller.damping).
    Constraints: 0 < reuse < suppress; suppress < reuse * 2^(max_suppress/half_life) (else nothing is
    ever suppressed); max_suppress <= 1000 x half_life; half_life, max_suppress, penalty, up_rate > 0;
    up_burst >= 1.
    """

    half_life: float = 5.0
    enabled: bool = True           # false: no master-side damping (benchmarks that flap links on purpose)
    penalty: float = 1000.0
    suppress: float = 3000.0
    reuse: float = 1000.0
    max_suppress: float = 20.0
    up_rate: float = 50.0
    up_burst: int = 100
    storm_window: float = 1.0
    storm_share: float = 0.1
    storm_switches: int = 3

    @property
    def ceiling(self) -> float:
        """The highest penalty: one that decays to `reuse` in exactly `max_suppress`."""
        return self.reuse * 2.0 ** (self.max_suppress / self.half_life)


@dataclass(frozen=True, slots=True)
class LsdSettings:
    history: int = 4096  # versions kept for deltas


@dataclass(frozen=True, slots=True, eq=False)
class Fabric:
    """The whole fabric, immutable. Built by `load_fabric`/`parse_fabric`, which validate it.

    Lookups are O(1): the per-switch indexes are computed once here. Two fabrics are equal when their
    digests are.
    """

    name: str
    source: str
    switches: tuple[Switch, ...]
    links: tuple[Link, ...]  # link.index == position: THE LSD ORDER
    masters: tuple[Master, ...]
    timers: Timers
    security: Security
    distribution: Distribution
    lsd: LsdSettings
    routing: Routing = field(default_factory=Routing)
    liveness: str = "oam"  # one of LIVENESS_MODES
    guard: Guard = field(default_factory=Guard)
    damping: Damping = field(default_factory=Damping)
    digest: str = field(init=False)
    hosts: tuple[Host, ...] = field(init=False)
    #: Dynamic external prefixes (issue #13): (border switch, prefix) per LSD entry after the links, in
    #: switch order then the switch's prefix order; only switches with `bgp:` have them.
    external_slots: tuple[tuple[str, IPv4Network], ...] = field(init=False)
    _by_name: dict[str, Switch] = field(init=False, repr=False)
    _by_id: dict[int, Switch] = field(init=False, repr=False)
    _links_of: dict[str, tuple[int, ...]] = field(init=False, repr=False)
    _port_links: dict[str, dict[int, Link]] = field(init=False, repr=False)
    _fabric_ports: dict[str, tuple[int, ...]] = field(init=False, repr=False)
    _masters: dict[str, Master] = field(init=False, repr=False)
    _hosts: dict[str, Host] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        init = object.__setattr__
        by_name = {s.name: s for s in self.switches}
        init(self, "_by_name", by_name)
        init(self, "_by_id", {s.id: s for s in self.switches})
        links_of: dict[str, list[int]] = {name: [] for name in by_name}
        port_links: dict[str, dict[int, Link]] = {name: {} for name in by_name}
        for link in self.links:
            a, b = link.a, link.b
            links_of[a.switch].append(link.index)
            links_of[b.switch].append(link.index)
            port_links[a.switch][a.port] = link
            port_links[b.switch][b.port] = link
        init(self, "_links_of", {name: tuple(ix) for name, ix in links_of.items()})
        init(self, "_port_links", port_links)
        init(self, "_fabric_ports", {name: tuple(sorted(ports)) for name, ports in port_links.items()})
        init(self, "_masters", {m.id: m for m in self.masters})
        hosts = tuple(h for s in self.switches for h in s.hosts)
        init(self, "hosts", hosts)
        init(self, "_hosts", {h.name: h for h in hosts})
        init(self, "external_slots", tuple((s.name, p) for s in self.switches if s.bgp is not None
                                           for p in external_prefixes(s)))
        init(self, "digest", _digest(self))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Fabric) and other.digest == self.digest

    def __hash__(self) -> int:
        return hash(self.digest)

    def switch(self, name: str) -> Switch:
        """The switch called `name`; KeyError if unknown."""
        return self._by_name[name]

    def switch_by_id(self, id: int) -> Switch:  # noqa: A002 - the contract's name
        return self._by_id[id]

    def links_of(self, switch: str) -> tuple[int, ...]:
        """Indices of the links touching `switch`, ascending; KeyError if the switch is unknown."""
        return self._links_of[switch]

    def link_at(self, switch: str, port: int) -> Link | None:
        """The fabric link on `switch:port`, None for a port without one; KeyError for an unknown switch."""
        return self._port_links[switch].get(port)

    def peer_of(self, switch: str, port: int) -> Endpoint | None:
        """The expected peer of a fabric port (what ND must discover), None if the port has no link."""
        link = self._port_links[switch].get(port)
        if link is None:
            return None
        if link.a.switch == switch and link.a.port == port:
            return link.b
        return link.a

    def fabric_ports(self, switch: str) -> tuple[int, ...]:
        """The switch's fabric-link ports, sorted."""
        return self._fabric_ports[switch]

    def master(self, id: str) -> Master:  # noqa: A002 - the contract's name
        return self._masters[id]

    def host(self, name: str) -> Host:
        return self._hosts[name]

    @property
    def lsd_size(self) -> int:
        """Entries of the LSD: one per link (`Link.index`), then one per external slot (issue #13)."""
        return len(self.links) + len(self.external_slots)

    def slots_of(self, switch: str) -> tuple[int, ...]:
        """LSD indices of `switch`'s external slots, in its prefix order (bit k of its report's
        `external` is entry k); empty for a switch without `bgp:`."""
        base = len(self.links)
        return tuple(base + k for k, (sw, _p) in enumerate(self.external_slots) if sw == switch)


def external_prefixes(switch: Switch) -> tuple[IPv4Network, ...]:
    """The external prefixes a border originates: its `prefixes`, or 0.0.0.0/0 when it lists none."""
    return switch.prefixes or (IPv4Network("0.0.0.0/0"),)


# ----------------------------------------------------------------------------------------------- digest


def _ip_str(address: IPv4Address) -> str:
    value = int(address)  # 10x faster than str(IPv4Address)
    return f"{value >> 24}.{(value >> 16) & 255}.{(value >> 8) & 255}.{value & 255}"


def _net_str(network: IPv4Network) -> str:
    return f"{_ip_str(network.network_address)}/{network.prefixlen}"


def _digest(fabric: Fabric) -> str:
    """sha256 over a canonical JSON rendering of the normalized model (security paths excluded)."""
    t = fabric.timers
    d = fabric.distribution
    doc = {
        "format": 1,
        "name": fabric.name,
        "timers": {name: getattr(t, name) for name in Timers.__slots__},
        "distribution": [d.mode, None if d.group is None else str(d.group), d.port],
        "lsd": [fabric.lsd.history],
        "routing": list(fabric.routing.transit_roles),
        "liveness": fabric.liveness,
        "guard": [fabric.guard.down_share, fabric.guard.window, fabric.guard.reach_margin, fabric.guard.reach_dwell],
        "masters": [
            [m.id, str(m.address), m.client_port, m.peer_port, m.rest_port, m.priority] for m in fabric.masters
        ],
        "switches": [
            [
                s.name,
                s.id,
                s.role.value,
                [_net_str(p) for p in s.prefixes],
                None if s.loopback is None else _net_str(s.loopback),
                s.mac,
                None if s.gateway is None else str(s.gateway),
                [[h.name, h.port, str(h.ip), h.mac] for h in s.hosts],
                s.ovs,
                s.rest_port,
                s.hash_basis,
                s.transit,
            ] + ([_bgp_doc(s.bgp)] if s.bgp is not None else [])
            for s in fabric.switches
        ],
        "links": [[lk.a.switch, lk.a.port, lk.b.switch, lk.b.port, lk.weight, lk.capacity] for lk in fabric.links],
    }
    if fabric.damping != Damping():
        # Only when set: a fabric without a damping section keeps the digest it had before the section
        # existed, so upgraded masters and older clients still agree on it.
        doc["damping"] = [getattr(fabric.damping, k) for k in Damping.__slots__]
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _bgp_doc(b: BgpSettings) -> list:
    """The canonical form of a `bgp:` section (password file paths left out: local)."""
    doc = [b.local_as, [_net_str(p) for p in b.announce], None if b.router_id is None else str(b.router_id),
           b.damping, [[str(p.address), p.peer_as, p.port, str(p.local_address), p.local_as, p.hold_time,
                        p.keepalive, p.max_prefix] for p in b.peers]]
    if not b.track_fabric:          # only when set: configs without it keep their digest
        doc.append(False)
    return doc


# ----------------------------------------------------------------------------------------------- loading


MAX_CONFIG_BYTES = 32 * 1024 * 1024
"""Largest config file accepted (bytes). The Jupiter preset is ~9 MB; parsing costs ~50x the file in
memory (the YAML node tree), so the cap bounds a loader's memory to a few GB before it reads a byte."""


def load_fabric(path: str | Path) -> Fabric:
    """Load and validate the config file at `path`; relative paths in it resolve against its directory.

    Raises ConfigError for an unreadable file, one larger than MAX_CONFIG_BYTES, or any invalid content.
    """
    source = str(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_CONFIG_BYTES:
                raise ConfigError(
                    source, None, "", f"config is {size:,} bytes, over the limit of {MAX_CONFIG_BYTES:,}"
                )
            raw = f.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:  # grew while read, or not a regular file
            raise ConfigError(source, None, "", f"config is over the limit of {MAX_CONFIG_BYTES:,} bytes")
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(source, None, "", f"cannot read config: {e}") from None
    return parse_fabric(text, source=source, base_dir=Path(path).resolve().parent)


def parse_fabric(text: str, source: str = "<string>", base_dir: Path | None = None) -> Fabric:
    """Parse and validate config text; `base_dir` (default: the current directory) anchors relative paths.

    Raises ConfigError for text over MAX_CONFIG_BYTES (UTF-8) or any invalid content.
    """
    if len(text) > MAX_CONFIG_BYTES or len(text.encode("utf-8")) > MAX_CONFIG_BYTES:
        raise ConfigError(source, None, "", f"config is over the limit of {MAX_CONFIG_BYTES:,} bytes")
    return _Parser(source, base_dir if base_dir is not None else Path.cwd()).parse(text)


_T_STR = "tag:yaml.org,2002:str"
_T_INT = "tag:yaml.org,2002:int"
_T_FLOAT = "tag:yaml.org,2002:float"
_T_BOOL = "tag:yaml.org,2002:bool"
_T_NULL = "tag:yaml.org,2002:null"

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\Z")
_MAC_RE = re.compile(r"[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){5}\Z")
_OVS_RE = re.compile(r"tcp:(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})\Z")
_OCTET = r"(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_QUAD_RE = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}(?:/(3[0-2]|[12]?\d))?\Z")


def _quad(text: str) -> tuple[int, int | None] | None:
    """Fast path for "a.b.c.d[/n]": (address as int, prefix length or None), None if not of that form."""
    m = _QUAD_RE.match(text)
    if m is None:
        return None
    a, b, c, d, plen = m.groups()
    return (int(a) << 24) | (int(b) << 16) | (int(c) << 8) | int(d), None if plen is None else int(plen)

_TOP_KEYS = ("name", "timers", "liveness", "security", "distribution", "lsd", "routing", "guard", "damping",
             "masters", "switches", "links")
_SWITCH_KEYS = (
    "name", "id", "role", "prefixes", "loopback", "mac", "gateway", "hosts", "ovs", "rest_port", "hash_basis", "transit",
    "bgp",
)
_BGP_KEYS = ("local_as", "announce", "peers", "router_id", "damping", "track_fabric")
_PEER_KEYS = ("address", "peer_as", "port", "local_address", "local_as", "hold_time", "keepalive", "max_prefix",
              "password_file")
MAX_ASN = 2**32 - 1
_HOST_KEYS = ("name", "port", "ip", "mac")
_LINK_KEYS = ("a", "b", "weight", "capacity")
MAX_CAPACITY = 1_000_000.0  # Gbit/s (1 Pbit/s): a bound that catches unit mistakes (bit/s written as Gbit/s)
_MASTER_KEYS = ("id", "address", "client_port", "peer_port", "rest_port", "priority")
_ROLES = {r.value: r for r in Role}

# YAML timer key -> (Timers field, kind). kind "ms": milliseconds -> seconds; "rate": per second; "count".
_TIMER_KEYS: dict[str, tuple[str, str]] = {
    "nd_interval_ms": ("nd_interval", "ms"),
    "nd_dead_ms": ("nd_dead", "ms"),
    "keepalive_ms": ("keepalive", "ms"),
    "report_refresh_ms": ("report_refresh", "ms"),
    "switch_dead_ms": ("switch_dead", "ms"),
    "report_retry_min_ms": ("report_retry_min", "ms"),
    "report_retry_max_ms": ("report_retry_max", "ms"),
    "pacing_ms": ("pacing", "ms"),
    "max_update_rate": ("max_update_rate", "rate"),
    "hello_interval_ms": ("hello_interval", "ms"),
    "master_dead_ms": ("master_dead", "ms"),
    "flap_threshold": ("flap_threshold", "count"),
    "flap_window_ms": ("flap_window", "ms"),
    "damp_initial_ms": ("damp_initial", "ms"),
    "damp_max_ms": ("damp_max", "ms"),
    "oam_interval_ms": ("oam_interval", "ms"),
    "nd_identity_interval_ms": ("nd_identity_interval", "ms"),
    "nd_identity_dead_ms": ("nd_identity_dead", "ms"),
}
# (longer, shorter, why): the longer timer must strictly exceed the shorter one.
_TIMER_ORDER = (
    ("nd_dead", "nd_interval", "ND must miss at least one hello before declaring a port down"),
    ("switch_dead", "report_refresh", "a switch must miss a report refresh before it is declared dead"),
    ("master_dead", "hello_interval", "a master must miss a hello before it is declared dead"),
    ("nd_identity_dead", "nd_identity_interval", "ND must miss at least one identity frame before a port is down"),
)
# (larger-or-equal, smaller): plain ordering of a range.
_TIMER_RANGES = (("report_retry_max", "report_retry_min"), ("damp_max", "damp_initial"),
                 ("nd_identity_interval", "nd_interval"))
#: OVS takes `other_config:cfm_interval` in whole milliseconds, at most 65535 in extended mode (vswitch.xml).
MAX_OAM_INTERVAL_MS = 65535

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


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    tag = node.tag
    if tag == _T_STR:
        return f"the string {node.value!r}"
    if tag == _T_NULL:
        return "null"
    return f"{tag.rsplit(':', 1)[-1]} {node.value}"


class _Parser:
    """One parse: converts the composed node tree into the model, validating as it goes."""

    def __init__(self, source: str, base_dir: Path) -> None:
        self.source = source
        self.base_dir = base_dir

    # -- errors and primitive conversions ---------------------------------------------------------------

    def fail(self, where: yaml.Node | int | None, field: str, problem: str) -> ConfigError:
        line = _line(where) if isinstance(where, yaml.Node) else where
        return ConfigError(self.source, line, field, problem)

    def fields(self, node: yaml.Node, path: str, allowed: tuple[str, ...], required: tuple[str, ...]) -> dict:
        """The mapping's values by key, after checking its shape: no unknown, duplicate or missing keys."""
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, path, f"expected a mapping, got {_kind(node)}")
        out: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != _T_STR or key not in allowed:
                if isinstance(key_node, yaml.ScalarNode) and key_node.tag == _T_STR:
                    what = f"unknown key {key!r}"
                else:
                    what = f"unknown key {_kind(key_node)}"
                where = f"{path}.{key}" if path and isinstance(key, str) else (key if isinstance(key, str) else path)
                raise self.fail(key_node, where, f"{what} (expected one of: {', '.join(allowed)})")
            if key in out:
                raise self.fail(
                    key_node, f"{path}.{key}" if path else key, f"duplicate key (first at line {_line(out[key])})"
                )
            out[key] = value_node
        for key in required:
            if key not in out:
                raise self.fail(node, f"{path}.{key}" if path else key, "missing required field")
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
                node, field, f"bad name {value!r}: use 1-63 characters of letters, digits, '.', '_', '-'"
            )
        return value

    def integer(self, node: yaml.Node, field: str, lo: int, hi: int) -> int:
        if not (isinstance(node, yaml.ScalarNode) and node.tag == _T_INT):
            raise self.fail(node, field, f"expected an integer, got {_kind(node)}")
        try:
            value = int(node.value)
        except ValueError:  # 0x1f, 1_000, 0o17, 1:20 (YAML 1.1 forms)
            value = _constructor.construct_yaml_int(node)
        if not lo <= value <= hi:
            raise self.fail(node, field, f"{value} out of range {lo}..{hi}")
        return value

    def number(self, node: yaml.Node, field: str) -> float:
        if not (isinstance(node, yaml.ScalarNode) and node.tag in (_T_INT, _T_FLOAT)):
            raise self.fail(node, field, f"expected a number, got {_kind(node)}")
        if node.tag == _T_INT:
            return float(self.integer(node, field, -(2**63), 2**63))
        value = _constructor.construct_yaml_float(node)
        if value != value or value in (float("inf"), float("-inf")):
            raise self.fail(node, field, f"expected a finite number, got {node.value}")
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
            raise self.fail(node, field, f"{value!r} is not an IPv4 address") from None

    def network(self, node: yaml.Node, field: str) -> IPv4Network:
        value = self.string(node, field)
        quad = _quad(value)
        if quad is not None and quad[1] is not None:
            addr, plen = quad
            if addr & ((1 << (32 - plen)) - 1) == 0:
                return IPv4Network((addr, plen))
        if "/" not in value:
            # ipaddress would take "0.0.0.0" as 0.0.0.0/32: a default route silently lost.
            raise self.fail(node, field, f"{value!r} has no prefix length (write it as a.b.c.d/len)")
        try:
            return IPv4Network(value)
        except ValueError as e:
            raise self.fail(node, field, f"{value!r} is not an IPv4 prefix ({e})") from None

    def mac(self, node: yaml.Node, field: str) -> str:
        value = self.string(node, field)
        if not _MAC_RE.match(value):
            raise self.fail(node, field, f"{value!r} is not a MAC address (aa:bb:cc:dd:ee:ff)")
        value = value.lower()
        if int(value[:2], 16) & 1:
            raise self.fail(node, field, f"{value} is a multicast MAC address")
        return value

    def path(self, node: yaml.Node, field: str) -> Path:
        value = self.string(node, field)
        if not value:
            raise self.fail(node, field, "empty path")
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    # -- the document ----------------------------------------------------------------------------------

    def parse(self, text: str) -> Fabric:
        # A large config creates a million short-lived nodes: the cyclic GC would rescan them over and over
        # (it more than doubles the load time of a Jupiter-size fabric). Nothing here makes cycles.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            return self.parse_document(text)
        finally:
            if gc_was_enabled:
                gc.enable()

    def parse_document(self, text: str) -> Fabric:
        try:
            root = yaml.compose(text, Loader=_FastLoader)
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            line = None if mark is None else mark.line + 1
            context = e.context or ""
            if context and e.context_mark is not None and e.context_mark is not mark:
                context += f" (line {e.context_mark.line + 1})"
            problem = ": ".join(p for p in (context, e.problem) if p)
            raise self.fail(line, "", f"YAML syntax error: {problem}") from None
        except yaml.YAMLError as e:
            raise self.fail(None, "", f"YAML error: {e}") from None
        if root is None:
            raise self.fail(1, "", "empty document: expected a fabric mapping")
        top = self.fields(root, "", _TOP_KEYS, ("name", "security", "masters", "switches"))
        name = self.name(top["name"], "name")
        timers = self.timers(top["timers"]) if "timers" in top else Timers()
        security = self.security(top["security"])
        distribution = self.distribution(top["distribution"]) if "distribution" in top else Distribution()
        lsd = self.lsd(top["lsd"]) if "lsd" in top else LsdSettings()
        self.routing_settings = self.routing(top["routing"]) if "routing" in top else Routing()
        liveness = "oam"
        if "liveness" in top:
            liveness = self.string(top["liveness"], "liveness")
            if liveness not in LIVENESS_MODES:
                raise self.fail(top["liveness"], "liveness", f"{liveness!r} is not one of: {', '.join(LIVENESS_MODES)}")
        guard = self.guard(top["guard"]) if "guard" in top else Guard()
        damping = self.damping(top["damping"]) if "damping" in top else Damping()
        masters = self.masters(top["masters"])
        switches = self.switches(top["switches"])
        links = self.links(top["links"]) if "links" in top else ()
        # issue #18: periodic traffic per master replica within the budget (proto.budget); the digest
        # covers the derived timers
        timers = derive_timers(timers, len(switches), distribution.mode == "multicast")
        return Fabric(
            name=name,
            source=self.source,
            switches=switches,
            links=links,
            masters=masters,
            timers=timers,
            security=security,
            distribution=distribution,
            lsd=lsd,
            routing=self.routing_settings,
            liveness=liveness,
            guard=guard,
            damping=damping,
        )

    def routing(self, node: yaml.Node) -> Routing:
        f = self.fields(node, "routing", ("transit_roles",), ())
        if "transit_roles" not in f:
            return Routing()
        roles: list[str] = []
        for j, rnode in enumerate(self.seq(f["transit_roles"], "routing.transit_roles")):
            field_name = f"routing.transit_roles[{j}]"
            role = self.string(rnode, field_name)
            if role not in _ROLES:
                raise self.fail(rnode, field_name, f"{role!r} is not one of: {', '.join(_ROLES)}")
            if role in roles:
                raise self.fail(rnode, field_name, f"{role} listed twice")
            roles.append(role)
        return Routing(transit_roles=tuple(roles))

    def boolean(self, node: yaml.Node, field: str) -> bool:
        if isinstance(node, yaml.ScalarNode) and node.tag == _T_BOOL:
            return bool(_constructor.construct_yaml_bool(node))
        raise self.fail(node, field, f"expected true or false, got {_kind(node)}")

    def timers(self, node: yaml.Node) -> Timers:
        f = self.fields(node, "timers", tuple(_TIMER_KEYS), ())
        values: dict[str, Any] = {}
        lines: dict[str, tuple[yaml.Node, str]] = {}
        for key, value_node in f.items():
            attr, kind = _TIMER_KEYS[key]
            field_name = f"timers.{key}"
            if kind == "count":
                values[attr] = self.integer(value_node, field_name, 1, 1_000_000)
            else:
                value = self.number(value_node, field_name)
                if value <= 0:
                    raise self.fail(value_node, field_name, f"must be positive, got {value_node.value}")
                values[attr] = value / 1000.0 if kind == "ms" else value
                if attr == "oam_interval" and (value != int(value) or value > MAX_OAM_INTERVAL_MS):
                    raise self.fail(value_node, field_name,
                                    f"must be whole milliseconds, 1..{MAX_OAM_INTERVAL_MS} (OVS cfm_interval), "
                                    f"got {value_node.value}")
            lines[attr] = (value_node, field_name)
        timers = Timers(**values)
        reverse = {attr: key for key, (attr, _) in _TIMER_KEYS.items()}

        def where(*attrs: str) -> tuple[yaml.Node, str]:
            for attr in attrs:  # blame the first of the involved keys actually written in the file
                if attr in lines:
                    return lines[attr]
            return node, f"timers.{reverse[attrs[0]]}"

        for longer, shorter, why in _TIMER_ORDER:
            if getattr(timers, longer) <= getattr(timers, shorter):
                at, field_name = where(longer, shorter)
                raise self.fail(
                    at,
                    field_name,
                    f"{reverse[longer]} ({getattr(timers, longer) * 1000:g}) must exceed "
                    f"{reverse[shorter]} ({getattr(timers, shorter) * 1000:g}): {why}",
                )
        for big, small in _TIMER_RANGES:
            if getattr(timers, big) < getattr(timers, small):
                at, field_name = where(big, small)
                raise self.fail(
                    at,
                    field_name,
                    f"{reverse[big]} ({getattr(timers, big) * 1000:g}) must not be below "
                    f"{reverse[small]} ({getattr(timers, small) * 1000:g})",
                )
        return timers

    def security(self, node: yaml.Node) -> Security:
        f = self.fields(node, "security", ("key_file", "keys", "send_key", "accept", "admin_token_file"), ())
        token = self.path(f["admin_token_file"], "security.admin_token_file") if "admin_token_file" in f else None
        if "key_file" not in f and "keys" not in f:
            raise self.fail(node, "security.key_file", "missing required field (or keys: a key set)")
        if "key_file" in f and "keys" in f:
            raise self.fail(f["keys"], "security.keys", "give either key_file (one fabric secret) or keys "
                                                        "(a key set), not both")
        if "key_file" in f:
            for extra in ("send_key", "accept"):
                if extra in f:
                    raise self.fail(f[extra], f"security.{extra}", "needs a key set (keys:), not key_file")
            key_file = self.path(f["key_file"], "security.key_file")
            ref = KeyRef(LEGACY_KEY_ID, key_file, f"{self.source}:{_line(f['key_file'])}: security.key_file")
            return Security(key_file=key_file, admin_token_file=token, keys=(ref,))
        refs: dict[int, KeyRef] = {}
        id_where: dict[int, str] = {}
        items = self.seq(f["keys"], "security.keys")
        if not items:
            raise self.fail(f["keys"], "security.keys", "empty key set")
        for i, item in enumerate(items):
            where = f"security.keys[{i}]"
            k = self.fields(item, where, ("id", "file"), ("id", "file"))
            key_id = self.integer(k["id"], f"{where}.id", MIN_KEY_ID, MAX_KEY_ID)
            if key_id in refs:
                first = id_where[key_id]
                raise self.fail(k["id"], f"{where}.id", f"duplicate key id {key_id} (first at {first})")
            id_where[key_id] = f"{self.source}:{_line(k['id'])}: {where}.id"
            file = self.path(k["file"], f"{where}.file")
            same = next((r for r in refs.values() if r.file.resolve() == file.resolve()), None)
            if same is not None:
                raise self.fail(k["file"], f"{where}.file", f"{file} is already key id {same.id} ({same.where}): "
                                                            "each key id needs its own key file")
            refs[key_id] = KeyRef(key_id, file, f"{self.source}:{_line(k['file'])}: {where}.file")
        accept: tuple[int, ...] = tuple(refs)
        if "accept" in f:
            accept_nodes = self.seq(f["accept"], "security.accept")
            accept = ()
            for i, n in enumerate(accept_nodes):
                key_id = self.integer(n, f"security.accept[{i}]", MIN_KEY_ID, MAX_KEY_ID)
                if key_id not in refs:
                    raise self.fail(n, f"security.accept[{i}]", f"key id {key_id} is not in security.keys "
                                                                f"({sorted(refs)})")
                if key_id in accept:
                    raise self.fail(n, f"security.accept[{i}]", f"duplicate key id {key_id}")
                accept += (key_id,)
            if not accept:
                raise self.fail(f["accept"], "security.accept", "accepts no key")
        if "send_key" in f:
            send = self.integer(f["send_key"], "security.send_key", MIN_KEY_ID, MAX_KEY_ID)
            if send not in refs:
                raise self.fail(f["send_key"], "security.send_key", f"unknown send key {send} (security.keys "
                                                                    f"has {sorted(refs)})")
            if send not in accept:
                raise self.fail(f["send_key"], "security.send_key", f"send key {send} is not accepted "
                                                                    f"(security.accept is {list(accept)})")
        elif len(accept) == 1:
            send = accept[0]
        else:
            raise self.fail(node, "security.send_key", f"missing: which of the keys {sorted(accept)} to sign with")
        return Security(key_file=refs[send].file, admin_token_file=token, keys=tuple(refs.values()),
                        send_key=send, accept=accept)

    def distribution(self, node: yaml.Node) -> Distribution:
        f = self.fields(node, "distribution", ("mode", "group", "port"), ("mode",))
        mode = self.string(f["mode"], "distribution.mode")
        if mode == "unicast":
            for key in ("group", "port"):
                if key in f:
                    raise self.fail(f[key], f"distribution.{key}", "only allowed with mode: multicast")
            return Distribution()
        if mode != "multicast":
            raise self.fail(f["mode"], "distribution.mode", f"{mode!r} is not one of: unicast, multicast")
        for key in ("group", "port"):
            if key not in f:
                raise self.fail(node, f"distribution.{key}", "missing required field (mode: multicast)")
        group = self.address(f["group"], "distribution.group")
        if not group.is_multicast:
            raise self.fail(f["group"], "distribution.group", f"{group} is not a multicast address")
        port = self.integer(f["port"], "distribution.port", 1, 65535)
        return Distribution(mode="multicast", group=group, port=port)

    def lsd(self, node: yaml.Node) -> LsdSettings:
        f = self.fields(node, "lsd", ("history",), ())
        if "history" in f:
            return LsdSettings(history=self.integer(f["history"], "lsd.history", 1, 10_000_000))
        return LsdSettings()

    def guard(self, node: yaml.Node) -> Guard:
        keys = ("down_share", "window_ms", "reach_margin", "reach_dwell_ms")
        f = self.fields(node, "guard", keys, ())
        values: dict[str, float] = {}
        for key, value_node in f.items():
            field_name = f"guard.{key}"
            value = self.number(value_node, field_name)
            if key.endswith("_ms"):
                if value <= 0:
                    raise self.fail(value_node, field_name, f"must be positive, got {value_node.value}")
                values[key[:-3]] = value / 1000.0
            else:
                if not 0 < value <= 1:
                    raise self.fail(value_node, field_name, f"must be a share in (0, 1], got {value_node.value}")
                values[key] = value
        return Guard(**values)

    def damping(self, node: yaml.Node) -> Damping:
        keys = ("enabled", "half_life_ms", "penalty", "suppress", "reuse", "max_suppress_ms", "up_rate", "up_burst",
                "storm_window_ms", "storm_share", "storm_switches")
        f = self.fields(node, "damping", keys, ())
        values: dict[str, float | int | bool] = {}
        for key, value_node in f.items():
            field_name = f"damping.{key}"
            if key == "enabled":
                values[key] = self.boolean(value_node, field_name)
                continue
            if key == "up_burst":
                values[key] = self.integer(value_node, field_name, 1, 1_000_000)
                continue
            if key == "storm_switches":
                values[key] = self.integer(value_node, field_name, 1, 1_000_000)
                continue
            if key == "storm_share":
                share = self.number(value_node, field_name)
                if not 0 < share <= 1:
                    raise self.fail(value_node, field_name, f"must be a share in (0, 1], got {value_node.value}")
                values[key] = share
                continue
            value = self.number(value_node, field_name)
            if not 0 < value <= 1e9:
                raise self.fail(value_node, field_name, f"must be positive (at most 1e9), got {value_node.value}")
            values[key[:-3] if key.endswith("_ms") else key] = value / 1000.0 if key.endswith("_ms") else value
        d = Damping(**values)  # type: ignore[arg-type]
        if d.max_suppress > 1000 * d.half_life:    # the ceiling, reuse x 2^(max_suppress/half_life), stays finite
            raise self.fail(f.get("max_suppress_ms", f.get("half_life_ms", node)), "damping.max_suppress_ms",
                            f"at most 1000 x half_life_ms ({1000 * d.half_life * 1000:g}), got {d.max_suppress * 1000:g}")
        if d.reuse >= d.suppress:
            raise self.fail(f.get("reuse", f.get("suppress", node)), "damping.reuse",
                            f"reuse ({d.reuse:g}) must be below suppress ({d.suppress:g})")
        if d.suppress >= d.ceiling:
            raise self.fail(f.get("max_suppress_ms", node), "damping.max_suppress_ms",
                            f"too short for half_life_ms {d.half_life * 1000:g}: the penalty is capped at "
                            f"{d.ceiling:g}, never above suppress ({d.suppress:g}), so nothing would be suppressed")
        return d

    def masters(self, node: yaml.Node) -> tuple[Master, ...]:
        items = self.seq(node, "masters")
        if not items:
            raise self.fail(node, "masters", "at least 1 master is required")
        masters: list[Master] = []
        ids: dict[str, int] = {}
        ports: dict[tuple[IPv4Address, int], tuple[str, int]] = {}
        for i, item in enumerate(items):
            path = f"masters[{i}]"
            f = self.fields(item, path, _MASTER_KEYS, ("id", "address", "client_port", "peer_port", "rest_port"))
            mid = self.name(f["id"], f"{path}.id")
            if mid in ids:
                raise self.fail(f["id"], f"{path}.id", f"duplicate master id {mid!r} (also at line {ids[mid]})")
            ids[mid] = _line(f["id"])
            address = self.address(f["address"], f"{path}.address")
            values = {}
            for key in ("client_port", "peer_port", "rest_port"):
                port = self.integer(f[key], f"{path}.{key}", 1, 65535)
                other = ports.get((address, port))
                if other is not None:
                    raise self.fail(
                        f[key],
                        f"{path}.{key}",
                        f"port {port} on {address} already used by {other[0]} (line {other[1]})",
                    )
                ports[(address, port)] = (f"{path}.{key}", _line(f[key]))
                values[key] = port
            priority = self.integer(f["priority"], f"{path}.priority", 0, 65535) if "priority" in f else 100
            masters.append(Master(id=mid, address=address, priority=priority, **values))
        return tuple(masters)

    # -- switches and hosts ----------------------------------------------------------------------------

    def switches(self, node: yaml.Node) -> tuple[Switch, ...]:
        items = self.seq(node, "switches")
        if not items:
            raise self.fail(node, "switches", "at least 1 switch is required")
        self.switch_line: dict[str, int] = {}
        # (switch, port) -> (i, "a"|"b", node) for link ends, (switch index, -1 - host index, node) for hosts
        self.port_use: dict[tuple[str, int], tuple] = {}
        ids: dict[int, tuple[str, int]] = {}
        macs: dict[str, tuple[str, int]] = {}
        host_names: dict[str, int] = {}
        host_ips: dict[IPv4Address, tuple[str, int]] = {}
        # (first, last, prefixlen, field, line, owner) of every internally originated prefix and loopback
        self.internal: list[tuple[int, int, int, str, int, str]] = []
        border: list[tuple[IPv4Network, str, yaml.Node, str]] = []
        switches: list[Switch] = []
        for i, item in enumerate(items):
            path = f"switches[{i}]"
            f = self.fields(item, path, _SWITCH_KEYS, ("name", "id", "role"))
            name = self.name(f["name"], f"{path}.name")
            if name in self.switch_line:
                raise self.fail(
                    f["name"], f"{path}.name", f"duplicate switch name {name!r} (also at line {self.switch_line[name]})"
                )
            self.switch_line[name] = _line(f["name"])
            sid = self.integer(f["id"], f"{path}.id", 1, MAX_SWITCH_ID)
            if sid in ids:
                other, line = ids[sid]
                raise self.fail(f["id"], f"{path}.id", f"duplicate id {sid} (also used by {other} at line {line})")
            ids[sid] = (name, _line(f["id"]))
            role_name = self.string(f["role"], f"{path}.role")
            role = _ROLES.get(role_name)
            if role is None:
                raise self.fail(
                    f["role"], f"{path}.role", f"{role_name!r} is not one of: {', '.join(_ROLES)}"
                )
            prefixes: list[IPv4Network] = []
            if "prefixes" in f:
                for j, pnode in enumerate(self.seq(f["prefixes"], f"{path}.prefixes")):
                    pfield = f"{path}.prefixes[{j}]"
                    prefix = self.network(pnode, pfield)
                    if prefix in prefixes:
                        raise self.fail(pnode, pfield, f"{prefix} listed twice")
                    prefixes.append(prefix)
                    if role is Role.BORDER:
                        border.append((prefix, pfield, pnode, name))
                    else:
                        first = int(prefix.network_address)
                        last = first | ((1 << (32 - prefix.prefixlen)) - 1)
                        self.internal.append((first, last, prefix.prefixlen, pfield, _line(pnode), name))
            loopback = None
            if "loopback" in f:
                lnode = f["loopback"]
                text = self.string(lnode, f"{path}.loopback")
                loopback = self.network(lnode, f"{path}.loopback") if "/" in text else None
                if loopback is None:
                    loopback = IPv4Network(f"{self.address(lnode, f'{path}.loopback')}/32")
                if loopback.prefixlen != 32:
                    raise self.fail(lnode, f"{path}.loopback", f"{loopback} is not a /32")
                addr = int(loopback.network_address)
                self.internal.append((addr, addr, 32, f"{path}.loopback", _line(lnode), name))
            if "mac" in f:
                mac = self.mac(f["mac"], f"{path}.mac")
                mac_node: yaml.Node = f["mac"]
            else:
                mac = "0e:00:" + ":".join(f"{b:02x}" for b in sid.to_bytes(4, "big"))
                mac_node = f["id"]
            if mac in macs:
                raise self.fail(
                    mac_node, f"{path}.mac", f"duplicate MAC {mac} (also used by {macs[mac][0]} at line {macs[mac][1]})"
                )
            macs[mac] = (name, _line(mac_node))
            gateway = None
            if "gateway" in f:
                if role is not Role.TOR:
                    raise self.fail(f["gateway"], f"{path}.gateway", f"only a tor has a gateway, not a {role}")
                gateway = self.address(f["gateway"], f"{path}.gateway")
                if not any(gateway in p for p in prefixes):
                    raise self.fail(f["gateway"], f"{path}.gateway", f"{gateway} is not in the switch's prefixes")
                if loopback is not None and gateway == loopback.network_address:
                    raise self.fail(f["gateway"], f"{path}.gateway", f"{gateway} is the switch's loopback")
            elif role is Role.TOR and prefixes:
                first = prefixes[0]
                gateway = first.network_address + 1 if first.prefixlen < 31 else first.network_address
            hosts: list[Host] = []
            if "hosts" in f:
                hnodes = self.seq(f["hosts"], f"{path}.hosts")
                if hnodes and role is not Role.TOR:
                    raise self.fail(f["hosts"], f"{path}.hosts", f"hosts attach to a tor, not to a {role}")
                for j, hnode in enumerate(hnodes):
                    hpath = f"{path}.hosts[{j}]"
                    hf = self.fields(hnode, hpath, _HOST_KEYS, _HOST_KEYS)
                    hname = self.name(hf["name"], f"{hpath}.name")
                    if hname in host_names:
                        raise self.fail(
                            hf["name"], f"{hpath}.name", f"duplicate host name {hname!r} (also at line {host_names[hname]})"
                        )
                    host_names[hname] = _line(hf["name"])
                    port = self.integer(hf["port"], f"{hpath}.port", 1, MAX_OF_PORT)
                    self.use_port(name, port, hf["port"], (i, -1 - j))
                    ip = self.address(hf["ip"], f"{hpath}.ip")
                    subnet = next((p for p in prefixes if ip in p), None)
                    if subnet is None:
                        subnets = ", ".join(str(p) for p in prefixes) or "none"
                        raise self.fail(
                            hf["ip"], f"{hpath}.ip", f"{ip} is outside the subnets of tor {name} ({subnets})"
                        )
                    if subnet.prefixlen < 31 and ip in (subnet.network_address, subnet.broadcast_address):
                        raise self.fail(hf["ip"], f"{hpath}.ip", f"{ip} is not a usable host address of {subnet}")
                    if ip == gateway:
                        raise self.fail(hf["ip"], f"{hpath}.ip", f"{ip} is the gateway of tor {name}")
                    if ip in host_ips:
                        other, line = host_ips[ip]
                        raise self.fail(hf["ip"], f"{hpath}.ip", f"duplicate IP {ip} (also used by {other} at line {line})")
                    host_ips[ip] = (hname, _line(hf["ip"]))
                    hmac = self.mac(hf["mac"], f"{hpath}.mac")
                    if hmac in macs:
                        other, line = macs[hmac]
                        raise self.fail(
                            hf["mac"], f"{hpath}.mac", f"duplicate MAC {hmac} (also used by {other} at line {line})"
                        )
                    macs[hmac] = (hname, _line(hf["mac"]))
                    hosts.append(Host(name=hname, tor=name, port=port, ip=ip, mac=hmac))
            ovs = None
            if "ovs" in f:
                ovs = self.string(f["ovs"], f"{path}.ovs")
                m = _OVS_RE.match(ovs)
                ok = m is not None and 1 <= int(m.group(2)) <= 65535
                if ok:
                    try:
                        IPv4Address(m.group(1))
                    except ValueError:
                        ok = False
                if not ok:
                    raise self.fail(f["ovs"], f"{path}.ovs", f"{ovs!r} is not tcp:IPV4:PORT")
            rest_port = self.integer(f["rest_port"], f"{path}.rest_port", 1, 65535) if "rest_port" in f else None
            hash_basis = (
                self.integer(f["hash_basis"], f"{path}.hash_basis", 0, MAX_HASH_BASIS)
                if "hash_basis" in f
                else default_hash_basis(sid)
            )
            transit = (
                self.boolean(f["transit"], f"{path}.transit")
                if "transit" in f
                else role.value in self.routing_settings.transit_roles
            )
            bgp = None
            if "bgp" in f:
                if role is not Role.BORDER:
                    raise self.fail(f["bgp"], f"{path}.bgp", f"only a border speaks eBGP, not a {role}")
                bgp = self.bgp(f["bgp"], f"{path}.bgp", name)
            switches.append(
                Switch(
                    bgp=bgp,
                    name=name,
                    id=sid,
                    role=role,
                    prefixes=tuple(prefixes),
                    loopback=loopback,
                    mac=mac,
                    gateway=gateway,
                    hosts=tuple(hosts),
                    ovs=ovs,
                    rest_port=rest_port,
                    hash_basis=hash_basis,
                    transit=transit,
                )
            )
        self.check_overlaps(border)
        return tuple(switches)

    def bgp(self, node: yaml.Node, path: str, switch: str) -> BgpSettings:
        """A border's `bgp:` section; its peers' ports are claimed like host ports."""
        f = self.fields(node, path, _BGP_KEYS, ("local_as", "peers"))
        local_as = self.integer(f["local_as"], f"{path}.local_as", 1, MAX_ASN)
        announce: list[IPv4Network] = []
        for j, pnode in enumerate(self.seq(f["announce"], f"{path}.announce") if "announce" in f else ()):
            prefix = self.network(pnode, f"{path}.announce[{j}]")
            if prefix in announce:
                raise self.fail(pnode, f"{path}.announce[{j}]", f"{prefix} listed twice")
            announce.append(prefix)
        router_id = self.address(f["router_id"], f"{path}.router_id") if "router_id" in f else None
        damping = self.boolean(f["damping"], f"{path}.damping") if "damping" in f else True
        track = self.boolean(f["track_fabric"], f"{path}.track_fabric") if "track_fabric" in f else True
        peers: list[BgpPeer] = []
        items = self.seq(f["peers"], f"{path}.peers")
        if not items:
            raise self.fail(f["peers"], f"{path}.peers", "at least 1 peer is required")
        if len(items) > MAX_BGP_PEERS:
            raise self.fail(f["peers"], f"{path}.peers", f"{len(items)} peers: at most {MAX_BGP_PEERS} (a border's "
                            "report carries one session summary per peer)")
        for j, item in enumerate(items):
            pp = f"{path}.peers[{j}]"
            pf = self.fields(item, pp, _PEER_KEYS, ("address", "peer_as", "port", "local_address"))
            address = self.address(pf["address"], f"{pp}.address")
            if any(p.address == address for p in peers):
                raise self.fail(pf["address"], f"{pp}.address", f"peer {address} listed twice")
            peer_as = self.integer(pf["peer_as"], f"{pp}.peer_as", 1, MAX_ASN)
            plocal = self.integer(pf["local_as"], f"{pp}.local_as", 1, MAX_ASN) if "local_as" in pf else local_as
            if peer_as == plocal:
                raise self.fail(pf["peer_as"], f"{pp}.peer_as", f"AS {peer_as} is the local AS: eBGP needs another")
            port = self.integer(pf["port"], f"{pp}.port", 1, MAX_OF_PORT)
            self.use_port(switch, port, pf["port"], (f"{pp}.port", "bgp"))
            text = self.string(pf["local_address"], f"{pp}.local_address")
            try:
                local = IPv4Interface(text)
            except ValueError as e:
                raise self.fail(pf["local_address"], f"{pp}.local_address", f"{text!r}: {e}") from None
            if "/" not in text or address not in local.network or address == local.ip:
                raise self.fail(pf["local_address"], f"{pp}.local_address",
                                f"{text} must be ADDRESS/LEN on the peer's subnet (peer {address})")
            hold = self.integer(pf["hold_time"], f"{pp}.hold_time", 0, 65535) if "hold_time" in pf else 9
            if 0 < hold < 3:
                raise self.fail(pf["hold_time"], f"{pp}.hold_time", f"{hold} s: 0 or at least 3 (RFC 4271)")
            keep = self.integer(pf["keepalive"], f"{pp}.keepalive", 0, 21845) if "keepalive" in pf else hold // 3
            if hold and not keep < hold:
                raise self.fail(pf["keepalive"], f"{pp}.keepalive", f"{keep} s must be below the hold time {hold} s")
            maxp = self.integer(pf["max_prefix"], f"{pp}.max_prefix", 1, 1_000_000) if "max_prefix" in pf else 100
            pw = self.path(pf["password_file"], f"{pp}.password_file") if "password_file" in pf else None
            peers.append(BgpPeer(address, peer_as, port, local, plocal, hold, keep, maxp, pw))
        return BgpSettings(local_as, tuple(announce), tuple(peers), router_id, damping, track)

    def use_port(self, switch: str, port: int, node: yaml.Node, user: tuple[int, int | str]) -> None:
        """Claim `switch:port` for a link end (i, "a"|"b") or a host (switch index, -1 - host index)."""
        key = (switch, port)
        other = self.port_use.get(key)
        if other is not None:
            raise self.fail(
                node,
                _port_user(user),
                f"port {switch}:{port} already used by {_port_user(other[:2])} (line {_line(other[2])})",
            )
        self.port_use[key] = (*user, node)

    def check_overlaps(self, border: list[tuple[IPv4Network, str, yaml.Node, str]]) -> None:
        """Internal prefixes and loopbacks must be pairwise disjoint (sort, then one sweep: O(n log n)).

        A border switch's prefixes are external routes (e.g. the 0.0.0.0/0 default): several border switches
        may originate the same one and they may cover internal prefixes (longest match prefers those), but
        one must not be equal to or inside an internal prefix.
        """
        items = sorted(self.internal, key=lambda it: (it[0], -it[1]))
        for prev, cur in zip(items, items[1:], strict=False):
            if cur[0] <= prev[1]:
                # report the one later in the file, naming the other
                first, second = (prev, cur) if prev[4] <= cur[4] else (cur, prev)
                raise self.fail(
                    second[4],
                    second[3],
                    f"{_net(second)} of {second[5]} overlaps {_net(first)} of {first[5]} (line {first[4]})",
                )
        starts = [it[0] for it in items]
        for prefix, pfield, pnode, owner in border:
            lo, hi = int(prefix.network_address), int(prefix.broadcast_address)
            k = bisect.bisect_right(starts, lo) - 1
            if k >= 0 and items[k][1] >= hi:
                inside = items[k]
                raise self.fail(
                    pnode,
                    pfield,
                    f"external prefix {prefix} of {owner} lies inside {_net(inside)} of {inside[5]} (line {inside[4]})",
                )

    # -- links -----------------------------------------------------------------------------------------

    def links(self, node: yaml.Node) -> tuple[Link, ...]:
        items = self.seq(node, "links")
        links: list[Link] = []
        append = links.append
        port_use = self.port_use
        known = self.switch_line
        mapping_node = yaml.MappingNode
        for i, item in enumerate(items):
            # Fast path for a clean {a: "s:p", b: "s:p"}: no checks fail, nothing formatted. Anything else,
            # or any problem, goes through link() which validates step by step and names the error.
            if type(item) is mapping_node and len(item.value) == 2:
                (ka, va), (kb, vb) = item.value
                if ka.value == "a" and kb.value == "b" and ka.tag == kb.tag == va.tag == vb.tag == _T_STR:
                    sa, _, pa = va.value.rpartition(":")
                    sb, _, pb = vb.value.rpartition(":")
                    if (
                        sa in known
                        and sb in known
                        and sa != sb
                        and pa.isdigit()
                        and pb.isdigit()
                        and pa.isascii()
                        and pb.isascii()
                    ):
                        porta, portb = int(pa), int(pb)
                        if 0 < porta <= MAX_OF_PORT and 0 < portb <= MAX_OF_PORT:
                            keya, keyb = (sa, porta), (sb, portb)
                            if keya not in port_use and keyb not in port_use:
                                port_use[keya] = (i, "a", va)
                                port_use[keyb] = (i, "b", vb)
                                append(Link(i, Endpoint(sa, porta), Endpoint(sb, portb)))
                                continue
            append(self.link(i, item))
        return tuple(links)

    def link(self, i: int, item: yaml.Node) -> Link:
        path = f"links[{i}]"
        f = self.fields(item, path, _LINK_KEYS, ("a", "b"))
        a = self.endpoint(f["a"], f"{path}.a")
        b = self.endpoint(f["b"], f"{path}.b")
        if a.switch == b.switch:
            raise self.fail(f["b"], f"{path}.b", f"link from switch {a.switch} to itself")
        self.use_port(a.switch, a.port, f["a"], (i, "a"))
        self.use_port(b.switch, b.port, f["b"], (i, "b"))
        weight = self.integer(f["weight"], f"{path}.weight", 1, 65535) if "weight" in f else 1
        capacity = None
        if "capacity" in f:
            capacity = self.number(f["capacity"], f"{path}.capacity")
            if not 0 < capacity <= MAX_CAPACITY:
                raise self.fail(
                    f["capacity"], f"{path}.capacity", f"{f['capacity'].value} Gbit/s out of range (0, {MAX_CAPACITY:g}]"
                )
        return Link(i, a, b, weight, capacity)

    def endpoint(self, node: yaml.Node, field: str) -> Endpoint:
        value = self.string(node, field)
        switch, sep, port_text = value.rpartition(":")
        if not sep or not switch or not port_text.isdigit() or not port_text.isascii():
            raise self.fail(node, field, f"{value!r} is not SWITCH:PORT")
        if switch not in self.switch_line:
            raise self.fail(node, field, f"unknown switch {switch!r}")
        port = int(port_text)
        if not 1 <= port <= MAX_OF_PORT:
            raise self.fail(node, field, f"port {port} out of range 1..{MAX_OF_PORT}")
        return Endpoint(switch, port)


def _port_user(user: tuple) -> str:
    i, which = user[0], user[1]
    if which == "bgp":
        return str(i)
    if isinstance(which, str):
        return f"links[{i}].{which}"
    return f"switches[{i}].hosts[{-1 - which}].port"


def _net(item: tuple[int, int, int, str, int, str]) -> str:
    return f"{IPv4Address(item[0])}/{item[2]}"
