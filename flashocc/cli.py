"""Command-line interface: `flashocc COMMAND ...`. Only parses arguments and calls the library."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from flashocc.errors import FlashOccError

EXAMPLES = """examples:
  1. flashocc demo                                              synthetic data -> train -> evaluate -> pictures
  2. flashocc models --json                                     presets: parameters, input size, GFLOPs
  3. flashocc data synth --out data/synth --scenes 10           a synthetic set in the nuScenes/Occ3D layout
  4. flashocc data nuscenes --root data/nuscenes --out data/nuscenes
  5. flashocc train flashocc-tiny --data data/synth --out runs/tiny train.lr=2e-4
  6. flashocc eval runs/tiny/config.yaml --checkpoint runs/tiny/last.pt --data data/synth
  7. flashocc predict runs/tiny/config.yaml --checkpoint runs/tiny/last.pt --data data/synth --out preds --viz
  8. flashocc evaluate --pred preds --gt data/synth/gts --infos data/synth/infos_val.pkl
  9. flashocc viz preds --gt data/synth/gts --out viz --gif
 10. flashocc export flashocc-r50-m0 --out m0.onnx --mode precomputed
 11. flashocc bench flashocc-r50-m0 --backend torch,onnxruntime --precision fp32,int8
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
    header = f"{'name':<18} {'weights':<7} {'params':>12} {'input (HxW)':>12} {'GFLOPs':>8} {'GMACs':>7}  description"
    print(header)
    print("-" * len(header))
    for r in rows:
        gflops = "-" if r.get("gflops") is None else f"{r['gflops']:.1f}"
        gmacs = "-" if r.get("gmacs") is None else f"{r['gmacs']:.1f}"
        size = f"{r['input_size'][0]}x{r['input_size'][1]}"
        weights = "bundled" if r.get("bundled") else "-"
        print(f"{r['name']:<18} {weights:<7} {r['params']:>12,} {size:>12} {gflops:>8} {gmacs:>7}  {r['description']}")
    print("\nGFLOPs count 2 per multiply-add; the official README's FLOPs column counts multiply-adds (GMACs).")
    print("weights: 'bundled' presets ship pretrained weights (trained on the synthetic world only): "
          "build_model(name, pretrained=True).")
    return 0


# ---- train / eval / predict / demo -------------------------------------------------------------
DEVICE_HELP = ("auto (the accelerator torch finds, else the CPU) | cpu | cuda | cuda:1 | npu (needs torch_npu) | "
               "xpu | mps; under torchrun a name without an index takes LOCAL_RANK (docs/devices.md)")


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="preset name (see 'flashocc models') or a CONFIG.yaml (e.g. a run's config.yaml)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. train.lr=2e-4")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)


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
    p.add_argument("--overwrite", action="store_true", help="replace the run already in OUT (its files are deleted)")
    p.add_argument("--teacher", help="distil from a frozen teacher: its preset or run config.yaml (distill.teacher)")
    p.add_argument("--teacher-checkpoint", help="the teacher's trained weights (distill.teacher_checkpoint)")
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from flashocc.engine.train import train

    # The flags are the distill.* keys, applied after the config's other overrides.
    args.overrides = list(args.overrides) + [f"distill.{key}={value}" for key, value in
                                             (("teacher", args.teacher), ("teacher_checkpoint", args.teacher_checkpoint))
                                             if value]
    cfg = _resolve_config(args)
    if cfg is None:
        return 0
    if not args.data:
        raise ValueError("--data is required (a folder with infos_train.pkl; see 'flashocc data synth')")
    summary = train(cfg, args.data, args.out, resume=args.resume, device=args.device, overwrite=args.overwrite)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary, indent=2))
    return 0


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint: per-class table, mIoU and RayIoU")
    _add_config_args(p)
    p.add_argument("--checkpoint", required=True, help="official, EMA or flashocc checkpoint")
    p.add_argument("--data", required=True, help="data root holding the val info file")
    p.add_argument("--infos", help="info file (default: the config's val_infos under --data)")
    p.add_argument("--metrics", help="comma list of miou, rayiou, fscore (default: the config's eval.metrics); "
                                     "eval.mask=lidar and eval.backend=torch are overrides")
    p.add_argument("--no-ema", action="store_true",
                   help="use the raw weights of a training checkpoint (default: the config's eval.use_ema)")
    p.add_argument("--fuse", action="store_true", help="fused inference (BatchNorm folded, channels-last, cached "
                                                       "pooling indices; same logits): eval.inference=fused")
    p.add_argument("--compile", action="store_true", help="fused inference plus torch.compile: eval.inference=compiled")
    _add_reuse_memory(p)
    p.add_argument("--panoptic", action="store_true",
                   help="also RayPQ from a panoptic model's instance ids (panoptic-flashocc presets; the data set's "
                        "Occ3D-panoptic instances: data.load_instances)")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.set_defaults(func=_run_eval)


def _metric_list(text: str) -> tuple[str, ...]:
    return tuple(m.strip().lower() for m in text.split(",") if m.strip())


def _add_reuse_memory(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reuse-memory", action="store_true", help="CPU: keep freed memory in the process for reuse "
                   "(glibc), so large activations stop page-faulting (flashocc/cpu_memory.py)")


def _reuse_memory(args: argparse.Namespace) -> None:
    if args.reuse_memory:
        from flashocc.cpu_memory import reuse_freed_memory

        if not reuse_freed_memory():
            print(f"flashocc {args.command}: --reuse-memory needs glibc (Linux); the allocator is unchanged",
                  file=sys.stderr)


def _inference_mode(args: argparse.Namespace, default: str) -> str:
    return "compiled" if args.compile else "fused" if args.fuse else default


def _run_eval(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from flashocc.engine.distributed import setup_distributed
    from flashocc.engine.evaluate import (eval_dataset, eval_infos_path, evaluate_model, inference_model,
                                          load_model_for_inference)
    from flashocc.metrics.evaluate import format_report, write_json

    cfg = _resolve_config(args)
    if cfg is None:
        return 0
    if args.metrics is not None or args.no_ema:   # validated like the config fields they replace
        cfg = replace(cfg, eval=replace(cfg.eval, use_ema=cfg.eval.use_ema and not args.no_ema,
                                        metrics=_metric_list(args.metrics) if args.metrics is not None
                                        else cfg.eval.metrics))
    ev = cfg.eval
    _reuse_memory(args)
    info = setup_distributed(args.device)
    model = load_model_for_inference(cfg, args.checkpoint, info.device, use_ema=ev.use_ema)
    model = inference_model(model, _inference_mode(args, ev.inference))
    dataset = eval_dataset(cfg, args.data, args.infos)
    result = evaluate_model(model, dataset, info.device, ev.metrics, ev.batch_size, ev.workers, info,
                            progress=info.is_main, mask=ev.mask, backend=ev.backend, grid=cfg.model.grid,
                            split=str(eval_infos_path(cfg, args.data, args.infos)), panoptic=args.panoptic)
    if info.is_main:
        print(format_report(result))
        if "mIoU_unmasked" in result:  # a model trained without the camera mask: both ways
            print(f"===> mIoU without the mask (the model was trained without it): {result['mIoU_unmasked']:.2f}")
        if args.json:
            write_json(result, args.json)
    return 0


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="write one labels.npz per sample (the layout 'flashocc evaluate' reads)")
    _add_config_args(p)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True, help="data root holding the info file")
    p.add_argument("--infos", help="info file (default: the config's val_infos under --data)")
    p.add_argument("--out", required=True, help="output folder: OUT/<scene>/<token>/labels.npz (refused when it "
                                                "already holds predictions)")
    p.add_argument("--overwrite", action="store_true", help="remove the prediction files already in OUT first")
    p.add_argument("--no-ema", action="store_true",
                   help="use the raw weights of a training checkpoint (default: the config's eval.use_ema)")
    p.add_argument("--fuse", action="store_true", help="fused inference (BatchNorm folded, channels-last, cached "
                                                       "pooling indices; same logits): eval.inference=fused")
    p.add_argument("--compile", action="store_true", help="fused inference plus torch.compile: eval.inference=compiled")
    _add_reuse_memory(p)
    p.add_argument("--viz", action="store_true", help="also render pictures of each prediction into OUT/viz")
    p.set_defaults(func=_run_predict)


def _run_predict(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from flashocc.engine.distributed import setup_distributed
    from flashocc.engine.evaluate import (eval_dataset, inference_model, load_model_for_inference, predict_to_dir,
                                          prepare_prediction_dir)

    cfg = _resolve_config(args)
    if cfg is None:
        return 0
    # Prediction needs no ground truth (nor the instance ids that come with it).
    cfg = replace(cfg, data=replace(cfg.data, load_occ=False, load_instances=False, instances_root=""))
    _reuse_memory(args)
    info = setup_distributed(args.device)
    prepare_prediction_dir(args.out, args.overwrite, info)      # refuse (or clear) old files before the slow part
    model = load_model_for_inference(cfg, args.checkpoint, info.device, use_ema=cfg.eval.use_ema and not args.no_ema)
    model = inference_model(model, _inference_mode(args, cfg.eval.inference))
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
    p = sub.add_parser(
        "demo", help="score a bundled model on fresh synthetic scenes and draw pictures (minutes, no downloads)",
        description="Default: generate a small held-out synthetic set, run the preset's bundled weights on it, "
                    "score mIoU and RayIoU, write pictures and report.json. --train trains the preset from "
                    "scratch on a larger synthetic set first; --minutes or key=value overrides imply --train.")
    p.add_argument("--train", action="store_true",
                   help="train the preset from scratch first (implied by --minutes or overrides)")
    p.add_argument("--minutes", type=float, help="training time budget in minutes (default 15); implies --train")
    p.add_argument("--out", default="runs/demo", help="output folder (report.json, pictures; the checkpoint with --train)")
    p.add_argument("--data", help="synthetic set to use or create (default: OUT/eval_data, or OUT/data with --train; "
                                  "reused when complete)")
    p.add_argument("--preset", default="flashocc-tiny-demo",
                   help="model preset: one with bundled weights ('flashocc models' marks them), any preset with "
                        "--train (default: flashocc-tiny-demo)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--overwrite", action="store_true", help="replace an earlier demo run in OUT (keeps its data)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides for the training run (imply --train)")
    p.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from flashocc.engine.demo import run_demo

    train = args.train or args.minutes is not None or bool(args.overrides)
    if train and not args.train:
        print("flashocc demo: --minutes / overrides given: training from scratch (--train)")
    report = run_demo(args.out, minutes=args.minutes, data=args.data, preset=args.preset, device=args.device,
                      overrides=args.overrides, overwrite=args.overwrite, train=train)
    print(report["summary"])
    return 0


# ---- active learning ----------------------------------------------------------------------------
def _add_active(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("active", help="voxel-level active learning: select the voxels the next cycle trains on")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    commands = p.add_subparsers(dest="active_command", metavar="SUBCOMMAND")
    s = commands.add_parser(
        "select", help="write the next cycle's voxel masks (OUT/<token>.npz) from a run's checkpoint",
        description="Run RUN's checkpoint over its training samples without full labels, add the highest-entropy "
                    "voxels inside the camera mask to the masks RUN trained with (RUN/active_masks), and write "
                    "the union to OUT; train the next cycle with 'flashocc train ... active.masks=OUT'.")
    s.add_argument("run", help="a run folder of 'flashocc train' (config.yaml, last.pt)")
    s.add_argument("--data", required=True, help="data root holding the run's training info file")
    s.add_argument("--out", required=True, help="folder for the masks (refused when it already holds some)")
    s.add_argument("--budget", type=int, default=64, help="new voxels per sample and cycle (default 64, EFFOcc's)")
    s.add_argument("--strategy", default="per-class", choices=["per-class", "global"],
                   help="per-class: the budget shared by the predicted classes (default); global: the top entropies")
    s.add_argument("--checkpoint", help="weights to select with (default RUN/last.pt, its EMA weights)")
    s.add_argument("--overwrite", action="store_true", help="replace the masks already in OUT")
    s.add_argument("--device", default="auto", help=DEVICE_HELP)
    s.add_argument("--json", action="store_true", help="print the selection record as JSON")
    s.set_defaults(func=_run_active_select)


def _run_active_select(args: argparse.Namespace) -> int:
    from flashocc.engine.active import select_masks
    from flashocc.engine.distributed import setup_distributed

    device = setup_distributed(args.device).device
    record = select_masks(args.run, args.data, args.out, args.budget, args.strategy, device, args.checkpoint,
                          args.overwrite, progress=not args.json)
    if args.json:
        print(json.dumps(record, indent=2))
    else:
        print(f"cycle {record['cycle']}: {record['new_voxels']} new voxels, {record['selected_voxels']} selected in "
              f"{record['samples']} samples -> {args.out}")
    return 0


# ---- data ---------------------------------------------------------------------------------------
def _add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="build info files from nuScenes tables, or generate a synthetic set")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    data_commands = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    n = data_commands.add_parser(
        "nuscenes", help="write infos_train.pkl / infos_val.pkl from the nuScenes JSON tables (official split)")
    n.add_argument("--root", required=True, help="nuScenes root (holds samples/ and the VERSION/ tables)")
    n.add_argument("--occ", default=None, help="Occ3D-nuScenes 'gts' folder (default: ROOT/gts)")
    n.add_argument("--out", required=True, help="output folder for the info files")
    n.add_argument("--version", default="v1.0-trainval", choices=["v1.0-trainval", "v1.0-mini"])
    n.add_argument("--max-sweeps", type=int, default=10, help="earlier LiDAR sweeps recorded per sample, for "
                   "the LiDAR and fusion models (default 10, as EFFOcc's infos; 0 as FlashOcc's)")
    n.add_argument("--camera-sweeps", type=int, default=5, help="earlier images per camera recorded per sample, "
                   "SparseOcc's past frames (default 5, as its gen_sweep_info.py; 0: none)")
    n.add_argument("--json", action="store_true", help="print the summary as JSON")
    n.set_defaults(func=_run_data_nuscenes)
    s = data_commands.add_parser(
        "synth", help="generate the built-in synthetic driving set (nuScenes/Occ3D layout with info files)")
    s.add_argument("--out", required=True, help="output folder: the data root of the new set")
    s.add_argument("--scenes", type=int, default=10, help="scenes to generate (default 10)")
    s.add_argument("--frames-per-scene", type=int, default=20, help="2 Hz keyframes per scene (default 20)")
    s.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same bytes (default 0)")
    s.add_argument("--image-size", default="704x396", metavar="WxH",
                   help="camera image size; intrinsics are the nuScenes ones scaled from 1600x900 (default 704x396)")
    s.add_argument("--val-scenes", type=int, default=None, help="scenes in infos_val.pkl, taken last "
                   "(default: max(1, scenes // 5))")
    s.add_argument("--lidar-sweeps", type=int, default=10, help="earlier 20 Hz LiDAR sweeps per keyframe, for "
                   "the LiDAR and fusion models (default 10; 0 writes keyframes only)")
    s.add_argument("--camera-sweeps", type=int, default=0, help="camera images rendered between keyframes, "
                   "SparseOcc's past frames (5 as nuScenes' 12 Hz; default 0: keyframes only)")
    s.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="processes (default 2)")
    s.add_argument("--json", action="store_true", help="print the summary as JSON")
    s.set_defaults(func=_run_data_synth)
    q = data_commands.add_parser(
        "panoptic", help="write Occ3D-panoptic labels (Occ3D arrays + instance ids) from the nuScenes boxes",
        description="For every sample of the info files, write OUT/<scene>/<token>/labels.npz: the Occ3D "
                    "semantics and masks plus 'instances' (uint8), numbered as SparseOcc's gen_instance_info.py "
                    "does from the sample_annotation, instance and category tables of ROOT/VERSION.")
    q.add_argument("--root", required=True, help="nuScenes root (holds the VERSION/ tables)")
    q.add_argument("--infos", required=True, nargs="+", metavar="FILE",
                   help="info files listing the samples (ours, BEVDet or mmdet3d), e.g. infos_train.pkl infos_val.pkl")
    q.add_argument("--occ", default=None, help="Occ3D-nuScenes 'gts' folder (default: each info's occ_path)")
    q.add_argument("--out", required=True, help="output folder, e.g. data/nuscenes/occ3d_panoptic")
    q.add_argument("--version", default="v1.0-trainval", choices=["v1.0-trainval", "v1.0-mini"])
    q.add_argument("--json", action="store_true", help="print the summary as JSON")
    q.set_defaults(func=_run_data_panoptic)


def _run_data_synth(args: argparse.Namespace) -> int:
    import time

    from tqdm import tqdm

    from flashocc.data.synth import SynthConfig, generate_synthetic_set

    try:
        width, height = (int(v) for v in args.image_size.lower().split("x"))
    except ValueError:
        raise ValueError(f"--image-size expects WxH such as 704x396, got {args.image_size!r}") from None
    config = SynthConfig(scenes=args.scenes, frames_per_scene=args.frames_per_scene, seed=args.seed,
                         image_size=(width, height), val_scenes=args.val_scenes, lidar_sweeps=args.lidar_sweeps,
                         camera_sweeps=args.camera_sweeps, workers=args.workers)
    start = time.perf_counter()
    with tqdm(total=args.scenes * args.frames_per_scene, desc="synth", unit="frame",
              disable=not sys.stderr.isatty()) as bar:
        root = generate_synthetic_set(args.out, config, progress=lambda done, total: bar.update(1))
    seconds = time.perf_counter() - start
    frames = args.scenes * args.frames_per_scene
    summary = {"root": str(root), "frames": frames, "val_scenes": config.num_val_scenes,
               "infos": [str(root / "infos_train.pkl"), str(root / "infos_val.pkl")],
               "seconds": round(seconds, 2), "frames_per_s": round(frames / seconds, 2)}
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"wrote {frames} frames ({args.scenes} scenes, {config.num_val_scenes} for val) to {root} "
          f"in {seconds:.1f} s ({frames / seconds:.2f} frames/s)")
    for path in summary["infos"]:
        print(f"  {path}")
    return 0


def _run_data_nuscenes(args: argparse.Namespace) -> int:
    from flashocc.data.nuscenes_tables import build_nuscenes_infos

    result = build_nuscenes_infos(args.root, args.out, version=args.version, occ=args.occ,
                                  max_sweeps=args.max_sweeps, camera_sweeps=args.camera_sweeps)
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


def _run_data_panoptic(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from flashocc.data.infos import load_infos
    from flashocc.data.panoptic import build_panoptic_gt

    samples = [s for path in args.infos for s in load_infos(path)]
    with tqdm(total=len(samples), desc="panoptic", unit="sample", disable=not sys.stderr.isatty()) as bar:
        result = build_panoptic_gt(args.root, samples, args.out, version=args.version, occ=args.occ,
                                   progress=bar.update)
    summary = {"out": args.out, "samples": len(result.files), "boxes": result.boxes,
               "max_segments": result.max_segments, "unassigned_voxels": result.unassigned_voxels}
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"wrote {len(result.files)} panoptic labels under {args.out} ({result.boxes} boxes, at most "
          f"{result.max_segments} segments per sample, {result.unassigned_voxels} occupied voxels without an id)")
    return 0

# ---- metrics ------------------------------------------------------------------------------------
def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="score dumped predictions against an Occ3D gts/ tree (mIoU, RayIoU, RayPQ, F-score)",
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
    p.add_argument("--panoptic", action="store_true",
                   help="also RayPQ: --gt is the Occ3D-panoptic tree ('flashocc data panoptic') and each prediction "
                        "holds instance ids (instances or pano_inst, with semantics, pred_occ or pano_sem); "
                        "needs --infos")
    p.add_argument("--workers", type=int, default=2, help="threads reading files ahead (default 2)")
    p.add_argument("--allow-missing", action="store_true",
                   help="with --infos: score the samples that have predictions (the report says how many are missing)")
    p.add_argument("--ignore-extra", action="store_true",
                   help="with --infos: skip predictions for samples the split does not list (the report counts them)")
    p.add_argument("--cache", nargs="?", const="", default=None, metavar="DIR",
                   help="keep the ground-truth RayIoU casts in DIR (default ~/.cache/flashocc/rayiou-gt) so that "
                        "scoring another checkpoint on the same split casts only the predictions; same scores")
    p.add_argument("--cache-max-gb", type=float, default=4.0, metavar="GB",
                   help="size bound of --cache; the entries used longest ago go first (default 4; Occ3D val "
                        "with 8 origins needs about 2.5)")
    p.add_argument("--json", metavar="OUT", help="also write the results to this JSON file")
    p.set_defaults(func=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from flashocc.data.infos import load_infos
    from flashocc.errors import ConfigError
    from flashocc.metrics.evaluate import evaluate_dirs, format_report, write_json
    from flashocc.metrics.scorer import ScoreConfig

    if args.metrics:
        metrics = _metric_list(args.metrics)
    else:
        metrics = ("miou", "rayiou") if args.infos or args.panoptic else ("miou",)
    if args.workers < 0:
        raise ConfigError(f"--workers: expected an integer >= 0 (0: read in the scoring thread), found {args.workers}")
    cache = None
    if args.cache is not None:
        from flashocc.metrics.ray_cache import GTRayCache

        if not args.cache_max_gb > 0:
            raise ConfigError(f"--cache-max-gb: expected a size in GB > 0, found {args.cache_max_gb}")
        cache = GTRayCache(args.cache or None, max_bytes=int(args.cache_max_gb * 1e9))
    if (args.allow_missing or args.ignore_extra) and not args.infos:
        raise ConfigError("--allow-missing and --ignore-extra relax the check against a split: pass --infos FILE")
    config = ScoreConfig(metrics=metrics, mask=args.mask, backend=args.backend, panoptic=args.panoptic)
    infos = load_infos(args.infos) if args.infos else None
    with tqdm(desc="evaluate", unit="sample", disable=not sys.stderr.isatty()) as bar:
        result = evaluate_dirs(args.pred, args.gt, infos, config, on_sample=bar.update, split=args.infos,
                               workers=args.workers, allow_missing=args.allow_missing,
                               ignore_extra=args.ignore_extra, ray_cache=cache)
    print(format_report(result))
    if cache is not None and (cache.hits or cache.misses):
        print(f"RayIoU ground-truth cache {cache.root}: {cache.hits} samples reused, {cache.misses} cast"
              + (f" ({cache.rejected} unreadable entries replaced)" if cache.rejected else ""))
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
    p.add_argument("--instances", action="store_true",
                   help="also draw the instance ids of files that hold them ('instances' or 'pano_inst'): "
                        "<stem>_instances.png, one colour per id, the same in every frame (and the GIF frames)")
    p.add_argument("--fps", type=float, default=2.0, help="frames per second of the GIF/MP4 (default 2)")
    p.add_argument("--json", action="store_true", help="print the written files as JSON")
    p.set_defaults(func=_run_viz)


def _run_viz(args: argparse.Namespace) -> int:
    from flashocc.viz.run import visualize

    result = visualize(args.path, out=args.out, gt=args.gt, images=args.images, mask=args.mask, gif=args.gif,
                       data_root=args.data_root, fps=args.fps, instances=args.instances)
    if args.json:
        print(json.dumps({"files": [str(f) for f in result.files], "notes": result.notes}, indent=2))
        return 0
    for note in result.notes:
        print(f"note: {note}")
    for f in result.files:
        print(f)
    return 0


# ---- deployment -----------------------------------------------------------------------------------
def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="export a model to ONNX (full graph or TensorRT-style precomputed pooling indices)",
        description="Write an ONNX graph of PRESET. full: inputs are the PyTorch batch (img + calibration), geometry "
                    "and pooling run in the graph. precomputed: inputs are img and the five pooling index arrays, "
                    "computed per calibration by flashocc.deploy.OnnxOccModel. Random weights without --checkpoint.")
    p.add_argument("preset", help="model preset, e.g. flashocc-r50-m0 (see 'flashocc models')")
    p.add_argument("--checkpoint", help="weights to load (official mmdet3d, EMA or ours)")
    p.add_argument("--out", required=True, help="output .onnx path")
    p.add_argument("--mode", choices=("full", "precomputed"), default="full")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--batch", type=int, default=1, help="batch size baked into the graph (default 1)")
    p.add_argument("--accumulate", choices=("float64", "float32"), default="float64",
                   help="pooling prefix-sum precision; float32 for TensorRT (default float64, exact)")
    p.add_argument("--int8", type=int, metavar="N", default=0,
                   help="also write <out>_int8.onnx, INT8 QDQ calibrated on N samples")
    p.add_argument("--fp16", action="store_true", help="also write <out>_fp16.onnx for GPU providers")
    p.add_argument("--calib-root", help="dataset root for INT8 calibration (with --calib-infos)")
    p.add_argument("--calib-infos", help="info file for INT8 calibration; default: random inputs")
    p.add_argument("--json", action="store_true", help="print the written files as JSON")
    p.set_defaults(func=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from flashocc.deploy.onnx import export_preset

    from flashocc.models.presets import get_config

    if (args.int8 or args.fp16) and get_config(args.preset).family == "effocc":
        from flashocc.errors import ConfigError

        # INT8 calibration and the FP16 keep-float rules are written for the camera graphs' inputs and scopes.
        raise ConfigError(f"--int8 / --fp16: the {args.preset} graph is exported in fp32 only (quantisation is "
                          "calibrated and checked for the camera presets)")
    out = export_preset(args.preset, args.out, checkpoint=args.checkpoint, mode=args.mode, opset=args.opset,
                        batch_size=args.batch, accumulate=getattr(torch, args.accumulate))
    files = {"fp32": str(out)}
    stem = Path(out).with_suffix("")
    if args.int8:
        from flashocc.deploy.quantize import calibration_batches, quantize_int8

        batches = calibration_batches(args.preset, args.int8, args.calib_root, args.calib_infos)
        files["int8"] = str(quantize_int8(out, f"{stem}_int8.onnx", batches))
    if args.fp16:
        from flashocc.deploy.quantize import convert_fp16

        files["fp16"] = str(convert_fp16(out, f"{stem}_fp16.onnx"))
    if args.json:
        print(json.dumps({"preset": args.preset, "mode": args.mode, "files": files}, indent=2))
        return 0
    for precision, path in files.items():
        print(f"{precision:<5} {path}")
    return 0


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench", help="latency per stage, FPS and memory per backend/precision, plus the 2D vs 3D head ablation",
        description="Side-by-side table of PRESET on torch / torch-compile / onnxruntime / tensorrt at fp32 / fp16 / "
                    "int8 (unavailable combinations are listed as skipped with the reason), then the BEV encoder + "
                    "head of flashocc-r50-m1 (channel-to-height) against bevdetocc-r50 (3D convs).")
    p.add_argument("preset", help="model preset, e.g. flashocc-r50-m0")
    p.add_argument("--backend", default=None, help="comma list of torch,torch-fused,torch-compile,onnxruntime,"
                                                   "tensorrt (torch-fused: BatchNorm folded, channels-last, cached "
                                                   "pooling indices); default torch,onnxruntime (SparseOcc presets: "
                                                   "torch; torch,torch-fused adds both models' fused copies)")
    p.add_argument("--precision", default=None, help="comma list of fp32,fp16,int8 (default fp32,int8; SparseOcc: fp32)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs before them (default 1)")
    p.add_argument("--threads", type=int, default=None, help="torch / onnxruntime intra-op threads")
    p.add_argument("--checkpoint", help="weights to load (default: random, BatchNorm-calibrated)")
    p.add_argument("--mode", choices=("full", "precomputed"), default="precomputed", help="exported graph to time")
    p.add_argument("--calib-samples", type=int, default=4, help="INT8 calibration samples (default 4)")
    p.add_argument("--no-ablation", action="store_true", help="skip the 2D vs 3D head ablation")
    p.add_argument("--workdir", help="keep the exported graphs and engines here")
    p.add_argument("--points", type=int, default=34_000,
                   help="EFFOcc presets: synthetic LiDAR points per sample (default 34000, about one nuScenes sweep)")
    p.add_argument("--compare", help="SparseOcc presets: the FlashOcc preset timed beside it on the same images "
                   "(default flashocc-r50-m1; flashocc-tiny for sparseocc-tiny)")
    _add_reuse_memory(p)
    p.add_argument("--json", metavar="OUT", help="also write the report as JSON to OUT")
    p.set_defaults(func=_run_bench)


def _run_bench(args: argparse.Namespace) -> int:
    from flashocc.deploy.bench import BenchConfig, format_table, run_bench
    from flashocc.models.presets import get_config

    _reuse_memory(args)
    if getattr(get_config(args.preset), "family", "") == "sparseocc":  # its own stages: deploy/sparseocc_bench.py
        return _run_sparseocc_bench(args)
    cfg = BenchConfig(args.preset, backends=_names(args.backend or "torch,onnxruntime"),
                      precisions=_names(args.precision or "fp32,int8"),
                      batch_size=args.batch, repeats=args.repeats, warmup=args.warmup, threads=args.threads,
                      checkpoint=args.checkpoint,
                      mode=args.mode, calib_samples=args.calib_samples, ablation=not args.no_ablation,
                      workdir=args.workdir, points=args.points)
    report = run_bench(cfg)
    print(format_table(report))
    if args.json:
        report.save(args.json)
    return 0


def _names(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


def _run_sparseocc_bench(args: argparse.Namespace) -> int:
    from flashocc.deploy.sparseocc_bench import SparseOccBenchConfig, format_sparseocc_report, run_sparseocc_bench
    from flashocc.errors import ConfigError

    backends = _names(args.backend or "torch")
    unread = {"--backend": ",".join(sorted(set(backends) - {"torch", "torch-fused"})),
              "--precision": ",".join(sorted(set(_names(args.precision or "fp32")) - {"fp32"})),
              "--batch": str(args.batch) if args.batch != 1 else "", "--checkpoint": args.checkpoint or "",
              "--mode": args.mode if args.mode != "precomputed" else "", "--workdir": args.workdir or ""}
    for flag, value in unread.items():
        if value:
            raise ConfigError(f"flashocc bench {args.preset}: {flag} {value} is not "
                              "read for SparseOcc presets: they time eager (torch) and fused (torch-fused) fp32 "
                              "PyTorch, batch 1, random weights (no ONNX graph; docs/sparseocc.md)")
    report = run_sparseocc_bench(SparseOccBenchConfig(args.preset, compare=args.compare, repeats=args.repeats,
                                                      warmup=args.warmup, threads=args.threads,
                                                      fused="torch-fused" in backends))
    print(format_sparseocc_report(report))
    if args.json:
        report.save(args.json)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flashocc", description="FlashOcc 3D occupancy prediction",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


# Every command, in the order `flashocc --help` lists them.
COMMANDS = (_add_models, _add_train, _add_eval, _add_predict, _add_demo, _add_data, _add_active, _add_viz,
            _add_evaluate, _add_export, _add_bench)


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
    except (FlashOccError, FileNotFoundError, ValueError, KeyError) as exc:
        # KeyError's str() is its repr (quotes, literal "\n"); print the message itself.
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"flashocc {args.command}: error: {message}", file=sys.stderr)
        return 1
    except OSError as exc:  # a full disk, a read-only folder: the file and the reason, not a traceback
        where = f" {exc.filename}" if exc.filename else ""
        print(f"flashocc {args.command}: error: cannot access{where}: {exc.strerror or exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
