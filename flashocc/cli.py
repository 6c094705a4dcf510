"""Command-line interface: `flashocc COMMAND ...`. Only parses arguments and calls the library."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

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


# ---- train / eval / predict / demo -------------------------------------------------------------
def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="preset name (see 'flashocc models') or a CONFIG.yaml (e.g. a run's config.yaml)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. train.lr=2e-4")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")


def _resolve_config(args: argparse.Namespace):
    from flashocc.config import config_to_dict, load_run_config

    cfg = load_run_config(args.config, args.overrides)
    if args.print_config:
        import yaml

        print(yaml.safe_dump({"preset": cfg.model.name, **config_to_dict(cfg)}, sort_keys=False), end="")
        return None
    return cfg


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model (one process, or torchrun for DDP)")
    _add_config_args(p)
    p.add_argument("--data", help="data root holding the info files (nuScenes or 'flashocc data synth' output)")
    p.add_argument("--out", default="runs/train", help="run folder: config.yaml, last.pt, train.log, metrics.jsonl")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt exactly")
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from flashocc.engine.train import train

    cfg = _resolve_config(args)
    if cfg is None:
        return 0
    if not args.data:
        raise ValueError("--data is required (a folder with infos_train.pkl; see 'flashocc data synth')")
    summary = train(cfg, args.data, args.out, resume=args.resume, device=args.device)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary, indent=2))
    return 0


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint: per-class table, mIoU and RayIoU")
    _add_config_args(p)
    p.add_argument("--checkpoint", required=True, help="official, EMA or flashocc checkpoint")
    p.add_argument("--data", required=True, help="data root holding the val info file")
    p.add_argument("--infos", help="info file (default: the config's val_infos under --data)")
    p.add_argument("--metrics", default="miou,rayiou", help="comma list of miou, rayiou")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights of a training checkpoint")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.set_defaults(func=_run_eval)


def _run_eval(args: argparse.Namespace) -> int:
    from flashocc.engine.distributed import setup_distributed
    from flashocc.engine.evaluate import eval_dataset, evaluate_model, load_model_for_inference
    from flashocc.metrics.evaluate import format_report, write_json

    cfg = _resolve_config(args)
    if cfg is None:
        return 0
    info = setup_distributed(args.device)
    model = load_model_for_inference(cfg, args.checkpoint, info.device, use_ema=not args.no_ema)
    dataset = eval_dataset(cfg, args.data, args.infos)
    result = evaluate_model(model, dataset, info.device, tuple(m.strip() for m in args.metrics.split(",") if m.strip()),
                            cfg.eval.batch_size, cfg.eval.workers, info, progress=info.is_main)
    if info.is_main:
        print(format_report(result))
        if args.json:
            write_json(result, args.json)
    return 0


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="write one labels.npz per sample (the layout 'flashocc evaluate' reads)")
    _add_config_args(p)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True, help="data root holding the info file")
    p.add_argument("--infos", help="info file (default: the config's val_infos under --data)")
    p.add_argument("--out", required=True, help="output folder: OUT/<scene>/<token>/labels.npz")
    p.add_argument("--no-ema", action="store_true")
    p.add_argument("--viz", action="store_true", help="also render pictures of each prediction into OUT/viz")
    p.set_defaults(func=_run_predict)


def _run_predict(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from flashocc.engine.distributed import setup_distributed
    from flashocc.engine.evaluate import eval_dataset, load_model_for_inference, predict_to_dir

    cfg = _resolve_config(args)
    if cfg is None:
        return 0
    cfg = replace(cfg, data=replace(cfg.data, load_occ=False))  # prediction needs no ground truth
    info = setup_distributed(args.device)
    model = load_model_for_inference(cfg, args.checkpoint, info.device, use_ema=not args.no_ema)
    dataset = eval_dataset(cfg, args.data, args.infos)
    written = predict_to_dir(model, dataset, args.out, info.device, cfg.eval.batch_size, cfg.eval.workers, info)
    print(f"wrote {len(written)} predictions under {args.out}")
    if args.viz and info.is_main:
        from flashocc.viz import visualize

        infos = args.infos or str(Path(args.data) / cfg.val_infos)
        gts = Path(args.data) / "gts"
        outputs = visualize(args.out, out=Path(args.out) / "viz", gt=gts if gts.is_dir() else None, images=infos,
                            data_root=args.data)
        print(f"rendered pictures under {Path(args.out) / 'viz'} ({len(outputs.files)} files)")
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="generate synthetic data, train flashocc-tiny, evaluate and render (no downloads)")
    p.add_argument("--out", default="runs/demo", help="output folder (report.json, pictures, checkpoint)")
    p.add_argument("--minutes", type=float, default=15.0, help="training time budget in minutes")
    p.add_argument("--data", help="synthetic set to use or create (default: OUT/data, reused when present)")
    p.add_argument("--preset", default="flashocc-tiny", help="model preset to train")
    p.add_argument("--device", default="auto")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for the training run")
    p.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from flashocc.engine.demo import run_demo

    report = run_demo(args.out, minutes=args.minutes, data=args.data, preset=args.preset, device=args.device,
                      overrides=args.overrides)
    print(report["summary"])
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

# ---- metrics ------------------------------------------------------------------------------------
def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="score dumped predictions against an Occ3D gts/ tree (mIoU, RayIoU, F-score)",
        description="Predictions: <scene>/<token>/labels.npz (key semantics, ours), <scene>/<token>/pred.npz "
                    "(key pred, official show_dir) or <token>.npz. GT: <scene>/<token>/labels.npz.")
    p.add_argument("--pred", required=True, metavar="DIR", help="folder of predictions")
    p.add_argument("--gt", required=True, metavar="DIR", help="Occ3D gts/ folder")
    p.add_argument("--infos", metavar="FILE", help="info file of the split: poses for the RayIoU ray origins")
    p.add_argument("--metrics", metavar="LIST",
                   help="comma list of miou,rayiou,fscore (default: miou, plus rayiou when --infos is given)")
    p.add_argument("--mask", default="camera", choices=("camera", "lidar", "none"),
                   help="voxel mask for mIoU and F-score (official: camera); RayIoU never uses a mask")
    p.add_argument("--backend", default="auto", choices=("auto", "numba", "torch"), help="RayIoU ray caster")
    p.add_argument("--workers", type=int, default=2, help="threads reading files ahead (default 2)")
    p.add_argument("--json", metavar="OUT", help="also write the results to this JSON file")
    p.set_defaults(func=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from flashocc.data.infos import load_infos
    from flashocc.metrics.evaluate import EvalConfig, evaluate_dirs, format_report, write_json

    if args.metrics:
        metrics = tuple(m.strip().lower() for m in args.metrics.split(",") if m.strip())
    else:
        metrics = ("miou", "rayiou") if args.infos else ("miou",)
    config = EvalConfig(metrics=metrics, mask=args.mask, backend=args.backend, workers=args.workers)
    infos = load_infos(args.infos) if args.infos else None
    with tqdm(desc="evaluate", unit="sample", disable=not sys.stderr.isatty()) as bar:
        result = evaluate_dirs(args.pred, args.gt, infos, config, on_sample=bar.update)
    print(format_report(result))
    if args.json:
        print(f"wrote {write_json(result, args.json)}")
    return 0

# ---- viz ----------------------------------------------------------------------------------------
def _add_viz(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "viz", help="pictures of occupancy: 3D view, BEV map, GT comparison, camera overlays, GIF",
        description="Render labels.npz files (prediction or ground truth; keys 'semantics' or 'pred') into "
                    "<stem>_3d.png and <stem>_bev.png, plus <stem>_compare.png with --gt, <stem>_cameras.png "
                    "with --images and sequence.gif with --gif. Headless; needs only Pillow.")
    p.add_argument("path", help="a labels.npz / pred.npz, or a folder of them (<scene>/<token>/labels.npz trees too)")
    p.add_argument("--gt", help="ground truth: a labels.npz, or a folder matched by sample token")
    p.add_argument("--images", metavar="INFO_OR_DIR",
                   help="an info file (ours, BEVDet or mmdet3d), or a folder holding one, for camera overlays")
    p.add_argument("--data-root", help="where image paths in the info file start (default: its folder)")
    p.add_argument("--out", default="viz", help="output folder (default: ./viz)")
    p.add_argument("--mask", choices=("camera", "none"), default="camera",
                   help="camera: hide voxels outside mask_camera (from the GT, else the file) when there is one")
    p.add_argument("--gif", action="store_true", help="also write sequence.gif (and .mp4 with imageio-ffmpeg)")
    p.add_argument("--fps", type=float, default=2.0, help="frames per second of the GIF/MP4 (default 2)")
    p.add_argument("--json", action="store_true", help="print the written files as JSON")
    p.set_defaults(func=_run_viz)


def _run_viz(args: argparse.Namespace) -> int:
    from flashocc.viz.run import visualize

    result = visualize(args.path, out=args.out, gt=args.gt, images=args.images, mask=args.mask, gif=args.gif,
                       data_root=args.data_root, fps=args.fps)
    if args.json:
        print(json.dumps({"files": [str(f) for f in result.files], "notes": result.notes}, indent=2))
        return 0
    for note in result.notes:
        print(f"note: {note}")
    for f in result.files:
        print(f)
    return 0


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
    adders = [_add_models, _add_train, _add_eval, _add_predict, _add_demo]
    adders.append(_add_data)
    adders.append(_add_viz)
    adders.append(_add_evaluate)
    # <<register commands>>
    return adders


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # key=value overrides may come after options too ("... --data D train.lr=2e-4"); argparse alone
    # cannot interleave a variable positional list with options, so leftovers are collected here.
    args, extra = parser.parse_known_args(argv)
    if extra:
        stray = [e for e in extra if e.startswith("-") or "=" not in e or not hasattr(args, "overrides")]
        if stray:
            parser.error(f"unrecognized arguments: {' '.join(stray)}")
        args.overrides = [*args.overrides, *extra]
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
