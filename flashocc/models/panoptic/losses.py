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

EPS = 1e-5


def distance_weights(dx: int, dy: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(Dx, Dy) weights 1 + r / r_max, r the BEV distance of a cell from the grid centre (cells)."""
    i = torch.arange(dx, dtype=torch.float32, device=device) - dx // 2
    j = torch.arange(dy, dtype=torch.float32, device=device) - dy // 2
    r = torch.sqrt(i[:, None] ** 2 + j[None, :] ** 2)
    return 1.0 + r / r.max().clamp_min(EPS)


class _WeightedFocal(torch.autograd.Function):
    """Sum over (V, K) of the one-hot sigmoid focal loss times row and class weights, with the gradient in
    closed form, computed with the loss in one pass. Autograd through the elementwise formula keeps about
    ten (V, K) intermediates for the backward pass; on the full 200x200x16 grid that memory traffic was
    most of the step."""

    @staticmethod
    def forward(ctx, x, labels, row_w, class_w, gamma: float, alpha: float):
        grad = torch.empty_like(x)
        total = x.new_zeros((), dtype=torch.float64)
        for rows in _chunks(x.shape[0]):
            f, g = _focal_terms(x[rows], labels[rows], gamma, alpha)
            scale = row_w[rows, None] * class_w
            total += (f * scale).sum(dtype=torch.float64)
            torch.mul(g, scale, out=grad[rows])
        ctx.save_for_backward(grad)
        return total.to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        (grad,) = ctx.saved_tensors
        return grad * grad_out, None, None, None, None, None


def _chunks(n: int, size: int = 1 << 15) -> list[slice]:
    return [slice(i, min(n, i + size)) for i in range(0, n, size)]


def _focal_terms(x: torch.Tensor, labels: torch.Tensor, gamma: float, alpha: float
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per element of x (V, K): the focal loss f and df/dx. With s = sigmoid(x):
    t = 0: (1-a) softplus(x) s^g,    df/dx = (1-a) s^g (s + g (1-s) softplus(x))
    t = 1: a softplus(-x) (1-s)^g,   df/dx = -a (1-s)^g ((1-s) + g s softplus(-x))
    (softplus as binary_cross_entropy_with_logits writes it: max(±x, 0) + log1p(exp(-|x|))). The t = 1
    case is computed for the labelled entry of each row only and written over the t = 0 value."""
    def terms(x: torch.Tensor, target: bool) -> tuple[torch.Tensor, torch.Tensor]:
        s = x.sigmoid()
        soft = x.abs().neg_().exp_().log1p_()
        if target:
            s, sp, a = 1 - s, x.neg().clamp_min_(0).add_(soft), -alpha   # in terms of q = 1 - s
        else:
            sp, a = x.clamp_min(0).add_(soft), 1 - alpha
        s_g = s.pow(gamma)
        f = sp * s_g * abs(a)
        g = (sp * gamma * (1 - s)).add_(s).mul_(s_g).mul_(a)
        return f, g

    f, g = terms(x, target=False)
    index = labels[:, None]
    f_t, g_t = terms(x.gather(1, index), target=True)
    return f.scatter_(1, index, f_t), g.scatter_(1, index, g_t)


def kept(x: torch.Tensor, keep: torch.Tensor, all_kept: bool) -> torch.Tensor:
    """``x[keep]``, as a view when every voxel is kept (no mask, no ignore label: the official pano case)."""
    return x.reshape(-1, *x.shape[keep.dim():]) if all_kept else x[keep]


def focal_occupancy_loss(logits: torch.Tensor, labels: torch.Tensor, keep: torch.Tensor,
                         class_weights: torch.Tensor | None, dist: torch.Tensor, gamma: float = 2.0,
                         alpha: float = 0.25) -> torch.Tensor:
    """Sigmoid focal loss over the K logits of each kept voxel, one-hot targets, each (voxel, class)
    weighted by w_class[class]·d(cell); summed over classes and averaged over the kept voxels.

    logits (B, Dx, Dy, Dz, K); labels (B, Dx, Dy, Dz); keep bool, same shape; dist (Dx, Dy).
    """
    k = logits.shape[-1]
    all_kept = bool(keep.all())
    row_w = kept(dist[None, :, :, None].expand(labels.shape), keep, all_kept).float().contiguous()
    x = kept(logits, keep, all_kept).float()
    y = kept(labels, keep, all_kept).long()
    cw = (class_weights.to(x.device, torch.float32) if class_weights is not None
          else torch.ones(k, device=x.device))
    return _WeightedFocal.apply(x, y, row_w, cw, gamma, alpha) / max(1, y.numel())


def _bce_one(x: torch.Tensor) -> torch.Tensor:
    # BCE of a ratio against the target 1: -log(x), clamped like torch's BCE.
    return -torch.log(x.clamp_min(EPS))


def sem_scal_loss(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """probs (V, K) softmax, labels (V,) -> mean over present classes of the precision, recall and
    specificity terms (a term is skipped when its denominator is 0, as upstream). All classes at once;
    per-class sums by index_add rather than a (V, K) one-hot product."""
    v, k = probs.shape
    labels = labels.long()
    # Accumulated in float64: index_add sums sequentially, and float32 drifts by 1e-6 over a million voxels.
    hit = probs.new_zeros(k, dtype=torch.float64).index_add(
        0, labels, probs.gather(1, labels[:, None]).squeeze(1).double()).to(probs.dtype)
    predicted, positives = probs.sum(0), torch.bincount(labels, minlength=k).to(probs.dtype)
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
    """Lovász-softmax over the classes present in ``labels``: probs (V, K), labels (V,).

    Per class the loss is sum_i e_(i) (J_i - J_(i-1)) over the errors sorted in descending order (J_i the
    Jaccard loss of the i largest). The differences J_i - J_(i-1) only depend on the order, so they are
    computed without gradient and scattered back to the voxels: the gradient is that of the upstream
    loss (sort backward is the same scatter). The order comes from a sort of the errors' float bits as
    integers (equal order for errors >= 0), which torch sorts several times faster than floats.
    """
    k = probs.shape[1]
    labels = labels.long()
    present = (torch.bincount(labels, minlength=k) > 0).nonzero().squeeze(1).tolist()
    if not present:
        return probs.sum() * 0.0
    v = probs.shape[0]
    index = torch.tensor(present, device=probs.device)
    # (P, V), one row per present class: contiguous rows to sort, and one gather for autograd to undo.
    fg = labels[None, :] == index[:, None]
    errors = (fg.to(probs.dtype) - probs.t().index_select(0, index)).abs()
    positions = torch.arange(1, v + 1, dtype=probs.dtype, device=probs.device)
    weights = torch.empty_like(errors, requires_grad=False)
    with torch.no_grad():
        for row in range(len(present)):
            order = _descending_order(errors[row])
            fg_sorted = fg[row][order].to(probs.dtype)
            gts = fg_sorted.sum()
            cum = fg_sorted.cumsum(0)
            jaccard = 1 - (gts - cum) / (gts + (positions - cum))    # union: gts + cumsum(1 - fg)
            weights[row].index_put_((order,), torch.diff(jaccard, prepend=jaccard.new_zeros(1)))
    return (errors * weights).sum() / len(present)


def _descending_order(errors: torch.Tensor) -> torch.Tensor:
    as_int = {torch.float32: torch.int32, torch.float64: torch.int64}.get(errors.dtype)
    if as_int is None or errors.device.type != "cpu":
        return errors.sort(descending=True).indices
    # Non-negative IEEE floats order like their bit patterns read as integers; negated for descending.
    return errors.contiguous().view(as_int).neg().sort().indices


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
