"""Sweeps in the info files: EFFOcc's bevdetv3 records, mmdet3d v1.x records, ours, and `flashocc data nuscenes`."""
from __future__ import annotations

import dataclasses
import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
from test_infos_readers import _quaternion, bevdet_record
from test_nuscenes_tables import write_tables

from flashocc.cli import main
from flashocc.data.dataset import DataConfig, OccDataset
from flashocc.data.infos import SweepInfo, load_infos, safe_load_pickle, save_infos, validate_sample
from flashocc.data.nuscenes_tables import build_nuscenes_infos
from flashocc.errors import DataError
from flashocc.geometry import make_transform, quaternion_to_rotation


def _yaw(deg: float, translation) -> np.ndarray:
    a = np.radians(deg) / 2
    return make_transform(np.array([np.cos(a), 0.0, 0.0, np.sin(a)]), list(translation))


def test_an_effocc_bevdetv3_record_with_sweeps_is_read_as_it_is(tmp_path: Path, data_root):
    root, sample = data_root
    s2l = _yaw(3.0, (-2.0, 0.3, 0.05))
    record = bevdet_record(sample)
    # The layout mmdet3d 1.0 create_data(max_sweeps=10) writes (nuscenes_converter.py, obtain_sensor2top).
    record["sweeps"] = [{
        "data_path": "./data/nuscenes/sweeps/LIDAR_TOP/n015__LIDAR_TOP__1532402927597.pcd.bin", "type": "lidar",
        "sample_data_token": "sd-1", "sensor2ego_translation": sample.lidar2ego[:3, 3].tolist(),
        "sensor2ego_rotation": _quaternion(sample.lidar2ego[:3, :3]),
        "ego2global_translation": [1.0, 2.0, 0.0], "ego2global_rotation": [1.0, 0.0, 0.0, 0.0],
        "timestamp": sample.timestamp - 50_000,
        "sensor2lidar_rotation": s2l[:3, :3].astype(np.float32), "sensor2lidar_translation": s2l[:3, 3],
    }]
    path = tmp_path / "bevdetv3-nuscenes_infos_val.pkl"
    path.write_bytes(pickle.dumps({"infos": [record], "metadata": {"version": "v1.0-trainval"}}))
    (read,) = load_infos(path)
    (sweep,) = read.sweeps
    assert sweep.data_path == "sweeps/LIDAR_TOP/n015__LIDAR_TOP__1532402927597.pcd.bin"
    assert sweep.timestamp == sample.timestamp - 50_000
    np.testing.assert_allclose(sweep.sensor2lidar, s2l, atol=1e-7)
    # Through the dataset the sweep is moved as upstream does it: p @ sensor2lidar_rotation.T + translation.
    raw = np.fromfile(root / sample.lidar_path, np.float32).reshape(-1, 5)
    (root / sweep.data_path).parent.mkdir(parents=True)
    raw.tofile(root / sweep.data_path)
    pts = OccDataset(root, [read], DataConfig(load_occ=False)).lidar_points(read)
    far = ~((np.abs(raw[:, 0]) < 1) & (np.abs(raw[:, 1]) < 1))
    upstream = raw[far].copy()
    upstream[:, :3] = upstream[:, :3] @ record["sweeps"][0]["sensor2lidar_rotation"].T
    upstream[:, :3] += record["sweeps"][0]["sensor2lidar_translation"]
    np.testing.assert_allclose(pts[len(raw):, :3], upstream[:, :3], atol=1e-5)
    np.testing.assert_allclose(pts[len(raw):, 4], 0.05, atol=1e-6)


def test_mmdet3d_v1_lidar_sweeps_are_inverted_back_to_sensor2lidar(tmp_path: Path, fixture_pkl: Path):
    payload = safe_load_pickle(fixture_pkl)
    record = payload["data_list"][0]
    s2l = _yaw(-4.0, (-3.0, 0.2, 0.0))
    ts = record["timestamp"]
    record["lidar_sweeps"] = [{"lidar_points": {"lidar_path": "../data/nuscenes/sweeps/LIDAR_TOP/a.pcd.bin",
                                                "lidar2ego": record["lidar_points"]["lidar2ego"],
                                                "lidar2sensor": np.linalg.inv(s2l).astype(np.float32).tolist()},
                               "ego2global": record["ego2global"], "timestamp": ts - 0.1, "sample_data_token": "s"}]
    path = tmp_path / "v1.pkl"
    path.write_bytes(pickle.dumps(payload))
    (sweep,) = load_infos(path)[0].sweeps
    assert sweep.data_path == "sweeps/LIDAR_TOP/a.pcd.bin"
    assert abs(sweep.timestamp - (round(ts * 1e6) - 100_000)) <= 1          # seconds -> microseconds
    np.testing.assert_allclose(sweep.sensor2lidar, s2l, atol=1e-5)


def test_our_format_keeps_sweeps_and_older_files_without_them_still_load(tmp_path: Path, fixture_sample):
    sweeps = [SweepInfo(f"sweeps/LIDAR_TOP/s{i}.pcd.bin", _yaw(i, (-i, 0, 0)), fixture_sample.timestamp - 50_000 * i)
              for i in (1, 2)]
    path = save_infos([dataclasses.replace(fixture_sample, sweeps=sweeps)], tmp_path / "infos.pkl")
    (back,) = load_infos(path)
    assert [s.data_path for s in back.sweeps] == [s.data_path for s in sweeps]
    assert [s.timestamp for s in back.sweeps] == [s.timestamp for s in sweeps]
    np.testing.assert_array_equal(back.sweeps[1].sensor2lidar, sweeps[1].sensor2lidar)
    payload = safe_load_pickle(path)
    del payload["samples"][0]["sweeps"]                     # as written before sweeps were recorded
    path.write_bytes(pickle.dumps(payload))
    assert load_infos(path)[0].sweeps == []


@pytest.mark.parametrize("change, field", [
    (lambda s: dataclasses.replace(s, timestamp=s.timestamp + 1), "sweeps[0].timestamp"),
    (lambda s: dataclasses.replace(s, sensor2lidar=2 * np.eye(4)), "sweeps[0].sensor2lidar"),
    (lambda s: dataclasses.replace(s, data_path=""), "sweeps[0].data_path"),
    (lambda s: dataclasses.replace(s, timestamp=1.5), "sweeps[0].timestamp"),
])
def test_a_bad_sweep_record_names_the_sample_and_the_field(fixture_sample, change, field: str):
    sweep = SweepInfo("sweeps/LIDAR_TOP/a.pcd.bin", np.eye(4), fixture_sample.timestamp)
    with pytest.raises(DataError, match=re.escape(f"sample {fixture_sample.token}: field '{field}'")):
        validate_sample(dataclasses.replace(fixture_sample, sweeps=[change(sweep)]), "infos.pkl")


def _chain_lidar_sweeps(root: Path, version: str = "v1.0-mini") -> dict:
    """Link the LIDAR_TOP records of ``write_tables`` into nuScenes' 'prev' chain: keyframe i <- its sweep
    <- keyframe i-1 <- ..., and give each record its own ego pose."""
    folder = root / version
    sd = json.loads((folder / "sample_data.json").read_text())
    poses = {p["token"]: p for p in json.loads((folder / "ego_pose.json").read_text())}
    lidar = [r for r in sd if r["calibrated_sensor_token"] == "cs-LIDAR_TOP"]
    by_scene: dict[str, list[dict]] = {}
    for r in sorted(lidar, key=lambda r: r["timestamp"]):
        by_scene.setdefault(r["sample_token"].rsplit("-s", 1)[0], []).append(r)
    for records in by_scene.values():
        for k, (prev, cur) in enumerate(zip(records, records[1:])):
            cur["prev"], prev["next"] = prev["token"], cur["token"]
        for k, r in enumerate(records):
            poses[r["ego_pose_token"]].update(translation=[400.0 + 2.5 * k, 1100.0 + 0.3 * k, 0.0],
                                              rotation=[float(np.cos(0.01 * k)), 0.0, 0.0, float(np.sin(0.01 * k))])
    (folder / "sample_data.json").write_text(json.dumps(sd))
    (folder / "ego_pose.json").write_text(json.dumps(list(poses.values())))
    return {r["token"]: r for r in lidar} | {"poses": poses}


def _obtain_sensor2top(sweep_cs, sweep_pose, key_cs, key_pose) -> tuple[np.ndarray, np.ndarray]:
    """mmdet3d 1.0 nuscenes_converter.py, obtain_sensor2top, in its own row-vector arithmetic."""
    l2e_r_s, l2e_t_s = quaternion_to_rotation(sweep_cs["rotation"]), np.array(sweep_cs["translation"])
    e2g_r_s, e2g_t_s = quaternion_to_rotation(sweep_pose["rotation"]), np.array(sweep_pose["translation"])
    l2e_r, l2e_t = quaternion_to_rotation(key_cs["rotation"]), np.array(key_cs["translation"])
    e2g_r, e2g_t = quaternion_to_rotation(key_pose["rotation"]), np.array(key_pose["translation"])
    back = np.linalg.inv(e2g_r).T @ np.linalg.inv(l2e_r).T
    rot = (l2e_r_s.T @ e2g_r_s.T) @ back
    tran = (l2e_t_s @ e2g_r_s.T + e2g_t_s) @ back
    tran -= e2g_t @ back + l2e_t @ np.linalg.inv(l2e_r).T
    return rot.T, tran


def test_nuscenes_tables_record_the_prev_chain_as_mmdet3d_does(tmp_path: Path):
    root = tmp_path / "nuscenes"
    write_tables(root, scenes=("scene-0061",), per_scene=3)
    sd = _chain_lidar_sweeps(root)
    poses = sd.pop("poses")
    cs = {c["token"]: c for c in json.loads((root / "v1.0-mini" / "calibrated_sensor.json").read_text())}
    build_nuscenes_infos(root, tmp_path / "infos", version="v1.0-mini", max_sweeps=4)
    samples = load_infos(tmp_path / "infos" / "infos_train.pkl")
    assert [len(s.sweeps) for s in samples] == [1, 3, 4]            # the chain ends at the scene's first record
    last = samples[2]
    key = sd[f"sd-{last.token}-LIDAR_TOP-True"]
    expected = [f"sd-scene-0061-s{i}-LIDAR_TOP-{k}" for i, k in ((2, False), (1, True), (1, False), (0, True))]
    assert [s.data_path for s in last.sweeps] == [sd[t]["filename"] for t in expected]   # newest first, keyframes too
    assert [s.timestamp for s in last.sweeps] == [sd[t]["timestamp"] for t in expected]
    assert last.sweeps[1].data_path.startswith("samples/")                               # the previous keyframe
    for sweep, tok in zip(last.sweeps, expected):
        rot, tran = _obtain_sensor2top(cs[sd[tok]["calibrated_sensor_token"]], poses[sd[tok]["ego_pose_token"]],
                                       cs[key["calibrated_sensor_token"]], poses[key["ego_pose_token"]])
        np.testing.assert_allclose(sweep.sensor2lidar[:3, :3], rot, atol=1e-9)
        np.testing.assert_allclose(sweep.sensor2lidar[:3, 3], tran, atol=1e-9)
    assert abs(last.sweeps[3].sensor2lidar[0, 3]) + abs(last.sweeps[3].sensor2lidar[1, 3]) > 4.0   # 5 m of driving
    out = tmp_path / "none"
    assert main(["data", "nuscenes", "--root", str(root), "--out", str(out), "--version", "v1.0-mini",
                 "--max-sweeps", "0", "--json"]) == 0
    assert all(s.sweeps == [] for s in load_infos(out / "infos_train.pkl"))
    build_nuscenes_infos(root, tmp_path / "ten", version="v1.0-mini")                 # default: up to 10
    assert [len(s.sweeps) for s in load_infos(tmp_path / "ten" / "infos_train.pkl")] == [1, 3, 5]


def test_a_looping_prev_chain_is_refused(tmp_path: Path):
    root = tmp_path / "nuscenes"
    write_tables(root, scenes=("scene-0061",), per_scene=2)
    _chain_lidar_sweeps(root)
    path = root / "v1.0-mini" / "sample_data.json"
    sd = json.loads(path.read_text())
    first = next(r for r in sd if r["token"] == "sd-scene-0061-s0-LIDAR_TOP-False")
    first["prev"] = "sd-scene-0061-s1-LIDAR_TOP-True"
    path.write_text(json.dumps(sd))
    with pytest.raises(ValueError, match="'prev' chain of LIDAR_TOP loops"):
        build_nuscenes_infos(root, tmp_path / "infos", version="v1.0-mini")
    with pytest.raises(ValueError, match="max_sweeps: expected an integer >= 0"):
        build_nuscenes_infos(root, tmp_path / "infos", version="v1.0-mini", max_sweeps=-1)
