"""Hungarian matching of mask queries to GT segments (SparseOcc@af4d9df models/matcher.py, HungarianMatcher,
with mmdet 2.28 ``FocalLossCost``; scipy ``linear_sum_assignment`` on the CPU).

Cost = cost_class·FocalCost + cost_mask·BCE + cost_dice·Dice. FocalCost carries mmdet's own weight 2, so
the class cost counts 4× with the official cost_class = 2.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from flashocc.models.sparseocc.losses import FOCAL_ALPHA, FOCAL_GAMMA

FOCAL_COST_WEIGHT = 2.0  # FocalLossCost(weight=2.0) in HungarianMatcher.__init__
_EPS = 1e-12


def _linear_sum_assignment():
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("SparseOcc training matches queries to segments with scipy.optimize.linear_sum_assignment; "
                          "install scipy: pip install \"flashocc[metrics]\" (or pip install scipy)") from exc
    return linear_sum_assignment


def focal_cost(class_logits: torch.Tensor, gt_classes: torch.Tensor) -> torch.Tensor:
    """(Q, C) logits, (M,) classes -> (Q, M) mmdet FocalLossCost (with its weight 2)."""
    p = class_logits.sigmoid()
    neg = -(1 - p + _EPS).log() * (1 - FOCAL_ALPHA) * p.pow(FOCAL_GAMMA)
    pos = -(p + _EPS).log() * FOCAL_ALPHA * (1 - p).pow(FOCAL_GAMMA)
    return (pos[:, gt_classes] - neg[:, gt_classes]) * FOCAL_COST_WEIGHT


def bce_cost(mask_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(Q, K) logits, (M, K) binary targets -> (Q, M) mean binary CE over the K voxels."""
    pos = F.binary_cross_entropy_with_logits(mask_logits, torch.ones_like(mask_logits), reduction="none")
    neg = F.binary_cross_entropy_with_logits(mask_logits, torch.zeros_like(mask_logits), reduction="none")
    return (pos @ targets.T + neg @ (1 - targets).T) / mask_logits.shape[1]


def dice_cost(mask_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    p = mask_logits.sigmoid()
    return 1 - (2 * p @ targets.T + 1) / (p.sum(-1)[:, None] + targets.sum(-1)[None, :] + 1)


@torch.no_grad()
def hungarian_match(mask_logits: torch.Tensor, class_logits: torch.Tensor, segment_ids: torch.Tensor,
                    segment_classes: torch.Tensor, cost_class: float = 2.0, cost_mask: float = 5.0,
                    cost_dice: float = 5.0) -> tuple[torch.Tensor, torch.Tensor]:
    """One sample: mask logits (Q, K), class logits (Q, C), per-voxel segment ids (K,) (−1 = none), segment
    classes (M,) -> (query indices, segment indices), both (min(Q, M),) int64, queries ascending."""
    m = segment_classes.shape[0]
    targets = (segment_ids[None, :] == torch.arange(m, device=segment_ids.device)[:, None]).float()
    logits = mask_logits.float()
    cost = (cost_mask * bce_cost(logits, targets) + cost_class * focal_cost(class_logits.float(), segment_classes)
            + cost_dice * dice_cost(logits, targets))
    rows, cols = _linear_sum_assignment()(cost.cpu().numpy())
    return torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)


__all__ = ["hungarian_match", "focal_cost", "bce_cost", "dice_cost"]
