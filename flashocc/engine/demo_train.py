"""``flashocc demo --train``: train a preset from scratch on the demo's synthetic set for a time budget,
then score it on the set's held-out scenes and draw the pictures.

demo.py prepares the data (and the run-folder checks) and calls ``train_demo``; this module never
imports demo.py.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from flashocc.config import load_run_config
from flashocc.data.synth.marker import written_config
from flashocc.engine.demo_pictures import score_and_draw
from flashocc.engine.distributed import setup_distributed
from flashocc.engine.evaluate import load_model_for_inference
from flashocc.engine.train import train
from flashocc.metrics.evaluate import write_json

DEFAULT_MINUTES = 15.0


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


def train_demo(out: Path, data_root: Path, preset: str, minutes: float = DEFAULT_MINUTES, device: str = "auto",
               overrides: list[str] | tuple[str, ...] = (), overwrite: bool = False,
               timing: dict[str, float] | None = None) -> dict:
    """Train ``preset`` on ``data_root`` for ``minutes`` into ``out/train``, score the held-out scenes,
    write the pictures and ``out/report.json``; ``timing`` holds the seconds of earlier stages."""
    timing = dict(timing or {})
    started = time.perf_counter()
    weights = balanced_class_weights(data_root)
    cfg = load_run_config(preset, [f"model.class_weights={list(weights)}", f"train.max_minutes={minutes}", *overrides])
    summary = train(cfg, data_root, out / "train", device=device, overwrite=overwrite)
    timing["train"] = time.perf_counter() - started
    info = setup_distributed(device)
    model = load_model_for_inference(cfg, out / "train" / "last.pt", info.device, use_ema=cfg.train.ema)
    result, pictures, seconds = score_and_draw(model, cfg, data_root, info.device, out)
    timing.update(seconds)
    report = {
        "mode": "train", "preset": cfg.model.name, "mIoU": result["mIoU"], "RayIoU": result["RayIoU"],
        **{k: v for k, v in result.items() if k.startswith("RayIoU@")},
        "train_minutes": summary["train_minutes"], "samples_seen": summary["samples_seen"], "steps": summary["steps"],
        "val_samples": result["num_samples"], "mIoU_per_class": result["mIoU_per_class"],
        "loss_curve": loss_curve(out / "train" / "metrics.jsonl"), "pictures": pictures, "data": str(data_root),
        "checkpoint": summary["checkpoint"],
        "synthetic_set": written_config(data_root),  # what the marker says was generated
        "timing_s": {k: round(v, 2) for k, v in timing.items()},
        "total_minutes": sum(timing.values()) / 60,
    }
    report["summary"] = (
        f"flashocc demo --train: {cfg.model.name} trained {summary['train_minutes']:.1f} min ({summary['steps']} "
        f"steps, {summary['samples_seen']} samples) on synthetic scenes; held-out val ({result['num_samples']} "
        f"frames): mIoU {result['mIoU']:.2f}, RayIoU {result['RayIoU']:.3f}. Report: {out / 'report.json'}; "
        f"pictures: {', '.join(Path(p).name for p in pictures)}"
    )
    write_json(report, out / "report.json")
    return report


def loss_curve(path: Path, points: int = 20) -> list[dict]:
    """At most ``points`` evenly spaced rows (step, seconds, loss) of the run's metrics.jsonl."""
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not rows:
        return []
    keep = np.unique(np.linspace(0, len(rows) - 1, min(points, len(rows))).round().astype(int))
    return [{k: rows[i][k] for k in ("step", "train_seconds", "loss") if k in rows[i]} for i in keep]
