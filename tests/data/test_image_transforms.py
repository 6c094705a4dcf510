"""Image and BEV augmentation semantics, on the real fixture images and LiDAR.

Upstream: FlashOCC@4084861 projects/mmdet3d_plugin/datasets/pipelines/loading.py (PrepareImageInputs,
LoadAnnotationsBEVDepth, LoadOccGTFromFile); docs/official-behaviour.md#image-augmentation.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from flashocc.data.dataset import DataConfig
from flashocc.data.transforms import (IMAGE_MEAN, IMAGE_STD, ImageAug, augment_image, bda_for_flips, flip_volume,
                                      lidar_depth_map, lidar_to_camera, normalize_image, sample_image_aug)
from flashocc.geometry import project_to_image
from flashocc.grid import OCC3D_NUSCENES


def test_test_time_aug_is_the_official_fixed_one():
    aug = sample_image_aug(DataConfig(), (1600, 900), None, train=False)
    assert aug.resize_dims == (704, 396) and aug.crop == (0, 140, 704, 396) and not aug.flip and aug.rotate_deg == 0
    rot, tran = aug.matrices()
    np.testing.assert_allclose(rot, np.diag([0.44, 0.44, 1.0]), atol=1e-7)
    np.testing.assert_allclose(tran, [0.0, -140.0, 0.0])


def test_train_aug_ranges():
    rng = np.random.default_rng(0)
    augs = [sample_image_aug(DataConfig(), (1600, 900), rng, train=True) for _ in range(200)]
    resizes = np.array([a.resize for a in augs])
    assert resizes.min() >= 0.38 and resizes.max() <= 0.55
    assert all(a.crop[3] == a.resize_dims[1] and a.crop[2] - a.crop[0] == 704 for a in augs)  # bottom crop
    assert {a.flip for a in augs} == {False, True}
    assert all(-5.4 <= a.rotate_deg <= 5.4 for a in augs)


def test_bgr_order_and_normalisation():
    img = Image.new("RGB", (8, 4), (255, 0, 0))  # pure red
    out = normalize_image(img)
    assert out.shape == (3, 4, 8) and out.dtype == torch.float32
    # Official quirk: channel 0 is blue, normalised with the first (red) mean/std entries.
    expected = [(0 - IMAGE_MEAN[0]) / IMAGE_STD[0], (0 - IMAGE_MEAN[1]) / IMAGE_STD[1], (255 - IMAGE_MEAN[2]) / IMAGE_STD[2]]
    torch.testing.assert_close(out[:, 0, 0], torch.tensor(expected, dtype=torch.float32))


def test_post_rot_maps_a_projected_lidar_point_both_ways(nuscenes_sample_dir: Path, fixture_sample, fixture_points_ego):
    """Train augmentation with flip and rotation: a marker painted where a LiDAR point projects in the
    original image is found in the augmented image where post_rot/post_tran put it, and back."""
    cam = fixture_sample.cams["CAM_FRONT"]
    uv, depth = project_to_image(fixture_points_ego, cam.sensor2ego, cam.intrinsics)
    inside = (depth > 1) & (uv[:, 0] > 500) & (uv[:, 0] < 1100) & (uv[:, 1] > 500) & (uv[:, 1] < 850)
    u0, v0 = uv[np.flatnonzero(inside)[0]]
    original = np.array(Image.open(nuscenes_sample_dir / Path(cam.image_path).name).convert("RGB"))
    original[:, :] //= 2
    r = 12
    original[int(v0) - r:int(v0) + r + 1, int(u0) - r:int(u0) + r + 1] = (255, 0, 255)
    for aug in (ImageAug(0.5, (800, 450), (40, 194, 744, 450), True, 4.5),
                ImageAug(0.41, (656, 369), (-20, 113, 684, 369), True, -3.0)):
        out = np.asarray(augment_image(Image.fromarray(original), aug)).astype(int)
        marker = (out[..., 0] > 200) & (out[..., 1] < 60) & (out[..., 2] > 200)
        assert marker.sum() > 20
        # Pixel (i, j) covers [i, i + 1) x [j, j + 1): its continuous centre is (i + 0.5, j + 0.5).
        found = np.array([np.nonzero(marker)[1].mean(), np.nonzero(marker)[0].mean()]) + 0.5
        centre = np.array([int(u0) + 0.5, int(v0) + 0.5])
        rot, tran = aug.matrices()
        (predicted,), _ = project_to_image(fixture_points_ego[inside][:1], cam.sensor2ego, cam.intrinsics, rot, tran)
        assert np.abs(found - predicted).max() < 1.0, (found, predicted)  # forward, from the LiDAR point
        back = np.linalg.solve(rot.astype(np.float64), np.array([*found, 1.0]) - tran)
        assert np.abs(back[:2] - centre).max() < 1.0, (back, centre)  # and back to the original pixel


def test_crop_outside_the_image_is_zero_filled():
    img = Image.new("RGB", (100, 50), (200, 200, 200))
    out = np.asarray(augment_image(img, ImageAug(1.0, (100, 50), (-10, 0, 110, 50), False, 0.0)))
    assert (out[:, :10] == 0).all() and (out[:, 10:110] == 200).all() and (out[:, 110:] == 0).all()


def test_gt_flip_matches_bda(occ3d_labels_path: Path):
    """A voxel at +x lands at -x under flip_dx, exactly where the bda sends its centre."""
    sem = np.load(occ3d_labels_path)["semantics"]
    grid = OCC3D_NUSCENES
    occupied = np.argwhere(sem != grid.free_label)
    centres = np.asarray(grid.lower) + (occupied + 0.5) * np.asarray(grid.voxel_size)
    for flip_dx, flip_dy in ((True, False), (False, True), (True, True)):
        flipped = flip_volume(sem, flip_dx, flip_dy)
        moved = centres @ bda_for_flips(flip_dx, flip_dy).astype(np.float64).T
        idx, ok = grid.points_to_index(moved)
        assert ok.all()
        np.testing.assert_array_equal(flipped[idx[:, 0], idx[:, 1], idx[:, 2]], sem[tuple(occupied.T)])
    front = occupied[occupied[:, 0] > 150][0]  # a voxel well ahead of the ego (+x)
    x, y, z = front
    assert flip_volume(sem, True, False)[199 - x, y, z] == sem[x, y, z]
    assert bda_for_flips(True, False)[0, 0] == -1


def test_depth_map_is_nearest_lidar_point_per_pixel(nuscenes_sample_dir: Path, fixture_sample, fixture_points_ego):
    aug = sample_image_aug(DataConfig(), (1600, 900), np.random.default_rng(3), train=True)
    rot, tran = aug.matrices()
    points = np.fromfile(nuscenes_sample_dir / Path(fixture_sample.lidar_path).name, np.float32).reshape(-1, 5)
    for name in ("CAM_FRONT", "CAM_BACK"):
        cam = fixture_sample.cams[name]
        lidar2cam = lidar_to_camera(fixture_sample.lidar2ego, fixture_sample.ego2global, cam.sensor2ego, cam.ego2global)
        depth_map = lidar_depth_map(points, lidar2cam, cam.intrinsics, rot, tran, (256, 704))
        assert depth_map.shape == (256, 704) and depth_map.dtype == np.float32
        valid = depth_map > 0
        assert valid.sum() > 1000 and depth_map[valid].min() >= 1.0 and depth_map[valid].max() < 45.0
        # Reference: project through the ego frame (the camera's ego pose differs by ego motion only).
        cam_pts = points[:, :3].astype(np.float64) @ lidar2cam[:3, :3].T + lidar2cam[:3, 3]
        ego_pts = cam_pts @ cam.sensor2ego[:3, :3].T + cam.sensor2ego[:3, 3]
        uv, d = project_to_image(ego_pts, cam.sensor2ego, cam.intrinsics, rot, tran)
        px = np.round(uv).astype(np.int64)
        keep = (d >= 1) & (d < 45) & (px[:, 0] >= 0) & (px[:, 0] < 704) & (px[:, 1] >= 0) & (px[:, 1] < 256)
        ref = np.full((256, 704), np.inf)
        np.minimum.at(ref, (px[keep, 1], px[keep, 0]), d[keep])
        ref[np.isinf(ref)] = 0
        np.testing.assert_allclose(depth_map, ref, atol=1e-4)
