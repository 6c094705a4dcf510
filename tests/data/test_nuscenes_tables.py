"""`flashocc data nuscenes` on a tiny nuScenes-shaped table set written by the test."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from flashocc.cli import main
from flashocc.data.infos import load_infos
from flashocc.data.nuscenes_splits import scene_split
from flashocc.data.nuscenes_tables import build_nuscenes_infos
from flashocc.geometry import NUSCENES_CAMERAS, quaternion_to_rotation

CHANNELS = NUSCENES_CAMERAS + ("LIDAR_TOP",)
K = [[1266.4, 0.0, 816.3], [0.0, 1266.4, 491.5], [0.0, 0.0, 1.0]]


def _yaw_quaternion(deg: float) -> list[float]:
    a = np.radians(deg) / 2
    return [float(np.cos(a)), 0.0, 0.0, float(np.sin(a))]


def write_tables(root: Path, version: str = "v1.0-mini", scenes=("scene-0061", "scene-0103", "scene-9999"),
                 per_scene: int = 2, bad_rotation: bool = False) -> dict:
    """Scenes with ``per_scene`` keyframes each, six cameras + LIDAR_TOP, plus non-key sweeps to skip."""
    t = {name: [] for name in ("scene", "sample", "sample_data", "calibrated_sensor", "sensor", "ego_pose", "log")}
    t["log"].append({"token": "log0", "logfile": "n015-test", "vehicle": "n015", "date_captured": "2018-07-24",
                     "location": "singapore-onenorth"})
    for c, channel in enumerate(CHANNELS):
        t["sensor"].append({"token": f"sensor-{channel}", "channel": channel,
                            "modality": "lidar" if channel == "LIDAR_TOP" else "camera"})
        rotation = [0.5, -0.5, 0.5, -0.5] if channel != "LIDAR_TOP" else _yaw_quaternion(-90)
        if bad_rotation and channel == "CAM_BACK":
            rotation = [0.0, 0.0, 0.0, 0.0]
        t["calibrated_sensor"].append({"token": f"cs-{channel}", "sensor_token": f"sensor-{channel}",
                                       "translation": [1.0, 0.1 * c, 1.5], "rotation": rotation,
                                       "camera_intrinsic": K if channel != "LIDAR_TOP" else []})
    ts = 1_532_402_927_000_000
    for s_i, name in enumerate(scenes):
        tokens = [f"{name}-s{i}" for i in range(per_scene)]
        t["scene"].append({"token": f"tok-{name}", "log_token": "log0", "nbr_samples": per_scene, "name": name,
                           "first_sample_token": tokens[0], "last_sample_token": tokens[-1], "description": ""})
        for i, tok in enumerate(tokens):
            ts_i = ts + (s_i * 100 + i) * 500_000
            t["sample"].append({"token": tok, "timestamp": ts_i, "scene_token": f"tok-{name}",
                                "prev": tokens[i - 1] if i else "", "next": tokens[i + 1] if i + 1 < per_scene else ""})
            for c, channel in enumerate(CHANNELS):
                for key in (True, False):
                    sd = f"sd-{tok}-{channel}-{key}"
                    t["ego_pose"].append({"token": f"ep-{sd}", "timestamp": ts_i - c * 5000,
                                          "translation": [400.0 + i + 0.01 * c, 1100.0, 0.0], "rotation": _yaw_quaternion(30 + c)})
                    folder = "samples" if key else "sweeps"
                    t["sample_data"].append({
                        "token": sd, "sample_token": tok, "ego_pose_token": f"ep-{sd}",
                        "calibrated_sensor_token": f"cs-{channel}", "timestamp": ts_i - c * 5000 - (0 if key else 25_000),
                        "fileformat": "jpg", "is_key_frame": key, "height": 900, "width": 1600,
                        "filename": f"{folder}/{channel}/n015-test__{channel}__{ts_i - c * 5000}.jpg", "prev": "", "next": ""})
    folder = root / version
    folder.mkdir(parents=True, exist_ok=True)
    for name, records in t.items():
        (folder / f"{name}.json").write_text(json.dumps(records))
    return t


def test_cli_builds_split_infos_from_tables(tmp_path: Path, capsys):
    root = tmp_path / "nuscenes"
    write_tables(root)
    gts = root / "gts"
    (gts / "scene-0061" / "scene-0061-s0").mkdir(parents=True)
    out = tmp_path / "infos"
    rc = main(["data", "nuscenes", "--root", str(root), "--occ", str(gts), "--out", str(out), "--version", "v1.0-mini", "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["samples"] == {"train": 2, "val": 2} and summary["missing_labels"] == 4
    train, val = load_infos(out / "infos_train.pkl"), load_infos(out / "infos_val.pkl")
    assert [s.token for s in train] == ["scene-0061-s0", "scene-0061-s1"]  # scene-9999 is in no split
    assert [s.scene_name for s in val] == ["scene-0103"] * 2
    first, second = train
    assert (first.prev_token, second.prev_token) == ("", "scene-0061-s0")
    assert first.occ_path == "gts/scene-0061/scene-0061-s0"
    assert tuple(first.cams) == NUSCENES_CAMERAS
    cam = first.cams["CAM_BACK"]
    assert cam.image_path.startswith("samples/CAM_BACK/")  # keyframes only, never sweeps/
    np.testing.assert_allclose(cam.intrinsics, K)
    np.testing.assert_allclose(cam.sensor2ego[:3, :3], quaternion_to_rotation([0.5, -0.5, 0.5, -0.5]))
    np.testing.assert_allclose(cam.sensor2ego[:3, 3], [1.0, 0.4, 1.5])
    # Each camera has its own ego pose; the sample's is the LIDAR_TOP one.
    np.testing.assert_allclose(cam.ego2global[:3, 3], [400.04, 1100.0, 0.0])
    np.testing.assert_allclose(first.ego2global[:3, 3], [400.06, 1100.0, 0.0])
    np.testing.assert_allclose(first.lidar2ego[:3, :3], quaternion_to_rotation(_yaw_quaternion(-90)))
    assert first.timestamp < second.timestamp and first.lidar_path.startswith("samples/LIDAR_TOP/")


def test_bad_calibration_in_tables_names_token_and_file(tmp_path: Path):
    root = tmp_path / "nuscenes"
    write_tables(root, bad_rotation=True)
    with pytest.raises(ValueError, match=r"scene-0061-s0.*calibrated_sensor\.json.*rotation"):
        build_nuscenes_infos(root, tmp_path / "out", version="v1.0-mini")


def test_missing_table_is_reported(tmp_path: Path, capsys):
    rc = main(["data", "nuscenes", "--root", str(tmp_path), "--out", str(tmp_path / "o"), "--version", "v1.0-mini"])
    assert rc == 1 and "scene.json" in capsys.readouterr().err


def test_official_splits_are_embedded():
    trainval, mini = scene_split("v1.0-trainval"), scene_split("v1.0-mini")
    assert len(trainval["train"]) == 700 and len(trainval["val"]) == 150 and not trainval["train"] & trainval["val"]
    assert mini["train"] == {f"scene-{n}" for n in ("0061", "0553", "0655", "0757", "0796", "1077", "1094", "1100")}
    assert mini["val"] == {"scene-0103", "scene-0916"}
