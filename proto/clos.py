"""Clos fabric generator: a few parameters in, a complete cluster config (YAML text) out.

Like the paper's config pipeline, everything -- names, ids, cabling plan, address plan -- follows
deterministically from the parameters (same parameters, same bytes).

Shapes:

* three tier (`pods > 0`): `spines` spines split into `planes` planes; agg j of every pod connects to every
  spine of plane `j % planes`; every ToR connects to every agg of its pod. With 1 plane (default) every agg
  connects to every spine.
* two tier (`pods == 0`): `leaves` ToRs (role tor, named leaf-N) connect to every spine.
* `border_pods`: each adds `aggs_per_pod` border switches (role border, originating 0.0.0.0/0) connected
  to the spines like the aggs.
* every adjacent pair is connected by `uplinks` parallel links.

Link order (the LSD order): ToR-agg links pod by pod (or leaf-spine links), then agg-spine, then border-spine.
Fabric ports count from 1 on each switch in that order; host ports start at 100 (at the next multiple of 100
above the fabric ports on ToRs with more than 99 uplinks).

Address plan from `base_prefix`: a /24 per ToR from the start of the prefix (gateway = .1, hosts from .10);
a /32 loopback per switch at `<loopback block> + id`, the loopback block being the last 2**k addresses of the
prefix (k >= 8, large enough for the highest id): 10.255.255.0/24 for small fabrics in 10.0.0.0/8.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from proto.config import LIVENESS_MODES, MAX_OF_PORT, Fabric, parse_fabric
from proto.configparse import _TIMER_BOUNDS, _TIMER_KEYS, DAMPING_KEYS, damping_problem, timers_problem
from proto.configtopo import MAX_FABRIC_PORTS
from proto.configyaml import special_use

__all__ = ["PRESETS", "ClosParams", "clos_fabric", "generate_clos_yaml", "mark_edited"]

#: The generator's promise in its header; a tool that edits the file (add-tor, keygen --add) breaks it.
GENERATED_PROMISE = "Do not edit: regenerate."
_EDITED_BY = "edited since by "
_EDITED_END = ": regenerating would undo that."

HOST_PORT_BASE = 100
FIRST_HOST_OCTET = 10  # hosts use .10, .11, ... of their ToR's /24; .1 is the gateway
MAX_HOSTS_PER_TOR = 254 - FIRST_HOST_OCTET


@dataclass(frozen=True, slots=True)
class ClosParams:
    """Generator parameters. Invalid combinations raise ValueError on construction."""

    name: str = "clos"
    spines: int = 2
    pods: int = 2  # 0 = two-tier leaf-spine
    aggs_per_pod: int = 2  # also the size of a border pod
    tors_per_pod: int = 2
    leaves: int = 4  # two tier only
    hosts_per_tor: int = 1
    border_pods: int = 0
    uplinks: int = 1  # parallel links per connected pair
    planes: int = 1
    masters: int = 3
    base_prefix: str = "10.0.0.0/8"
    master_address: str = "127.0.0.1"  # every master's address, or one per master comma-separated
    master_base_port: int = 6600  # master i: client base+i, peer base+100+i, rest base+200+i
    ovs_base_port: int | None = None  # switch with id i: ovs tcp:127.0.0.1:<base+i>
    rest_base_port: int | None = None  # switch with id i: rest_port base+i
    key_file: str = "fabric.key"
    admin_token_file: str | None = None  # security.admin_token_file (drains over REST need it)
    timers: tuple[tuple[str, float], ...] = ()  # YAML timer keys (e.g. ("nd_interval_ms", 20))
    liveness: str = "oam"  # proto.config.LIVENESS_MODES
    damping: tuple[tuple[str, Any], ...] = ()  # YAML `damping:` keys (e.g. ("enabled", False)), master side
    external: bool = False  # borders speak eBGP to one external router (issue #13): see EXTERNAL_*

    def __post_init__(self) -> None:
        def need(ok: bool, problem: str) -> None:
            if not ok:
                raise ValueError(problem)

        for name in ("spines", "aggs_per_pod", "uplinks", "planes", "masters"):
            need(getattr(self, name) >= 1, f"{name} must be at least 1")
        for name in ("pods", "tors_per_pod", "leaves", "hosts_per_tor", "border_pods"):
            need(getattr(self, name) >= 0, f"{name} must not be negative")
        if self.pods:
            need(self.tors_per_pod >= 1, "tors_per_pod must be at least 1 in a three-tier fabric")
        else:
            need(self.leaves >= 1, "leaves must be at least 1 in a two-tier fabric (pods 0)")
        need(self.hosts_per_tor <= MAX_HOSTS_PER_TOR, f"hosts_per_tor must be at most {MAX_HOSTS_PER_TOR}")
        need(self.spines % self.planes == 0, f"spines ({self.spines}) must be a multiple of planes ({self.planes})")
        if self.pods or self.border_pods:
            need(self.planes <= self.aggs_per_pod, "planes must not exceed aggs_per_pod (each plane needs an agg)")
        need(self.masters <= 63, "at most 63 masters (a report has one reach bit per replica)")
        need(self.master_base_port + 299 <= 65535,
             "master_base_port too high: at most 65236 (the masters use BASE+1 .. BASE+299)")
        need(self.master_base_port >= 1, "master_base_port must be positive")
        addresses = self.master_addresses
        need(len(addresses) in (1, self.masters),
             f"master_address: give one address or one per master ({self.masters}), not {len(addresses)}")
        for address in addresses:
            try:
                IPv4Address(address)
            except ValueError as e:
                raise ValueError(f"master_address: {e}") from None
        try:
            base = IPv4Network(self.base_prefix)
        except ValueError as e:
            raise ValueError(f"base_prefix: {e}") from None
        need(base.prefixlen <= 23, "base_prefix must be /23 or shorter")
        problem = special_use(int(base.network_address), int(base.broadcast_address))
        need(problem is None, f"base_prefix {base} {problem}: the fabric's ToR subnets and loopbacks must be "
                              "unicast-routable (private space such as 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16)")
        need(self.loopback_bits <= 32 - base.prefixlen, f"base_prefix {base} too small for {self.n_switches} loopbacks")
        tor_space = base.num_addresses - (1 << self.loopback_bits)
        need(self.n_tors * 256 <= tor_space, f"base_prefix {base} too small for {self.n_tors} ToR /24 subnets")
        used = self.fabric_ranges()            # what the loader refuses a master or an eBGP peering on
        for address in addresses:
            a = int(IPv4Address(address))
            need(not any(lo <= a <= hi for lo, hi in used),
                 f"master_address {address} is a fabric address (a ToR subnet or loopback of base_prefix {base}): "
                 f"masters are on the control-plane network")
        if self.external and self.n_borders:
            lo = int(IPv4Network(EXTERNAL_NET).network_address)
            hi = lo + 4 * self.n_borders - 1
            need(not any(a <= hi and lo <= b for a, b in used),
                 f"base_prefix {base} overlaps the borders' eBGP links ({_ip(lo)}..{_ip(hi)} of {EXTERNAL_NET})")
        for label, port_base in (("ovs_base_port", self.ovs_base_port), ("rest_base_port", self.rest_base_port)):
            if port_base is not None:
                need(port_base >= 1, f"{label} must be at least 1 (switch i uses BASE+i)")
                need(port_base + self.n_switches <= 65535, f"{label} too high for {self.n_switches} switches: "
                                                           f"at most {65535 - self.n_switches} (switch i uses BASE+i)")
        need(self.liveness in LIVENESS_MODES, f"liveness must be one of: {', '.join(LIVENESS_MODES)}")
        for key, _value in self.damping:
            need(key in DAMPING_KEYS, f"unknown damping key {key!r} (expected one of: {', '.join(DAMPING_KEYS)})")
        if self.damping:            # what the parser accepts, so that the file written loads
            problem = damping_problem(_damping_yaml(self.damping))
            need(problem is None, str(problem))
        seen: set[str] = set()
        for key, value in self.timers:
            need(key not in seen, f"timer {key} given twice (the file written would not load)")
            seen.add(key)
            need(key in _TIMER_KEYS, f"unknown timer {key!r} (expected one of: {', '.join(_TIMER_KEYS)})")
            need(value > 0, f"timer {key} must be positive")
            kind = _TIMER_KEYS[key][1]          # what the parser accepts, so that the file written loads
            lo, hi, unit = _TIMER_BOUNDS.get(kind, (1, 1_000_000, "(a whole count)"))
            need(lo <= value <= hi and (kind != "count" or value == int(value)),
                 f"timer {key}: {value:g} out of range {lo:g}..{hi:.12g} {unit}")
        if self.timers:             # their order too (nd_dead_ms above nd_interval_ms, ...): the file written loads
            problem = timers_problem("{" + ", ".join(f"{k}: {yaml_number(v)}" for k, v in self.timers) + "}")
            need(problem is None, str(problem))
        need(self.host_port_base + self.hosts_per_tor - 1 <= MAX_OF_PORT, "too many host ports")
        for role, ports in self.max_ports().items():
            need(ports <= MAX_OF_PORT, f"a {role} would need {ports} fabric ports (max {MAX_OF_PORT})")
            # what the loader refuses (a switch's port report is one datagram): the file written would not load
            need(ports <= MAX_FABRIC_PORTS, f"a {role} would need {ports} fabric ports, more than the "
                                            f"{MAX_FABRIC_PORTS} one switch's port report can carry")
        need(all(c.isalnum() or c in "._-" for c in self.name) and self.name[:1].isalnum(), f"bad name {self.name!r}")

    # -- arithmetic (no generation needed) -------------------------------------------------------------

    @property
    def master_addresses(self) -> list[str]:
        """`master_address` split at commas: one address for all masters, or master i's at position i-1."""
        return [a.strip() for a in self.master_address.split(",")]

    @property
    def n_tors(self) -> int:
        return self.pods * self.tors_per_pod if self.pods else self.leaves

    @property
    def n_aggs(self) -> int:
        return self.pods * self.aggs_per_pod

    @property
    def n_borders(self) -> int:
        return self.border_pods * self.aggs_per_pod

    @property
    def n_switches(self) -> int:
        return self.spines + self.n_aggs + self.n_tors + self.n_borders

    @property
    def n_hosts(self) -> int:
        return self.n_tors * self.hosts_per_tor

    @property
    def spines_per_plane(self) -> int:
        return self.spines // self.planes

    @property
    def n_links(self) -> int:
        u = self.uplinks
        if self.pods:
            lower = self.pods * self.tors_per_pod * self.aggs_per_pod * u + self.n_aggs * self.spines_per_plane * u
        else:
            lower = self.leaves * self.spines * u
        return lower + self.n_borders * self.spines_per_plane * u

    def fabric_ranges(self) -> list[tuple[int, int]]:
        """The (first, last) addresses the generated fabric uses: its ToR subnets, its loopbacks."""
        base = IPv4Network(self.base_prefix)
        start = int(base.network_address)
        loop_start = int(base.broadcast_address) + 1 - (1 << self.loopback_bits)
        tors = [(start, start + self.n_tors * 256 - 1)] if self.n_tors else []
        return [*tors, (loop_start + 1, loop_start + self.n_switches)]

    @property
    def loopback_bits(self) -> int:
        """log2 of the loopback block size: room for ids 0..n_switches."""
        return max(8, self.n_switches.bit_length())

    @property
    def tor_fabric_ports(self) -> int:
        return (self.aggs_per_pod if self.pods else self.spines) * self.uplinks

    @property
    def host_port_base(self) -> int:
        return HOST_PORT_BASE * (1 + self.tor_fabric_ports // HOST_PORT_BASE)

    def max_ports(self) -> dict[str, int]:
        """The largest number of fabric ports a switch of each role needs."""
        u = self.uplinks
        per_plane = max(len(range(p, self.aggs_per_pod, self.planes)) for p in range(self.planes))
        out = {"tor": self.tor_fabric_ports}
        if self.pods:
            out["agg"] = (self.tors_per_pod + self.spines_per_plane) * u
            out["spine"] = (self.pods + self.border_pods) * per_plane * u
        else:
            out["spine"] = self.leaves * u + self.border_pods * per_plane * u
        if self.border_pods:
            out["border"] = self.spines_per_plane * u
        return out

    def to_args(self) -> list[str]:
        """The `firepath config clos` options giving these parameters (defaults left out)."""
        args: list[str] = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value == f.default:
                continue
            if f.name == "timers":
                args += [arg for key, ms in value for arg in ("--timer", f"{key}={ms:g}")]
            elif f.name == "damping":
                args += [arg for key, v in value for arg in ("--damping", f"{key}={_yaml_scalar(v)}")]
            elif isinstance(value, bool):
                args.append(f"--{f.name.replace('_', '-')}")
            else:
                args += [f"--{f.name.replace('_', '-')}", str(value)]
        return args


PRESETS: dict[str, ClosParams] = {
    # 2 spines, 4 leaves, 1 host per leaf, 3 masters; lab-ready (OVS and REST ports)
    "leafspine": ClosParams(
        name="leafspine", spines=2, pods=0, leaves=4, ovs_base_port=16000, rest_base_port=9000
    ),
    # 2 spines, 2 pods x (2 aggs + 2 ToRs), 1 host per ToR, 3 masters; lab-ready
    "clos3": ClosParams(name="clos3", spines=2, pods=2, ovs_base_port=16000, rest_base_port=9000),
    # Jupiter size: 30,088 switches, 134,400 links (4 planes of 32 spines, 128 pods of 4 aggs + 230 ToRs,
    # 2 border pods); no hosts, no OVS: for scale tests of the config and the LSD
    "jupiter": ClosParams(
        name="jupiter",
        spines=128,
        pods=128,
        aggs_per_pod=4,
        tors_per_pod=230,
        hosts_per_tor=0,
        border_pods=2,
        planes=4,
    ),
}


def ignored_option(given: dict[str, Any], pods: int) -> str | None:
    """Why a Clos option given on a command line (`given`: the options passed, by ClosParams field) would be
    ignored by a fabric of `pods` pods, or None: `--leaves` sizes only a two-tier fabric (--pods 0) and
    `--tors-per-pod` only a three-tier one; an option that changes nothing is refused rather than ignored
    (`--pods 2 --leaves 4` would write 2 x 2 ToRs)."""
    if pods and given.get("leaves") is not None:
        return f"--leaves applies to a two-tier fabric (--pods 0), not to one of {pods} pods: use --tors-per-pod"
    if not pods and given.get("tors_per_pod") is not None:
        return "--tors-per-pod applies to a three-tier fabric (--pods N), not to a two-tier one: use --leaves"
    return None


def _ip(value: int) -> str:
    return f"{value >> 24}.{(value >> 16) & 255}.{(value >> 8) & 255}.{value & 255}"


def generate_clos_yaml(params: ClosParams) -> str:
    """The cluster config for `params`, as YAML text (string formatting: fast at Jupiter size)."""
    p = params
    base = IPv4Network(p.base_prefix)
    base_start = int(base.network_address)
    loop_start = int(base.broadcast_address) + 1 - (1 << p.loopback_bits)

    # -- switches: (name, role, pod) in id order; id = position + 1
    names: list[str] = [f"spine-{i}" for i in range(1, p.spines + 1)]
    roles: list[str] = ["spine"] * p.spines
    spine_ids = list(range(1, p.spines + 1))
    agg_ids: list[list[int]] = []  # per pod
    tor_ids: list[list[int]] = []  # per pod (one pseudo-pod of leaves in two tier)
    if p.pods:
        for pod in range(1, p.pods + 1):
            agg_ids.append(list(range(len(names) + 1, len(names) + 1 + p.aggs_per_pod)))
            names += [f"agg-{pod}-{j}" for j in range(1, p.aggs_per_pod + 1)]
            roles += ["agg"] * p.aggs_per_pod
            tor_ids.append(list(range(len(names) + 1, len(names) + 1 + p.tors_per_pod)))
            names += [f"tor-{pod}-{k}" for k in range(1, p.tors_per_pod + 1)]
            roles += ["tor"] * p.tors_per_pod
    else:
        tor_ids.append(list(range(len(names) + 1, len(names) + 1 + p.leaves)))
        names += [f"leaf-{k}" for k in range(1, p.leaves + 1)]
        roles += ["tor"] * p.leaves
    border_ids: list[list[int]] = []
    for b in range(1, p.border_pods + 1):
        border_ids.append(list(range(len(names) + 1, len(names) + 1 + p.aggs_per_pod)))
        names += [f"border-{b}-{j}" for j in range(1, p.aggs_per_pod + 1)]
        roles += ["border"] * p.aggs_per_pod

    # -- links, in LSD order; ports allocated per switch from 1
    next_port = [1] * (len(names) + 1)  # by id
    links: list[str] = []
    add = links.append
    u = p.uplinks

    def connect(lower: int, upper: int) -> None:
        lname, uname = names[lower - 1], names[upper - 1]
        for _ in range(u):
            add(f'  - {{a: "{lname}:{next_port[lower]}", b: "{uname}:{next_port[upper]}"}}\n')
            next_port[lower] += 1
            next_port[upper] += 1

    planes = [spine_ids[k * p.spines_per_plane : (k + 1) * p.spines_per_plane] for k in range(p.planes)]
    if p.pods:
        for pod_tors, pod_aggs in zip(tor_ids, agg_ids, strict=True):
            for tor in pod_tors:
                for agg in pod_aggs:
                    connect(tor, agg)
        for pod_aggs in agg_ids:
            for j, agg in enumerate(pod_aggs):
                for spine in planes[j % p.planes]:
                    connect(agg, spine)
    else:
        for leaf in tor_ids[0]:
            for spine in spine_ids:
                connect(leaf, spine)
    for pod_borders in border_ids:
        for j, border in enumerate(pod_borders):
            for spine in planes[j % p.planes]:
                connect(border, spine)

    # -- the document
    out: list[str] = [
        # one comment line whatever the options hold (a newline in --key-file wrote a live YAML line: tester)
        f"# Generated by: firepath config clos {shlex.join(p.to_args()).encode('unicode_escape').decode()}\n",
        f"# {len(names)} switches, {len(links)} links, {p.n_hosts} hosts. Do not edit: regenerate.\n",
        f"name: {p.name}\n",
        "security:\n",
        f'  key_file: {json.dumps(p.key_file)}\n',     # a JSON string is a YAML double-quoted scalar: escaped
    ]
    if p.admin_token_file:
        out.append(f'  admin_token_file: {json.dumps(p.admin_token_file)}\n')
    if p.timers:
        out.append("timers: {" + ", ".join(f"{key}: {yaml_number(value)}" for key, value in p.timers) + "}\n")
    if p.damping:
        out.append(f"damping: {_damping_yaml(p.damping)}\n")
    if p.liveness != "oam":
        out.append(f"liveness: {p.liveness}\n")
    out.append("masters:\n")
    mb = p.master_base_port
    addresses = p.master_addresses
    for i in range(1, p.masters + 1):
        out.append(
            f"  - {{id: m{i}, address: {addresses[(i - 1) % len(addresses)]}, client_port: {mb + i}, "
            f"peer_port: {mb + 100 + i}, rest_port: {mb + 200 + i}}}\n"
        )
    out.append("switches:\n")
    tor_index = 0
    border_index = 0
    host_port_base = p.host_port_base
    for sid, (name, role) in enumerate(zip(names, roles, strict=True), start=1):
        out.append(f"  - name: {name}\n    id: {sid}\n    role: {role}\n    loopback: {_ip(loop_start + sid)}/32\n")
        if role == "tor":
            subnet = base_start + tor_index * 256
            out.append(f"    prefixes: [{_ip(subnet)}/24]\n")
        elif role == "border":
            out.append("    prefixes: [0.0.0.0/0]\n")
            if p.external:
                local, peer = external_link(border_index)
                out.append(f"    bgp:\n      local_as: {EXTERNAL_LOCAL_AS}\n      announce: [{base}]\n"
                           f"      peers:\n        - {{address: {peer}, peer_as: {EXTERNAL_PEER_AS}, "
                           f"port: {EXTERNAL_PORT}, local_address: {local}, hold_time: 3, keepalive: 1}}\n")
                border_index += 1
        if p.ovs_base_port is not None:
            out.append(f"    ovs: tcp:127.0.0.1:{p.ovs_base_port + sid}\n")
        if p.rest_base_port is not None:
            out.append(f"    rest_port: {p.rest_base_port + sid}\n")
        if role == "tor":
            if p.hosts_per_tor:
                out.append("    hosts:\n")
                suffix = name.split("-", 1)[1]
                t = tor_index
                for h in range(p.hosts_per_tor):
                    mac = f"02:00:{(t >> 16) & 255:02x}:{(t >> 8) & 255:02x}:{t & 255:02x}:{h + 1:02x}"
                    out.append(
                        f"      - {{name: h-{suffix}-{h + 1}, port: {host_port_base + h}, "
                        f'ip: {_ip(subnet + FIRST_HOST_OCTET + h)}, mac: "{mac}"}}\n'
                    )
            tor_index += 1
    out.append("links:\n" if links else "links: []\n")
    out += links
    return "".join(out)


#: `external`: every border k (0-based, id order) gets one eBGP peer on port EXTERNAL_PORT over the /30
#: EXTERNAL_NET.k: border .1, external router .2; ASNs: fabric EXTERNAL_LOCAL_AS, outside EXTERNAL_PEER_AS.
EXTERNAL_PORT = 60000
EXTERNAL_NET = "100.64.0.0/16"
EXTERNAL_LOCAL_AS = 64512
EXTERNAL_PEER_AS = 65000


def mark_edited(text: str, by: str) -> str:
    """`text` with the generator's header promise ("Do not edit: regenerate.") replaced by "As generated;
    edited since by BY: regenerating would undo that." (or BY added to such a line): once a tool edited the
    file, regenerating it would lose the edit. Only the leading comment block is looked at; one line is
    replaced by one (line numbers stay); a file without the header is returned unchanged."""
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if not line.startswith("#"):
            break
        body = line.rstrip("\r\n")
        eol = line[len(body):]
        if body.endswith(GENERATED_PROMISE):
            lines[i] = f"{body[:-len(GENERATED_PROMISE)]}As generated; {_EDITED_BY}{by}{_EDITED_END}{eol}"
            return "".join(lines)
        start = body.find(_EDITED_BY)
        if start >= 0 and body.endswith(_EDITED_END):
            tools = body[start + len(_EDITED_BY):-len(_EDITED_END)]
            if by not in tools.split(", "):
                lines[i] = f"{body[:-len(_EDITED_END)]}, {by}{_EDITED_END}{eol}"
            return "".join(lines)
    return text


def external_link(k: int) -> tuple[str, str]:
    """(border address/30, external router address) of border k's eBGP link."""
    base = int(IPv4Network(EXTERNAL_NET).network_address) + 4 * k
    return f"{_ip(base + 1)}/30", _ip(base + 2)


def clos_fabric(base_dir: Path | None = None, **kw: object) -> Fabric:
    """A loaded `Fabric` for `ClosParams(**kw)` -- handy in tests: `clos_fabric(spines=4, pods=0, leaves=8)`."""
    params = ClosParams(**kw)  # type: ignore[arg-type]
    return parse_fabric(generate_clos_yaml(params), source=f"<clos {params.name}>", base_dir=base_dir)


def _damping_yaml(damping: tuple[tuple[str, Any], ...]) -> str:
    return "{" + ", ".join(f"{key}: {_yaml_scalar(value)}" for key, value in damping) + "}"


def _yaml_scalar(value: Any) -> str:
    """A damping value as YAML and as `--damping KEY=VALUE` take it: true/false, else the number."""
    return str(value).lower() if isinstance(value, bool) else yaml_number(float(value))


def yaml_number(value: float) -> str:
    """A YAML number: 20000000 or 0.5, never 2e+07 or 1e-05 (YAML 1.1 reads those as strings)."""
    return str(int(value)) if value == int(value) else repr(float(value))
