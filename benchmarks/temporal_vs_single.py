"""Temporal stereo against single-frame at the same training budget.

The temporal preset (default flashocc-tiny-m2) is trained against its single-frame twin: the same
backbone, neck, BEV channels, encoder and head as a single-frame ``CameraLSSConfig`` (no adjacent
frames, no cost volume; the plain LSS depth net of M0/M1), both with the same LiDAR depth loss weight. Generates (or
reuses, ``--data``) a synthetic driving set, trains both for the same number of optimiser steps with
the same seed, batch, class weights and schedule (the demo's short-budget recipe), and scores the
held-out scenes (mIoU on the camera mask, RayIoU). Writes results.json under --out and prints a table:

    python benchmarks/temporal_vs_single.py --out /tmp/temporal_bench --steps 500 --data runs/demo/data --parallel

One process per model with ``--parallel``, one intra-op thread each.
"""
from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import time
from pathlib import Path

import torch

IMAGE_SIZE = (352, 198)  # synthetic images (W, H); the tiny models see 128x352 crops of them


def common_overrides(steps: int, class_weights: tuple[float, ...]) -> list[str]:
    # The demo's short-budget recipe (lr 2e-3 after 20 warm-up steps, the demo's class weights from the
    # training labels), constant lr and no EMA: compare the trained weights themselves.
    return [f"train.max_iters={steps}", "train.batch_size=2", "train.workers=0", "train.lr=2e-3",
            "train.warmup_iters=20", "train.schedule=constant", "train.ema=False", "train.log_every=10",
            f"data.src_size=({IMAGE_SIZE[1]}, {IMAGE_SIZE[0]})", f"model.class_weights={list(class_weights)}"]


def single_frame_twin(model_cfg):
    """The temporal config without time: one frame, the stereo stage dropped from the backbone outputs,
    the plain 1x1 LSS depth net; the depth loss weight stays as given."""
    from flashocc.models.configs import CameraLSSConfig, convert_family

    return convert_family(model_cfg, CameraLSSConfig, name=f"{model_cfg.name}-single", description="single-frame twin",
                          backbone_out_indices=model_cfg.backbone_out_indices[1:], sid=False)


def run_one(preset: str, single: bool, data_root: str, out: str, steps: int, class_weights: tuple[float, ...],
            depth_loss: float) -> dict:
    torch.set_num_threads(1)
    from dataclasses import replace

    from flashocc.config import load_run_config
    from flashocc.engine.evaluate import eval_dataset, evaluate_model
    from flashocc.engine.train import train
    from flashocc.models.presets import build_model

    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {preset} %(message)s")
    cfg = load_run_config(preset, [*common_overrides(steps, class_weights), f"model.depth_loss_weight={depth_loss}"])
    if single:
        cfg = replace(cfg, model=single_frame_twin(cfg.model))
    # The preset's data config asks for adjacent frames; the twin must see the current frame only.
    cfg = replace(cfg, data=replace(cfg.data, **cfg.model.data_requirements()))
    name = cfg.model.name
    started = time.perf_counter()
    summary = train(cfg, data_root, Path(out) / name, device="cpu", progress=False)
    train_minutes = (time.perf_counter() - started) / 60
    # Our own training file (it also holds RNG states, hence the full unpickling).
    saved = torch.load(Path(out) / name / "last.pt", map_location="cpu", weights_only=False)
    model = build_model(cfg.model)
    model.load_state_dict(saved["model"])
    eval_cfg = replace(cfg, data=replace(cfg.data, load_depth=False))
    result = evaluate_model(model, eval_dataset(eval_cfg, data_root), torch.device("cpu"), ("miou", "rayiou"))
    without_history = None
    if cfg.model.temporal:  # how much of the score is time itself: every frame treated as a scene start
        alone = replace(eval_cfg, data=replace(eval_cfg.data, num_adjacent=0))
        without_history = evaluate_model(model, eval_dataset(alone, data_root), torch.device("cpu"), ("miou",))["mIoU"]
    return {"model": name, "params": sum(p.numel() for p in model.parameters()), "steps": summary["steps"], "samples_seen": summary["samples_seen"],
            "train_minutes": round(train_minutes, 1), "mIoU": result["mIoU"], "RayIoU": result["RayIoU"],
            "val_samples": result["num_samples"], "num_adjacent": cfg.data.num_adjacent,
            "depth_loss_weight": cfg.model.depth_loss_weight, "mIoU_without_history": without_history}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="flashocc-tiny-m2", help="a temporal preset")
    parser.add_argument("--out", default="runs/temporal_bench")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--scenes", type=int, default=8)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--parallel", action="store_true", help="train the presets in parallel processes")
    parser.add_argument("--depth-loss", type=float, default=1.0,
                        help="LiDAR depth loss weight for both models (the demo's 1.0; M2's official 0.05)")
    parser.add_argument("--data", default=None, help="an existing synthetic set (e.g. the demo's) instead of "
                                                     "generating one under --out")
    args = parser.parse_args()
    from flashocc.data.synth import SynthConfig, generate_synthetic_set

    out = Path(args.out)
    data_root = Path(args.data) if args.data else out / "data"
    if not (data_root / "infos_val.pkl").is_file():
        generate_synthetic_set(data_root, SynthConfig(scenes=args.scenes, frames_per_scene=args.frames, seed=1,
                                                      image_size=IMAGE_SIZE, workers=1))
    from flashocc.engine.demo import balanced_class_weights

    weights = balanced_class_weights(data_root)
    jobs = [(args.preset, single, str(data_root), str(out), args.steps, weights, args.depth_loss)
            for single in (True, False)]
    if args.parallel:
        with mp.get_context("spawn").Pool(len(jobs)) as pool:
            rows = pool.starmap(run_one, jobs)
    else:
        rows = [run_one(*job) for job in jobs]
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    print(f"{'model':<24} {'params':>11} {'steps':>6} {'train min':>10} {'mIoU':>7} {'RayIoU':>7} {'no history':>10}")
    for r in rows:
        alone = "-" if r["mIoU_without_history"] is None else f"{r['mIoU_without_history']:.2f}"
        print(f"{r['model']:<24} {r['params']:>11,} {r['steps']:>6} {r['train_minutes']:>10.1f} {r['mIoU']:>7.2f} "
              f"{r['RayIoU']:>7.3f} {alone:>10}")


if __name__ == "__main__":
    main()
