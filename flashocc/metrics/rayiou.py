"""RayIoU: semantic first-hit IoU along LiDAR-like rays.

Upstream: SparseOcc@af4d9df loaders/ray_metrics.py (copied as FlashOCC@4084861
projects/mmdet3d_plugin/core/evaluation/ray_metrics.py); see
docs/official-behaviour.md#rayiou-and-raypq-scoring.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from flashocc.grid import OCC3D_NUSCENES, OccGrid
from flashocc.metrics.common import MergeableState, as_label_volume, as_origins, nanmean, safe_divide
from flashocc.metrics._ray_threads import ray_threads
from flashocc.metrics._raycast_limits import MAX_STEP
from flashocc.metrics.ray_cache import GroundTruthRays, GTRayCache, ray_set_fingerprint
from flashocc.metrics.raycast import (_numba_kernels, cast_metric_rays, lidar_ray_directions, pack_occupancy,
                                      resolve_backend)

THRESHOLDS: tuple[float, ...] = (1.0, 2.0, 4.0)   # metres


def threshold_name(prefix: str, t: float) -> str:
    return f"{prefix}@{t:g}"


@dataclass
class RayHits:
    """First hits of the rays of one sample whose ground truth is not free (M rays).

    Labels are the volume values at the hit voxel, ``*_index`` the flat C-order voxel index (to read
    instance ids), ``*_dist`` the exit distance in metres as float32 (the official dtype).
    """

    gt_label: np.ndarray
    pred_label: np.ndarray
    gt_dist: np.ndarray
    pred_dist: np.ndarray
    gt_index: np.ndarray
    pred_index: np.ndarray


class RayCaster:
    """Casts the official 14,040 rays per origin through a GT and a predicted volume.

    ``backend``: "auto" (numba when installed, else torch), "numba" or "torch"; ``device``: a torch
    device for the torch backend (e.g. "cuda"); ``threads``: of the numba backend (None:
    ``$FLASHOCC_RAY_THREADS``, else the cores available; the hits never depend on it).
    """

    def __init__(self, grid: OccGrid = OCC3D_NUSCENES, backend: str = "auto",
                 device: str | torch.device | None = None, threads: int | None = None) -> None:
        if len(set(grid.voxel_size)) != 1:
            raise ValueError(f"RayIoU needs isotropic voxels (distances are voxel steps x size), got {grid.voxel_size}")
        self.grid = grid
        self.device = torch.device(device) if device is not None else None
        if self.device is not None and self.device.type != "cpu":
            backend = "torch" if backend == "auto" else backend
            if backend != "torch":
                raise ValueError(f"device {self.device} needs backend='torch', got {backend!r}")
        self.backend = resolve_backend(backend)
        self.threads = None if threads is None else ray_threads(threads)   # checked now, not at the first cast
        self.directions = lidar_ray_directions()

    def cast(self, volumes: list[np.ndarray], origins: np.ndarray,
             rays: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """First hits of validated (X, Y, Z) ``volumes`` along the rays of (K, 3) ``origins`` (metres, ego
        frame): flat voxel index (V, M) int64 and distance in metres (V, M) float32, for the flat ray ids
        ``rays`` (k * 14040 + r; default all K * 14040)."""
        index, dist = self.cast_voxels(volumes, origins, rays)
        # Official quirk (FlashOCC@4084861 lib/dvr/dvr.cu, render_forward, and ray_metrics.py,
        # process_one_sample): the float64 distance is stored as float32 and then scaled by the voxel size in
        # float32; TP tests compare these float32 values.
        return index, dist.astype(np.float32) * np.float32(self.grid.voxel_size[0])

    def cast_voxels(self, volumes: list[np.ndarray], origins: np.ndarray,
                    rays: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """As ``cast``, with the raw float64 distances in voxel units."""
        if self.backend == "numba" and len(volumes) <= 2:
            kernels = _numba_kernels()
            codes = np.empty(volumes[0].shape, dtype=np.uint8)
            second = volumes[1].reshape(-1) if len(volumes) == 2 else np.empty(0, dtype=volumes[0].dtype)
            kernels.pack_kernel(volumes[0].reshape(-1), second, self.grid.free_label, codes.reshape(-1))
        else:
            codes = pack_occupancy(volumes, self.grid.free_label)
        if self.device is not None and self.device.type != "cpu":
            codes = torch.as_tensor(codes, device=self.device)
        return cast_metric_rays(codes, len(volumes), origins, self.directions, self.grid, rays, self.backend,
                                self.threads)

    def hits(self, pred: np.ndarray, gt: np.ndarray, origins: np.ndarray) -> RayHits:
        """Validated (X, Y, Z) volumes and (K, 3) origins (metres, ego frame) -> hits of non-free GT rays."""
        index, dist = self.cast([gt, pred], origins)
        gt_label = gt.reshape(-1)[index[0]]
        pred_label = pred.reshape(-1)[index[1]]
        # Rays whose GT hits nothing (free) are not scored (ray_metrics.py, main: valid_mask).
        keep = gt_label != self.grid.free_label
        return RayHits(gt_label[keep].astype(np.int64), pred_label[keep].astype(np.int64),
                       dist[0][keep], dist[1][keep], index[0][keep], index[1][keep])


class RayIoU(MergeableState):
    """RayIoU over a split: global per-class ray counts, IoU per threshold, mean over classes 0..16.

    ``update(pred, gt, origins)``: uint8 (X, Y, Z) label volumes indexed [x, y, z] (no camera mask:
    the official metric uses full volumes) and (K, 3) float64 ray origins in metres in the sample's
    ego frame (``flashocc.metrics.origins`` derives them from info records). A GT ray counts for
    its class; a predicted ray for its predicted class; a true positive needs the same class and
    ``|d_pred - d_gt| < t`` for t in ``thresholds``. Values are 0..1 (tables print x100).

    ``cache``: a ``GTRayCache`` (or its folder) keeps each sample's ground-truth cast on disk, so that
    scoring another prediction of the same samples casts only the prediction, and only along the rays
    that are scored; the scores are identical with and without it (``flashocc.metrics.ray_cache``).

    ``threads``: ray-casting threads (numba backend; default ``$FLASHOCC_RAY_THREADS``, else the
    cores available); the totals are the same for every count.

    Totals merge across processes: see ``flashocc.metrics.common``.
    """

    def __init__(self, grid: OccGrid = OCC3D_NUSCENES, thresholds: Sequence[float] = THRESHOLDS,
                 backend: str = "auto", device: str | torch.device | None = None,
                 cache: GTRayCache | str | os.PathLike | None = None, threads: int | None = None) -> None:
        self.grid = grid
        self.thresholds = tuple(float(t) for t in thresholds)
        self.caster = RayCaster(grid, backend, device, threads)
        self.cache = cache if cache is None or isinstance(cache, GTRayCache) else GTRayCache(cache)
        self._ray_set = ray_set_fingerprint(self.caster.directions, grid.shape, grid.lower, grid.voxel_size,
                                            grid.free_label, MAX_STEP)
        c = grid.num_classes
        self._totals = {
            "gt_count": np.zeros(c, dtype=np.int64),
            "pred_count": np.zeros(c, dtype=np.int64),
            "tp": np.zeros((len(self.thresholds), c), dtype=np.int64),
            "num_samples": np.zeros((), dtype=np.int64),
        }

    def update(self, pred: Any, gt: Any, origins: Any) -> None:
        pred = as_label_volume(pred, "pred", self.grid)
        gt = as_label_volume(gt, "gt", self.grid)
        origins = as_origins(origins)
        rays = len(origins) * len(self.caster.directions)
        key = self.cache.key(gt, origins, self._ray_set) if self.cache is not None else None
        known = self.cache.get(key, rays, self.grid.free_label) if key is not None else None
        if self.caster.backend == "numba":
            self._update_numba(pred, gt, origins, key, known)
            return
        if known is None:
            index, dist = self.caster.cast([gt, pred], origins)
            gt_label = gt.reshape(-1)[index[0]]
            # Rays whose GT hits nothing (free) are not scored (ray_metrics.py, main: valid_mask).
            keep = gt_label != self.grid.free_label
            known = GroundTruthRays(keep, gt_label[keep].astype(np.uint8), dist[0][keep])
            pred_label, pred_dist = pred.reshape(-1)[index[1][keep]], dist[1][keep]
            if key is not None:
                self.cache.put(key, known)
        else:
            # The prediction alone walks each ray exactly as the shared walk did, so its hits are the same.
            index, dist = self.caster.cast([pred], origins, np.flatnonzero(known.hit))
            pred_label, pred_dist = pred.reshape(-1)[index[0]], dist[0]
        self._add(known.label, pred_label, known.dist, pred_dist)

    def _update_numba(self, pred: np.ndarray, gt: np.ndarray, origins: np.ndarray, key: str | None,
                      known: GroundTruthRays | None) -> None:
        """``update`` with the bookkeeping compiled too: the same counts as ``_add`` (tests compare them)."""
        kernels = _numba_kernels()
        voxel = np.float32(self.grid.voxel_size[0])
        pred_flat = pred.reshape(-1)
        if known is None:
            index, dist = self.caster.cast_voxels([gt, pred], origins)
            known = GroundTruthRays(*kernels.scored_rays(gt.reshape(-1), index[0], dist[0], voxel,
                                                         self.grid.free_label))
            if key is not None:
                self.cache.put(key, known)
            pred_index, pred_dist, hit = index[1], dist[1], known.hit
        else:
            index, dist = self.caster.cast_voxels([pred], origins, np.flatnonzero(known.hit))
            pred_index, pred_dist, hit = index[0], dist[0], np.empty(0, dtype=np.bool_)
        t = self._totals
        kernels.add_counts(known.label, known.dist, pred_flat, pred_index, pred_dist, hit, voxel,
                           np.asarray(self.thresholds, dtype=np.float32), t["gt_count"], t["pred_count"], t["tp"])
        t["num_samples"] += 1

    def update_hits(self, hits: RayHits) -> None:
        """Add already-cast rays (lets RayIoU and RayPQ share one cast)."""
        self._add(hits.gt_label, hits.pred_label, hits.gt_dist, hits.pred_dist)

    def _add(self, gt_label: np.ndarray, pred_label: np.ndarray, gt_dist: np.ndarray, pred_dist: np.ndarray) -> None:
        c = self.grid.num_classes
        self._totals["gt_count"] += np.bincount(gt_label, minlength=c)
        self._totals["pred_count"] += np.bincount(pred_label, minlength=c)
        same = gt_label == pred_label
        l1 = np.abs(pred_dist - gt_dist)
        for j, t in enumerate(self.thresholds):
            self._totals["tp"][j] += np.bincount(gt_label[same & (l1 < t)], minlength=c)
        self._totals["num_samples"] += 1

    def compute(self) -> dict[str, Any]:
        """{"RayIoU", "RayIoU@1", "RayIoU@2", "RayIoU@4" (0..1), "per_class": {name: {"RayIoU@t": IoU}}}."""
        gt, pred, tp = (self._totals[k].astype(np.float64) for k in ("gt_count", "pred_count", "tp"))
        scored = list(self.grid.semantic_classes)
        iou = safe_divide(tp, gt[None] + pred[None] - tp)[:, scored]           # (T, 17)
        names = [threshold_name("RayIoU", t) for t in self.thresholds]
        out: dict[str, Any] = {"RayIoU": nanmean(iou)}
        out.update({name: nanmean(row) for name, row in zip(names, iou)})
        out["per_class"] = {self.grid.class_names[c]: {name: float(iou[j, i]) for j, name in enumerate(names)}
                            for i, c in enumerate(scored)}
        out["num_samples"] = int(self._totals["num_samples"])
        return out
