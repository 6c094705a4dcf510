"""Command-line interface: `flashocc COMMAND ...`. Only parses arguments and calls the library."""
from __future__ import annotations

import argparse
import json
import sys

EXAMPLES = """examples:
  1. flashocc models                        list presets with parameters, input size and GFLOPs
  2. flashocc models --json                 the same as JSON
"""


# ---- models -------------------------------------------------------------------------------------
def _add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list model presets with parameter counts, input size and GFLOPs")
    p.add_argument("--json", action="store_true", help="print a JSON list of objects")
    p.add_argument("--no-flops", action="store_true", help="skip the GFLOPs count (faster)")
    p.set_defaults(func=_run_models)


def _run_models(args: argparse.Namespace) -> int:
    from flashocc.models.presets import describe_presets

    rows = describe_presets(with_flops=not args.no_flops)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    header = f"{'name':<18} {'params':>12} {'input (HxW)':>12} {'GFLOPs':>8}  description"
    print(header)
    print("-" * len(header))
    for r in rows:
        gflops = "-" if r.get("gflops") is None else f"{r['gflops']:.1f}"
        size = f"{r['input_size'][0]}x{r['input_size'][1]}"
        print(f"{r['name']:<18} {r['params']:>12,} {size:>12} {gflops:>8}  {r['description']}")
    return 0


# <<data commands>>

# <<metrics commands>>

# <<viz commands>>


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flashocc", description="FlashOcc 3D occupancy prediction",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _command_adders():
        add(sub)
    return parser


def _command_adders():
    adders = [_add_models]
    # <<register commands>>
    return adders


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        print(f"flashocc {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
