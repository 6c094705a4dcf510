"""``flashocc demo``: the one-command main job on a fresh machine with no data.

Generate (or reuse) a synthetic driving set, train ``flashocc-tiny-demo`` (flashocc-tiny with the
demo's training aids and recipe) for a time budget, evaluate
mIoU and RayIoU on held-out synthetic scenes, render pictures and write ``report.json``.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from flashocc.config import load_run_config
from flashocc.data.synth import SynthConfig, generate_synthetic_set, synthetic_set_problem
from flashocc.data.synth.marker import config_record, generator_files, written_config
from flashocc.engine.distributed import setup_distributed
from flashocc.engine.evaluate import eval_dataset, evaluate_model, load_model_for_inference, predictions
from flashocc.engine.train import train
from flashocc.errors import RunFolderError
from flashocc.metrics.evaluate import write_json

log = logging.getLogger(__name__)

# The demo's synthetic set: small images (the model sees 128x352) keep generation and decoding cheap.
# The camera demo reads no LiDAR sweeps; without them the set is 0.27 GB instead of 1.9 GB.
DEMO_SYNTH = SynthConfig(scenes=12, frames_per_scene=24, seed=0, image_size=(704, 396), workers=2, lidar_sweeps=0)

# What the demo trains: the preset flashocc-tiny-demo carries its training aids (models/presets.py) and
# its short-budget recipe (flashocc.config.RECIPES), so `flashocc train flashocc-tiny-demo` trains the
# same outside the demo. The demo adds only what depends on its data and flags: class weights measured
# on the synthetic set (balanced_class_weights) and the time budget (--minutes).
DEMO_PRESET = "flashocc-tiny-demo"


def ensure_synthetic_set(root: Path, config: SynthConfig = DEMO_SYNTH, require_config: bool = True) -> Path:
    """Reuse ``root`` when it holds a complete synthetic set (of ``config`` unless ``require_config`` is
    False: a set the user chose with ``--data`` is kept whatever its settings), else (re)generate it.

    Regenerating deletes only files the generator wrote; a folder holding anything else (a real
    dataset) is refused with a RunFolderError before anything is touched.
    """
    problem = synthetic_set_problem(root, config if require_config else None)
    if problem is None:
        written = written_config(root) or {}
        same = written == config_record(config)
        log.info("reusing the complete synthetic set at %s%s", root, "" if same else
                 f" (generated with scenes={written.get('scenes')}, frames_per_scene={written.get('frames_per_scene')}, "
                 f"seed={written.get('seed')}, image_size={written.get('image_size')}; not the demo's own settings)")
        return root
    try:
        old_files = generator_files(root)  # refuse before saying anything about regenerating
    except RunFolderError as exc:
        raise RunFolderError(f"flashocc demo --data: {exc}. The demo trains on a synthetic set it generates; "
                             f"train on real data with 'flashocc train'") from None
    if old_files:
        log.warning("not reusing %s: %s; regenerating it", root, problem)
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
             preset: str = DEMO_PRESET, device: str = "auto", overrides: list[str] | tuple[str, ...] = (),
             overwrite: bool = False) -> dict:
    out = Path(out)
    earlier = [name for name in ("report.json", "train") if (out / name).exists()]
    if earlier and not overwrite:
        raise RunFolderError(f"{out} already holds a demo run ({', '.join(earlier)}); pass --overwrite to replace it "
                             f"(the synthetic data in it is kept and reused) or choose a new --out")
    out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    started = time.perf_counter()
    data_root = ensure_synthetic_set(Path(data) if data else out / "data", require_config=data is None)
    weights = balanced_class_weights(data_root)
    cfg = load_run_config(preset, [f"model.class_weights={list(weights)}",
                                   f"train.max_minutes={minutes}", *overrides])
    summary = train(cfg, data_root, out / "train", device=device, overwrite=overwrite)
    info = setup_distributed(device)
    model = load_model_for_inference(cfg, out / "train" / "last.pt", info.device, use_ema=cfg.train.ema)
    dataset = eval_dataset(cfg, data_root)
    result = evaluate_model(model, dataset, info.device, ("miou", "rayiou"), progress=True, grid=cfg.model.grid)
    pictures = render_pictures(model, dataset, info.device, out)
    curve = _loss_curve(out / "train" / "metrics.jsonl")
    report = {
        "preset": cfg.model.name, "mIoU": result["mIoU"], "RayIoU": result["RayIoU"],
        **{k: v for k, v in result.items() if k.startswith("RayIoU@")},
        "train_minutes": summary["train_minutes"], "samples_seen": summary["samples_seen"], "steps": summary["steps"],
        "val_samples": result["num_samples"], "mIoU_per_class": result["mIoU_per_class"],
        "loss_curve": curve, "pictures": pictures, "data": str(data_root), "checkpoint": summary["checkpoint"],
        "synthetic_set": written_config(data_root),  # what the marker says was generated (DEMO_SYNTH by default)
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
