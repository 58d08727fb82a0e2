"""The `blade` command line (also `python -m blade`).

Each subcommand lives in its own module of this package and exposes `register(subparsers)`, which
adds its parser and sets `handler` to a function taking the parsed arguments and returning an exit
code. Modules are imported only when listed in `_SUBCOMMAND_MODULES`.
"""

import argparse
import logging
import sys
from importlib import import_module

from blade import __version__

_SUBCOMMAND_MODULES = [
    "blade.cli.bench",
    "blade.cli.embed",
    "blade.cli.generate",
    "blade.cli.distill",
    "blade.cli.evaluate",
    "blade.cli.toy_teacher",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="blade",
        description="Adaptive block-sparse attention and step distillation for video diffusion transformers.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("--version", action="version", version=f"blade {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in _SUBCOMMAND_MODULES:
        import_module(module_name).register(subparsers)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    return int(handler(args) or 0)
