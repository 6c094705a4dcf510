"""Temporal stereo against single-frame at the same training budget.

The temporal preset (default flashocc-tiny-m2) is trained against its single-frame twin: the same
backbone, neck, BEV channels, encoder and head with ``temporal=False`` (no adjacent frames, no cost
volume, no depth loss; the plain LSS depth net of M0/M1). Generates (or reuses) a small synthetic
driving set, trains both for the same number of optimiser steps with the same seed, batch and
schedule, and scores the held-out scenes (mIoU on the camera mask, RayIoU). Writes results.json under
--out and prints a table:

    python benchmarks/temporal_vs_single.py --out /tmp/temporal_bench --steps 120 --scenes 10 --frames 12 --parallel

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


def common_overrides(steps: int) -> list[str]:
    # A short constant-lr schedule (as the demo) and no EMA: compare the trained weights themselves.
    return [f"train.max_iters={steps}", "train.batch_size=2", "train.workers=0", "train.lr=1e-3",
            "train.warmup_iters=20", "train.schedule=constant", "train.ema=False", "train.log_every=10",
            f"data.src_size=({IMAGE_SIZE[1]}, {IMAGE_SIZE[0]})"]


def single_frame_twin(model_cfg):
    """The temporal config without time: one frame, the stereo stage dropped from the backbone outputs."""
    from dataclasses import replace

    return replace(model_cfg, name=f"{model_cfg.name}-single", description="single-frame twin", temporal=False,
                   backbone_out_indices=model_cfg.backbone_out_indices[1:], sid=False, depth_loss_weight=0.0)


def run_one(preset: str, single: bool, data_root: str, out: str, steps: int) -> dict:
    torch.set_num_threads(1)
    from dataclasses import replace

    from flashocc.config import load_run_config
    from flashocc.engine.evaluate import eval_dataset, evaluate_model
    from flashocc.engine.train import train
    from flashocc.models.presets import build_model
    from flashocc.models.temporal import data_requirements

    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {preset} %(message)s")
    cfg = load_run_config(preset, common_overrides(steps))
    if single:
        cfg = replace(cfg, model=single_frame_twin(cfg.model))
    cfg = replace(cfg, data=replace(cfg.data, **data_requirements(cfg.model)))
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
    return {"model": name, "params": sum(p.numel() for p in model.parameters()), "steps": summary["steps"], "samples_seen": summary["samples_seen"],
            "train_minutes": round(train_minutes, 1), "mIoU": result["mIoU"], "RayIoU": result["RayIoU"],
            "val_samples": result["num_samples"], "num_adjacent": cfg.data.num_adjacent}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="flashocc-tiny-m2", help="a temporal preset")
    parser.add_argument("--out", default="runs/temporal_bench")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--scenes", type=int, default=8)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--parallel", action="store_true", help="train the presets in parallel processes")
    args = parser.parse_args()
    from flashocc.data.synth import SynthConfig, generate_synthetic_set

    out = Path(args.out)
    data_root = out / "data"
    if not (data_root / "infos_val.pkl").is_file():
        generate_synthetic_set(data_root, SynthConfig(scenes=args.scenes, frames_per_scene=args.frames, seed=1,
                                                      image_size=IMAGE_SIZE, workers=1))
    jobs = [(args.preset, single, str(data_root), str(out), args.steps) for single in (True, False)]
    if args.parallel:
        with mp.get_context("spawn").Pool(len(jobs)) as pool:
            rows = pool.starmap(run_one, jobs)
    else:
        rows = [run_one(*job) for job in jobs]
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    print(f"{'model':<24} {'params':>11} {'steps':>6} {'train min':>10} {'mIoU':>7} {'RayIoU':>7}")
    for r in rows:
        print(f"{r['model']:<24} {r['params']:>11,} {r['steps']:>6} {r['train_minutes']:>10.1f} {r['mIoU']:>7.2f} "
              f"{r['RayIoU']:>7.3f}")


if __name__ == "__main__":
    main()
