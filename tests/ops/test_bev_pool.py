import torch

from flashocc.ops.bev_pool import bev_pool, bev_pool_naive_cumsum, prepare_bev_pool


def _random_case(seed=0, dtype=torch.float64, b=2, n=3, d=5, fh=4, fw=6, c=7):
    g = torch.Generator().manual_seed(seed)
    coords = torch.rand(b, n, d, fh, fw, 3, generator=g, dtype=dtype) * torch.tensor([10.0, 10.0, 4.0], dtype=dtype)
    coords = coords - torch.tensor([5.5, 5.5, 1.0], dtype=dtype)  # some points fall outside the grid
    depth = torch.rand(b, n, d, fh, fw, generator=g, dtype=dtype)
    feat = torch.randn(b, n, fh, fw, c, generator=g, dtype=dtype)
    return coords, depth, feat


LOWER, INTERVAL, SIZE = (-4.0, -4.0, -1.0), (1.0, 1.0, 1.0), (8, 8, 2)


def dense_reference(coords, depth, feat):
    """Literal definition: loop over points, truncate indices, sum depth·feat into (B, C, Dz, Dy, Dx)."""
    b, n, d, fh, fw, _ = coords.shape
    out = torch.zeros(b, feat.shape[-1], SIZE[2], SIZE[1], SIZE[0], dtype=feat.dtype)
    q = ((coords - torch.tensor(LOWER, dtype=coords.dtype)) / torch.tensor(INTERVAL, dtype=coords.dtype))
    for idx in torch.cartesian_prod(*(torch.arange(s) for s in (b, n, d, fh, fw))):
        bi, ni, di, hi, wi = idx.tolist()
        x, y, z = (int(v) for v in q[bi, ni, di, hi, wi])  # int() truncates toward zero like .long()
        if 0 <= x < SIZE[0] and 0 <= y < SIZE[1] and 0 <= z < SIZE[2]:
            out[bi, :, z, y, x] += depth[bi, ni, di, hi, wi] * feat[bi, ni, hi, wi]
    return out


def test_values_match_dense_reference():
    coords, depth, feat = _random_case()
    idx = prepare_bev_pool(coords, LOWER, INTERVAL, SIZE)
    out = bev_pool(depth, feat, idx)
    ref = dense_reference(coords, depth, feat)
    assert out.shape == (2, 7, 2, 8, 8)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(bev_pool_naive_cumsum(depth, feat, idx), ref)
    # empty cells are exactly zero
    assert (ref.abs().sum(1) == 0).any()
    assert torch.equal(out.abs().sum(1) == 0, ref.abs().sum(1) == 0)


def test_gradients_match_dense_reference():
    coords, depth, feat = _random_case(seed=1)
    weight = torch.randn(2, 7, 2, 8, 8, dtype=torch.float64)
    idx = prepare_bev_pool(coords, LOWER, INTERVAL, SIZE)
    d1, f1 = depth.clone().requires_grad_(), feat.clone().requires_grad_()
    (bev_pool(d1, f1, idx) * weight).sum().backward()
    d2, f2 = depth.clone().requires_grad_(), feat.clone().requires_grad_()
    (dense_reference(coords, d2, f2) * weight).sum().backward()
    torch.testing.assert_close(d1.grad, d2.grad)
    torch.testing.assert_close(f1.grad, f2.grad)


def test_gradcheck_small_case():
    coords, depth, feat = _random_case(seed=2, b=1, n=2, d=3, fh=2, fw=3, c=4)
    idx = prepare_bev_pool(coords, LOWER, INTERVAL, SIZE)
    assert torch.autograd.gradcheck(lambda dd, ff: bev_pool(dd, ff, idx),
                                    (depth.requires_grad_(), feat.requires_grad_()))


def test_truncation_folds_minus_one_into_cell_zero():
    # Official quirk: raw index -0.5 truncates to 0 (kept); -1.5 truncates to -1 (dropped).
    coords = torch.tensor([[-4.5, -3.5, 0.0], [-5.5, -3.5, 0.0], [3.9, 3.9, 0.9]]).view(1, 1, 3, 1, 1, 3)
    idx = prepare_bev_pool(coords, LOWER, INTERVAL, SIZE)
    assert idx.num_points == 2
    depth = torch.ones(1, 1, 3, 1, 1)
    feat = torch.ones(1, 1, 1, 1, 1)
    out = bev_pool(depth, feat, idx)
    assert out[0, 0, 1, 0, 0] == 1.0  # (x=-0.5 -> 0, y=0.5 -> 0, z=1)
    assert out[0, 0, 1, 7, 7] == 1.0
    assert out.sum() == 2.0


def test_intervals_cover_sorted_ranks():
    coords, _, _ = _random_case(seed=3)
    idx = prepare_bev_pool(coords, LOWER, INTERVAL, SIZE)
    assert torch.all(idx.ranks_bev[1:] >= idx.ranks_bev[:-1])
    assert int(idx.interval_lengths.sum()) == idx.num_points
    for s, length in zip(idx.interval_starts.tolist(), idx.interval_lengths.tolist()):
        run = idx.ranks_bev[s:s + length]
        assert torch.all(run == run[0])
