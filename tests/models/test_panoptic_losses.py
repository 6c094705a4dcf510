"""The fast Panoptic-FlashOcc loss terms (models/panoptic/losses.py) against the direct formulations they
replace (one-hot products, autograd through every elementwise step, a float sort per class): values and
gradients on a fixed batch within 1e-5 relative."""
import pytest
import torch
import torch.nn.functional as F

from flashocc.models.panoptic import losses as L

pytestmark = pytest.mark.usefixtures("one_thread")


# ---- reference formulations (the upstream code's arithmetic, written out) ----------------------------------
def ref_focal(logits, labels, keep, class_weights, dist, gamma=2.0, alpha=0.25):
    k = logits.shape[-1]
    weight = dist[None, :, :, None].expand(labels.shape)[keep]
    x = logits[keep].float()
    t = F.one_hot(labels[keep].long(), k).float()
    p = x.sigmoid()
    pt = p * t + (1 - p) * (1 - t)
    focal = F.binary_cross_entropy_with_logits(x, t, reduction="none") * (alpha * t + (1 - alpha) * (1 - t))
    focal = focal * (1 - pt).pow(gamma) * weight[:, None]
    if class_weights is not None:
        focal = focal * class_weights[None, :]
    return focal.sum() / max(1, int(keep.sum()))


def ref_sem_scal(probs, labels):
    v, k = probs.shape
    onehot = F.one_hot(labels.long(), k).to(probs.dtype)
    hit = (probs * onehot).sum(0)
    predicted, positives = probs.sum(0), onehot.sum(0)
    negatives = v - positives
    true_negatives = v - predicted - positives + hit
    present = positives > 0
    zero = torch.zeros_like(hit)
    bce = lambda r: -torch.log(r.clamp_min(L.EPS))  # noqa: E731
    term = torch.where(predicted > 0, bce(hit / predicted.clamp_min(L.EPS)), zero)
    term = term + bce(hit / positives.clamp_min(L.EPS))
    term = term + torch.where(negatives > 0, bce(true_negatives / negatives.clamp_min(L.EPS)), zero)
    return term[present].sum() / present.sum().clamp_min(1)


def ref_lovasz(probs, labels):
    losses = []
    for c in range(probs.shape[1]):
        fg = (labels == c).to(probs.dtype)
        if fg.sum() == 0:
            continue
        errors, perm = (fg - probs[:, c]).abs().sort(descending=True)
        fg_sorted = fg[perm]
        gts = fg_sorted.sum()
        jaccard = 1 - (gts - fg_sorted.cumsum(0)) / (gts + (1 - fg_sorted).cumsum(0))
        jaccard = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])
        losses.append((errors * jaccard).sum())
    return torch.stack(losses).mean()


# ---- the comparison ---------------------------------------------------------------------------------------
def _batch(dtype=torch.float32, ignore=False):
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(2, 30, 20, 16, 18, generator=g) * 3).to(dtype)
    labels = torch.randint(0, 18, (2, 30, 20, 16), generator=g)
    labels[labels > 11] = 17  # mostly free, and classes 12-16 absent
    keep = torch.ones_like(labels, dtype=torch.bool)
    if ignore:
        labels[0, :5] = 255
        keep = labels != 255
    return logits, labels, keep


def _terms(module, logits, labels, keep, class_weights, dist):
    x = logits.clone().requires_grad_()
    probs = x[keep].softmax(-1)
    kept = labels[keep]
    values = [100 * module["focal"](x, labels, keep, class_weights, dist), module["sem"](probs, kept),
              L.geo_scal_loss(probs, kept, 17), module["lovasz"](probs, kept)]
    grads = [torch.autograd.grad(v, x, retain_graph=True)[0] for v in values]
    return values, grads


REF = {"focal": ref_focal, "sem": ref_sem_scal, "lovasz": ref_lovasz}
NEW = {"focal": L.focal_occupancy_loss, "sem": L.sem_scal_loss, "lovasz": L.lovasz_softmax}


@pytest.mark.parametrize("dtype,ignore,weighted", [(torch.float32, False, True), (torch.float32, True, False),
                                                   (torch.float64, False, True)])
def test_fast_terms_equal_the_direct_formulation(dtype, ignore, weighted):
    logits, labels, keep = _batch(dtype, ignore)
    dist = L.distance_weights(30, 20).to(dtype)
    cw = torch.linspace(0.5, 2.0, 18, dtype=dtype) if weighted else None
    ref_v, ref_g = _terms(REF, logits, labels, keep, cw, dist)
    new_v, new_g = _terms(NEW, logits, labels, keep, cw, dist)
    for name, a, b, ga, gb in zip(("focal", "sem_scal", "geo_scal", "lovasz"), ref_v, new_v, ref_g, new_g):
        assert b.item() == pytest.approx(a.item(), rel=1e-5), name
        assert float((gb - ga).norm() / ga.norm()) < 1e-5, name
        torch.testing.assert_close(gb, ga, rtol=1e-4, atol=1e-5 * float(ga.abs().max()), msg=name)


def test_lovasz_sort_key_orders_like_the_floats():
    e = torch.tensor([0.0, 0.5, 1e-30, 1.0, 0.25, 3e-8])
    assert L._descending_order(e).tolist() == e.sort(descending=True).indices.tolist()
    assert L._descending_order(e.double()).tolist() == e.sort(descending=True).indices.tolist()
