"""Loss terms of Panoptic-FlashOcc, written from the official behaviour in plain torch.

* ``focal_occupancy_loss``: FlashOCC@4084861 projects/mmdet3d_plugin/models/losses/focal_loss.py,
  CustomFocalLoss, as BEVOCCHead2D_V2.loss calls it (projects/mmdet3d_plugin/models/dense_heads/bev_occ_head.py).
* ``sem_scal_loss``, ``geo_scal_loss``: projects/mmdet3d_plugin/models/losses/semkitti_loss.py (MonoScene's
  scene-class affinity terms).
* ``lovasz_softmax``: projects/mmdet3d_plugin/models/losses/lovasz_softmax.py (Berman et al., CVPR 2018).
* ``gaussian_focal_loss``: mmdet GaussianFocalLoss as Centerness_Head.loss uses it (CornerNet's penalty-
  reduced focal loss on a Gaussian heatmap).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-5


def distance_weights(dx: int, dy: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(Dx, Dy) weights 1 + r / r_max, r the BEV distance of a cell from the grid centre (cells)."""
    i = torch.arange(dx, dtype=torch.float32, device=device) - dx // 2
    j = torch.arange(dy, dtype=torch.float32, device=device) - dy // 2
    r = torch.sqrt(i[:, None] ** 2 + j[None, :] ** 2)
    return 1.0 + r / r.max().clamp_min(EPS)


def focal_occupancy_loss(logits: torch.Tensor, labels: torch.Tensor, keep: torch.Tensor,
                         class_weights: torch.Tensor | None, dist: torch.Tensor, gamma: float = 2.0,
                         alpha: float = 0.25) -> torch.Tensor:
    """Sigmoid focal loss over the K logits of each kept voxel, one-hot targets, each (voxel, class)
    weighted by w_class[class]·d(cell); summed over classes and averaged over the kept voxels.

    logits (B, Dx, Dy, Dz, K); labels (B, Dx, Dy, Dz); keep bool, same shape; dist (Dx, Dy).
    """
    k = logits.shape[-1]
    weight = dist[None, :, :, None].expand(labels.shape)[keep]            # (V,)
    x = logits[keep].float()                                               # (V, K)
    t = F.one_hot(labels[keep].long(), k).float()
    p = x.sigmoid()
    pt = p * t + (1 - p) * (1 - t)
    focal = F.binary_cross_entropy_with_logits(x, t, reduction="none") * (alpha * t + (1 - alpha) * (1 - t))
    focal = focal * (1 - pt).pow(gamma) * weight[:, None]
    if class_weights is not None:
        focal = focal * class_weights.to(focal.device)[None, :]
    return focal.sum() / max(1, int(keep.sum()))


def _bce_one(x: torch.Tensor) -> torch.Tensor:
    # BCE of a ratio against the target 1: -log(x), clamped like torch's BCE.
    return -torch.log(x.clamp_min(EPS))


def sem_scal_loss(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """probs (V, K) softmax, labels (V,) -> mean over present classes of the precision, recall and
    specificity terms (a term is skipped when its denominator is 0, as upstream). All classes at once."""
    v, k = probs.shape
    onehot = F.one_hot(labels.long(), k).to(probs.dtype)
    hit = (probs * onehot).sum(0)
    predicted, positives = probs.sum(0), onehot.sum(0)
    negatives = v - positives
    true_negatives = v - predicted - positives + hit          # sum((1 - p)(1 - t))
    present = positives > 0
    zero = torch.zeros_like(hit)
    term = torch.where(predicted > 0, _bce_one(hit / predicted.clamp_min(EPS)), zero)
    term = term + _bce_one(hit / positives.clamp_min(EPS))
    term = term + torch.where(negatives > 0, _bce_one(true_negatives / negatives.clamp_min(EPS)), zero)
    return term[present].sum() / present.sum().clamp_min(1)


def geo_scal_loss(probs: torch.Tensor, labels: torch.Tensor, free_label: int) -> torch.Tensor:
    """The same three terms for occupied vs free."""
    occupied = 1 - probs[:, free_label]
    t = (labels != free_label).float()
    hit = (occupied * t).sum()
    precision = hit / occupied.sum().clamp_min(EPS)
    recall = hit / t.sum().clamp_min(EPS)
    specificity = ((1 - t) * (1 - occupied)).sum() / (1 - t).sum().clamp_min(EPS)
    return _bce_one(precision) + _bce_one(recall) + _bce_one(specificity)


def lovasz_softmax(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Lovász-softmax over the classes present in ``labels``: probs (V, K), labels (V,); one sort of
    every class's errors at once."""
    k = probs.shape[1]
    present = torch.bincount(labels.long(), minlength=k) > 0
    if not present.any():
        return probs.sum() * 0.0
    fg = F.one_hot(labels.long(), k).to(probs.dtype)[:, present]
    errors, order = (fg - probs[:, present]).abs().sort(dim=0, descending=True)
    fg = fg.gather(0, order)
    gts = fg.sum(0)
    jaccard = 1 - (gts - fg.cumsum(0)) / (gts + (1 - fg).cumsum(0))
    jaccard = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])
    return (errors * jaccard).sum(0).mean()


def gaussian_focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 2.0,
                        gamma: float = 4.0) -> torch.Tensor:
    """Heatmap loss: clip_sigmoid predictions in [1e-4, 1 - 1e-4], summed and divided by the number of
    peak cells (>= 1)."""
    p = logits.float().sigmoid().clamp(1e-4, 1 - 1e-4)
    pos = target.eq(1).float()
    pos_loss = -torch.log(p) * (1 - p).pow(alpha) * pos
    neg_loss = -torch.log(1 - p) * p.pow(alpha) * (1 - target).pow(gamma)
    return (pos_loss + neg_loss).sum() / pos.sum().clamp_min(1.0)


__all__ = ["distance_weights", "focal_occupancy_loss", "sem_scal_loss", "geo_scal_loss", "lovasz_softmax",
           "gaussian_focal_loss"]
