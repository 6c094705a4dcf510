"""``flashocc demo``: the one-command main job on a fresh machine with no data.

Generate (or reuse) a synthetic driving set, train ``flashocc-tiny`` for a time budget, evaluate
mIoU and RayIoU on held-out synthetic scenes, render pictures and write ``report.json``.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from flashocc.config import load_run_config
from flashocc.data.synth import SynthConfig, generate_synthetic_set
from flashocc.engine.distributed import setup_distributed
from flashocc.engine.evaluate import eval_dataset, evaluate_model, load_model_for_inference, predictions
from flashocc.engine.train import train
from flashocc.metrics.evaluate import write_json

log = logging.getLogger(__name__)

# The demo's synthetic set: small images (the model sees 128x352) keep generation and decoding cheap.
DEMO_SYNTH = SynthConfig(scenes=12, frames_per_scene=24, seed=0, image_size=(704, 396), workers=2)

# Short-budget training (docs/benchmarks.md): a higher lr after a short warmup whose cosine ends with the
# time budget, EMA that follows the recent weights, and dense image-side supervision read off the
# voxel labels (the first occupied voxel on each ray gives the depth target and a per-pixel class).
# No image or BEV augmentation: within 15 minutes the model underfits (train and held-out mIoU are
# close), so augmentation only slows it down (+2.0 mIoU without it, measured).
DEMO_OVERRIDES: tuple[str, ...] = (
    "train.batch_size=2", "train.workers=1", "train.epochs=10000", "train.lr=2e-3", "train.warmup_iters=20",
    "train.schedule=cosine", "train.ema_init_updates=0", "train.ema_ramp=200", "train.checkpoint_every_iters=50",
    "train.log_every=10", "model.depth_loss_weight=1.0", "model.depth_target=occupancy",
    "model.semantic_loss_weight=1.0",
    "data.resize=[0,0]", "data.rot=[0,0]", "data.flip=False", "data.flip_dx_ratio=0", "data.flip_dy_ratio=0",
)


def ensure_synthetic_set(root: Path, config: SynthConfig = DEMO_SYNTH) -> Path:
    """Reuse ``root`` when it already holds a synthetic set, else generate it."""
    if (root / "infos_train.pkl").is_file() and (root / "infos_val.pkl").is_file():
        log.info("reusing the synthetic set at %s", root)
        return root
    log.info("generating a synthetic set at %s: %d scenes x %d frames", root, config.scenes, config.frames_per_scene)
    from tqdm import tqdm

    with tqdm(total=config.scenes * config.frames_per_scene, unit="frame", desc="synthetic data") as bar:
        generate_synthetic_set(root, config, progress=lambda done, total: bar.update(done - bar.n))
    return root


def balanced_class_weights(root: Path, infos: str = "infos_train.pkl", max_samples: int = 120,
                           power: float = 0.5, clip: tuple[float, float] = (0.05, 10.0)) -> tuple[float, ...]:
    """Loss weights (median frequency / f_c) ** power from the camera-visible labels of the training set.

    mIoU weighs every class equally while free space and the road hold most voxels; within a short
    budget the unweighted loss only learns the ground. Classes never seen get weight 1.
    """
    from flashocc.data.infos import load_infos
    from flashocc.data.occ3d import load_labels

    samples = load_infos(root / infos)
    counts = np.zeros(18, dtype=np.float64)
    for sample in samples[:: max(1, len(samples) // max_samples)]:
        labels = load_labels(root / sample.occ_path, sample.token)
        counts += np.bincount(labels.semantics[labels.mask_camera.astype(bool)], minlength=18)[:18]
    seen = counts > 0
    weights = np.ones(18)
    weights[seen] = np.clip((np.median(counts[seen]) / counts[seen]) ** power, *clip)
    return tuple(round(float(w), 4) for w in weights)


def render_pictures(model, dataset, device, out: Path, count: int = 2) -> list[str]:
    """Prediction vs ground truth (BEV + 3D + error map) and the 3D prediction for the first val frames."""
    from flashocc.viz import render_comparison, render_overview, save_image

    written = []
    for i, (batch, labels) in enumerate(predictions(model, dataset, device)):
        if i >= count:
            break
        token = batch["tokens"][0]
        gt = batch["voxel_semantics"][0].numpy()
        mask = batch["mask_camera"][0].numpy()
        written.append(str(save_image(render_comparison(labels[0], gt, mask), out / f"pred_vs_gt_{i}_{token}.png")))
        written.append(str(save_image(render_overview(labels[0], mask=mask), out / f"pred_{i}_{token}.png")))
    return written


def run_demo(out: str | Path = "runs/demo", minutes: float = 15.0, data: str | Path | None = None,
             preset: str = "flashocc-tiny", device: str = "auto", overrides: list[str] | tuple[str, ...] = ()) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    started = time.perf_counter()
    data_root = ensure_synthetic_set(Path(data) if data else out / "data")
    weights = balanced_class_weights(data_root)
    cfg = load_run_config(preset, [*DEMO_OVERRIDES, f"model.class_weights={list(weights)}",
                                   f"train.max_minutes={minutes}", *overrides])
    summary = train(cfg, data_root, out / "train", device=device)
    info = setup_distributed(device)
    model = load_model_for_inference(cfg, out / "train" / "last.pt", info.device, use_ema=cfg.train.ema)
    dataset = eval_dataset(cfg, data_root)
    result = evaluate_model(model, dataset, info.device, ("miou", "rayiou"), progress=True)
    pictures = render_pictures(model, dataset, info.device, out)
    curve = _loss_curve(out / "train" / "metrics.jsonl")
    report = {
        "preset": cfg.model.name, "mIoU": result["mIoU"], "RayIoU": result["RayIoU"],
        **{k: v for k, v in result.items() if k.startswith("RayIoU@")},
        "train_minutes": summary["train_minutes"], "samples_seen": summary["samples_seen"], "steps": summary["steps"],
        "val_samples": result["num_samples"], "mIoU_per_class": result["mIoU_per_class"],
        "loss_curve": curve, "pictures": pictures, "data": str(data_root), "checkpoint": summary["checkpoint"],
        "synthetic_set": {k: v for k, v in asdict(DEMO_SYNTH).items() if k != "workers"},
        "total_minutes": (time.perf_counter() - started) / 60,
    }
    report["summary"] = (
        f"flashocc demo: {cfg.model.name} trained {summary['train_minutes']:.1f} min ({summary['steps']} steps, "
        f"{summary['samples_seen']} samples) on synthetic scenes; held-out val ({result['num_samples']} frames): "
        f"mIoU {result['mIoU']:.2f}, RayIoU {result['RayIoU']:.3f}. Report: {out / 'report.json'}; "
        f"pictures: {', '.join(Path(p).name for p in pictures)}"
    )
    write_json(report, out / "report.json")
    return report


def _loss_curve(path: Path, points: int = 20) -> list[dict]:
    import json

    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not rows:
        return []
    keep = np.unique(np.linspace(0, len(rows) - 1, min(points, len(rows))).round().astype(int))
    return [{k: rows[i][k] for k in ("step", "train_seconds", "loss") if k in rows[i]} for i in keep]
