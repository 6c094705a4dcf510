"""Info readers: the real mmdet3d fixture, BEVDet-style pkls built from it, and our own format."""
from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np

from flashocc.data.infos import data_relative_path, load_infos, save_infos, safe_load_pickle
from flashocc.geometry import NUSCENES_CAMERAS


def _quaternion(rot: np.ndarray) -> list[float]:
    """3x3 rotation -> (w, x, y, z), for writing BEVDet-style test records."""
    w = math.sqrt(max(0.0, 1.0 + np.trace(rot))) / 2
    if w > 1e-6:
        return [w, (rot[2, 1] - rot[1, 2]) / (4 * w), (rot[0, 2] - rot[2, 0]) / (4 * w), (rot[1, 0] - rot[0, 1]) / (4 * w)]
    x = math.sqrt(max(0.0, 1.0 + rot[0, 0] - rot[1, 1] - rot[2, 2])) / 2
    return [(rot[2, 1] - rot[1, 2]) / (4 * x), x, (rot[0, 1] + rot[1, 0]) / (4 * x), (rot[0, 2] + rot[2, 0]) / (4 * x)]


def bevdet_record(sample, prefix: str = "./data/nuscenes/", token: str | None = None, timestamp: int | None = None) -> dict:
    cams = {}
    for name in ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT"):
        cam = sample.cams[name]
        cams[name] = {
            "data_path": prefix + cam.image_path, "type": name, "sample_data_token": "x",
            "sensor2ego_translation": cam.sensor2ego[:3, 3].tolist(),
            "sensor2ego_rotation": _quaternion(cam.sensor2ego[:3, :3]),
            "ego2global_translation": cam.ego2global[:3, 3].tolist(),
            "ego2global_rotation": _quaternion(cam.ego2global[:3, :3]),
            "timestamp": cam.timestamp, "cam_intrinsic": np.asarray(cam.intrinsics),
        }
    token = token or sample.token
    return {
        "token": token, "timestamp": timestamp or sample.timestamp, "lidar_path": prefix + sample.lidar_path,
        "sweeps": [], "lidar2ego_translation": sample.lidar2ego[:3, 3].tolist(),
        "lidar2ego_rotation": _quaternion(sample.lidar2ego[:3, :3]),
        "ego2global_translation": sample.ego2global[:3, 3].tolist(),
        "ego2global_rotation": _quaternion(sample.ego2global[:3, :3]), "cams": cams,
        "scene_token": "st-0061", "scene_name": "scene-0061", "occ_path": f"{prefix}gts/scene-0061/{token}",
        "gt_boxes": np.zeros((0, 7)), "gt_names": np.array([], dtype="<U10"),
    }


def test_mmdet3d_fixture_reads_into_sample_info(fixture_pkl: Path):
    (sample,) = load_infos(fixture_pkl)
    raw = safe_load_pickle(fixture_pkl)["data_list"][0]
    assert sample.token == "ca9a282c9e77460f8360f564131a8af5"
    assert sample.timestamp == 1532402927647951  # seconds -> integer microseconds
    assert tuple(sample.cams) == NUSCENES_CAMERAS  # model order, not the pkl's insertion order
    np.testing.assert_allclose(sample.lidar2ego, raw["lidar_points"]["lidar2ego"])
    for name, cam in sample.cams.items():
        assert cam.image_path == f"samples/{name}/{raw['images'][name]['img_path']}"
        np.testing.assert_allclose(cam.sensor2ego, raw["images"][name]["cam2ego"])
        np.testing.assert_allclose(cam.intrinsics, raw["images"][name]["cam2img"])
        # Each camera's own ego pose, recovered from lidar2cam, reproduces the official lidar -> camera chain.
        lidar2cam = np.linalg.inv(cam.ego2global @ cam.sensor2ego) @ sample.ego2global @ sample.lidar2ego
        np.testing.assert_allclose(lidar2cam, raw["images"][name]["lidar2cam"], atol=1e-5)
        # ... and is the LiDAR ego pose moved along the road by speed x exposure delay (~9.24 m/s), at z = 0.
        shift = cam.ego2global[:3, 3] - sample.ego2global[:3, 3]
        delay_s = (sample.timestamp - cam.timestamp) * 1e-6
        assert abs(shift[2]) < 1e-5
        assert abs(np.linalg.norm(shift) - 9.24 * delay_s) < 0.01


def test_bevdet_pkl_matches_mmdet3d_and_links_previous(tmp_path: Path, fixture_sample):
    records = [bevdet_record(fixture_sample, token="b", timestamp=fixture_sample.timestamp + 500_000),
               bevdet_record(fixture_sample, prefix="/mnt/data/nuscenes/", token="a")]
    path = tmp_path / "bevdetv2-nuscenes_infos_val.pkl"
    path.write_bytes(pickle.dumps({"infos": records, "metadata": {"version": "v1.0-mini"}}, protocol=2))
    samples = {s.token: s for s in load_infos(path)}
    a, b = samples["a"], samples["b"]
    assert (a.prev_token, b.prev_token) == ("", "a")  # filled from timestamp order within the scene
    assert a.scene_name == "scene-0061" and a.occ_path == "gts/scene-0061/a" and b.occ_path == "gts/scene-0061/b"
    assert a.lidar_path == fixture_sample.lidar_path == b.lidar_path  # './data/nuscenes/' and absolute prefixes stripped
    np.testing.assert_allclose(a.lidar2ego, fixture_sample.lidar2ego, atol=1e-6)
    np.testing.assert_allclose(a.ego2global, fixture_sample.ego2global, atol=1e-5)
    assert tuple(a.cams) == NUSCENES_CAMERAS
    for name, cam in a.cams.items():
        ref = fixture_sample.cams[name]
        assert cam.image_path == ref.image_path
        np.testing.assert_allclose(cam.sensor2ego, ref.sensor2ego, atol=1e-6)
        np.testing.assert_allclose(cam.intrinsics, ref.intrinsics)


def test_our_format_round_trip(tmp_path: Path, fixture_sample):
    path = save_infos([fixture_sample], tmp_path / "infos_val.pkl", metadata={"split": "val"})
    (back,) = load_infos(path)
    assert back.token == fixture_sample.token and back.timestamp == fixture_sample.timestamp
    for name, cam in back.cams.items():
        np.testing.assert_array_equal(cam.sensor2ego, fixture_sample.cams[name].sensor2ego)
        assert cam.image_path == fixture_sample.cams[name].image_path
    assert not list(tmp_path.glob(".*tmp"))  # the atomic write left no temp file


def test_data_relative_path():
    assert data_relative_path("./data/nuscenes/samples/CAM_FRONT/a.jpg") == "samples/CAM_FRONT/a.jpg"
    assert data_relative_path("/abs/samples/nuscenes/samples/LIDAR_TOP/b.bin") == "samples/LIDAR_TOP/b.bin"
    assert data_relative_path("./data/nuscenes/gts/scene-0001/t", ("gts",)) == "gts/scene-0001/t"
    assert data_relative_path("./images/a.jpg") == "images/a.jpg"
    assert data_relative_path("/abs/images/a.jpg") == "/abs/images/a.jpg"  # no anchor: kept absolute
