"""Score a directory of dumped predictions against an Occ3D ``gts/`` tree (``flashocc evaluate``).

Prediction layouts, all keyed by the nuScenes sample token:

* ours: ``<scene>/<token>/labels.npz`` with key ``semantics`` (written by ``flashocc predict``);
* the official ``show_dir``: ``<scene>/<token>/pred.npz`` with key ``pred``;
* flat: ``<token>.npz`` with key ``semantics``, ``pred`` or ``arr_0`` (challenge submission).

Ground truth: ``<gt_dir>/<scene>/<token>/labels.npz`` with ``semantics``, ``mask_camera``,
``mask_lidar`` (metrics_and_data.md §1.1). RayIoU origins come from the info file's poses.
"""
from __future__ import annotations

import json
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from flashocc.atomic import atomic_write
from flashocc.grid import OCC3D_NUSCENES, OccGrid
from flashocc.metrics.common import as_label_volume, as_mask
from flashocc.metrics.fscore import OccFScore
from flashocc.metrics.miou import OccMIoU
from flashocc.metrics.rayiou import RayIoU

METRICS: tuple[str, ...] = ("miou", "rayiou", "fscore")
MASKS: tuple[str, ...] = ("camera", "lidar", "none")
_PRED_KEYS: tuple[str, ...] = ("semantics", "pred", "arr_0")


@dataclass(frozen=True)
class EvalConfig:
    metrics: tuple[str, ...] = ("miou",)
    mask: str = "camera"               # voxel mask for mIoU / F-score (official: camera); RayIoU uses none
    backend: str = "auto"              # ray caster: auto | numba | torch
    workers: int = 2                   # threads reading .npz files ahead of the scoring loop

    def __post_init__(self) -> None:
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown or not self.metrics:
            raise ValueError(f"unknown metric(s) {unknown or '(none)'}; choose from {', '.join(METRICS)}")
        if self.mask not in MASKS:
            raise ValueError(f"mask must be one of {', '.join(MASKS)}, got {self.mask!r}")


def index_ground_truth(gt_dir: str | os.PathLike) -> dict[str, Path]:
    """{token: labels.npz} for an Occ3D ``gts/`` tree (``gt_dir`` or ``gt_dir/gts``)."""
    root = Path(gt_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"ground-truth folder not found: {root}")
    if (root / "gts").is_dir():
        root = root / "gts"
    found = {p.parent.name: p for p in root.glob("*/*/labels.npz")}
    if not found:
        raise FileNotFoundError(f"no <scene>/<token>/labels.npz under {root}; expected an Occ3D gts/ tree")
    return found


def index_predictions(pred_dir: str | os.PathLike) -> dict[str, Path]:
    """{token: .npz} for any of the three prediction layouts (see the module docstring)."""
    root = Path(pred_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"prediction folder not found: {root}")
    found: dict[str, Path] = {}
    candidates = [(p.parent.name, p) for p in root.glob("*/*/labels.npz")]
    candidates += [(p.parent.name, p) for p in root.glob("*/*/pred.npz")]
    candidates += [(p.stem, p) for p in root.glob("*.npz")]
    for token, path in sorted(candidates, key=lambda x: str(x[1])):
        if token in found:
            raise ValueError(f"two predictions for sample {token}: {found[token]} and {path}")
        found[token] = path
    if not found:
        raise FileNotFoundError(f"no predictions under {root}: expected <scene>/<token>/labels.npz, "
                                f"<scene>/<token>/pred.npz or <token>.npz")
    return found


def load_prediction(path: Path, grid: OccGrid = OCC3D_NUSCENES) -> np.ndarray:
    with np.load(path) as z:
        key = next((k for k in _PRED_KEYS if k in z.files), None)
        if key is None:
            raise ValueError(f"{path}: no prediction array; expected one of keys {list(_PRED_KEYS)}, found {z.files}")
        return as_label_volume(z[key], f"{path} [{key}]", grid)


def load_ground_truth(path: Path, grid: OccGrid = OCC3D_NUSCENES) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        missing = [k for k in ("semantics", "mask_camera", "mask_lidar") if k not in z.files]
        if missing:
            raise ValueError(f"{path}: missing keys {missing}; Occ3D labels.npz holds semantics, mask_lidar, "
                             f"mask_camera")
        sem = as_label_volume(z["semantics"], f"{path} [semantics]", grid)
        return {"semantics": sem,
                "mask_camera": as_mask(z["mask_camera"], f"{path} [mask_camera]", sem.shape),
                "mask_lidar": as_mask(z["mask_lidar"], f"{path} [mask_lidar]", sem.shape)}


def evaluate_dirs(pred_dir: str | os.PathLike, gt_dir: str | os.PathLike, infos: Sequence[Any] | None = None,
                  config: EvalConfig = EvalConfig(), grid: OccGrid = OCC3D_NUSCENES,
                  on_sample: Callable[[], None] | None = None) -> dict[str, Any]:
    """Score every prediction in ``pred_dir``; ``infos`` (SampleInfo list of the split) gives RayIoU origins.

    Returns a JSON-able dict: ``num_samples``, ``mask``, and per metric its headline values
    (``mIoU`` 0..100, ``RayIoU``/``RayIoU@t`` 0..1, ``F-score`` 0..1) plus ``*_per_class`` tables.
    """
    preds = index_predictions(pred_dir)
    gts = index_ground_truth(gt_dir)
    tokens = sorted(preds)
    missing = [t for t in tokens if t not in gts]
    if missing:
        raise FileNotFoundError(f"no ground truth in {gt_dir} for {len(missing)} predicted sample(s), e.g. "
                                f"token {missing[0]} ({preds[missing[0]]}); expected <scene>/{missing[0]}/labels.npz")
    origins: dict[str, np.ndarray] = {}
    if "rayiou" in config.metrics:
        if infos is None:
            raise ValueError("RayIoU needs the split's info file for its ray origins: pass --infos FILE")
        from flashocc.metrics.origins import ray_origins_from_infos

        origins = ray_origins_from_infos(infos)
        absent = [t for t in tokens if t not in origins]
        if absent:
            raise KeyError(f"{len(absent)} predicted sample(s) are not in the info file, e.g. {absent[0]} "
                           f"({preds[absent[0]]}); RayIoU origins need every sample's poses")

    miou = OccMIoU(grid) if "miou" in config.metrics else None
    rayiou = RayIoU(grid, backend=config.backend) if "rayiou" in config.metrics else None
    fscore = OccFScore(grid) if "fscore" in config.metrics else None
    mask_key = {"camera": "mask_camera", "lidar": "mask_lidar", "none": None}[config.mask]

    def load(token: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        return load_prediction(preds[token], grid), load_ground_truth(gts[token], grid)

    for token, (pred, gt) in zip(tokens, _prefetch(load, tokens, config.workers)):
        mask = gt[mask_key] if mask_key else None
        if miou is not None:
            miou.update(pred, gt["semantics"], mask)
        if rayiou is not None:
            rayiou.update(pred, gt["semantics"], origins[token])
        if fscore is not None:
            fscore.update(pred, gt["semantics"], mask)
        if on_sample is not None:
            on_sample()

    result: dict[str, Any] = {"num_samples": len(tokens), "mask": config.mask}
    if miou is not None:
        r = miou.compute()
        result.update({"mIoU": r["mIoU"], "mIoU_per_class": r["per_class"]})
    if rayiou is not None:
        r = rayiou.compute()
        result.update({k: v for k, v in r.items() if k.startswith("RayIoU")})
        result["RayIoU_per_class"] = r["per_class"]
    if fscore is not None:
        r = fscore.compute()
        result.update({"F-score": r["F-score"], "accuracy": r["accuracy"], "completeness": r["completeness"]})
    return result


def _prefetch(load: Callable[[str], Any], tokens: list[str], workers: int):
    """Yield ``load(token)`` in order, reading at most ``2 * workers`` files ahead (zlib releases the GIL)."""
    if workers <= 0:
        yield from (load(t) for t in tokens)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque = deque()
        it = iter(tokens)
        for token in it:
            pending.append(pool.submit(load, token))
            if len(pending) >= 2 * workers:
                break
        while pending:
            result = pending.popleft().result()
            nxt = next(it, None)
            if nxt is not None:
                pending.append(pool.submit(load, nxt))
            yield result


def format_report(result: dict[str, Any]) -> str:
    """Per-class tables in the layout of the official tools (flashocc.md §5.1-5.2)."""
    lines: list[str] = []
    n = result["num_samples"]
    if "mIoU" in result:
        lines.append(f"===> per class IoU of {n} samples (mask: {result['mask']}):")
        for name, iou in result["mIoU_per_class"].items():
            lines.append(f"===> {name} - IoU = {round(iou, 2)}")
        lines.append(f"===> mIoU of {n} samples: {round(result['mIoU'], 2)}")
    if "RayIoU" in result:
        cols = [k for k in result if k.startswith("RayIoU@")]
        width = max(len(k) for k in result["RayIoU_per_class"]) + 2
        header = f"{'Class Names':<{width}}" + "".join(f"{c:>10}" for c in cols)
        rule = "-" * len(header)
        lines += ["", rule, header, rule]
        for name, row in result["RayIoU_per_class"].items():
            lines.append(f"{name:<{width}}" + "".join(f"{row[c]:>10.3f}" for c in cols))
        lines += [rule, f"{'MEAN':<{width}}" + "".join(f"{result[c]:>10.3f}" for c in cols), rule,
                  f"RayIoU of {n} samples: {result['RayIoU']:.4f}"]
    if "F-score" in result:
        lines.append(f"F-score of {n} samples: {result['F-score']:.4f} (accuracy {result['accuracy']:.4f}, "
                     f"completeness {result['completeness']:.4f})")
    return "\n".join(lines)


def write_json(result: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write the result atomically (NaN becomes null)."""
    path = Path(path)

    def clean(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, float) and x != x:
            return None
        return x

    with atomic_write(path, "w") as f:
        json.dump(clean(result), f, indent=2)
    return path
