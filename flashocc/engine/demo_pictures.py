"""The demo's pictures: prediction vs ground truth, the six cameras with the prediction projected onto
them, and a GIF of the drive (BEV prediction beside the ground truth, frame by frame).

The predictions come from the scoring pass (``PredictionRecorder`` is evaluate_model's ``on_batch``),
so the model runs once per frame for scores and pictures together (``score_and_draw``, used by both
demo paths).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from flashocc.grid import OCC3D_NUSCENES, OccGrid


@dataclass(frozen=True)
class FramePrediction:
    token: str
    labels: np.ndarray       # (Dx, Dy, Dz) uint8 predicted classes
    gt: np.ndarray           # (Dx, Dy, Dz) ground-truth classes
    mask: np.ndarray | None  # (Dx, Dy, Dz) camera-visibility mask of the ground truth


class PredictionRecorder:
    """Keeps every scored frame (a 200x200x16 frame is 0.6 MB per volume; the demo scores a few dozen)."""

    def __init__(self) -> None:
        self.frames: dict[str, FramePrediction] = {}

    def __call__(self, batch: dict, labels: np.ndarray) -> None:
        for i, token in enumerate(batch["tokens"]):
            mask = batch["mask_camera"][i].numpy().astype(bool) if "mask_camera" in batch else None
            self.frames[token] = FramePrediction(token, labels[i].astype(np.uint8),
                                                 batch["voxel_semantics"][i].numpy(), mask)


def drive_order(samples, frames: dict[str, FramePrediction]) -> list[FramePrediction]:
    """The recorded frames of the first scene, in time order: one continuous drive for the GIF."""
    recorded = [s for s in samples if s.token in frames]
    if not recorded:
        return []
    scene = recorded[0].scene_name
    return [frames[s.token] for s in sorted(recorded, key=lambda s: s.timestamp) if s.scene_name == scene]


def drive_frame(frame: FramePrediction, index: int, grid: OccGrid = OCC3D_NUSCENES, scale: int = 2):
    """One GIF frame: BEV prediction | BEV ground truth, both under the camera mask as mIoU scores them."""
    from flashocc.viz import render_bev
    from flashocc.viz.common import draw_title, tile

    pred = render_bev(frame.labels, grid, scale, frame.mask)
    gt = render_bev(frame.gt, grid, scale, frame.mask)
    draw_title(pred, f"prediction, frame {index}", size=12)
    draw_title(gt, "ground truth", size=12)
    return tile([pred, gt], columns=2)


def render_demo_pictures(frames: dict[str, FramePrediction], samples, infos_path: Path, data_root: Path,
                         out: Path, count: int = 2, grid: OccGrid = OCC3D_NUSCENES, progress: bool = True,
                         gif: bool = True) -> list[str]:
    """Write the pictures of the first ``count`` frames of ``samples`` (the evaluated infos, in order)
    and, with ``gif``, ``drive.gif``; returns the written paths."""
    from flashocc.viz import render_comparison, save_image, save_sequence_gif
    from flashocc.viz.camera_points import render_camera_points
    from flashocc.viz.run import load_camera_sets

    chosen = [frames[s.token] for s in samples if s.token in frames][:count]
    drive = drive_order(samples, frames) if gif else []
    cameras = load_camera_sets(infos_path, data_root) if chosen else {}
    steps = 2 * len(chosen) + (1 if drive else 0)
    bar = _bar(steps, progress)
    written = []
    try:
        for i, frame in enumerate(chosen):
            image = render_comparison(frame.labels, frame.gt, frame.mask, grid=grid)
            written.append(str(save_image(image, out / f"pred_vs_gt_{i}_{frame.token}.png")))
            bar.update(1)
            cams = cameras[frame.token]
            # Unmasked: the cameras show what the model predicts everywhere it looks, not only where
            # the ground truth is visible.
            image = render_camera_points(cams.images, cams.cams, frame.labels, grid=grid, names=cams.names)
            written.append(str(save_image(image, out / f"cameras_{i}_{frame.token}.png")))
            bar.update(1)
        if drive:
            pictures = [drive_frame(f, i, grid) for i, f in enumerate(drive)]
            written.append(str(save_sequence_gif(pictures, out / "drive.gif", fps=2.0)))
            bar.update(1)
    finally:
        bar.close()
    return written


def _bar(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="picture", desc="pictures", disable=not enabled)


def score_and_draw(model: torch.nn.Module, cfg, data_root: Path, device: torch.device,
                   out: Path) -> tuple[dict, list[str], dict[str, float]]:
    """mIoU and RayIoU of ``model`` on ``data_root``'s held-out infos and the pictures of the same
    predictions; returns (scores, picture paths, seconds of "inference_scoring" and "pictures")."""
    from flashocc.engine.evaluate import eval_dataset, eval_infos_path, evaluate_model

    dataset = eval_dataset(cfg, data_root)
    recorder = PredictionRecorder()
    started = time.perf_counter()
    result = evaluate_model(model, dataset, device, ("miou", "rayiou"), progress=True, grid=cfg.model.grid,
                            on_batch=recorder)
    seconds = {"inference_scoring": time.perf_counter() - started}
    started = time.perf_counter()
    pictures = render_demo_pictures(recorder.frames, dataset.samples, eval_infos_path(cfg, data_root), data_root,
                                    out, grid=cfg.model.grid)
    seconds["pictures"] = time.perf_counter() - started
    return result, pictures, seconds
