"""Occ3D voxel mIoU: one dataset-level confusion matrix.

Upstream: FlashOCC@4084861 projects/mmdet3d_plugin/core/evaluation/occ_metrics.py, Metric_mIoU; see
docs/official-behaviour.md#miou-with-the-camera-mask.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from flashocc.grid import OCC3D_NUSCENES, OccGrid
from flashocc.metrics.common import MergeableState, as_label_volume, as_mask, nanmean, safe_divide


class OccMIoU(MergeableState):
    """Voxel mIoU over a whole split.

    ``update(pred, gt, mask)`` adds one sample (or a batch with leading dimensions) to an
    (18, 18) int64 confusion matrix ``H[gt, pred]``; ``mask`` selects the scored voxels: pass the
    GT ``mask_camera`` for the official protocol, ``mask_lidar`` for the LiDAR variant, or None to
    score every voxel. ``compute()`` gives per-class IoU = diag / (row + col - diag) and mIoU, the
    NaN-mean over the non-free classes, x100. ``free`` is in the matrix but not in the mean, and a
    class whose union is empty over the split is skipped (official ``Metric_mIoU.count_miou``).

    Totals merge across processes: see ``flashocc.metrics.common``.
    """

    def __init__(self, grid: OccGrid = OCC3D_NUSCENES) -> None:
        self.grid = grid
        n = grid.num_classes
        self._totals = {"confusion": np.zeros((n, n), dtype=np.int64), "num_samples": np.zeros((), dtype=np.int64)}

    @property
    def confusion(self) -> np.ndarray:
        """(C, C) int64 counts, rows = ground truth, columns = prediction."""
        return self._totals["confusion"]

    def update(self, pred: Any, gt: Any, mask: Any = None) -> None:
        """Add predictions and ground truth, uint8 (..., X, Y, Z) label volumes indexed [x, y, z].

        Official bug (``occ_metrics.py, Metric_mIoU.hist_info``): the official code filters only the GT, so a
        prediction >= 18 silently corrupts the matrix; here any label outside 0..17 raises.
        """
        pred = as_label_volume(pred, "pred", self.grid, batched=True)
        gt = as_label_volume(gt, "gt", self.grid, batched=True)
        if pred.shape != gt.shape:
            raise ValueError(f"pred shape {pred.shape} differs from gt shape {gt.shape}")
        n = self.grid.num_classes
        num_samples = int(np.prod(gt.shape[:-3]))         # 1 for a single (X, Y, Z) volume
        if mask is not None:
            keep = as_mask(mask, "mask", gt.shape)
            gt, pred = gt[keep], pred[keep]
        # One bincount over gt * C + pred (fits in uint16 for C <= 255).
        flat = gt.reshape(-1).astype(np.uint16) * np.uint16(n) + pred.reshape(-1)
        self._totals["confusion"] += np.bincount(flat, minlength=n * n).reshape(n, n)
        self._totals["num_samples"] += num_samples

    def compute(self) -> dict[str, Any]:
        """{"mIoU": 0..100, "per_class": {name: IoU 0..100 or NaN (free excluded)}, "num_samples": N}."""
        h = self.confusion.astype(np.float64)
        diag = np.diag(h)
        iou = safe_divide(diag, h.sum(0) + h.sum(1) - diag)
        scored = list(self.grid.semantic_classes)
        return {
            "mIoU": nanmean(iou[scored]) * 100.0,
            "per_class": {self.grid.class_names[c]: float(iou[c] * 100.0) for c in scored},
            "num_samples": int(self._totals["num_samples"]),
        }
