"""`firepath` entry point: an argparse dispatcher whose subcommands live in their own modules.

A subcommand module is imported only when that subcommand runs (so `firepath config` never imports os-ken).
It exposes `add_parser(subparsers) -> None`, which adds a parser named after the subcommand and sets
`func(args) -> int` as its default. A subcommand whose package is not installed (e.g. `lab` on a master-only
install) says which module is missing and exits 2. Every subcommand but the daemons (`DAEMONS`) runs with
control characters escaped in what it writes to stdout and stderr (proto.termsafe).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from proto.termsafe import guarded_stdio

# subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "config": ("proto.config_cli", "check and generate fabric configs"),
    "master": ("controller.cli", "run a Firepath master replica"),
    "client": ("client.cli", "run the Firepath client of a switch"),
    "lab": ("lab.cli", "run a local lab fabric on Open vSwitch"),
    "status": ("controller.status_cli", "show the fabric state as seen by the masters"),
    "drain": ("controller.ops.cli", "drain a link or a switch (--dry-run: only show what it would cost)"),
    "undrain": ("controller.ops.cli", "lift the drain of a link or a switch"),
    "drains": ("controller.ops.cli", "list the drains in force: who, when, why"),
    "guard": ("controller.ops.cli", "the links the drastic-change guard holds (reported down, not published); "
                                    "--confirm publishes them"),
    "damping": ("controller.ops.cli", "the links master-side damping holds down (penalty, reuse in) and the "
                                      "switches whose UPs wait"),
    "routes": ("controller.ops.cli", "a switch's routes as its client computed them and as OVS holds them"),
    "lsd": ("controller.ops.cli", "the link state database of the serving master"),
    "clients": ("controller.ops.cli", "the switch clients as the serving master sees them"),
    "masters": ("controller.ops.cli", "every master replica's view of the replica set"),
}
#: long-running processes whose stdout/stderr is their log (written as it is): every other command's output
#: goes through proto.termsafe
DAEMONS = frozenset({"master", "client"})


def version_text() -> str:
    """`firepath --version`: the package version and the wire protocol version."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("firepath")
    except PackageNotFoundError:
        v = "unknown (not installed)"
    from proto.messages import WIRE_VERSION

    return f"firepath {v} (wire protocol {WIRE_VERSION})"


def _import(module: str):  # noqa: ANN202 - a module object
    """The subcommand module, or None if it (or its package) is not installed."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        parts = module.split(".")
        if e.name in {".".join(parts[: i + 1]) for i in range(len(parts))}:
            return None
        raise  # the module exists but one of its own imports is missing: a real error


def build_parser(command: str | None) -> argparse.ArgumentParser | None:
    """The parser with `command`'s module loaded (None if that module is not installed); others are stubs."""
    parser = argparse.ArgumentParser(prog="firepath", description="Firepath routing for Clos fabrics.",
                                     epilog="operator commands exit with 0 ok, 1 bad news, 2 usage or local "
                                            "input, 3 unreachable, 4 denied, 5 unknown target, 6 refused")
    # Not argparse's "version" action: that one prints and exits 0 as soon as it is seen, whatever follows
    # (`firepath --version extra` was a success). main() prints it once the whole line has parsed, alone.
    parser.add_argument("--version", action="store_true", help="print the version and exit (no other argument)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    if command is not None:
        module = _import(SUBCOMMANDS[command][0])
        if module is None:
            return None
        module.add_parser(subparsers)
    for name, (_, help_text) in SUBCOMMANDS.items():
        if name not in subparsers.choices:
            subparsers.add_parser(name, help=help_text)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    command = args_list[0] if args_list and args_list[0] in SUBCOMMANDS else None
    parser = build_parser(command)
    if parser is None:
        print(f"firepath {command}: not installed here (no module {SUBCOMMANDS[command][0]})", file=sys.stderr)
        return 2
    try:
        args = parser.parse_args(args_list)
        if args.version and args.command is not None:
            parser.error(f"--version takes no other argument, got {args.command!r}")
    except SystemExit as e:  # argparse: --help (0) or usage error (2)
        return e.code if isinstance(e.code, int) else 2
    if args.version:
        print(version_text())
        return 0
    func = getattr(args, "func", None)
    if func is None:
        if args.command is None:
            parser.print_help(sys.stderr)
        else:
            print(f"firepath {args.command}: not installed here (no module {SUBCOMMANDS[args.command][0]})",
                  file=sys.stderr)
        return 2
    try:
        if args.command in DAEMONS:
            return int(func(args))
        # an operator command prints other processes' answers: no control character of theirs reaches the
        # terminal, whatever the command (tester bb40 F14: a client's REST cleared the screen via lab status)
        with guarded_stdio():
            return int(func(args))
    except BrokenPipeError:             # `firepath ... | head`: the reader left; no traceback, like coreutils
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
