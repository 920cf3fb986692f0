"""The ``entangle`` command line. Each subcommand is a thin shell over a Python function.

    entangle --version
    entangle help
    entangle demo [tnn] [--json] [--out DIR] [--scale S] [--seed N]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from entangle._version import __version__
from entangle.errors import EntangleError

__all__ = ["main", "build_parser"]


def _cmd_demo(args: argparse.Namespace) -> int:
    from entangle.experiments import tnn_demo

    out = Path(args.out)
    results = tnn_demo.run_all(out, scale=args.scale, seed=args.seed, progress=not args.json)
    if args.json:
        print(json.dumps(results, indent=2, sort_keys=True))
    else:
        print(tnn_demo.format_table(results))
        print(f"plots written to {out}/")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="entangle", description="Machine learning on atoms and molecules "
                                     "with tensor networks.")
    parser.add_argument("--version", action="version", version=f"entangle {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    sub.add_parser("help", help="list the subcommands")

    demo = sub.add_parser("demo", help="run the demonstration jobs and print their results")
    demo.add_argument("which", nargs="?", default="tnn", choices=["tnn"],
                      help="tnn: the four tensor-neural-network experiments of Jahromi & Orús")
    demo.add_argument("--json", action="store_true", help="print the results as one JSON object")
    demo.add_argument("--out", default="runs/demo", help="directory for plots (default: runs/demo)")
    demo.add_argument("--scale", type=float, default=1.0, help="shrink data and sweeps (0 < scale <= 1)")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in (None, "help"):
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except EntangleError as err:
        print(f"entangle {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"entangle {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
