"""`firepath config check|clos|keygen`: validate a fabric config, generate a Clos config, make a fabric secret."""

from __future__ import annotations

import argparse
import dataclasses
import os
import secrets
import sys
import time
from collections import Counter
from pathlib import Path

from proto.clos import PRESETS, ClosParams, generate_clos_yaml
from proto.config import ConfigError, Role, load_fabric

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
    clos.add_argument("--timer", action="append", default=[], metavar="KEY=VALUE", help="e.g. nd_dead_ms=40")
    clos.add_argument("--nd-interval-ms", type=float, help="shorthand for --timer nd_interval_ms=VALUE")
    clos.add_argument("-o", "--output", default="-", help="output file (default: standard output)")
    clos.set_defaults(func=cmd_clos)

    keygen = actions.add_parser("keygen", help="write a new random fabric secret (mode 0600)")
    keygen.add_argument("file", type=Path)
    keygen.set_defaults(func=cmd_keygen)

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
    elapsed = time.perf_counter() - started
    roles = Counter(s.role for s in fabric.switches)
    per_role = ", ".join(f"{role.value} {roles[role]}" for role in Role)
    print(f"fabric:   {fabric.name} ({fabric.source})")
    print(f"switches: {len(fabric.switches)} ({per_role})")
    print(f"links:    {len(fabric.links)}")
    print(f"hosts:    {len(fabric.hosts)}")
    print(f"masters:  {len(fabric.masters)} ({', '.join(m.id for m in fabric.masters)})")
    print(f"digest:   {fabric.digest}")
    print(f"loaded in {elapsed:.2f} s")
    return 0


def clos_params(args: argparse.Namespace) -> ClosParams:
    """The preset (or the defaults) overridden by the options given; ValueError if invalid."""
    base = PRESETS[args.preset] if args.preset else ClosParams()
    changes = {name: getattr(args, name) for name in _CLOS_OPTIONS if getattr(args, name) is not None}
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
    return dataclasses.replace(base, **changes)


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
    """Write 32 random bytes as hex (plus a newline), mode 0600. Never overwrites."""
    try:
        fd = os.open(args.file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        print(f"firepath config keygen: {args.file} already exists; not overwriting", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"firepath config keygen: cannot create {args.file}: {e}", file=sys.stderr)
        return 1
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(secrets.token_hex(SECRET_BYTES) + "\n")
    print(f"wrote a new {SECRET_BYTES}-byte fabric secret to {args.file} (mode 0600)", file=sys.stderr)
    return 0
