"""LiDAR points (keyframe + sweeps) and LiDAR depth images, on the real fixture and hand-made sweeps."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from flashocc.batch import to_device
from flashocc.data import lidar as L
from flashocc.data import transforms as T
from flashocc.data.dataset import DataConfig, OccDataset, collate_batch
from flashocc.data.infos import SampleInfo, SweepInfo
from flashocc.errors import ConfigError, DataError, MissingFileError
from flashocc.geometry import make_transform

KEY_DT_US = 50_000


def _yaw(deg: float, translation=(0.0, 0.0, 0.0)) -> np.ndarray:
    a = np.radians(deg) / 2
    return make_transform(np.array([np.cos(a), 0.0, 0.0, np.sin(a)]), list(translation))


def _keyframe(root: Path, sample: SampleInfo) -> np.ndarray:
    return np.fromfile(root / sample.lidar_path, np.float32).reshape(-1, 5)


def _with_sweeps(root: Path, sample: SampleInfo, count: int, same_world: bool = True
                 ) -> tuple[SampleInfo, list[np.ndarray]]:
    """``count`` sweeps, newest first, each taken from a LiDAR pose sensor2lidar_i behind the keyframe's.
    ``same_world``: sweep i holds the keyframe's points expressed in its own frame, so moving it into the
    keyframe frame must give the keyframe's points again; else it holds the keyframe file as it is (points
    of a shifted world, which land elsewhere)."""
    key = _keyframe(root, sample)
    sweeps, raw = [], []
    for i in range(count):
        s2l = _yaw(2.0 * (i + 1), (-0.6 * (i + 1), 0.1 * i, 0.01 * i))     # ego drove forward and turned a little
        pts = key.copy()
        if same_world:
            inv = np.linalg.inv(s2l)
            pts[:, :3] = (key[:, :3].astype(np.float64) @ inv[:3, :3].T + inv[:3, 3]).astype(np.float32)
        pts[:, 4] = i                                                      # a ring index, replaced by Δt
        rel = f"sweeps/LIDAR_TOP/sweep_{i}.pcd.bin"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        pts.tofile(root / rel)
        sweeps.append(SweepInfo(rel, s2l, sample.timestamp - KEY_DT_US * (i + 1)))
        raw.append(pts)
    return dataclasses.replace(sample, sweeps=sweeps), raw


def _dataset(root: Path, sample: SampleInfo, train: bool = False, **fields) -> OccDataset:
    return OccDataset(root, [sample], DataConfig(load_occ=False, **fields), train=train, aug_seed=0 if train else None)


def _close(points: np.ndarray, radius: float = 1.0) -> np.ndarray:
    return (np.abs(points[:, 0]) < radius) & (np.abs(points[:, 1]) < radius)


def test_keyframe_first_then_nine_padded_copies_without_close_points(data_root):
    root, sample = data_root                                   # the real fixture has no sweeps
    key = _keyframe(root, sample)
    pts = _dataset(root, sample, load_points=True).lidar_points(sample)
    n, far = len(key), ~_close(key)
    assert pts.dtype == np.float32 and pts.shape == (n + 9 * int(far.sum()), 5)
    np.testing.assert_array_equal(pts[:n, :4], key[:, :4])    # intensity kept raw, as upstream
    assert (pts[:, 4] == 0).all()                              # Δt: the ring index is replaced; copies are t = 0
    copies = pts[n:].reshape(9, -1, 5)
    for copy in copies:
        np.testing.assert_array_equal(copy[:, :4], key[far, :4])
    assert _close(key).sum() > 1000                            # the roof points are real, and kept in the keyframe


def test_pad_empty_sweeps_off_gives_the_keyframe_alone(data_root):
    root, sample = data_root
    pts = _dataset(root, sample, pad_empty_sweeps=False).lidar_points(sample)
    assert len(pts) == len(_keyframe(root, sample))


def test_sweeps_are_moved_into_the_keyframe_frame_with_their_time_lag(data_root):
    root, sample = data_root
    sample, raw = _with_sweeps(root, sample, 3)
    key = _keyframe(root, sample)
    pts = _dataset(root, sample).lidar_points(sample)
    parts = np.split(pts, np.cumsum([len(key)] + [int((~_close(r)).sum()) for r in raw[:-1]]))
    np.testing.assert_array_equal(parts[0][:, :4], key[:, :4])
    for i, (part, sweep) in enumerate(zip(parts[1:], raw)):        # newest first, as the infos list them
        kept = ~_close(sweep)                                       # close in the *sweep's* own frame
        np.testing.assert_allclose(part[:, :3], key[kept, :3], atol=1e-4)
        np.testing.assert_array_equal(part[:, 3], key[kept, 3])
        assert np.allclose(part[:, 4], KEY_DT_US * (i + 1) * 1e-6, atol=1e-7)
    # Sweep 2 was taken 1.8 m behind: points close to its sensor are not those close to the keyframe's.
    assert not np.array_equal(~_close(raw[2]), ~_close(key))


def test_train_draws_nine_of_ten_at_random_and_test_takes_the_newest(data_root):
    root, sample = data_root
    sample, _ = _with_sweeps(root, sample, 10)

    def lags(pts: np.ndarray) -> list[float]:
        return [round(float(t), 2) for t in dict.fromkeys(pts[pts[:, 4] > 0, 4].tolist())]

    test = _dataset(root, sample).lidar_points(sample)
    assert lags(test) == [round(0.05 * k, 2) for k in range(1, 10)]   # deterministic: the newest nine
    ds = _dataset(root, sample)
    draws = [lags(ds.lidar_points(sample, np.random.default_rng(seed))) for seed in range(4)]
    assert all(len(d) == len(set(d)) == 9 and set(d) <= {round(0.05 * k, 2) for k in range(1, 11)} for d in draws)
    assert len({tuple(d) for d in draws}) > 1                        # random subsets, in random order
    assert lags(ds.lidar_points(sample, np.random.default_rng(0))) == draws[0]
    # The dataset draws them in training (its augmentation generator) and never at test time.
    train = _dataset(root, sample, train=True, load_points=True, load_lidar_depth=False)
    epochs = []
    for epoch in range(2):
        train.set_epoch(epoch)
        epochs.append(lags(train[0]["points"].numpy()))
    assert epochs[0] != epochs[1] and all(len(e) == 9 for e in epochs)


def test_sweeps_field_limits_the_sweeps_considered(data_root):
    root, sample = data_root
    sample, _ = _with_sweeps(root, sample, 5)
    ds = _dataset(root, sample, sweeps=2)
    lags = set(ds.lidar_points(sample, np.random.default_rng(0))[:, 4].astype(np.float64).round(3).tolist())
    assert lags == {0.0, 0.05, 0.1}


def test_sweeps_used_field_sets_how_many_are_added(data_root):
    root, sample = data_root
    sample, _ = _with_sweeps(root, sample, 5)
    lags = set(_dataset(root, sample, sweeps_used=2).lidar_points(sample)[:, 4].astype(np.float64).round(3).tolist())
    assert lags == {0.0, 0.05, 0.1}


def test_sweep_min_distance_field_sets_the_close_radius(data_root):
    root, sample = data_root
    sample, raw = _with_sweeps(root, sample, 1)
    n_key = len(_keyframe(root, sample))
    assert len(_dataset(root, sample, sweep_min_distance=0.0).lidar_points(sample)) == n_key + len(raw[0])
    wide = _dataset(root, sample, sweep_min_distance=3.0).lidar_points(sample)
    assert len(wide) == n_key + int((~_close(raw[0], 3.0)).sum())


def test_points_follow_the_bev_flips_in_the_grid_frame(data_root, fixture_points_ego):
    root, sample = data_root
    plain = _dataset(root, sample, load_points=True)[0]
    flipped = _dataset(root, sample, train=True, load_points=True, flip_dx_ratio=1.0, flip_dy_ratio=1.0,
                       resize=(0.0, 0.0), rot=(0.0, 0.0), flip=False, pad_empty_sweeps=False)[0]
    n = len(fixture_points_ego)
    np.testing.assert_allclose(plain["points"][:n, :3].numpy(), fixture_points_ego, atol=1e-4)   # lidar2ego
    assert flipped["bda"].diagonal().tolist() == [-1.0, -1.0, 1.0]
    np.testing.assert_allclose(flipped["points"][:, :3].numpy(), fixture_points_ego * [-1, -1, 1], atol=1e-4)
    np.testing.assert_array_equal(flipped["points"][:, 3:].numpy(), plain["points"][:n, 3:].numpy())


def test_lidar_depth_images_project_keyframe_and_sweeps_nearest_first(data_root):
    root, sample = data_root
    ds = _dataset(root, sample, load_lidar_depth=True, load_depth=True)
    out = ds[0]
    depth, gt = out["lidar_depth"], out["gt_depth"]
    assert depth.shape == (6, 256, 704) and depth.dtype == torch.float32
    hit = depth > 0
    assert 10_000 < int(hit.sum()) and depth[hit].min() >= 1.0 and depth[hit].max() < 45.0
    torch.testing.assert_close(depth, gt)                  # padded copies add no new pixel, and nothing nearer
    # With sweeps (the dataset's own steps, without decoding the images again): more pixels, each the nearest.
    with_sweeps, _ = _with_sweeps(root, sample, 3, same_world=False)
    points = ds.lidar_points(with_sweeps)
    swept = torch.from_numpy(L.lidar_depth_images(points, with_sweeps, ds.config.cameras, list(out["post_rots"].numpy()),
                                                  list(out["post_trans"].numpy()), (256, 704), (1.0, 45.0)))
    more = swept > 0
    assert int(more.sum()) > int(hit.sum()) and bool(more[hit].all())
    assert bool((swept[hit] <= depth[hit]).all()) and bool((swept[hit] < depth[hit]).any())


def test_the_nearest_point_wins_where_the_official_float32_key_ties():
    # Two points on one pixel of the bottom row, 0.5 m apart: upstream's sort key pixel + depth / 100
    # is the same float32 for both, so its unstable sort may keep either.
    height, width = 256, 704
    u, v = 700, 255
    rank = v * width + u
    assert np.float32(rank + 10.0 / 100) == np.float32(rank + 9.5 / 100)
    cloud = np.array([[u * d, v * d, d, 0.0, 0.0] for d in (10.0, 9.5)], np.float32)
    for points in (cloud, cloud[::-1]):
        depth = T.lidar_depth_map(points, np.eye(4), np.eye(3), np.eye(3), np.zeros(3), (height, width))
        assert depth[v, u] == np.float32(9.5) and (depth > 0).sum() == 1


def test_collate_keeps_points_as_a_list_and_to_device_moves_them():
    items = [{"token": f"t{i}", "scene_name": "s", "bda": torch.eye(3), "points": torch.zeros(n, 5),
              "lidar_depth": torch.zeros(6, 8, 16)} for i, n in enumerate((3, 5))]
    batch = collate_batch(items)
    assert isinstance(batch["points"], list) and [tuple(p.shape) for p in batch["points"]] == [(3, 5), (5, 5)]
    assert tuple(batch["lidar_depth"].shape) == (2, 6, 8, 16) and tuple(batch["bda"].shape) == (2, 3, 3)
    moved = to_device(batch, torch.device("meta"))
    assert all(p.device.type == "meta" for p in moved["points"]) and moved["bda"].device.type == "meta"
    assert moved["tokens"] == ["t0", "t1"]


@pytest.mark.parametrize("case", ["truncated", "nan", "missing"])
def test_a_bad_or_missing_sweep_file_names_the_file_and_the_sample(data_root, case: str):
    root, sample = data_root
    sample, _ = _with_sweeps(root, sample, 2)
    path = root / sample.sweeps[1].data_path
    if case == "truncated":
        path.write_bytes(path.read_bytes()[:-3])
        error, words = DataError, ["bytes, expected a multiple of 20"]
    elif case == "nan":
        pts = np.fromfile(path, np.float32)
        pts[7] = np.nan
        pts.tofile(path)
        error, words = DataError, ["NaN or infinite", "point 1 of"]
    else:
        path.unlink()
        error, words = MissingFileError, ["LiDAR sweep 1", "not found"]
    with pytest.raises(error) as info:
        _dataset(root, sample).lidar_points(sample)
    assert sample.token in str(info.value) and str(path.name) in str(info.value)
    assert all(w in str(info.value) for w in words), str(info.value)


@pytest.mark.parametrize("field, value, expected", [
    ("load_points", "yes", "true or false"),
    ("load_lidar_depth", 1, "true or false"),
    ("pad_empty_sweeps", None, "true or false"),
    ("sweeps", -1, "an integer >= 0"),
    ("sweeps", 2.5, "an integer >= 0"),
    ("sweeps_used", True, "an integer >= 0"),
    ("sweep_min_distance", -0.5, "a distance >= 0"),
    ("sweep_min_distance", float("nan"), "a distance >= 0"),
])
def test_lidar_fields_are_checked(field: str, value, expected: str):
    with pytest.raises(ConfigError, match=rf"data\.{field}: expected {expected}"):
        DataConfig(**{field: value})


def test_select_sweeps_semantics():
    rng = np.random.default_rng(0)
    assert L.select_sweeps(4, 9, rng).tolist() == [0, 1, 2, 3]     # at most sweeps_used: all, newest first
    assert L.select_sweeps(10, 9, None).tolist() == list(range(9))
    draws = [L.select_sweeps(10, 9, rng).tolist() for _ in range(5)]
    assert all(len(set(d)) == 9 and set(d) <= set(range(10)) for d in draws) and len(set(map(tuple, draws))) > 1
