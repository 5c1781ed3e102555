"""The fabric model: the immutable `Fabric` a config loads into, its parts, and its digest.

Every switch and master loads the same file (proto.config). Two things in the model are shared protocol state:

* the **link index** -- the order of `links:` in the file -- is the order of the link-state database (LSD);
* the **digest** -- sha256 over a canonical serialization of the normalized model -- is what masters and
  clients compare to be sure they route over the same fabric. It ignores key order, comments, whitespace,
  flow/block style and defaults written out or left implicit. Local file paths (`security:`) are not part
  of it: machines may keep their key files in different places. It covers the config as written: the
  timers of the file (`Fabric.config_timers`), not the effective timers the software derives from them for
  the fabric's size (`Fabric.timers`, proto.budget), so the same file has the same digest across firepath
  versions that derive differently (a rolling upgrade must not look like a config change).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from proto import budget

# Key ids on the wire (a u8, 0 reserved); the single-secret form ``key_file`` is key id 1.
from proto.auth import LEGACY_KEY_ID

__all__ = [
    "BgpPeer",
    "BgpSettings",
    "ConfigError",
    "DEFAULT_TRANSIT_ROLES",
    "Damping",
    "Distribution",
    "Endpoint",
    "Fabric",
    "Guard",
    "Host",
    "KeyRef",
    "LIVENESS_MODES",
    "Link",
    "LsdSettings",
    "MAX_BGP_PEERS",
    "MAX_HASH_BASIS",
    "MAX_OF_PORT",
    "MAX_SWITCH_ID",
    "Master",
    "Role",
    "Routing",
    "Security",
    "Switch",
    "Timers",
    "default_hash_basis",
    "bounded",
    "cut",
    "external_prefixes",
    "listed",
    "quoted",
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


#: A config error quotes a value of the file (a name, an address, a key) cut to this many characters, and
#: lists at most LIST_KEEP items: a 10 MB switch name made a 10 MB error line (on a master's SIGHUP reload,
#: one line of its log), a ToR with 4000 prefixes one message naming all 4000.
QUOTE_KEEP = 64
LIST_KEEP = 5
#: The backstop in ConfigError itself, for a message that did not go through quoted()/listed(): a run of
#: non-blank characters over RUN_KEEP + 16 is cut to RUN_KEEP (a file path the operator must read stays whole),
#: then the whole problem (field) to MAX_PROBLEM (MAX_FIELD) characters.
RUN_KEEP = 256
_LONG_RUN = re.compile(rf"\S{{{RUN_KEEP + 17},}}")
MAX_PROBLEM = 2000
MAX_FIELD = 300


def cut(text: str, keep: int = QUOTE_KEEP) -> str:
    """`text` cut to its first `keep` characters with its length when longer ("9999… (100,000 characters)"):
    an unquoted value or a key in a field path."""
    return f"{text[:keep]}… ({len(text):,} characters)" if len(text) > keep else text


def quoted(value: str, keep: int = QUOTE_KEEP) -> str:
    """`value` as a config error quotes it: its repr, cut to its first `keep` characters with its length
    when longer ("'aaaa…' (10,000,000 characters)")."""
    if len(value) <= keep:
        return repr(value)
    return f"{value[:keep] + '…'!r} ({len(value):,} characters)"


def listed(items: Iterable[object], keep: int = LIST_KEEP) -> str:
    """Items as a config error lists them: the first `keep`, comma-separated, then "and N more"."""
    items = list(items)
    head = ", ".join(map(str, items[:keep]))
    return f"{head} and {len(items) - keep} more" if len(items) > keep else head


def bounded(text: str, limit: int) -> str:
    """`text` with each run of non-blank characters over RUN_KEEP + 16 cut to RUN_KEEP ("…" and its length),
    then cut to at most `limit` characters in all. Idempotent: what it returns comes back unchanged."""
    text = _LONG_RUN.sub(lambda m: f"{m[0][:RUN_KEEP]}… ({len(m[0]):,} characters)", text)
    if len(text) > limit:
        tail = f"… ({len(text):,} characters)"
        text = text[:limit - len(tail)] + tail
    return text


class ConfigError(ValueError):
    """A config problem: `str(e) == f"{file}:{line}: {field}: {problem}"`.

    `line` is None when the problem has no YAML line (unreadable file); it is then left out of the message,
    and so is an empty `field`. `field` and `problem` are kept bounded (`bounded`: at most MAX_FIELD and
    MAX_PROBLEM characters, no run of over ~270 without a blank), whatever the file holds: the sites quote
    values with `quoted` and lists with `listed`, this is the backstop.
    """

    def __init__(self, file: str, line: int | None, field: str, problem: str) -> None:
        field, problem = bounded(field, MAX_FIELD), bounded(problem, MAX_PROBLEM)
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
    TCP MD5 (RFC 2385) key, a local path (not in the digest); `password_where`: the config's
    ``file:line: field`` that names it, for errors about the file (not compared)."""

    address: IPv4Address
    peer_as: int
    port: int
    local_address: IPv4Interface
    local_as: int
    hold_time: int = 9
    keepalive: int = 3
    max_prefix: int = 100
    password_file: Path | None = None
    password_where: str = field(default="", compare=False)


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
    #: ``file:line: security.admin_token_file`` of the config, for errors about the token file (not compared)
    admin_token_where: str = field(default="security.admin_token_file", compare=False)

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
    digests are (the same config; the effective timers are this software's derivation of it).

    `config_timers` are the timers as the file gives them (defaults filled in): the digest covers them.
    `timers` are the effective ones every node runs: `proto.budget.derive` of them for the fabric's size
    and distribution mode (a fabric within the traffic budget runs its config timers unchanged).
    """

    name: str
    source: str
    switches: tuple[Switch, ...]
    links: tuple[Link, ...]  # link.index == position: THE LSD ORDER
    masters: tuple[Master, ...]
    config_timers: Timers
    security: Security
    distribution: Distribution
    lsd: LsdSettings
    routing: Routing = field(default_factory=Routing)
    liveness: str = "oam"  # one of LIVENESS_MODES
    guard: Guard = field(default_factory=Guard)
    damping: Damping = field(default_factory=Damping)
    timers: Timers = field(init=False)
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
        # issue #18: periodic traffic per master replica within the budget. The rule is the software's, not
        # the config's: it is applied here, to every model, and left out of the digest.
        init(self, "timers", budget.derive(self.config_timers, len(self.switches),
                                           self.distribution.mode == "multicast"))
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
    """sha256 over a canonical JSON rendering of the normalized model (security paths excluded): the
    timers as configured, not as derived (the module docstring)."""
    t = fabric.config_timers
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
