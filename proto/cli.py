"""`firepath` entry point: an argparse dispatcher whose subcommands live in their own modules.

A subcommand module is imported only when that subcommand runs (so `firepath config` never imports os-ken).
It exposes `add_parser(subparsers) -> None`, which adds a parser named after the subcommand and sets
`func(args) -> int` as its default. A subcommand whose module does not exist yet prints "not available yet"
and exits 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "config": ("proto.config_cli", "check and generate fabric configs"),
    "master": ("controller.cli", "run a Firepath master replica"),
    "client": ("client.cli", "run the Firepath client of a switch"),
    "lab": ("lab.cli", "run a local lab fabric on Open vSwitch"),
    "status": ("controller.status_cli", "show the fabric state as seen by the masters"),
}


def _import(module: str):  # noqa: ANN202 - a module object
    """The subcommand module, or None if it (or its package) does not exist yet."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        parts = module.split(".")
        if e.name in {".".join(parts[: i + 1]) for i in range(len(parts))}:
            return None
        raise  # the module exists but one of its own imports is missing: a real error


def build_parser(command: str | None) -> argparse.ArgumentParser | None:
    """The parser with `command`'s module loaded (None if that module is missing); others are stubs."""
    parser = argparse.ArgumentParser(prog="firepath", description="Firepath routing for Clos fabrics.")
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
        print(f"firepath {command}: not available yet", file=sys.stderr)
        return 2
    try:
        args = parser.parse_args(args_list)
    except SystemExit as e:  # argparse: --help (0) or usage error (2)
        return e.code if isinstance(e.code, int) else 2
    func = getattr(args, "func", None)
    if func is None:
        if args.command is None:
            parser.print_help(sys.stderr)
        else:
            print(f"firepath {args.command}: not available yet", file=sys.stderr)
        return 2
    return int(func(args))


if __name__ == "__main__":
    sys.exit(main())
