"""`firepath config check|clos|keygen`: validate a fabric config, generate a Clos config, make a fabric secret
(or add one to a config's key set: `keygen --add CONFIG`, the key rollover of proto/keyroll.py)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import secrets
import stat
import sys
import time
from collections import Counter
from pathlib import Path

from proto.clos import PRESETS, ClosParams, generate_clos_yaml, ignored_option, mark_edited
from proto.config import ConfigError, Fabric, Role, Timers, load_fabric

SECRET_BYTES = 32

# ClosParams field -> (type, help); every one becomes --field-name and overrides the preset
_CLOS_OPTIONS: dict[str, tuple[type, str]] = {
    "name": (str, "fabric name"),
    "spines": (int, "number of spine switches"),
    "pods": (int, "number of pods (0 = two-tier leaf-spine)"),
    "aggs_per_pod": (int, "aggregation switches per pod (also the size of a border pod)"),
    "tors_per_pod": (int, "ToRs per pod"),
    "leaves": (int, "ToRs (leaves) of a two-tier fabric (--pods 0)"),
    "hosts_per_tor": (int, "hosts per ToR"),
    "border_pods": (int, "border pods (border switches originating 0.0.0.0/0)"),
    "uplinks": (int, "parallel links per connected pair"),
    "planes": (int, "spine planes: agg j of every pod connects to every spine of plane j"),
    "masters": (int, "number of master replicas"),
    "base_prefix": (str, "address plan: ToR /24s from its start, loopbacks at its end"),
    "master_address": (str, "address of every master, or one per master comma-separated "
                             "(e.g. 127.0.0.11,127.0.0.12,127.0.0.13 for docker/compose.yaml)"),
    "master_base_port": (int, "master i: client port BASE+i, peer BASE+100+i, REST BASE+200+i"),
    "ovs_base_port": (int, "switch with id i: ovs tcp:127.0.0.1:BASE+i (default: no ovs)"),
    "rest_base_port": (int, "switch with id i: rest_port BASE+i (default: none)"),
    "key_file": (str, "security.key_file (relative to the config file)"),
    "liveness": (str, "fabric port liveness: oam (OVS CFM + slow ND identity, default) or nd (software ND)"),
    "admin_token_file": (str, "security.admin_token_file: the drain token (relative to the config file)"),
}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("config", help="check and generate fabric configs")
    actions = parser.add_subparsers(dest="config_command", metavar="ACTION", required=True)

    check = actions.add_parser("check", help="validate a fabric config and print a summary")
    check.add_argument("file", type=Path)
    check.set_defaults(func=cmd_check)

    clos = actions.add_parser("clos", help="generate a Clos fabric config")
    clos.add_argument("--preset", choices=sorted(PRESETS), help="start from a named parameter set")
    for name, (kind, help_text) in _CLOS_OPTIONS.items():
        clos.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, help=help_text)
    clos.add_argument("--external", action="store_const", const=True, default=None,
                      help="borders speak eBGP: a bgp: section per border (issue #13; see proto.clos.EXTERNAL_*)")
    clos.add_argument("--timer", action="append", default=[], metavar="KEY=VALUE", help="e.g. nd_dead_ms=40")
    clos.add_argument("--nd-interval-ms", type=float, help="shorthand for --timer nd_interval_ms=VALUE")
    clos.add_argument("--damping", action="append", default=[], metavar="KEY=VALUE",
                      help="master-side damping, e.g. enabled=false or half_life_ms=2000 (YAML damping:)")
    clos.add_argument("-o", "--output", default="-", help="output file (default: standard output)")
    clos.set_defaults(func=cmd_clos)

    keygen = actions.add_parser(
        "keygen", help="write a new random fabric secret (mode 0600); with --add, as the next key id of a config",
        description="Write a new random 32-byte fabric secret as hex (mode 0600, never overwriting). With --add "
                    "CONFIG: the secret is a new key id of CONFIG's key set (FILE defaults to fabric-ID.key next to "
                    "the send key) and the security section of each rollover step is printed: (1) every node "
                    "accepts the new key, (2) every node signs with it, (3) every node retires the old one; each "
                    "step can be rolled out node by node with no loss. Without --write nothing is written (the steps are "
                    "printed); --write creates the key file and puts step 1 into CONFIG.")
    keygen.add_argument("file", type=Path, nargs="?", help="where to write the secret (required without --add)")
    keygen.add_argument("--add", type=Path, metavar="CONFIG", help="add the key to this config's key set")
    keygen.add_argument("--id", type=int, help="key id of the new key (1..255; default: the next free one)")
    keygen.add_argument("--write", action="store_true", help="create the key file and rewrite CONFIG's security section with step 1 "
                        "(without it: print only)")
    keygen.set_defaults(func=cmd_keygen)

    addtor = actions.add_parser(
        "add-tor", help="add a ToR (a rack) to a config, cabled like an existing one, moving nothing",
        description="Print CONFIG with one more ToR cabled like --like (same neighbours, next free port on each, "
                    "next id, next free prefix, the same hosts); every existing switch, port and host stays where "
                    "it is, so the change rolls out on a running fabric (`firepath config rollout`, or "
                    "`firepath lab reload all --grow`). See proto/addtor.py for the rules.")
    addtor.add_argument("config", type=Path)
    addtor.add_argument("--like", required=True, metavar="TOR", help="an existing ToR to copy the cabling of")
    addtor.add_argument("--name", help="the new ToR's name (default: --like's name with the next number)")
    addtor.add_argument("--write", action="store_true", help="rewrite CONFIG (default: print to standard output)")
    addtor.set_defaults(func=cmd_add_tor)

    # issue #21: the operator side of a two-phase rollout lives with the operator commands (it talks REST)
    from controller.ops.rollout_cli import add_rollout_parser

    add_rollout_parser(actions)


def cmd_check(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    try:
        fabric = load_fabric(args.file)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 1
    from proto.auth import KeySet, key_file_warning, warn_key_files_here

    warn_key_files_here(r.file for r in fabric.security.key_refs())     # printed below, with the field
    problem = check_secrets(fabric)
    if problem:
        print(problem, file=sys.stderr)
        return 1

    keys = KeySet.from_security(fabric.security)   # check_secrets loaded it once: it does not fail here
    for ref in fabric.security.key_refs():
        warning = key_file_warning(ref.file) if ref.id in keys.accepted else None
        if warning:
            print(f"{ref.where}: {warning}", file=sys.stderr)
    if len(fabric.masters) % 2 == 0:
        print(f"{fabric.source}: masters: {len(fabric.masters)} replicas: a majority needs "
              f"{len(fabric.masters) // 2 + 1}, so one more replica than {len(fabric.masters) - 1} buys no failure "
              f"tolerance (use an odd number)", file=sys.stderr)
    elapsed = time.perf_counter() - started
    roles = Counter(s.role for s in fabric.switches)
    per_role = ", ".join(f"{role.value} {roles[role]}" for role in Role)
    from proto.transit import transit_warning

    transit = transit_warning(fabric)
    if transit:
        print(f"{fabric.source}: warning: {transit}", file=sys.stderr)
    print(f"fabric:   {fabric.name} ({fabric.source})")
    print(f"switches: {len(fabric.switches)} ({per_role})")
    print(f"links:    {len(fabric.links)}")
    print(f"hosts:    {len(fabric.hosts)}")
    print(f"masters:  {len(fabric.masters)} ({', '.join(m.id for m in fabric.masters)})")
    print(f"digest:   {fabric.digest}")
    derived = [f"{name} {getattr(fabric.config_timers, name) * 1000:g} -> {getattr(fabric.timers, name) * 1000:g} ms"
               for name in Timers.__slots__ if getattr(fabric.timers, name) != getattr(fabric.config_timers, name)]
    if derived:     # issue #18: what the nodes run; the digest covers the file's values
        print(f"timers:   derived for {len(fabric.switches)} switches (not in the digest): {', '.join(derived)}")
    retired = ", ".join(map(str, sorted(keys.retired))) or "none"
    print(f"keys:     send {keys.send_id}, accept {', '.join(map(str, sorted(keys.accepted)))}, retired {retired}")
    print(f"loaded in {elapsed:.2f} s")
    return 0


def check_secrets(fabric: Fabric) -> str | None:
    """None if the files the daemons will read at start exist and are readable: every accepted key of the
    key set (`security.key_file` or `security.keys[*].file`: a valid fabric secret or key bundle) and
    `security.admin_token_file` (a non-empty token) and the eBGP peers' `password_file`s (TCP MD5 keys:
    `proto.auth.read_tcp_md5_key`), else one line naming the config, the field, the file and the problem."""
    from proto.auth import AuthError, KeySet

    try:
        KeySet.from_security(fabric.security)
    except AuthError as e:            # not found, unreadable, empty, malformed: names the field and the file
        msg = str(e)
        return msg if msg.startswith(str(fabric.source)) else f"{fabric.source}: security: {msg}"
    from proto.auth import read_admin_token, read_tcp_md5_key

    token = fabric.security.admin_token_file
    if token is not None:
        try:
            read_admin_token(token, fabric.security.admin_token_where)
        except AuthError as e:        # names the config's file:line, the field, the token file and the problem
            return str(e)
    for sw in fabric.switches:          # eBGP borders' TCP MD5 keys (issue #13), read by their clients
        for peer in sw.bgp.peers if sw.bgp is not None else ():
            if peer.password_file is not None:
                try:
                    read_tcp_md5_key(peer.password_file)
                except AuthError as e:
                    return (f"{peer.password_where} (switch {sw.name}, peer {peer.address}): "
                            f"{peer.password_file}: {e}")
    return None


def clos_params(args: argparse.Namespace) -> ClosParams:
    """The preset (or the defaults) overridden by the options given; ValueError if invalid."""
    base = PRESETS[args.preset] if args.preset else ClosParams()
    changes = {name: getattr(args, name) for name in _CLOS_OPTIONS if getattr(args, name) is not None}
    if getattr(args, "external", None):
        changes["external"] = True
    timers = dict(base.timers)
    for item in args.timer:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--timer {item!r}: expected KEY=VALUE")
        try:
            timers[key.strip()] = float(value)
        except ValueError:
            raise ValueError(f"--timer {item!r}: {value!r} is not a number") from None
    if args.nd_interval_ms is not None:
        timers["nd_interval_ms"] = args.nd_interval_ms
    changes["timers"] = tuple(timers.items())
    damping = dict(base.damping)
    for item in getattr(args, "damping", None) or []:
        key, sep, value = item.partition("=")
        value = value.strip().lower()
        if not sep:
            raise ValueError(f"--damping {item!r}: expected KEY=VALUE")
        if value in ("true", "false"):
            damping[key.strip()] = value == "true"
            continue
        try:
            damping[key.strip()] = float(value)
        except ValueError:
            raise ValueError(f"--damping {item!r}: {value!r} is neither a number nor true/false") from None
    changes["damping"] = tuple(damping.items())
    params = dataclasses.replace(base, **changes)
    problem = ignored_option(changes, params.pods)
    if problem is not None:
        raise ValueError(problem)
    return params


def cmd_clos(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    try:
        params = clos_params(args)
    except ValueError as e:
        print(f"firepath config clos: error: {e}", file=sys.stderr)
        return 2
    text = generate_clos_yaml(params)
    if args.output == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        try:
            Path(args.output).write_text(text, encoding="utf-8")
        except OSError as e:
            print(f"firepath config clos: cannot write {args.output}: {e}", file=sys.stderr)
            return 1
    elapsed = time.perf_counter() - started
    print(
        f"{params.name}: {params.n_switches} switches, {params.n_links} links, {params.n_hosts} hosts, "
        f"{len(text)} bytes -> {args.output} in {elapsed:.2f} s",
        file=sys.stderr,
    )
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    """Write 32 random bytes as hex (plus a newline), mode 0600. Never overwrites. With --add, see the
    parser's description."""
    if args.add is not None:
        return _keygen_add(args)
    if args.file is None or args.id is not None or args.write:
        print("firepath config keygen: FILE is required; --id and --write need --add CONFIG", file=sys.stderr)
        return 2
    return _write_secret(args.file)


def _keygen_add(args: argparse.Namespace) -> int:
    from proto.auth import MAX_KEY_ID, MIN_KEY_ID
    from proto.keyroll import next_key_id, replace_security, rollover_steps

    try:
        fabric = load_fabric(args.add)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 1
    sec = fabric.security
    ids = [r.id for r in sec.key_refs()]
    try:
        new_id = next_key_id(ids) if args.id is None else args.id
    except ValueError as e:
        print(f"firepath config keygen: {args.add}: {e}", file=sys.stderr)
        return 1
    if not MIN_KEY_ID <= new_id <= MAX_KEY_ID or new_id in ids:
        print(f"firepath config keygen: --id {new_id}: need an unused key id in {MIN_KEY_ID}..{MAX_KEY_ID} "
              f"({args.add} uses {sorted(ids)})", file=sys.stderr)
        return 2
    base = args.add.resolve().parent
    path = args.file
    if path is None:
        stem = re.sub(r"-\d+$", "", sec.key_file.stem) or "fabric"
        path = sec.key_file.parent / f"{stem}-{new_id}.key"
    if path.exists():
        print(f"firepath config keygen: {path} already exists; not overwriting", file=sys.stderr)
        return 1
    steps = rollover_steps(sec, base, new_id, path.resolve())
    for title, block in steps:
        sys.stdout.write(f"# {title}\n{block}\n")
    if not args.write:
        # Print only: nothing is written until the operator asks for it (then --write does all of it).
        print(f"dry run: {path} not created and {args.add} not changed; run again with --write to create the "
              f"key (mode 0600) and put step 1 into {args.add}", file=sys.stderr)
        return 0
    try:
        text = args.add.read_text(encoding="utf-8")
        # the generator's "Do not edit: regenerate." is false from now on: regenerating loses the key set
        new_text = mark_edited(replace_security(text, steps[0][1], str(args.add)), "firepath config keygen --add")
        _check_rewrite(new_text, args.add)
    except (OSError, ConfigError) as e:
        print(f"firepath config keygen: {args.add} not rewritten (no key written): {e}", file=sys.stderr)
        return 1
    code = _write_secret(path, f"key id {new_id} of {args.add}")
    if code:
        return code
    try:
        _replace_file(args.add, new_text)          # atomic: a crash mid-write leaves the old file whole
    except OSError as e:
        print(f"firepath config keygen: {args.add} not rewritten: {e} (the key {path} was written)", file=sys.stderr)
        return 1
    print(f"rewrote the security section of {args.add} with step 1", file=sys.stderr)
    return 0


def cmd_add_tor(args: argparse.Namespace) -> int:
    from proto.addtor import add_tor

    try:
        text = args.config.read_text(encoding="utf-8")
        added = add_tor(text, str(args.config), args.like, args.name, base_dir=args.config.resolve().parent)
    except OSError as e:
        print(f"firepath config add-tor: cannot read {args.config}: {e.strerror or e}", file=sys.stderr)
        return 1
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 1
    summary = (f"{added.switch}: prefixes {', '.join(added.prefixes)}, links {', '.join(added.links)}, "
               f"hosts {', '.join(added.hosts) or '-'}")
    if not args.write:
        sys.stdout.write(added.text)
        print(f"# added {summary}", file=sys.stderr)
        return 0
    try:
        _replace_file(args.config, added.text)
    except OSError as e:
        print(f"firepath config add-tor: {args.config} not rewritten: {e.strerror or e}", file=sys.stderr)
        return 1
    print(f"rewrote {args.config}: added {summary}", file=sys.stderr)
    return 0


def _replace_file(path: Path, text: str) -> None:
    """Replace the file at `path` with `text` atomically, as the file it was: a symlink's target is rewritten
    (the link stays a link), and the file keeps its mode and, where we may, its owner. A temp file renamed
    over it had the writer's umask and owner: a config kept read-only (0444) or group-readable (0640,
    root:firepath) came back 0644 root:root, and fabric.yaml -> v3.yaml became a plain file (tester)."""
    real = path.resolve()
    st = real.stat()
    tmp = real.with_name(f".{real.name}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, stat.S_IMODE(st.st_mode))
        if os.geteuid() == 0:
            os.chown(tmp, st.st_uid, st.st_gid)
        os.replace(tmp, real)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def _check_rewrite(text: str, path: Path) -> None:
    """ConfigError unless ``text`` (a rewritten ``path``) is a valid config with the same digest."""
    from proto.config import parse_fabric

    before = load_fabric(path).digest
    after = parse_fabric(text, source=str(path), base_dir=path.resolve().parent).digest
    if after != before:
        raise ConfigError(str(path), None, "", "the rewrite changed the fabric digest (not written)")


def _write_secret(file: Path, what: str = "fabric secret") -> int:
    try:
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        print(f"firepath config keygen: {file} already exists; not overwriting", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"firepath config keygen: cannot create {file}: {e}", file=sys.stderr)
        return 1
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(secrets.token_hex(SECRET_BYTES) + "\n")
    print(f"wrote a new {SECRET_BYTES}-byte {what} to {file} (mode 0600)", file=sys.stderr)
    return 0
