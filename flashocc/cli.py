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
    header = f"{'name':<18} {'params':>12} {'input (HxW)':>12} {'GFLOPs':>8} {'GMACs':>7}  description"
    print(header)
    print("-" * len(header))
    for r in rows:
        gflops = "-" if r.get("gflops") is None else f"{r['gflops']:.1f}"
        gmacs = "-" if r.get("gmacs") is None else f"{r['gmacs']:.1f}"
        size = f"{r['input_size'][0]}x{r['input_size'][1]}"
        print(f"{r['name']:<18} {r['params']:>12,} {size:>12} {gflops:>8} {gmacs:>7}  {r['description']}")
    print("\nGFLOPs count 2 per multiply-add; the official README's FLOPs column counts multiply-adds (GMACs).")
    return 0


# ---- data ---------------------------------------------------------------------------------------
_DATA_SUBCOMMANDS: argparse._SubParsersAction | None = None


def _add_data(sub: argparse._SubParsersAction) -> None:
    global _DATA_SUBCOMMANDS
    p = sub.add_parser("data", help="build info files from nuScenes tables, or generate a synthetic set")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    _DATA_SUBCOMMANDS = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    n = _DATA_SUBCOMMANDS.add_parser(
        "nuscenes", help="write infos_train.pkl / infos_val.pkl from the nuScenes JSON tables (official split)")
    n.add_argument("--root", required=True, help="nuScenes root (holds samples/ and the VERSION/ tables)")
    n.add_argument("--occ", default=None, help="Occ3D-nuScenes 'gts' folder (default: ROOT/gts)")
    n.add_argument("--out", required=True, help="output folder for the info files")
    n.add_argument("--version", default="v1.0-trainval", choices=["v1.0-trainval", "v1.0-mini"])
    n.add_argument("--json", action="store_true", help="print the summary as JSON")
    n.set_defaults(func=_run_data_nuscenes)
    # <<data synth subcommand>>


def _run_data_nuscenes(args: argparse.Namespace) -> int:
    from flashocc.data.nuscenes_tables import build_nuscenes_infos

    result = build_nuscenes_infos(args.root, args.out, version=args.version, occ=args.occ)
    summary = {"files": {k: str(v) for k, v in result.files.items()}, "samples": result.counts,
               "missing_labels": result.missing_labels}
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    for split, path in result.files.items():
        print(f"{split:<6} {result.counts[split]:>7} samples -> {path}")
    if result.missing_labels:
        print(f"warning: {result.missing_labels} samples have no Occ3D labels.npz", file=sys.stderr)
    return 0

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
    adders.append(_add_data)
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
