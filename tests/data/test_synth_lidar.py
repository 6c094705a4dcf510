"""The synthetic world's LiDAR: 20 Hz sweeps between keyframes, recorded like nuScenes, and material intensity."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from flashocc.data.dataset import DataConfig, OccDataset
from flashocc.data.infos import load_infos
from flashocc.data.synth import MARKER_NAME, SynthConfig, generate_synthetic_set, nuscenes_rig, scene_world
from flashocc.data.synth.generate import frame_sweeps, simulate_sweep, sweep_file_count
from flashocc.data.synth.render import lane_markings
from flashocc.data.synth.world import BARRIER, CONE, DRIVEABLE, VEGETATION
from flashocc.grid import OCC3D_NUSCENES as GRID

SMALL = SynthConfig(scenes=1, frames_per_scene=3, seed=11, image_size=(64, 36), val_scenes=0, lidar_azimuth_steps=360,
                    speed_range=(8.0, 10.0))


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> Path:
    return generate_synthetic_set(tmp_path_factory.mktemp("synth_lidar") / "s", SMALL)


def _occupied_or_next(labels: np.ndarray) -> np.ndarray:
    occupied = labels != GRID.free_label
    near, padded = np.zeros_like(occupied), np.pad(occupied, 1)
    for dx in range(3):
        for dy in range(3):
            for dz in range(3):
                near |= padded[dx:dx + 200, dy:dy + 200, dz:dz + 16]
    return near


def _hit_rate(points_ego: np.ndarray, mask: np.ndarray) -> float:
    idx, inside = GRID.points_to_index(points_ego)
    i = idx[inside]
    return float(mask[i[:, 0], i[:, 1], i[:, 2]].mean())


def test_keyframes_record_ten_sweeps_at_20_hz_like_nuscenes(small_set: Path):
    samples = load_infos(small_set / "infos_train.pkl")
    for k, sample in enumerate(samples):
        assert [sample.timestamp - s.timestamp for s in sample.sweeps] == [50_000 * j for j in range(1, 11)]
        assert all((small_set / s.data_path).is_file() for s in sample.sweeps)
        folders = [s.data_path.split("/")[0] for s in sample.sweeps]
        # The 10th sweep of a later keyframe is the previous keyframe's own file, as in the nuScenes chain.
        assert folders == ["sweeps"] * 10 if k == 0 else folders == ["sweeps"] * 9 + ["samples"]
        if k:
            assert sample.sweeps[9].data_path == samples[k - 1].lidar_path
            np.testing.assert_allclose(sample.sweeps[9].sensor2lidar, np.linalg.inv(
                sample.ego2global @ sample.lidar2ego) @ samples[k - 1].ego2global @ samples[k - 1].lidar2ego, atol=1e-9)
    on_disk = len(list((small_set / "sweeps" / "LIDAR_TOP").iterdir()))
    assert on_disk == sweep_file_count(SMALL) == 10 + 9 + 9
    assert json.loads((small_set / MARKER_NAME).read_text())["config"]["lidar_sweeps"] == 10


def test_sweeps_moved_into_the_keyframe_land_on_the_keyframe_labels(small_set: Path):
    sample = load_infos(small_set / "infos_train.pkl")[2]
    with np.load(small_set / sample.occ_path / "labels.npz") as z:
        labels = z["semantics"]
    near = _occupied_or_next(labels)
    for sweep in (sample.sweeps[0], sample.sweeps[8]):
        raw = np.fromfile(small_set / sweep.data_path, np.float32).reshape(-1, 5)[:, :3].astype(np.float64)
        moved = sample.lidar2ego @ sweep.sensor2lidar
        assert _hit_rate(raw @ moved[:3, :3].T + moved[:3, 3], near) > 0.99
    # Without the motion (the ego drove 8-10 m/s for 0.45 s) the oldest sweep's objects miss the labels (above
    # the ground, which is occupied everywhere).
    moved_pts, unmoved = raw @ moved[:3, :3].T + moved[:3, 3], raw @ sample.lidar2ego[:3, :3].T + sample.lidar2ego[:3, 3]
    up = moved_pts[:, 2] > 0.0
    assert up.sum() > 300 and _hit_rate(moved_pts[up], labels != GRID.free_label) > 0.95
    assert _hit_rate(unmoved[up], labels != GRID.free_label) < 0.8


def test_dataset_points_land_in_the_flipped_label_voxels(small_set: Path):
    cfg = DataConfig(load_points=True, flip_dx_ratio=1.0, flip_dy_ratio=1.0, input_size=(32, 64), resize=(0.0, 0.0),
                     rot=(0.0, 0.0), flip=False, src_size=(36, 64))
    ds = OccDataset(small_set, small_set / "infos_train.pkl", cfg, train=True, aug_seed=0)
    item = ds[1]
    points = item["points"].numpy().astype(np.float64)
    assert item["bda"].diagonal().tolist() == [-1.0, -1.0, 1.0]
    lags = np.unique(points[:, 4].round(3)).tolist()
    assert len(lags) == 10 and lags[0] == 0.0 and set(lags[1:]) <= {round(0.05 * j, 3) for j in range(1, 11)}
    flipped = item["voxel_semantics"].numpy()
    assert _hit_rate(points[:, :3], _occupied_or_next(flipped)) > 0.99
    assert _hit_rate(points[:, :3], flipped != GRID.free_label) > 0.95
    up = points[:, 2] > 0.0                          # objects: the ground is occupied everywhere
    assert up.sum() > 1000 and _hit_rate(points[up, :3], flipped != GRID.free_label) > 0.95
    assert _hit_rate(points[up, :3], flipped[::-1, ::-1] != GRID.free_label) < 0.8   # unflipped labels miss


@pytest.mark.parametrize("interval, sweeps", [(0.5, 10), (0.5, 25), (0.33, 10), (0.05, 3), (1.0, 0)])
def test_every_sweep_a_keyframe_needs_is_written_once(interval: float, sweeps: int):
    config = SynthConfig(frames_per_scene=6, frame_interval_s=interval, lidar_sweeps=sweeps)
    keyframes = {round(f * interval * 1e6): f for f in range(6)}
    owned: list[int] = []
    needed: set[int] = set()
    for f in range(6):
        refs, own = frame_sweeps(config, f)
        key = round(f * interval * 1e6)
        times = [t for t, _ in refs]
        assert len(times) == sweeps and times == sorted(times, reverse=True) and all(t < key for t in times)
        assert all(t % 50_000 == 0 for t in times) and (not times or key - times[0] <= 50_000)
        assert all((keyframes.get(t) == k) if k is not None else t not in keyframes for t, k in refs)
        needed |= {t for t, k in refs if k is None}
        owned += own
    assert sorted(owned) == sorted(set(owned)) and set(owned) == needed
    assert sweep_file_count(config) == config.scenes * len(owned)


def test_lidar_sweeps_is_validated():
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="SynthConfig.lidar_sweeps"):
            dataclasses.replace(SMALL, lidar_sweeps=bad).validate()


def test_intensity_depends_on_the_material():
    world = scene_world(SynthConfig(seed=2), 0)
    rig = nuscenes_rig((64, 36))
    cones = world.primitives.label == CONE
    s_cone, _ = world.road.to_road(*world.primitives.center[cones][0, :2])
    time_s = float(s_cone - 12.0) / world.ego_speed                 # the ego 12 m before a construction zone
    pts = simulate_sweep(world, rig, time_s, 1080)
    lidar2global = world.ego_pose(time_s) @ rig.lidar2ego
    xyz = pts[:, :3].astype(np.float64) @ lidar2global[:3, :3].T + lidar2global[:3, 3]
    intensity = pts[:, 3]
    assert intensity.min() >= 0 and intensity.max() <= 255 and (intensity == np.round(intensity)).all()
    ground_cls, top, (s, d) = world.ground_class(xyz[:, 0], xyz[:, 1])
    on_ground = np.abs(xyz[:, 2] - top) < 0.02
    white, yellow = lane_markings(world, ground_cls, s, d)
    road = on_ground & (ground_cls == DRIVEABLE)
    paint, asphalt = road & (white | yellow), road & ~white & ~yellow
    assert paint.sum() > 20 and asphalt.sum() > 1000
    assert np.median(intensity[paint]) > 2 * np.median(intensity[asphalt])
    # Points on objects: label each by the primitive whose (slightly grown) box holds it.
    prims = world.primitives
    rel = xyz[:, None, :2] - prims.center[None, :, :2]
    c, s_ = np.cos(prims.yaw), np.sin(prims.yaw)
    lx, ly = rel[..., 0] * c + rel[..., 1] * s_, -rel[..., 0] * s_ + rel[..., 1] * c
    inside = ((np.abs(lx) <= prims.half[:, 0] + 0.05) & (np.abs(ly) <= prims.half[:, 1] + 0.05)
              & (np.abs(xyz[:, None, 2] - prims.center[:, 2]) <= prims.half[:, 2] + 0.05))
    label = np.where(inside.any(1), prims.label[inside.argmax(1)], 255)
    stripes = intensity[(label == CONE) | (label == BARRIER)]
    assert len(stripes) > 20 and stripes.max() >= 150            # retro-reflective sheeting
    assert np.median(intensity[label == VEGETATION]) < np.percentile(stripes, 90)


def test_cli_lidar_sweeps_flag(tmp_path: Path):
    from flashocc.cli import main

    out = tmp_path / "synth"
    assert main(["data", "synth", "--out", str(out), "--scenes", "1", "--frames-per-scene", "1", "--image-size",
                 "64x36", "--lidar-sweeps", "2", "--workers", "1", "--json"]) == 0
    (sample,) = load_infos(out / "infos_train.pkl")
    assert [sample.timestamp - s.timestamp for s in sample.sweeps] == [50_000, 100_000]
    assert len(list((out / "sweeps" / "LIDAR_TOP").iterdir())) == 2
