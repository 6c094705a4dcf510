"""The ray caster against hand-computed distances and a literal per-ray reference."""
import math

import numpy as np
import pytest

from flashocc.grid import OCC3D_NUSCENES
from flashocc.metrics.raycast import cast_rays, lidar_ray_directions, pack_occupancy, to_voxel_units

from _raycast_reference import reference_cast
from _metrics_helpers import EIGHT_ORIGINS, needs_numba

BACKENDS = [pytest.param("numba", marks=needs_numba), "torch"]


def _cast_one(occupied: np.ndarray, origin, endpoint, backend: str):
    codes = occupied.astype(np.uint8)
    o = np.asarray([origin], dtype=np.float32)
    e = np.asarray([[endpoint]], dtype=np.float32)
    index, dist = cast_rays(codes, 1, o, e, backend)
    return np.unravel_index(int(index[0, 0, 0]), occupied.shape), float(dist[0, 0, 0])


def test_directions_match_the_official_ray_set():
    dirs = lidar_ray_directions()
    assert dirs.shape == (14040, 3) and dirs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(dirs, axis=1), 1.0, atol=1e-6)
    pitch = np.arcsin(dirs[::360, 2].astype(np.float64))
    assert len(pitch) == 39
    assert math.degrees(pitch[0]) == pytest.approx(-45.0, abs=1e-4)
    assert pitch[-1] == pytest.approx(0.21900, abs=1e-4)
    np.testing.assert_allclose(np.degrees(np.arctan2(dirs[:360, 1], dirs[:360, 0])) % 360, np.arange(360), atol=1e-3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_hand_made_volume(backend):
    occ = np.zeros((4, 4, 4), dtype=bool)
    occ[3, 1, 1] = True
    # along +x from the centre of voxel (0, 1, 1): voxel 3 is left at x = 4, i.e. 3.5 voxels away
    assert _cast_one(occ, (0.5, 1.5, 1.5), (1.5, 1.5, 1.5), backend) == ((3, 1, 1), 3.5)
    # along -x from voxel 3: the first voxel (the origin's own) is occupied, exit distance 0.5
    assert _cast_one(occ, (3.5, 1.5, 1.5), (2.5, 1.5, 1.5), backend) == ((3, 1, 1), 0.5)
    # nothing hit: the last in-grid voxel and the distance where the ray leaves the grid
    assert _cast_one(occ, (0.5, 2.5, 1.5), (1.5, 2.5, 1.5), backend) == ((3, 2, 1), 3.5)
    assert _cast_one(occ, (2.5, 2.5, 2.25), (2.5, 2.5, 1.25), backend) == ((2, 2, 0), 2.25)
    # never enters the grid: distance -1 at voxel (0, 0, 0)
    assert _cast_one(occ, (-5.5, 1.5, 1.5), (-6.5, 1.5, 1.5), backend) == ((0, 0, 0), -1.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_start_voxel_truncates_toward_zero(backend):
    # Official quirk: int(-0.5) == 0, so a ray starting half a voxel outside begins "in" voxel 0
    # and leaves it at x = 1, 1.5 voxels away (true geometry: 1.0).
    occ = np.zeros((4, 4, 4), dtype=bool)
    occ[0, 1, 1] = True
    assert _cast_one(occ, (-0.5, 1.5, 1.5), (0.5, 1.5, 1.5), backend) == ((0, 1, 1), 1.5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_corner_ties_prefer_y_then_z(backend):
    half_diag = 0.5 * math.sqrt(2.0)
    occ = np.zeros((4, 4, 4), dtype=bool)
    # diagonal in x/y through the corner: tMaxX == tMaxY, Y is advanced first, so (1, 0, 0) is skipped
    occ[1, 0, 0] = True
    (voxel, dist) = _cast_one(occ, (0.5, 0.5, 0.5), (1.5, 1.5, 0.5), backend)
    assert voxel == (3, 3, 0) and dist == pytest.approx(3.5 * math.sqrt(2.0), abs=1e-12)
    occ[0, 1, 0] = True
    # (0, 1, 0) is entered and left at the same distance (the corner): exit distance 0.5 * sqrt(2)
    (voxel, dist) = _cast_one(occ, (0.5, 0.5, 0.5), (1.5, 1.5, 0.5), backend)
    assert voxel == (0, 1, 0) and dist == pytest.approx(half_diag, abs=1e-12)
    # diagonal in x/z: tMaxX == tMaxZ goes to Z, so (0, 0, 1) is visited and (1, 0, 0) skipped
    occ2 = np.zeros((4, 4, 4), dtype=bool)
    occ2[1, 0, 0] = True
    occ2[0, 0, 1] = True
    (voxel, dist) = _cast_one(occ2, (0.5, 0.5, 0.5), (1.5, 0.5, 1.5), backend)
    assert voxel == (0, 0, 1) and dist == pytest.approx(half_diag, abs=1e-12)


def _random_case(rng: np.random.Generator, n_rays: int):
    shape = tuple(int(s) for s in rng.integers(3, 12, size=3))
    occ = rng.random(shape) < 0.08
    origins = np.concatenate([rng.uniform(-1.5, np.array(shape) + 1.5, size=(3, 3)),
                              np.floor(rng.uniform(0, shape, size=(2, 3))) + 0.5]).astype(np.float32)
    dirs = rng.normal(size=(n_rays, 3))
    # include exact diagonals and axis-aligned rays: the tie-breaking cases
    steps = (-1, 0, 1)
    dirs[:26] = np.array([(x, y, z) for x in steps for y in steps for z in steps if (x, y, z) != (0, 0, 0)])
    ends = (origins[:, None, :] + dirs[None]).astype(np.float32)
    return occ, origins, ends


@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_slow_reference_on_random_cases(backend):
    rng = np.random.default_rng(0)
    for _ in range(6):
        occ, origins, ends = _random_case(rng, 60)
        index, dist = cast_rays(occ.astype(np.uint8), 1, origins, ends, backend)
        for k in range(len(origins)):
            for r in range(ends.shape[1]):
                voxel, d = reference_cast(occ, origins[k], ends[k, r])
                assert dist[0, k, r] == d, (k, r)
                assert np.unravel_index(int(index[0, k, r]), occ.shape) == voxel, (k, r)


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_volumes_share_one_walk(backend):
    rng = np.random.default_rng(1)
    occ_a, origins, ends = _random_case(rng, 40)
    occ_b = rng.random(occ_a.shape) < 0.2
    codes = pack_occupancy([np.where(occ_a, 1, 17), np.where(occ_b, 1, 17)], free_label=17)
    index, dist = cast_rays(codes, 2, origins, ends, backend)
    for v, occ in enumerate((occ_a, occ_b)):
        i1, d1 = cast_rays(occ.astype(np.uint8), 1, origins, ends, backend)
        np.testing.assert_array_equal(index[v], i1[0])
        np.testing.assert_array_equal(dist[v], d1[0])


@needs_numba
def test_backends_agree_on_the_real_volume(occ3d):
    gt = occ3d["semantics"]
    o, e = to_voxel_units(EIGHT_ORIGINS[:2], lidar_ray_directions(), OCC3D_NUSCENES)
    codes = pack_occupancy([gt, np.roll(gt, 1, axis=0)], 17)
    i_nb, d_nb = cast_rays(codes, 2, o, e, "numba")
    i_t, d_t = cast_rays(codes, 2, o, e, "torch")
    np.testing.assert_array_equal(i_nb, i_t)
    np.testing.assert_array_equal(d_nb, d_t)
    # the independent check (docs/official-behaviour.md#independent-rayiou-check-on-the-fixture):
    # 11,011 non-free GT rays, 3.45..54.24 m
    labels = gt.reshape(-1)[i_nb[0, 0]]
    assert (labels != 17).sum() == 11011
    metres = d_nb[0, 0] * 0.4
    assert metres.min() == pytest.approx(3.452, abs=1e-3) and metres.max() == pytest.approx(54.236, abs=1e-3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_step_limit_stops_a_ray_that_enters_late(backend):
    # The official loop stops after MAX_STEP + 1 iterations, counted from the origin: a ray that walks
    # 990 voxels before it enters sees only the first 11 in-grid voxels, and misses the one at x = 15.
    occ = np.zeros((20, 2, 2), dtype=bool)
    occ[15, :, :] = True
    origin, end = (-990.5, 0.5, 0.5), (-989.5, 0.5, 0.5)
    assert reference_cast(occ, origin, end) == ((10, 0, 0), 1001.5)
    assert _cast_one(occ, origin, end, backend) == ((10, 0, 0), 1001.5)
    # slightly closer, the same ray reaches the occupied voxel
    assert _cast_one(occ, (-980.5, 0.5, 0.5), (-979.5, 0.5, 0.5), backend) == ((15, 0, 0), 996.5)
