"""Geometric F-score of the occupancy challenge devkit.

Upstream: Occ3D-devkit@4781df9 projects/mmdet3d_plugin/datasets/occ_metrics.py, Metric_FScore (also in
FlashOCC@4084861 projects/mmdet3d_plugin/core/evaluation/occ_metrics.py); docs/official-behaviour.md#f-score.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from flashocc.grid import OCC3D_NUSCENES, OccGrid
from flashocc.metrics.common import MergeableState, as_label_volume, as_mask

_EPS = 1e-8


class OccFScore(MergeableState):
    """Per-sample F-score between occupied-voxel centres, averaged over samples.

    For each sample, voxels outside ``mask`` (when given; the devkit uses ``mask_camera``) are
    ignored in both volumes, the other non-free voxels become their metric centres, and
    accuracy = share of predicted centres with a GT centre closer than ``threshold_acc``;
    completeness = share of GT centres with a predicted centre closer than ``threshold_complete``;
    F = 2 / (1/(acc + 1e-8) + 1/(comp + 1e-8)); all three are 0 when the prediction (or the GT) is
    empty. Defaults 0.6 m are the class defaults; the BEVFormer baseline used 0.4 m / 0.4 m.

    Official bug (devkit ``Metric_FScore.add_batch``): the devkit writes 255 into the caller's arrays; here
    the inputs are never modified. Needs scipy (``pip install scipy``) for the KD-tree.
    Totals (sums of per-sample values) merge across processes (``flashocc.metrics.common``).
    """

    def __init__(self, grid: OccGrid = OCC3D_NUSCENES, threshold_acc: float = 0.6,
                 threshold_complete: float = 0.6) -> None:
        self.grid = grid
        self.threshold_acc = float(threshold_acc)
        self.threshold_complete = float(threshold_complete)
        self._totals = {"accuracy_sum": np.zeros((), dtype=np.float64),
                        "completeness_sum": np.zeros((), dtype=np.float64),
                        "fscore_sum": np.zeros((), dtype=np.float64),
                        "num_samples": np.zeros((), dtype=np.int64)}

    def update(self, pred: Any, gt: Any, mask: Any = None) -> None:
        try:
            from scipy.spatial import cKDTree
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("the F-score needs scipy for its KD-tree: pip install scipy") from exc
        pred = as_label_volume(pred, "pred", self.grid)
        gt = as_label_volume(gt, "gt", self.grid)
        keep = np.ones(gt.shape, dtype=bool) if mask is None else as_mask(mask, "mask", gt.shape)
        pred_pts = self._centres((pred != self.grid.free_label) & keep)
        gt_pts = self._centres((gt != self.grid.free_label) & keep)
        if len(pred_pts) == 0 or len(gt_pts) == 0:
            # The devkit scores an empty prediction 0 (an empty GT would crash it; we score 0 too).
            acc = comp = f = 0.0
        else:
            comp_dist, _ = cKDTree(pred_pts, leafsize=10).query(gt_pts)
            acc_dist, _ = cKDTree(gt_pts, leafsize=10).query(pred_pts)
            comp = float((comp_dist < self.threshold_complete).mean())
            acc = float((acc_dist < self.threshold_acc).mean())
            f = 2.0 / (1.0 / (acc + _EPS) + 1.0 / (comp + _EPS))
        self._totals["accuracy_sum"] += acc
        self._totals["completeness_sum"] += comp
        self._totals["fscore_sum"] += f
        self._totals["num_samples"] += 1

    def _centres(self, occupied: np.ndarray) -> np.ndarray:
        """Voxel centres (N, 3) in metres with the devkit's formula idx * size + size / 2 + lower."""
        idx = np.nonzero(occupied)
        return np.stack([idx[a] * self.grid.voxel_size[a] + self.grid.voxel_size[a] / 2 + self.grid.lower[a]
                         for a in range(3)], axis=1)

    def compute(self) -> dict[str, Any]:
        """{"F-score", "accuracy", "completeness"}: means of per-sample values (0..1; NaN if empty)."""
        n = int(self._totals["num_samples"])
        mean = (lambda k: float(self._totals[k]) / n) if n else (lambda k: float("nan"))
        return {"F-score": mean("fscore_sum"), "accuracy": mean("accuracy_sum"),
                "completeness": mean("completeness_sum"), "num_samples": n}
