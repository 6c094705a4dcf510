"""RayIoU origins from hand-built pose records (SparseOcc@af4d9df loaders/ego_pose_dataset.py, EgoPoseDataset)."""
import numpy as np
import pytest

from flashocc.data.infos import SampleInfo
from flashocc.metrics import ray_origins_from_infos, scene_ray_origins

LIDAR_T = np.array([0.94, 0.0, 1.84])


def _rot_z(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def _pose(rot: np.ndarray, t) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = rot, t
    return m


def _scene(n: int, step: float, yaw: float = 0.3, scene: str = "s1", t0: int = 0) -> list[SampleInfo]:
    """n keyframes driving straight at ``step`` metres per frame along heading ``yaw``; LiDAR rotated 90 deg."""
    lidar2ego = _pose(_rot_z(np.pi / 2), LIDAR_T)
    heading = np.array([np.cos(yaw), np.sin(yaw), 0.0])
    return [SampleInfo(token=f"{scene}-{i:02d}", scene_name=scene, scene_token=scene, timestamp=t0 + i * 500_000,
                       lidar_path="", lidar2ego=lidar2ego,
                       ego2global=_pose(_rot_z(yaw), np.array([100.0, 50.0, 0.0]) + i * step * heading))
            for i in range(n)]


def test_straight_drive_origins_are_the_relative_positions():
    frames = _scene(5, step=10.0)
    origins = scene_ray_origins(frames)
    # frame 2 sees frames 0..4 at x = -20, -10, 0, 10, 20 m ahead plus the lidar mount offset
    o = origins["s1-02"]
    expected = np.array([[LIDAR_T[0] + 10.0 * (f - 2), 0.0, LIDAR_T[2]] for f in range(5)])
    np.testing.assert_allclose(o, expected, atol=1e-4)   # float32 rounding of the lidar-frame position
    np.testing.assert_array_equal(o[2], LIDAR_T)           # the current frame is exactly the mount position
    assert o.dtype == np.float64


def test_39_metre_filter_and_8_way_selection():
    frames = _scene(20, step=4.0)
    origins = scene_ray_origins(frames)
    # frame 0: frames within |x| < 39 m are 0..9 (x = 0.94 + 4 f); kept 10 -> 8 at round(linspace(0, 9, 8))
    kept_x = LIDAR_T[0] + 4.0 * np.arange(10)
    picked = kept_x[np.round(np.linspace(0, 9, 8)).astype(int)]
    np.testing.assert_allclose(origins["s1-00"][:, 0], picked, atol=1e-4)
    # the current frame itself can be dropped by the selection (official behaviour)
    assert len(origins["s1-10"]) == 8
    assert not np.any(np.all(np.isclose(origins["s1-10"], LIDAR_T, atol=1e-6), axis=1))


def test_infos_are_grouped_by_scene_and_sorted_by_time():
    a, b = _scene(3, 5.0, scene="a"), _scene(3, 5.0, scene="b", yaw=-1.0, t0=10)
    shuffled = [a[2], b[0], a[0], b[2], a[1], b[1]]
    origins = ray_origins_from_infos(shuffled)
    assert set(origins) == {s.token for s in a + b}
    np.testing.assert_allclose(origins["a-00"][:, 0], LIDAR_T[0] + np.array([0.0, 5.0, 10.0]), atol=1e-4)
    np.testing.assert_allclose(origins["b-01"][:, 0], LIDAR_T[0] + np.array([-5.0, 0.0, 5.0]), atol=1e-4)


def test_bad_poses_raise():
    frames = _scene(2, 5.0)
    frames[1].ego2global = frames[1].ego2global.copy()
    frames[1].ego2global[0, 3] = np.nan
    with pytest.raises(ValueError, match="s1-01.*ego2global"):
        scene_ray_origins(frames)
    frames = _scene(2, 5.0)
    frames[0].scene_token = frames[0].scene_name = ""
    with pytest.raises(ValueError, match="scene_token"):
        ray_origins_from_infos(frames)
