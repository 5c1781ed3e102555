"""Add a ToR (a rack) to a fabric config without moving anything that exists (issue #21: a rack added).

The Clos generator numbers switches and ports by position, so regenerating a fabric with one more ToR per pod
renumbers ids and agg ports: a change a running fabric cannot take without re-cabling. `add_tor` grows a config
additively instead, modelled on an existing ToR (`like`):

- the new ToR is cabled to the same neighbours as `like`, with as many parallel links, on the same local
  ports, with the same `weight:` and `capacity:`; on each neighbour it takes the next free port (above every
  port its links and hosts use);
- id: one above the highest; loopback: `like`'s loopback moved by the id difference (the generator's plan:
  block + id) if that address is free, else the next free address above the highest loopback;
- prefix: for each of `like`'s prefixes, the next free prefix of the same length above the highest ToR
  prefix (several prefixes: allocated one after the other); hosts: as many as `like` has, on the same ports,
  at the same offsets in the new prefix, named `h-<suffix>-<k>` (`suffix`: the ToR name after its first
  dash; the next free number if taken), MACs 02:01:<id, 3 bytes>:<k> (the next free one if taken);
- the switch's own MAC is the loader's default (0e:00:<id>); an explicit free one (0e:01:...) is written only
  when another switch or host already uses that default;
- `ovs:`/`rest_port:` follow `like`'s (port + id difference) when `like` has them; if another switch already
  uses that port (any switch's OVS or REST port, any master's port), the first free port above it. A hand-written config with irregular ports got the OVS target and REST port of an existing
  switch before (black-box test, 2026-12-05): two clients programming one bridge, the second one's REST
  unable to bind. Every value add-tor derives is thus free: id, ports, prefixes, loopback, names, MACs,
  OVS target, REST port.

The text is edited, not re-rendered: the switch block is appended to `switches:` and the links to `links:`,
both in block style, so comments and every other section stay as they are — except the generator's header
promise "Do not edit: regenerate." (proto.clos.mark_edited), which an edited file no longer keeps. The result
is validated by the loader, and every existing switch keeps its position, id, ports and hosts. Errors:
ConfigError naming the user's file, its line (a problem in the added lines: the line they follow, and the
added line itself) and the field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import yaml

from proto.clos import mark_edited, yaml_number
from proto.config import ConfigError, Fabric, parse_fabric

__all__ = ["AddedTor", "add_tor"]

MAX_PORT = 65279     # OpenFlow's highest physical port number (OFPP_MAX - 1)


@dataclass(frozen=True)
class AddedTor:
    """What `add_tor` added: the new config text and the names, for a log line and for the lab."""

    text: str
    switch: str
    links: tuple[str, ...]       # link names, as Link.name
    hosts: tuple[str, ...]
    prefixes: tuple[str, ...]


def add_tor(text: str, source: str, like: str, name: str | None = None, base_dir: Path | None = None) -> AddedTor:
    """`text` (the config at `source`) with one more ToR cabled like `like`. Raises ConfigError."""
    fabric = parse_fabric(text, source=source, base_dir=base_dir)
    try:
        tmpl = fabric.switch(like)
    except KeyError:
        raise ConfigError(source, None, "switches", f"--like {like}: no such switch") from None
    if tmpl.role.value != "tor":
        raise ConfigError(source, None, "switches", f"--like {like}: a {tmpl.role.value}, not a ToR")
    names = {s.name for s in fabric.switches}
    new_name = name or _next_name(like, names)
    if new_name in names:
        raise ConfigError(source, None, "switches", f"--name {new_name}: already a switch")
    new_id = max(s.id for s in fabric.switches) + 1
    used_ports = _used_ports(fabric)
    links: list[tuple[int, str, int, str]] = []       # (our port, neighbour, its port, weight/capacity YAML)
    for li in fabric.links_of(like):
        link = fabric.links[li]
        mine, other = (link.a, link.b) if link.a.switch == like else (link.b, link.a)
        port = max(used_ports.get(other.switch, {0})) + 1
        if port > MAX_PORT:
            raise ConfigError(source, None, "links", f"{other.switch}: no free port above {port - 1}")
        used_ports.setdefault(other.switch, {0}).add(port)
        extra = (f", weight: {link.weight}" if link.weight != 1 else "") \
            + (f", capacity: {yaml_number(link.capacity)}" if link.capacity is not None else "")
        links.append((mine.port, other.switch, port, extra))
    # a border's prefixes (0.0.0.0/0, external ones) are routes to the outside, not address assignments
    taken = [p for s in fabric.switches if s.role.value != "border" for p in s.prefixes] \
        + [s.loopback for s in fabric.switches if s.loopback]
    tor_prefixes = [q for s in fabric.switches if s.role.value == "tor" for q in s.prefixes]
    prefixes: list[IPv4Network] = []
    for p in tmpl.prefixes:                     # one at a time: each allocation sees the ones before it
        prefixes.append(_next_prefix(p, tor_prefixes + prefixes, taken, source))
        taken.append(prefixes[-1])
    loopback = _loopback(fabric, tmpl.loopback, new_id - tmpl.id, taken, source) if tmpl.loopback else None
    suffix = new_name.split("-", 1)[1] if "-" in new_name else new_name
    hosts = []
    host_names = {h.name for h in fabric.hosts}
    used_macs = {h.mac for h in fabric.hosts} | {s.mac for s in fabric.switches}
    own_mac = f"0e:00:{_hex(new_id, 4)}"            # the loader's default for the new id
    own_mac_line = None
    if own_mac in used_macs:                           # an explicit MAC elsewhere took it: write a free one
        own_mac = _free_mac(f"0e:01:{_hex(new_id, 3)}", 0, used_macs, source)
        own_mac_line = f"  mac: \"{own_mac}\""
    used_macs.add(own_mac)
    for k, h in enumerate(tmpl.hosts, 1):
        home = next((p for p in tmpl.prefixes if h.ip in p), tmpl.prefixes[0])
        net = prefixes[tmpl.prefixes.index(home)]
        ip = IPv4Address(int(net.network_address) + int(h.ip) - int(home.network_address))
        mac = _free_mac(f"02:01:{_hex(new_id, 3)}", k, used_macs, source)
        used_macs.add(mac)
        host_name, n = f"h-{suffix}-{k}", k
        while host_name in host_names:          # a name already taken (hand-named fabrics): the next free one
            n += 1
            host_name = f"h-{suffix}-{n}"
        host_names.add(host_name)
        hosts.append((host_name, h.port, ip, mac))
    block = _switch_block(new_name, new_id, loopback, prefixes, hosts, tmpl, new_id - tmpl.id, fabric)
    if own_mac_line is not None:
        block.insert(3, own_mac_line)
    link_lines = [f'- {{a: "{new_name}:{mine}", b: "{other}:{port}"{extra}}}' for mine, other, port, extra in links]
    out, inserts = _append(text, source, [("switches", block), ("links", link_lines)])
    try:
        grown = parse_fabric(out, source=source, base_dir=base_dir)
    except ConfigError as e:                      # its lines are those of `out`: cite the user's file
        raise _in_source(e, out, inserts, new_name) from None
    for i, s in enumerate(fabric.switches):       # additive: what exists is untouched (a bug here, not input)
        assert grown.switches[i] == s, s.name
    return AddedTor(mark_edited(out, "firepath config add-tor"), new_name,
                    tuple(f"{new_name}:{m}-{o}:{p}" for m, o, p, _ in links),
                    tuple(h[0] for h in hosts), tuple(str(p) for p in prefixes))


def _source_line(line: int, inserts: list[tuple[int, int]]) -> tuple[int, bool]:
    """Line `line` of the edited text as (line of the user's file, False), or (the user's line the added
    lines follow, True) for an added line. `inserts`: (lines before, lines inserted), in the order made."""
    added = False
    for at, n in reversed(inserts):               # undo the last insertion first
        if line > at + n:
            line -= n
        elif line > at:
            line, added = at, True
    return line, added


def _in_source(e: ConfigError, text: str, inserts: list[tuple[int, int]], name: str) -> ConfigError:
    """`e` (raised on the edited text) citing the user's file: its line, and the "line N" its problem
    mentions, mapped back; a problem in an added line says so and quotes it."""
    lines = text.splitlines()

    def cite(n: int) -> str:
        src, added = _source_line(n, inserts)
        return f"{src}" if not added else f"{src} (added by add-tor after it: {lines[n - 1].strip()!r})"

    problem = re.sub(r"\bline (\d+)\b", lambda m: f"line {cite(int(m.group(1)))}", e.problem)
    if e.line is None:
        return ConfigError(e.file, None, e.field, f"{problem} (adding {name})")
    src, added = _source_line(e.line, inserts)
    if added:
        problem += f" (in the lines add-tor adds for {name} after line {src}: {lines[e.line - 1].strip()!r})"
    return ConfigError(e.file, src, e.field, problem)


def _next_name(like: str, names: set[str]) -> str:
    head, _, tail = like.rpartition("-")
    if head and tail.isdigit():
        n = int(tail) + 1
        while f"{head}-{n}" in names:
            n += 1
        return f"{head}-{n}"
    n = 2
    while f"{like}-{n}" in names:
        n += 1
    return f"{like}-{n}"


def _used_ports(fabric: Fabric) -> dict[str, set[int]]:
    used: dict[str, set[int]] = {s.name: {0} for s in fabric.switches}
    for link in fabric.links:
        used[link.a.switch].add(link.a.port)
        used[link.b.switch].add(link.b.port)
    for h in fabric.hosts:
        used[h.tor].add(h.port)
    for s in fabric.switches:
        for peer in (s.bgp.peers if s.bgp else ()):
            used[s.name].add(peer.port)
    return used


def _overlaps(net: IPv4Network, taken: list[IPv4Network]) -> bool:
    return any(net.overlaps(t) for t in taken)


def _next_prefix(like: IPv4Network, tor_prefixes: list[IPv4Network], taken: list[IPv4Network],
                 source: str) -> IPv4Network:
    """The first prefix of `like`'s length above the highest ToR prefix of that length that overlaps nothing."""
    same = [p for p in tor_prefixes if p.prefixlen == like.prefixlen]
    start = int(max(same, key=lambda p: int(p.network_address)).network_address) if same else int(like.network_address)
    size = like.num_addresses
    addr = start + size
    for _ in range(1 << 16):
        if addr + size > 1 << 32:
            break
        net = IPv4Network((addr, like.prefixlen))
        if not _overlaps(net, taken):
            return net
        addr += size
    raise ConfigError(source, None, "prefixes", f"no free /{like.prefixlen} above {IPv4Address(start)}")


def _loopback(fabric: Fabric, like: IPv4Network, shift: int, taken: list[IPv4Network], source: str) -> IPv4Network:
    planned = IPv4Network((int(like.network_address) + shift, 32))
    if not _overlaps(planned, taken):
        return planned
    top = max(int(s.loopback.network_address) for s in fabric.switches if s.loopback)
    for addr in range(top + 1, min(top + (1 << 16), 1 << 32)):
        net = IPv4Network((addr, 32))
        if not _overlaps(net, taken):
            return net
    raise ConfigError(source, None, "loopback", "no free /32 for the new ToR's loopback")


def _switch_block(name: str, sid: int, loopback: IPv4Network | None, prefixes: list[IPv4Network],
                  hosts: list[tuple[str, int, IPv4Address, str]], tmpl: object, shift: int,
                  fabric: Fabric) -> list[str]:
    """The new switch as block-style YAML lines (no list indentation: `_append` adds it)."""
    lines = [f"- name: {name}", f"  id: {sid}", "  role: tor"]
    if loopback is not None:
        lines.append(f"  loopback: {loopback}")
    lines.append(f"  prefixes: [{', '.join(map(str, prefixes))}]")
    # Every port a switch or master of this config listens on (a lab runs them all on one host: lab.labports
    # refuses a clash), so the new switch's OVS and REST ports are free whatever address they are on.
    used = {int(p) for p in (_ovs_port(s.ovs) for s in fabric.switches) if p is not None}
    used |= {s.rest_port for s in fabric.switches if s.rest_port is not None}
    used |= {p for m in fabric.masters for p in (m.client_port, m.peer_port, m.rest_port)}
    ovs = getattr(tmpl, "ovs", None)
    if ovs:
        scheme, _, rest = ovs.partition(":")
        host, _, port = rest.rpartition(":")
        if port.isdigit():
            port = str(_free_port(int(port) + shift, used))
            used.add(int(port))
            lines.append(f"  ovs: {scheme}:{host}:{port}")
        else:
            lines.append(f"  ovs: {ovs}")
    rest_port = getattr(tmpl, "rest_port", None)
    if rest_port is not None:
        lines.append(f"  rest_port: {_free_port(rest_port + shift, used)}")
    if hosts:
        lines.append("  hosts:")
        lines += [f'    - {{name: {h}, port: {p}, ip: {ip}, mac: "{mac}"}}' for h, p, ip, mac in hosts]
    return lines


def _hex(n: int, width: int) -> str:
    """`n` as `width` colon-separated hex bytes (a MAC's tail)."""
    return ":".join(f"{b:02x}" for b in n.to_bytes(width, "big"))


def _free_mac(head: str, k: int, used: set[str], source: str) -> str:
    """`head:<k>` (head: 5 bytes) if free, else the first free `head:<j>` for j = k+1 .. 255, then 1 .. k-1."""
    for j in [*range(k, 256), *range(1, k)]:
        mac = f"{head}:{j:02x}"
        if j and mac not in used:
            return mac
    raise ConfigError(source, None, "hosts", f"no free MAC {head}:xx for the new ToR")


def _ovs_port(ovs: str | None) -> str | None:
    """The port of a `tcp:HOST:PORT` OVS target, else None."""
    port = ovs.rpartition(":")[2] if ovs else ""
    return port if port.isdigit() else None


def _free_port(planned: int, used: set[int]) -> int:
    """`planned` if no one uses it, else the first free port above it (a TCP port: wraps to 1024 past 65535)."""
    for port in [*range(max(planned, 1), 65536), *range(1024, min(planned, 65536))]:
        if port not in used:
            return port
    raise ValueError("no free TCP port")        # 64,000 switches and masters on one host: not a config


def _append(text: str, source: str, additions: list[tuple[str, list[str]]]) -> tuple[str, list[tuple[int, int]]]:
    """`text` with each addition's `items` (lines of one or more block-sequence entries) appended to the
    top-level sequence named by its key, at the indentation of its existing entries; and the insertions as
    `_source_line` reads them: (lines before, lines inserted), in the order of `additions`, each in the
    coordinates of the text the ones before it made. One YAML compose for all of them (a Jupiter-size config
    takes seconds to compose)."""
    root = yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    lines = text.splitlines(keepends=True)
    where: list[tuple[int, str]] = []                 # per addition: (line it goes before, indent)
    for key, _ in additions:
        node = next((v for k, v in root.value if isinstance(k, yaml.ScalarNode) and k.value == key), None)
        if not isinstance(node, yaml.SequenceNode) or node.flow_style or not node.value:
            raise ConfigError(source, None, key, "adding a ToR needs a non-empty block-style sequence here")
        indent = " " * node.value[0].start_mark.column
        # an entry's mark is after its "- ": the dash sits two columns left of it
        indent = indent[:-2] if len(indent) >= 2 else ""
        end = node.end_mark.line + (1 if node.end_mark.column > 0 else 0)
        while end > 0 and not lines[end - 1].strip():             # before blank lines that close the block
            end -= 1
        where.append((end, indent))
    for (end, indent), (_, items) in sorted(zip(where, additions, strict=True), key=lambda w: -w[0][0]):
        if end and not lines[end - 1].endswith("\n"):
            lines[end - 1] += "\n"
        lines[end:end] = [f"{indent}{line}\n" for line in items]      # the last first: the others stay put
    inserts = []
    for k, ((end, _), (_, items)) in enumerate(zip(where, additions, strict=True)):
        before = sum(len(additions[m][1]) for m in range(k) if where[m][0] <= end)
        inserts.append((end + before, len(items)))
    return "".join(lines), inserts
