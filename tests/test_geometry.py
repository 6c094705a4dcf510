"""Geometry on the real nuScenes keyframe: LiDAR points lifted back through the camera that sees
them land in the right BEV cell, with and without image and BEV augmentation."""
import numpy as np
import pytest
import torch

from flashocc.geometry import (bda_matrix, frustum_to_ego, image_aug_matrices, make_transform, project_to_image,
                               quaternion_to_rotation, sensor_to_key_ego)
from flashocc.grid import OCC3D_NUSCENES
from flashocc.ops.bev_pool import prepare_bev_pool


def _lift(uvd, sensor2ego, intrinsics, post_rot, post_tran, bda):
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    s2k = sensor_to_key_ego(t(sensor2ego)[None, None], torch.eye(4)[None, None])
    frustum = t(uvd).view(-1, 1, 1, 3)
    return frustum_to_ego(frustum, s2k, t(intrinsics)[None, None], t(post_rot)[None, None],
                          t(post_tran)[None, None], t(bda)[None])


@pytest.mark.parametrize("augment", ["test", "train"])
@pytest.mark.parametrize("camera", ["CAM_FRONT", "CAM_BACK_LEFT"])
def test_lidar_point_lifted_through_its_camera_lands_in_its_bev_cell(nuscenes_rig, camera, augment):
    points_ego, cams = nuscenes_rig
    sensor2ego, k = cams[camera]
    if augment == "test":
        post_rot, post_tran = image_aug_matrices(0.44, (0, 140, 704, 396), False, 0.0)
    else:
        post_rot, post_tran = image_aug_matrices(0.5, (40, 194, 744, 450), True, 4.0)
    uv, depth = project_to_image(points_ego, sensor2ego, k, post_rot, post_tran)
    seen = (uv[:, 0] >= 0) & (uv[:, 0] < 704) & (uv[:, 1] >= 0) & (uv[:, 1] < 256) & (depth >= 1) & (depth < 45)
    assert seen.sum() > 500, "the camera should see many LiDAR points of the real sweep"
    uvd = np.concatenate([uv[seen], depth[seen, None]], axis=1)
    lifted = _lift(uvd, sensor2ego, k, post_rot, post_tran, np.eye(3)).reshape(-1, 3).double().numpy()
    np.testing.assert_allclose(lifted, points_ego[seen], atol=5e-3)

    grid = OCC3D_NUSCENES
    idx = prepare_bev_pool(torch.from_numpy(lifted).float().view(1, 1, -1, 1, 1, 3), grid.lower,
                           (0.4, 0.4, 6.4), (200, 200, 1))
    cell_of_point = np.floor((points_ego[seen][:, :2] - np.array([-40.0, -40.0])) / 0.4).astype(int)
    inside = np.all((cell_of_point >= 0) & (cell_of_point < 200), axis=1) & (points_ego[seen][:, 2] > -1)
    inside &= points_ego[seen][:, 2] < 5.4
    point_ids = idx.ranks_depth.numpy()
    assert set(np.nonzero(inside)[0]) <= set(point_ids.tolist())
    ranks = dict(zip(point_ids.tolist(), idx.ranks_bev.numpy().tolist()))
    expected = {i: cell_of_point[i, 1] * 200 + cell_of_point[i, 0] for i in np.nonzero(inside)[0]}
    agree = np.mean([ranks[i] == r for i, r in expected.items()])
    assert agree > 0.995  # only points within float error of a cell border may differ


def test_bda_flip_mirrors_lifted_points(nuscenes_rig):
    points_ego, cams = nuscenes_rig
    sensor2ego, k = cams["CAM_FRONT"]
    post_rot, post_tran = image_aug_matrices(0.44, (0, 140, 704, 396), False, 0.0)
    uv, depth = project_to_image(points_ego, sensor2ego, k, post_rot, post_tran)
    seen = (uv[:, 0] >= 0) & (uv[:, 0] < 704) & (uv[:, 1] >= 0) & (uv[:, 1] < 256) & (depth >= 1)
    uvd = np.concatenate([uv[seen], depth[seen, None]], axis=1)
    lifted = _lift(uvd, sensor2ego, k, post_rot, post_tran, bda_matrix(flip_dx=True, flip_dy=True))
    expected = points_ego[seen] * np.array([-1.0, -1.0, 1.0])
    np.testing.assert_allclose(lifted.reshape(-1, 3).double().numpy(), expected, atol=5e-3)


def test_every_lidar_point_ahead_of_front_camera_is_in_its_image(nuscenes_rig):
    points_ego, cams = nuscenes_rig
    sensor2ego, k = cams["CAM_FRONT"]
    uv, depth = project_to_image(points_ego, sensor2ego, k)
    # A point 20 m straight ahead on the camera axis projects to the principal point.
    cam_axis = sensor2ego[:3, :3] @ np.array([0.0, 0.0, 20.0]) + sensor2ego[:3, 3]
    uv0, d0 = project_to_image(cam_axis[None], sensor2ego, k)
    np.testing.assert_allclose(uv0[0], k[:2, 2], atol=1e-6)
    assert d0[0] == pytest.approx(20.0)


def test_key_ego_is_camera_zero_pose_in_float64():
    rng = np.random.default_rng(0)
    e2g = np.stack([make_transform(quaternion_to_rotation(rng.normal(size=4)), rng.normal(size=3) * 1000)
                    for _ in range(3)])
    s2e = np.stack([make_transform(quaternion_to_rotation(rng.normal(size=4)), rng.normal(size=3)) for _ in range(3)])
    s2k = sensor_to_key_ego(torch.from_numpy(s2e)[None].float(), torch.from_numpy(e2g)[None].double())
    for i in range(3):
        expected = np.linalg.inv(e2g[0]) @ e2g[i] @ s2e[i]
        np.testing.assert_allclose(s2k[0, i].numpy(), expected, atol=2e-4)
    np.testing.assert_allclose(s2k[0, 0].numpy(), s2e[0], atol=1e-5)


def test_image_aug_matrices_flip_offset_and_rotation():
    rot, tran = image_aug_matrices(1.0, (0, 0, 704, 256), True, 0.0)
    # Official quirk: u -> 704 - u (not 703 - u).
    assert rot[0, 0] == -1 and tran[0] == 704
    rot, tran = image_aug_matrices(1.0, (0, 0, 704, 256), False, 90.0)
    centre = np.array([352.0, 128.0, 0.0])
    np.testing.assert_allclose(rot @ centre + tran, centre, atol=1e-4)  # rotation about the crop centre
