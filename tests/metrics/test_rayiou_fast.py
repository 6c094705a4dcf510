"""The fast RayIoU path gives bit-identical totals to the path it replaced (``_rayiou_legacy``), on the
real Occ3D frame and on random volumes, with both backends."""
import numpy as np
import pytest

from flashocc.grid import OCC3D_NUSCENES, OccGrid
from flashocc.metrics import RayIoU
from flashocc.metrics.raycast import cast_metric_rays, cast_rays, lidar_ray_directions, pack_occupancy

from _metrics_helpers import EIGHT_ORIGINS, needs_numba, relabelled, shifted

pytestmark = needs_numba          # the legacy path is a numba kernel


def _legacy():
    import _rayiou_legacy
    return _rayiou_legacy


def _noisy(gt: np.ndarray, seed: int) -> np.ndarray:
    """GT shifted one voxel along y, 5 % of the voxels relabelled at random (free included)."""
    rng = np.random.default_rng(seed)
    pred = shifted(gt, 1)
    flip = rng.random(gt.shape) < 0.05
    pred[flip] = rng.integers(0, 18, size=int(flip.sum()))
    return pred


def _assert_same_totals(metric: RayIoU, expected: list[dict[str, np.ndarray]]) -> None:
    state = metric.state()
    for key in ("gt_count", "pred_count", "tp"):
        want = np.sum([e[key] for e in expected], axis=0)
        np.testing.assert_array_equal(state[key].numpy(), want, err_msg=key)


@pytest.mark.parametrize("case", ["noisy", "shift_z", "relabel", "all_free", "itself"])
def test_real_frame_totals_equal_the_old_path(occ3d, case):
    gt = occ3d["semantics"]
    pred = {"noisy": _noisy(gt, 0), "shift_z": shifted(gt, 2), "relabel": relabelled(gt),
            "all_free": np.full_like(gt, 17), "itself": gt}[case]
    metric = RayIoU(backend="numba")
    metric.update(pred, gt, EIGHT_ORIGINS)
    expected = _legacy().legacy_totals(pred, gt, EIGHT_ORIGINS, lidar_ray_directions(), OCC3D_NUSCENES)
    _assert_same_totals(metric, [expected])


def _random_grid_case(rng: np.random.Generator):
    """A random small grid (anisotropic in cells, isotropic voxels), labels, a prediction and origins
    inside, at the edge of and outside the grid (rays that walk in from outside, or never enter)."""
    shape = tuple(int(s) for s in rng.integers(4, 40, size=3))
    lower = tuple(float(x) for x in rng.uniform(-20, 0, size=3))
    voxel = float(rng.choice([0.4, 0.5, 1.0]))
    grid = OccGrid(lower=lower, upper=tuple(lo + n * voxel for lo, n in zip(lower, shape)),
                   voxel_size=(voxel,) * 3, class_names=OCC3D_NUSCENES.class_names)
    gt = np.where(rng.random(shape) < rng.uniform(0.01, 0.2), rng.integers(0, 17, size=shape), 17).astype(np.uint8)
    pred = np.where(rng.random(shape) < 0.1, rng.integers(0, 18, size=shape), gt).astype(np.uint8)
    span = np.array(shape) * voxel
    origins = np.array(lower) + rng.uniform(-0.3, 1.3, size=(4, 3)) * span
    origins[0] = np.array(lower) + (np.floor(rng.uniform(0, shape)) + 0.5) * voxel   # a voxel centre
    # far away on the -x side, level with the grid's centre: the rays that reach the grid have walked
    # most of the official step limit first, which then stops them inside
    far = np.array(lower) + (np.array([-rng.uniform(975, 995), 0.5 * shape[1], 0.5 * shape[2]])) * voxel
    return grid, gt, pred, np.vstack([origins, far])


def test_random_volumes_totals_equal_the_old_path():
    rng = np.random.default_rng(7)
    for _ in range(8):
        grid, gt, pred, origins = _random_grid_case(rng)
        metric = RayIoU(grid, backend="numba", thresholds=(0.3, 1.0, 2.7))
        metric.update(pred, gt, origins)
        expected = _legacy().legacy_totals(pred, gt, origins, lidar_ray_directions(), grid, (0.3, 1.0, 2.7))
        _assert_same_totals(metric, [expected])


def test_metric_kernel_matches_the_old_kernel_bit_for_bit(occ3d):
    """Index and float64 distance of every ray, real frame and random grids, all rays and a subset."""
    legacy = _legacy()
    rng = np.random.default_rng(3)
    dirs = lidar_ray_directions()
    cases = [(OCC3D_NUSCENES, occ3d["semantics"], _noisy(occ3d["semantics"], 1), EIGHT_ORIGINS)]
    cases += [_random_grid_case(rng) for _ in range(4)]
    for grid, gt, pred, origins in cases:
        codes = pack_occupancy([gt, pred], 17)
        o_vox, e_vox = legacy.to_voxel_units(origins, dirs, grid)
        index = np.empty((2,) + e_vox.shape[:2], dtype=np.int64)
        dist = np.empty((2,) + e_vox.shape[:2], dtype=np.float64)
        legacy.cast_kernel(codes.reshape(-1), *codes.shape, 2, o_vox, np.ascontiguousarray(e_vox), index, dist)
        new_index, new_dist = cast_metric_rays(codes, 2, origins, dirs, grid, backend="numba")
        np.testing.assert_array_equal(new_index, index.reshape(2, -1))
        np.testing.assert_array_equal(new_dist.view(np.int64), dist.reshape(2, -1).view(np.int64))
        old_index, old_dist = cast_rays(codes, 2, o_vox, e_vox, "numba")   # the voxel-unit entry point
        np.testing.assert_array_equal(old_index, index)
        np.testing.assert_array_equal(old_dist.view(np.int64), dist.view(np.int64))
        some = np.sort(rng.choice(index[0].size, size=500, replace=False))
        sub_index, sub_dist = cast_metric_rays(codes, 2, origins, dirs, grid, rays=some, backend="numba")
        np.testing.assert_array_equal(sub_index, index.reshape(2, -1)[:, some])
        np.testing.assert_array_equal(sub_dist, dist.reshape(2, -1)[:, some])


def test_torch_backend_equals_the_old_path_on_the_real_frame(occ3d):
    gt = occ3d["semantics"]
    pred = _noisy(gt, 2)
    origins = EIGHT_ORIGINS[[0, 6]]
    metric = RayIoU(backend="torch")
    metric.update(pred, gt, origins)
    expected = _legacy().legacy_totals(pred, gt, origins, lidar_ray_directions(), OCC3D_NUSCENES)
    _assert_same_totals(metric, [expected])


def test_ray_ids_are_checked():
    codes = np.zeros((4, 4, 4), np.uint8)
    grid = OccGrid(lower=(0.0, 0.0, 0.0), upper=(4.0, 4.0, 4.0), voxel_size=(1.0, 1.0, 1.0),
                   class_names=OCC3D_NUSCENES.class_names)
    with pytest.raises(ValueError, match="ray ids"):
        cast_metric_rays(codes, 1, np.zeros((1, 3)), lidar_ray_directions(), grid, rays=np.array([14040]))


@pytest.mark.parametrize("cached", [False, True])
def test_compiled_bookkeeping_equals_the_numpy_one(occ3d, tmp_path, cached):
    """The numba path counts rays as ``RayIoU._add`` does, thresholds compared in float32 included
    (0.7 m is not a float32: numpy compares float32 distances with float32(0.7))."""
    from flashocc.metrics.ray_cache import GTRayCache

    gt = occ3d["semantics"]
    thresholds = (0.3, 0.7, 1.0, 2.7)
    compiled = RayIoU(backend="numba", thresholds=thresholds, cache=GTRayCache(tmp_path) if cached else None)
    by_numpy = RayIoU(backend="numba", thresholds=thresholds)
    for seed in range(3):
        pred = _noisy(gt, seed)
        for _ in range(1 + cached):            # cached: the second update reads the GT entry
            compiled.update(pred, gt, EIGHT_ORIGINS[:4])
            hits = by_numpy.caster.hits(pred, gt, EIGHT_ORIGINS[:4])
            by_numpy.update_hits(hits)
    for key, value in by_numpy.state().items():
        np.testing.assert_array_equal(compiled.state()[key].numpy(), value.numpy(), err_msg=key)
    if cached:
        assert (compiled.cache.misses, compiled.cache.hits) == (1, 5)     # one GT, six predictions


def test_thread_counts_give_the_same_casts_and_totals(occ3d):
    """1, 2 and 3 threads (uneven chunks included) cast every ray to the same bits; the totals equal
    the replaced caster's."""
    gt = occ3d["semantics"]
    pred = _noisy(gt, 4)
    codes = pack_occupancy([gt, pred], 17)
    dirs = lidar_ray_directions()
    some = np.sort(np.random.default_rng(5).choice(8 * 14040, size=30_001, replace=False))
    serial = cast_metric_rays(codes, 2, EIGHT_ORIGINS, dirs, OCC3D_NUSCENES, backend="numba", threads=1)
    serial_some = cast_metric_rays(codes, 2, EIGHT_ORIGINS, dirs, OCC3D_NUSCENES, rays=some, backend="numba",
                                   threads=1)
    expected = _legacy().legacy_totals(pred, gt, EIGHT_ORIGINS, dirs, OCC3D_NUSCENES)
    for threads in (2, 3):
        index, dist = cast_metric_rays(codes, 2, EIGHT_ORIGINS, dirs, OCC3D_NUSCENES, backend="numba", threads=threads)
        np.testing.assert_array_equal(index, serial[0])
        np.testing.assert_array_equal(dist.view(np.int64), serial[1].view(np.int64))
        index, dist = cast_metric_rays(codes, 2, EIGHT_ORIGINS, dirs, OCC3D_NUSCENES, rays=some, backend="numba",
                                       threads=threads)
        np.testing.assert_array_equal(index, serial_some[0])
        np.testing.assert_array_equal(dist.view(np.int64), serial_some[1].view(np.int64))
        metric = RayIoU(backend="numba", threads=threads)
        metric.update(pred, gt, EIGHT_ORIGINS)
        _assert_same_totals(metric, [expected])


def test_thread_count_setting(monkeypatch):
    from flashocc.errors import ConfigError
    from flashocc.metrics._ray_threads import ENV, available_cores, ray_threads

    monkeypatch.delenv(ENV, raising=False)
    assert ray_threads() == available_cores() >= 1
    monkeypatch.setenv(ENV, "3")
    assert ray_threads() == 3
    assert ray_threads(1) == 1                          # an explicit count wins over the environment
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv(ENV, bad)
        with pytest.raises(ConfigError, match=ENV):
            ray_threads()
    with pytest.raises(ConfigError, match="threads"):
        RayIoU(backend="numba", threads=0)


def test_a_failing_chunk_raises_and_the_pool_keeps_working():
    from flashocc.metrics._ray_threads import run_chunked

    done = np.zeros(10_000, dtype=np.int64)

    def kernel(start, stop):
        if start == 0:
            raise RuntimeError("chunk failed")
        done[start:stop] += 1

    with pytest.raises(RuntimeError, match="chunk failed"):
        run_chunked(kernel, done.size, 2)
    done[:] = 0
    run_chunked(lambda a, b: done.__setitem__(slice(a, b), done[a:b] + 1), done.size, 3)
    assert (done == 1).all()                            # every ray exactly once
    calls = []
    run_chunked(lambda a, b: calls.append((a, b)), 0, 2)    # a cached sample without scored rays
    assert calls in ([], [(0, 0)])
