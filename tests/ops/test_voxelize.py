import numpy as np
import pytest
import torch

from flashocc.errors import ConfigError, DataError
from flashocc.ops.voxelize import HardSimpleVFE, Voxelization, grid_shape, hard_voxelize

EFFOCC_VOXEL = (0.05, 0.05, 0.16)  # EFFOcc@13aeb78 flashocc_fusion_r18_base_100%_seqs.py, voxel_size
EFFOCC_RANGE = (-40.0, -40.0, -1.0, 40.0, 40.0, 5.4)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def reference_voxelize(points, voxel_size, point_range, max_points, max_voxels):
    """mmcv's CPU kernel written out: walk the points in order, open a voxel on first hit while under the
    cap, append while the voxel has room."""
    pts = points.numpy()
    size = np.asarray(voxel_size, np.float32)
    lower = np.asarray(point_range[:3], np.float32)
    grid = np.round((np.asarray(point_range[3:], np.float32) - lower) / size).astype(np.int64)
    cells = np.floor((pts[:, :3] - lower) / size).tolist()  # float32 arithmetic like the kernel
    gx, gy, gz = grid.tolist()
    voxel_of, voxels, coords = {}, [], []
    for p, (x, y, z) in zip(pts, cells):
        if not (0 <= x < gx and 0 <= y < gy and 0 <= z < gz):  # NaN fails every comparison
            continue
        key = (int(z), int(y), int(x))
        if key not in voxel_of:
            if len(voxels) >= max_voxels:
                continue
            voxel_of[key] = len(voxels)
            voxels.append([])
            coords.append(key)
        rows = voxels[voxel_of[key]]
        if len(rows) < max_points:
            rows.append(p)
    out = np.zeros((len(voxels), max_points, pts.shape[1]), np.float32)
    for i, rows in enumerate(voxels):
        out[i, : len(rows)] = rows
    return out, np.asarray(coords, np.int32).reshape(-1, 3), np.asarray([len(r) for r in voxels], np.int32)


def _check(points, voxel_size, point_range, max_points, max_voxels, device="cpu"):
    voxels, coords, counts = hard_voxelize(points.to(device), voxel_size, point_range, max_points, max_voxels)
    ref_v, ref_c, ref_n = reference_voxelize(points, voxel_size, point_range, max_points, max_voxels)
    assert coords.dtype == torch.int32 and counts.dtype == torch.int32
    np.testing.assert_array_equal(coords.cpu().numpy(), ref_c)
    np.testing.assert_array_equal(counts.cpu().numpy(), ref_n)
    np.testing.assert_array_equal(voxels.cpu().numpy(), ref_v)
    return voxels, coords, counts


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("max_points,max_voxels", [(10, 100000), (3, 100000), (4, 50), (1, 7)])
def test_random_points_match_reference(device, max_points, max_voxels):
    g = torch.Generator().manual_seed(max_points * 100 + max_voxels % 97)
    # A small grid (4 x 5 x 3 cells of 0.5 m) so voxels fill up; some points fall outside on every side.
    pts = torch.rand(3000, 5, generator=g) * torch.tensor([2.6, 3.0, 1.9, 1.0, 1.0]) - torch.tensor([0.3, 0.25, 0.2, 0, 0])
    voxels, coords, counts = _check(pts, (0.5, 0.5, 0.5), (0.0, 0.0, 0.0, 2.0, 2.5, 1.5), max_points, max_voxels, device)
    assert counts.max() == max_points  # the per-voxel cap is hit
    assert len(coords) == min(max_voxels, 4 * 5 * 3)


def test_points_on_cell_borders_and_outside_are_handled_like_mmcv():
    # Exactly on the lower bound -> cell 0; exactly on the upper bound -> dropped; NaN -> dropped.
    pts = torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.1, 0.1], [0.5, 0.5, 0.5], [-1e-7, 0.1, 0.1],
                        [float("nan"), 0.1, 0.1], [0.49999, 0.1, 0.1], [0.5, 0.1, 0.1]])
    _, coords, counts = _check(pts, (0.5, 0.5, 0.5), (0.0, 0.0, 0.0, 2.0, 2.0, 2.0), 5, 100)
    assert coords.tolist() == [[0, 0, 0], [1, 1, 1], [0, 0, 1]]
    assert counts.tolist() == [2, 1, 1]


def test_voxels_numbered_by_first_hit_so_the_cap_drops_the_last_points():
    # Point order, not cell order, numbers the voxels: the cap keeps the cells hit first.
    pts = torch.tensor([[1.5, 0.5, 0.5], [0.5, 0.5, 0.5], [1.5, 0.6, 0.5], [2.5, 0.5, 0.5], [0.6, 0.5, 0.5]])
    voxels, coords, counts = hard_voxelize(pts, (1.0, 1.0, 1.0), (0, 0, 0, 3, 1, 1), 10, 2)
    assert coords.tolist() == [[0, 0, 1], [0, 0, 0]]
    assert counts.tolist() == [2, 2]
    torch.testing.assert_close(voxels[0, :2], pts[[0, 2]])


@pytest.mark.parametrize("max_voxels", [120000, 6000])
def test_real_lidar_matches_reference(lidar_points, max_voxels):
    pts = lidar_points
    _, coords, counts = _check(pts, EFFOCC_VOXEL, EFFOCC_RANGE, 10, max_voxels)
    assert grid_shape(EFFOCC_VOXEL, EFFOCC_RANGE) == (1600, 1600, 40)
    if max_voxels == 6000:
        assert len(coords) == 6000
    else:
        assert 15000 < len(coords) < max_voxels  # one sweep stays far below the test-time cap
    assert int(coords[:, 0].max()) < 40


def test_real_lidar_two_sweeps_hit_both_caps(lidar_points):
    # The cloud plus a copy shifted by 1 cm (a second sweep): dense voxels fill past 10 points, and the
    # voxel cap drops the voxels that only the copy reaches.
    pts = lidar_points
    shifted = pts.clone()
    shifted[:, :2] += 0.01
    _, coords, counts = _check(torch.cat([pts, shifted]), EFFOCC_VOXEL, EFFOCC_RANGE, 10, 25000)
    assert int(counts.max()) == 10 and len(coords) == 25000


def test_hard_simple_vfe_is_mean_of_real_points():
    g = torch.Generator().manual_seed(3)
    pts = torch.rand(500, 5, generator=g) * 2
    voxels, coords, counts = hard_voxelize(pts, (0.5, 0.5, 0.5), (0, 0, 0, 2, 2, 2), 4, 1000)
    mean = HardSimpleVFE(num_features=5)(voxels, counts, coords)
    assert mean.shape == (len(coords), 5)
    for i in range(len(coords)):
        torch.testing.assert_close(mean[i], voxels[i, : counts[i]].mean(0))
    assert HardSimpleVFE(num_features=3)(voxels, counts).shape == (len(coords), 3)


def test_voxelization_module_batches_and_picks_cap_by_mode():
    g = torch.Generator().manual_seed(5)
    clouds = [torch.rand(400, 4, generator=g) * 2, torch.rand(300, 4, generator=g) * 2]
    vox = Voxelization((0.5, 0.5, 0.5), (0, 0, 0, 2, 2, 2), max_points=3, max_voxels=(20, 50))
    v, c, n = vox.train()(clouds)
    assert c.shape == (40, 4) and c[:20, 0].eq(0).all() and c[20:, 0].eq(1).all()
    v, c, n = vox.eval()(clouds)
    assert c.shape == (100, 4) and v.shape == (100, 3, 4)
    _, c1, _ = hard_voxelize(clouds[1], (0.5, 0.5, 0.5), (0, 0, 0, 2, 2, 2), 3, 50)
    assert torch.equal(c[50:, 1:], c1)


def test_bad_inputs_raise_typed_errors():
    with pytest.raises(DataError, match="x, y, z first"):
        hard_voxelize(torch.zeros(5, 2), (1, 1, 1), (0, 0, 0, 1, 1, 1), 1, 1)
    with pytest.raises(DataError, match="floating-point"):
        hard_voxelize(torch.zeros(5, 3, dtype=torch.int64), (1, 1, 1), (0, 0, 0, 1, 1, 1), 1, 1)
    with pytest.raises(ConfigError, match="voxel_size"):
        hard_voxelize(torch.zeros(5, 3), (1, 1), (0, 0, 0, 1, 1, 1), 1, 1)
    with pytest.raises(ConfigError, match="max > min"):
        hard_voxelize(torch.zeros(5, 3), (1, 1, 1), (0, 0, 0, 1, -1, 1), 1, 1)
    with pytest.raises(ConfigError, match="max_points"):
        hard_voxelize(torch.zeros(5, 3), (1, 1, 1), (0, 0, 0, 1, 1, 1), 0, 1)
