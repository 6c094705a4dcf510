"""RayPQ: panoptic quality over ray first hits.

Upstream: SparseOcc@af4d9df loaders/ray_pq.py, Metric_RayPQ (copied as FlashOCC@4084861
projects/mmdet3d_plugin/core/evaluation/ray_pq.py); docs/official-behaviour.md#rayiou-and-raypq-scoring.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from flashocc.grid import OCC3D_NUSCENES, OccGrid
from flashocc.metrics.common import MergeableState, as_label_volume, as_origins, nanmean
from flashocc.metrics.rayiou import THRESHOLDS, RayCaster, RayHits, threshold_name

# Classes whose GT instances stay separate segments; every other class is one segment per sample.
THING_CLASSES: tuple[str, ...] = ("car", "truck", "construction_vehicle", "bus", "trailer", "motorcycle",
                                  "bicycle", "pedestrian")
MIN_SEGMENT_RAYS = 10          # unmatched segments smaller than this are neither FP nor FN
_ID_OFFSET = 2 ** 16           # pair encoding pred + offset * gt, as the official code


class RayPQ(MergeableState):
    """Panoptic quality of ray hits: per class and threshold, segments are sets of rays.

    ``update(pred, gt, pred_instances, gt_instances, origins)``: semantic (X, Y, Z) label volumes,
    integer instance-id volumes of the same shape (GT: Occ3D-panoptic ``instances``), and (K, 3)
    origins in metres (ego frame). A pred/GT segment pair is a TP when its IoU > 0.5, counting only
    rays with matching class and depth error < t. RayPQ is the NaN-mean of PQ = SQ * RQ over
    classes 0..16 and thresholds (0..1). Totals merge across processes (``flashocc.metrics.common``).
    """

    def __init__(self, grid: OccGrid = OCC3D_NUSCENES, thresholds: Sequence[float] = THRESHOLDS,
                 backend: str = "auto", device: str | torch.device | None = None) -> None:
        self.grid = grid
        self.thresholds = tuple(float(t) for t in thresholds)
        self.caster = RayCaster(grid, backend, device)
        self._things = {grid.class_names.index(n) for n in THING_CLASSES if n in grid.class_names}
        shape = (len(self.thresholds), grid.num_classes)
        self._totals = {"tp": np.zeros(shape, dtype=np.int64), "fp": np.zeros(shape, dtype=np.int64),
                        "fn": np.zeros(shape, dtype=np.int64), "iou_sum": np.zeros(shape, dtype=np.float64),
                        "num_samples": np.zeros((), dtype=np.int64)}

    def update(self, pred: Any, gt: Any, pred_instances: Any, gt_instances: Any, origins: Any) -> None:
        pred = as_label_volume(pred, "pred", self.grid)
        gt = as_label_volume(gt, "gt", self.grid)
        pred_inst = as_instance_volume(pred_instances, "pred_instances", gt.shape)
        gt_inst = as_instance_volume(gt_instances, "gt_instances", gt.shape)
        hits = self.caster.hits(pred, gt, as_origins(origins))
        self.update_hits(hits, pred_inst.reshape(-1)[hits.pred_index], gt_inst.reshape(-1)[hits.gt_index])

    def update_hits(self, hits: RayHits, pred_inst: np.ndarray, gt_inst: np.ndarray) -> None:
        """Add cast rays with the instance ids read at each hit voxel."""
        gt_sem, pred_sem = hits.gt_label, hits.pred_label
        gt_seg = self._gt_segments(gt_sem, gt_inst.astype(np.int64)) + 1      # +1: 0 stays void
        pred_seg = pred_inst.astype(np.int64) + 1
        l1 = np.abs(hits.pred_dist - hits.gt_dist)
        for j, t in enumerate(self.thresholds):
            close = l1 < t
            for c in self.grid.semantic_classes:
                self._add_class(j, c, np.where(pred_sem == c, pred_seg, 0), np.where(gt_sem == c, gt_seg, 0), close)
        self._totals["num_samples"] += 1

    def _gt_segments(self, sem: np.ndarray, inst: np.ndarray) -> np.ndarray:
        """Official re-labelling of GT ids over the sample's rays (``Metric_RayPQ``).

        An instance's class is its rays' unique GT class (free if not unique). Thing classes keep one
        segment per instance, every other class present becomes one segment. Rays left unassigned
        (a thing class hit on instance 0 or on a mixed instance) keep segment 0, which becomes a
        segment of its own after the +1 shift: kept as the official code does.
        """
        free = self.grid.free_label
        inst_class = [free]
        for i in range(1, int(inst.max(initial=0)) + 1):
            classes = np.unique(sem[inst == i])
            inst_class.append(int(classes[0]) if classes.size == 1 else free)
        out = np.zeros_like(inst)
        count = 1
        for c in self.grid.semantic_classes:
            if not (sem == c).any():
                continue
            if c in self._things:
                for i, ic in enumerate(inst_class):
                    if ic == c:
                        out[inst == i] = count
                        count += 1
            else:
                out[sem == c] = count
                count += 1
        return out

    def _add_class(self, j: int, c: int, pred_ids: np.ndarray, gt_ids: np.ndarray, close: np.ndarray) -> None:
        ids_pred, area_pred = np.unique(pred_ids[pred_ids > 0], return_counts=True)
        ids_gt, area_gt = np.unique(gt_ids[gt_ids > 0], return_counts=True)
        both = (pred_ids > 0) & (gt_ids > 0) & close
        pairs, inter = np.unique(pred_ids[both] + _ID_OFFSET * gt_ids[both], return_counts=True)
        gi = np.searchsorted(ids_gt, pairs // _ID_OFFSET)
        pi = np.searchsorted(ids_pred, pairs % _ID_OFFSET)
        iou = inter / (area_gt[gi] + area_pred[pi] - inter).astype(np.float64)
        tp = iou > 0.5
        matched_gt = np.zeros(ids_gt.size, dtype=bool)
        matched_pred = np.zeros(ids_pred.size, dtype=bool)
        matched_gt[gi[tp]] = True
        matched_pred[pi[tp]] = True
        self._totals["tp"][j, c] += int(tp.sum())
        self._totals["iou_sum"][j, c] += float(iou[tp].sum())
        self._totals["fn"][j, c] += int(((area_gt >= MIN_SEGMENT_RAYS) & ~matched_gt).sum())
        self._totals["fp"][j, c] += int(((area_pred >= MIN_SEGMENT_RAYS) & ~matched_pred).sum())

    def compute(self) -> dict[str, Any]:
        """{"RayPQ", "RayPQ@1", "RayPQ@2", "RayPQ@4" (0..1), "per_class": {name: {"RayPQ@t": PQ}}}."""
        tp, fp, fn = (self._totals[k].astype(np.float64) for k in ("tp", "fp", "fn"))
        eps = 1e-5     # official denominators use max(., 1e-5)
        sq = self._totals["iou_sum"] / np.maximum(tp, eps)
        rq = tp / np.maximum(tp + 0.5 * fp + 0.5 * fn, eps)
        pq = sq * rq
        pq[(tp + fp + fn) == 0] = np.nan
        scored = list(self.grid.semantic_classes)
        pq = pq[:, scored]
        names = [threshold_name("RayPQ", t) for t in self.thresholds]
        out: dict[str, Any] = {"RayPQ": nanmean(pq)}
        out.update({name: nanmean(row) for name, row in zip(names, pq)})
        out["per_class"] = {self.grid.class_names[c]: {name: float(pq[j, i]) for j, name in enumerate(names)}
                            for i, c in enumerate(scored)}
        out["num_samples"] = int(self._totals["num_samples"])
        return out


def as_instance_volume(volume: Any, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """Check an instance-id volume: integer dtype, ``shape``, ids 0..65534 (the pair encoding's range)."""
    if isinstance(volume, torch.Tensor):
        volume = volume.detach().cpu().numpy()
    if not isinstance(volume, np.ndarray) or volume.shape != shape:
        got = volume.shape if isinstance(volume, np.ndarray) else type(volume).__name__
        raise ValueError(f"{name}: expected an integer instance-id array of shape {shape}, got {got}")
    if volume.dtype == np.bool_ or not np.issubdtype(volume.dtype, np.integer):
        raise ValueError(f"{name}: expected an integer instance-id dtype, got {volume.dtype}")
    if volume.size and (volume.min() < 0 or volume.max() >= _ID_OFFSET - 1):
        raise ValueError(f"{name}: instance ids must be 0..{_ID_OFFSET - 2}, got {volume.min()}..{volume.max()}")
    return volume
