import numpy as np
import pytest
import torch
import torch.nn.functional as F

from flashocc.errors import CheckpointMismatchError, ConfigError, DataError
from flashocc.ops import sparse_rules
from flashocc.ops.sparse_conv import (SparseConv3d, SparseSequential, SparseTensor, SubMConv3d, sparse_weight_from_spconv1,
                                      sparse_weight_from_spconv2, sparse_weight_to_spconv2)
from flashocc.ops.voxelize import hard_voxelize

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def random_sparse(shape=(7, 9, 8), batch=2, channels=3, density=0.15, seed=0, dtype=torch.float64, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    active = torch.rand(batch, *shape, generator=g) < density
    indices = torch.nonzero(active).int()
    indices = indices[torch.randperm(len(indices), generator=g)]  # rows need not be sorted
    features = torch.randn(len(indices), channels, generator=g, dtype=dtype)
    return SparseTensor(features.to(device), indices.to(device), shape, batch)


def dense_at_sites(x: SparseTensor, conv, out_indices):
    """nn.Conv3d semantics on the densified input, read at the sparse output sites."""
    dense = F.conv3d(x.dense(), conv.weight, conv.bias, stride=conv.geometry.stride, padding=conv.geometry.padding)
    b = out_indices.long()
    return dense[b[:, 0], :, b[:, 1], b[:, 2], b[:, 3]], dense


CASES = [  # (cls, kernel, stride, padding)
    (SubMConv3d, 3, 1, 1),
    (SubMConv3d, (3, 1, 1), 1, (1, 0, 0)),
    (SubMConv3d, (5, 3, 1), 1, (2, 1, 0)),
    (SubMConv3d, 1, 1, 0),
    (SparseConv3d, 3, 2, 1),
    (SparseConv3d, 3, 2, (0, 1, 1)),
    (SparseConv3d, (3, 1, 1), (2, 1, 1), 0),
    (SparseConv3d, 2, 2, 0),
    (SparseConv3d, 3, 1, 0),
    (SparseConv3d, (2, 3, 4), (1, 2, 3), (1, 0, 2)),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cls,kernel,stride,padding", CASES)
def test_matches_dense_conv3d_values_and_gradients(device, cls, kernel, stride, padding):
    torch.manual_seed(1)
    x = random_sparse(device=device)
    conv = cls(3, 4, kernel, stride=stride, padding=padding, bias=True).double().to(device)
    features = x.features.clone().requires_grad_()
    y = conv(x.replace_feature(features))
    ref, dense = dense_at_sites(x.replace_feature(features), conv, y.indices)
    torch.testing.assert_close(y.features, ref)

    # Output sites: SubM keeps the input sites; a strided conv outputs wherever the window holds an input.
    if cls is SubMConv3d:
        assert torch.equal(y.indices, x.indices) and y.spatial_shape == x.spatial_shape
    else:
        occupancy = x.replace_feature(torch.ones_like(x.features[:, :1])).dense()
        reach = F.conv3d(occupancy, torch.ones(1, 1, *conv.kernel_size, dtype=occupancy.dtype, device=device),
                         stride=conv.geometry.stride, padding=conv.geometry.padding)
        expected = torch.nonzero(reach[:, 0] > 0).int()
        assert torch.equal(y.indices, expected)  # same set, sorted by (b, z, y, x)
        assert y.spatial_shape == tuple(dense.shape[2:])
    torch.testing.assert_close(y.dense(), dense * (y.replace_feature(torch.ones_like(y.features[:, :1])).dense() > 0))

    grad = torch.randn_like(y.features)
    gx, gw, gb = torch.autograd.grad((y.features * grad).sum(), (features, conv.weight, conv.bias))
    rx, rw, rb = torch.autograd.grad((ref * grad).sum(), (features, conv.weight, conv.bias))
    torch.testing.assert_close(gx, rx)
    torch.testing.assert_close(gw, rw)
    torch.testing.assert_close(gb, rb)


def test_rulebook_built_once_per_indice_key(monkeypatch):
    calls = []
    real = sparse_rules.build_rulebook

    def counting(*args, **kwargs):
        calls.append(args[3])
        return real(*args, **kwargs)

    monkeypatch.setattr("flashocc.ops.sparse_conv.build_rulebook", counting)
    x = random_sparse(channels=4, dtype=torch.float32)
    net = SparseSequential(SubMConv3d(4, 4, 3, padding=1, bias=False, indice_key="subm1"), torch.nn.ReLU(),
                           SubMConv3d(4, 4, 3, padding=1, bias=False, indice_key="subm1"),
                           SparseConv3d(4, 8, 3, stride=2, padding=1, bias=False, indice_key="spconv2"),
                           SubMConv3d(8, 8, 3, padding=1, bias=False, indice_key="subm2"),
                           SubMConv3d(8, 8, 3, padding=1, bias=False, indice_key="subm2"))
    y = net(x)
    assert len(calls) == 3  # subm1, spconv2, subm2
    assert set(y.indice_dict) == {"subm1", "spconv2", "subm2"}
    assert y.indice_dict["subm1"].in_indices is x.indices
    y2 = net[2](net[0](x))  # a fresh tensor has its own cache
    assert len(calls) == 4 and y2.indice_dict["subm1"] is not y.indice_dict["subm1"]


def test_reused_key_must_match_geometry_and_sites():
    x = random_sparse(channels=2, dtype=torch.float32)
    y = SubMConv3d(2, 2, 3, padding=1, indice_key="k")(x)
    with pytest.raises(ConfigError, match="indice_key 'k' was built for"):
        SubMConv3d(2, 2, 1, indice_key="k")(y)
    z = SparseConv3d(2, 2, 3, stride=2, padding=1)(y)
    with pytest.raises(ConfigError, match="other sites"):
        SubMConv3d(2, 2, 3, padding=1, indice_key="k")(z)


def _fwd_bwd(threads, x, convs, grad_seed=0):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        feats = x.features.clone().requires_grad_()
        y = x.replace_feature(feats)
        for conv in convs:
            y = conv(y)
        grad = torch.randn(y.features.shape, generator=torch.Generator().manual_seed(grad_seed))
        params = [c.weight for c in convs]
        grads = torch.autograd.grad((y.features * grad).sum(), [feats, *params])
        return [y.features.detach(), *grads]
    finally:
        torch.set_num_threads(before)


def test_deterministic_bitwise_across_thread_counts_and_runs():
    # Dense enough that many pairs of each offset land on the same rows across offsets.
    x = random_sparse(shape=(12, 40, 40), batch=2, channels=16, density=0.3, seed=4, dtype=torch.float32)
    torch.manual_seed(0)
    convs = [SubMConv3d(16, 16, 3, padding=1, bias=False, indice_key="a"),
             SparseConv3d(16, 32, 3, stride=2, padding=1, bias=False)]
    one = _fwd_bwd(1, x, convs)
    two = _fwd_bwd(2, x, convs)
    again = _fwd_bwd(2, x, convs)
    for a, b, c in zip(one, two, again):
        assert torch.equal(a, b) and torch.equal(b, c)


def test_sparse_sequential_applies_batchnorm_relu_to_features():
    x = random_sparse(channels=4, dtype=torch.float32)
    conv = SubMConv3d(4, 6, 3, padding=1, bias=False, indice_key="s")
    bn = torch.nn.BatchNorm1d(6, eps=1e-3, momentum=0.01)
    net = SparseSequential(conv, bn, torch.nn.ReLU())
    y = net(x)
    expected = torch.relu(bn(conv(x).features))
    torch.testing.assert_close(y.features, expected)
    assert set(net.state_dict()) == {"0.weight", "1.weight", "1.bias", "1.running_mean", "1.running_var",
                                     "1.num_batches_tracked"}


def _spconv2_layout(w):
    """(C_out, kD, kH, kW, C_in) written out element by element from a Conv3d weight."""
    co, ci, kd, kh, kw = w.shape
    out = torch.empty(co, kd, kh, kw, ci, dtype=w.dtype)
    for a, b, c, d, e in np.ndindex(co, ci, kd, kh, kw):
        out[a, c, d, e, b] = w[a, b, c, d, e]
    return out


def _spconv1_layout(w):
    """(kD, kH, kW, C_in, C_out) written out element by element."""
    co, ci, kd, kh, kw = w.shape
    out = torch.empty(kd, kh, kw, ci, co, dtype=w.dtype)
    for a, b, c, d, e in np.ndindex(co, ci, kd, kh, kw):
        out[c, d, e, b, a] = w[a, b, c, d, e]
    return out


@pytest.mark.parametrize("layout", ["spconv2", "spconv1"])
def test_weight_converters_reproduce_a_dense_conv(layout):
    torch.manual_seed(2)
    x = random_sparse(channels=3)
    dense_w = torch.randn(5, 3, 3, 1, 2, dtype=torch.float64)  # asymmetric kernel: a wrong permute shows
    stored = _spconv2_layout(dense_w) if layout == "spconv2" else _spconv1_layout(dense_w)
    conv = SparseConv3d(3, 5, (3, 1, 2), stride=(2, 1, 1), padding=(1, 0, 0), bias=False).double()
    convert = sparse_weight_from_spconv2 if layout == "spconv2" else sparse_weight_from_spconv1
    conv.load_state_dict({"weight": convert(stored)})
    y = conv(x)
    ref = F.conv3d(x.dense(), dense_w, stride=(2, 1, 1), padding=(1, 0, 0))
    b = y.indices.long()
    torch.testing.assert_close(y.features, ref[b[:, 0], :, b[:, 1], b[:, 2], b[:, 3]])
    if layout == "spconv2":
        assert torch.equal(sparse_weight_to_spconv2(conv.weight.detach()), stored)
    with pytest.raises(CheckpointMismatchError, match="5 dims"):
        convert(torch.zeros(3, 3))


def test_real_lidar_crop_matches_dense(lidar_points):
    _, coords, _ = hard_voxelize(lidar_points, (0.05, 0.05, 0.16), (-40.0, -40.0, -1.0, 40.0, 40.0, 5.4), 10, 120000)
    # A 64 x 64-cell (3.2 m) window next to the ego vehicle, all 41 z cells: dense enough to test.
    lo = 800 + 20
    keep = (coords[:, 1] >= lo) & (coords[:, 1] < lo + 64) & (coords[:, 2] >= lo) & (coords[:, 2] < lo + 64)
    idx = torch.nn.functional.pad(coords[keep] - torch.tensor([0, lo, lo], dtype=torch.int32), (1, 0))
    assert len(idx) > 300
    g = torch.Generator().manual_seed(0)
    x = SparseTensor(torch.randn(len(idx), 5, generator=g, dtype=torch.float64), idx, (41, 64, 64), 1)
    conv_in = SubMConv3d(5, 8, 3, padding=1, bias=False, indice_key="subm1").double()
    down = SparseConv3d(8, 8, 3, stride=2, padding=1, bias=False).double()
    y = conv_in(x)
    ref, _ = dense_at_sites(x, conv_in, y.indices)
    torch.testing.assert_close(y.features, ref)
    z = down(y)
    ref, dense = dense_at_sites(y, down, z.indices)
    torch.testing.assert_close(z.features, ref)
    assert z.spatial_shape == (21, 32, 32) == tuple(dense.shape[2:])


def test_bad_inputs_and_configs_raise_typed_errors():
    x = random_sparse(channels=2, dtype=torch.float32)
    dup = SparseTensor(torch.zeros(2, 2), torch.tensor([[0, 1, 1, 1], [0, 1, 1, 1]], dtype=torch.int32), (4, 4, 4), 1)
    with pytest.raises(DataError, match="twice"):
        SubMConv3d(2, 2, 3, padding=1)(dup)
    out_of_grid = SparseTensor(torch.zeros(1, 2), torch.tensor([[0, 4, 0, 0]], dtype=torch.int32), (4, 4, 4), 1)
    with pytest.raises(DataError, match="must lie in"):
        SparseConv3d(2, 2, 3)(out_of_grid)
    with pytest.raises(DataError, match="input channels"):
        SubMConv3d(3, 2, 3, padding=1)(x)
    with pytest.raises(DataError, match=r"\(M, 4\)"):
        SparseTensor(torch.zeros(3, 2), torch.zeros(3, 3, dtype=torch.int32), (4, 4, 4), 1)
    with pytest.raises(ConfigError, match="odd kernel"):
        SubMConv3d(2, 2, 2)
    with pytest.raises(ConfigError, match="odd kernel"):
        SubMConv3d(2, 2, 3, stride=2, padding=1)
    with pytest.raises(ConfigError, match="dilation"):
        SparseConv3d(2, 2, 3, dilation=2)
    with pytest.raises(ConfigError, match="no output"):
        SparseConv3d(2, 2, 5)(SparseTensor(torch.zeros(1, 2), torch.zeros(1, 4, dtype=torch.int32), (2, 8, 8), 1))
    with pytest.raises(ConfigError, match="backend"):
        SubMConv3d(2, 2, 3, padding=1, backend="cuda")


def test_empty_input_gives_empty_output():
    x = SparseTensor(torch.zeros(0, 2), torch.zeros(0, 4, dtype=torch.int32), (4, 4, 4), 1)
    assert SubMConv3d(2, 3, 3, padding=1)(x).features.shape == (0, 3)
    y = SparseConv3d(2, 3, 3, stride=2, padding=1)(x)
    assert y.features.shape == (0, 3) and y.dense().shape == (1, 3, 2, 2, 2)


def test_sorted_rows_give_bitwise_the_same_conv():
    # Each output row sums its centre and then its offsets in kernel order whatever the row order, so
    # sort_sites (the faster layout) changes nothing but the row order.
    x = random_sparse(shape=(6, 20, 20), channels=4, density=0.3, dtype=torch.float32)
    s = x.sort_sites()
    key = ((s.indices[:, 0] * 6 + s.indices[:, 1]) * 20 + s.indices[:, 2]) * 20 + s.indices[:, 3]
    assert bool((key[1:] > key[:-1]).all()) and not s.indice_dict
    torch.manual_seed(3)
    for conv in (SubMConv3d(4, 5, 3, padding=1), SparseConv3d(4, 5, 3, stride=2, padding=1)):
        assert torch.equal(conv(x).dense(), conv(s).dense())
