"""SparseOcc parts one by one: merges, GT segments, the voxels a level supervises, matching, losses and
the mask-guided sampler with points a caller fixes."""
import builtins

import pytest
import torch
import torch.nn.functional as F

from flashocc.grid import OCC3D_NUSCENES
from flashocc.models.sparseocc.criterion import fine_voxels, gt_segments
from flashocc.models.sparseocc.losses import class_loss, geo_scal_loss, lovasz_softmax, sem_scal_loss
from flashocc.models.sparseocc.matching import hungarian_match
from flashocc.models.sparseocc.merge import merge_panoptic, merge_semantic, to_dense
from flashocc.models.sparseocc.sampling import ImageContext, MaskFormerSampling, MaskGuidedPoints, _sample
from flashocc.models.sparseocc.voxel_decoder import VoxelLevel, decode_box, encode_box
from flashocc.ops.msmv_sampling import split_groups

BIG = 20.0


def test_semantic_merge_thresholds_and_free():
    # Query 0: car (4) confident, mask on voxels 0, 1. Query 1: best score 0.2 <= 0.3 -> ignored.
    cls = torch.full((1, 2, 17), -BIG)
    cls[0, 0, 4] = BIG
    cls[0, 1, 7] = torch.logit(torch.tensor(0.2))
    mask = torch.tensor([[[BIG, BIG, -BIG], [BIG, BIG, BIG]]])
    assert merge_semantic(cls, mask, 17).tolist() == [[4, 4, 17]]  # voxel 2: max score < 0.01 -> free


def test_panoptic_merge_things_stuff_and_the_official_stuff_quirk():
    cls = torch.full((1, 4, 17), -BIG)
    cls[0, 0, 4] = BIG   # car
    cls[0, 1, 4] = 5.0   # another car, lower score
    cls[0, 2, 11] = BIG  # driveable surface
    cls[0, 3, 11] = 4.0  # a second driveable-surface segment
    mask = torch.full((1, 4, 8), -BIG)
    mask[0, 0, 0:2] = BIG
    mask[0, 1, 2:4] = BIG
    mask[0, 2, 4:6] = BIG
    mask[0, 3, 6:7] = BIG
    inst, sem = merge_panoptic(cls, mask, OCC3D_NUSCENES)
    assert inst.dtype == torch.int16 and sem.dtype == torch.uint8
    assert inst[0].tolist() == [1, 1, 2, 2, 3, 3, 3, 0]
    # The second stuff segment joins the first's id but keeps free semantics (upstream `continue`).
    assert sem[0].tolist() == [4, 4, 4, 4, 11, 11, 17, 17]


def test_dense_grid_is_free_outside_the_kept_voxels():
    loc = torch.tensor([[[0, 0, 0], [199, 199, 15]]])
    dense = to_dense(loc, torch.tensor([[3, 5]], dtype=torch.uint8), (200, 200, 16), 17)
    assert dense[0, 0, 0, 0] == 3 and dense[0, 199, 199, 15] == 5 and (dense == 17).sum() == 640_000 - 2


def test_gt_segments_class_order_instances_and_dropped_ids():
    sem = torch.tensor([11, 4, 4, 4, 17, 255, 1, 4])
    inst = torch.tensor([0, 2, 2, 5, 0, 0, 0, 0])
    ids, classes = gt_segments(sem, None, 17, ())
    assert classes.tolist() == [1, 4, 11] and ids.tolist() == [2, 1, 1, 1, -1, -1, 0, 1]
    ids, classes = gt_segments(sem, inst, 17, (4,))
    # car instances 2 and 5 are two segments; a car voxel outside every instance belongs to none.
    assert classes.tolist() == [1, 4, 4, 11] and ids.tolist() == [3, 1, 1, 2, -1, -1, 0, -1]


def _official_level_targets(coords, logits, scale, semantics):
    """Upstream get_voxel_decoder_loss_input: densify, nearest-upsample, boolean-index."""
    shape = [200 // scale, 200 // scale, 16 // scale]
    dense = torch.zeros(*shape, logits.shape[-1])
    mask = torch.zeros(*shape, dtype=torch.bool)
    dense[coords[:, 0], coords[:, 1], coords[:, 2]] = logits
    mask[coords[:, 0], coords[:, 1], coords[:, 2]] = True
    mask = F.interpolate(mask[None, None].float(), scale_factor=scale)[0, 0].bool()
    dense = F.interpolate(dense.permute(3, 0, 1, 2)[None], scale_factor=scale)[0].permute(1, 2, 3, 0)
    return dense[mask], semantics[mask]


@pytest.mark.parametrize("scale", [4, 2, 1])
def test_level_supervision_matches_the_dense_upsampling(scale):
    g = torch.Generator().manual_seed(scale)
    res = torch.tensor([200, 200, 16]) // scale
    flat = torch.randperm(int(res.prod()), generator=g)[:50]
    coords = torch.stack([flat // (res[1] * res[2]), flat // res[2] % res[1], flat % res[2]], dim=-1)
    logits = torch.randn(50, 18, generator=g)
    semantics = torch.randint(0, 18, (200, 200, 16), generator=g)
    fine, cell = fine_voxels(VoxelLevel(coords, logits, logits, scale), (200, 200, 16))
    ref_logits, ref_gt = _official_level_targets(coords, logits, scale, semantics)
    assert torch.equal(logits[cell], ref_logits)
    assert torch.equal(semantics[fine[:, 0], fine[:, 1], fine[:, 2]], ref_gt)


def test_hungarian_matching_finds_the_obvious_assignment_and_needs_scipy(monkeypatch):
    ids = torch.tensor([0, 0, 1, 1, -1, -1])
    classes = torch.tensor([4, 11])
    mask = torch.full((3, 6), -BIG)
    mask[2, 0:2] = BIG   # query 2 = segment 0
    mask[0, 2:4] = BIG   # query 0 = segment 1
    cls = torch.full((3, 17), -BIG)
    cls[2, 4] = BIG
    cls[0, 11] = BIG
    q, s = hungarian_match(mask, cls, ids, classes)
    assert q.tolist() == [0, 2] and s.tolist() == [1, 0]
    real_import = builtins.__import__

    def no_scipy(name, *args, **kwargs):
        if name.startswith("scipy"):
            raise ImportError("no scipy")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_scipy)
    with pytest.raises(ImportError, match="pip install"):
        hungarian_match(mask, cls, ids, classes)


def test_losses_small_cases():
    # Perfect one-hot probabilities: Lovász 0; wrong ones: 1 per present class.
    labels = torch.tensor([0, 1, 1, 2])
    assert lovasz_softmax(F.one_hot(labels, 3).float(), labels) == 0
    torch.testing.assert_close(lovasz_softmax(F.one_hot((labels + 1) % 3, 3).float(), labels), torch.tensor(1.0))
    # 255 is background for every class, not ignored: it costs when predicted as a class.
    probs = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    assert lovasz_softmax(probs, torch.tensor([0, 255])) > 0
    # Confident correct logits: scal terms ~0; no non-free voxel: geo scal is 0.
    logits = F.one_hot(torch.tensor([3, 17, 3]), 18).float() * 30
    gt = torch.tensor([3, 17, 3])
    assert geo_scal_loss(logits, gt, 17) < 1e-6 and sem_scal_loss(logits, gt) < 1e-6
    assert geo_scal_loss(logits[1:2], gt[1:2], 17) == 0
    # Class loss: an all-"no class" target costs Σ focal over every logit / A.
    zero = torch.zeros(2, 17)
    expected = 2 * 17 * 0.75 * 0.5 ** 2 * torch.log(torch.tensor(2.0))
    torch.testing.assert_close(class_loss(zero, torch.tensor([17, 17]), 1.0), expected)


class FixedPoints(torch.nn.Module):
    def __init__(self, idx):
        super().__init__()
        self.idx = idx

    def forward(self, valid, occ_loc, generator=None):
        return self.idx


def test_mask_guided_sampling_with_fixed_points_reads_the_voxel_min_corner():
    torch.manual_seed(0)
    g, p, levels, c, t, n = 2, 2, 1, 4, 1, 2
    sampler = MaskFormerSampling(g * c, g, p, levels, OCC3D_NUSCENES)
    sampler.init_weights()
    idx = torch.tensor([[[[100.0, 100.0, 2.0]] * (g * p)]])  # (B=1, Q=1, G·P, 3)
    sampler.points = FixedPoints(idx)
    feat = torch.randn(1, t * n, g * c, 4, 6)
    lidar2img = torch.eye(4).repeat(1, t * n, 1, 1)
    ctx = ImageContext([split_groups(feat, t, n, g)], lidar2img, (64, 96), t, n)
    query = torch.randn(1, 1, g * c)
    out = sampler(query, torch.zeros(1, 1, 5, dtype=torch.bool), torch.zeros(1, 5, 3, dtype=torch.long), ctx)
    # Zero offset at init: metres = lower + index·0.4, the min corner (0, 0, -0.2) of voxel (100, 100, 2).
    corner = torch.tensor([0.0, 0.0, -0.2]).expand(1, 1, g * p, 3)
    ref = _sample(corner, sampler.scale_weights(query), ctx, g, p, levels)
    torch.testing.assert_close(out, ref)
    # The default sampler picks only voxels inside each query's mask.
    draw = MaskGuidedPoints(16, (200, 200, 16))
    valid = torch.tensor([[[False, True, False], [False, False, False]]])
    loc = torch.tensor([[[1, 2, 3], [4, 5, 6], [7, 8, 9]]])
    pts = draw(valid, loc, torch.Generator().manual_seed(0))
    assert torch.all(pts[0, 0] == torch.tensor([4.0, 5.0, 6.0]))  # its only valid voxel
    assert torch.all(pts[0, 1] < torch.tensor([200.0, 200.0, 16.0]))  # empty mask: uniform in the grid


def test_box_encoding_is_the_min_corner():
    coords = torch.tensor([[[0, 0, 0], [8, 16, 8]]])
    box = encode_box(coords, 8, OCC3D_NUSCENES)
    corner, size = decode_box(box, OCC3D_NUSCENES)
    torch.testing.assert_close(corner[0, 1], torch.tensor([-36.8, -33.6, 2.2]))
    torch.testing.assert_close(size, torch.full_like(size, 3.2))
    torch.testing.assert_close(box[0, 0, :3], torch.zeros(3))
