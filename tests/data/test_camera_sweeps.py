"""Camera sweeps (SparseOcc's past frames): recorded from the nuScenes tables as SparseOcc@af4d9df
gen_sweep_info.py does, rendered by the synthetic world (opt-in), and read by the sparseocc pipeline."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from flashocc.data import sparseocc_frames as S
from flashocc.data.infos import load_infos
from flashocc.data.nuscenes_tables import build_nuscenes_infos
from flashocc.geometry import NUSCENES_CAMERAS

K = [[1266.4, 0.0, 816.3], [0.0, 1266.4, 491.5], [0.0, 0.0, 1.0]]


def _write_tables(root: Path, images_between: list[dict[str, int]]) -> None:
    """One mini-train scene of ``len(images_between) + 1`` keyframes; ``images_between[i][cam]`` non-key images
    of ``cam`` lie between keyframes i and i+1 (12 Hz), linked by 'prev' as in sample_data.json."""
    t = {name: [] for name in ("scene", "sample", "sample_data", "calibrated_sensor", "sensor", "ego_pose")}
    for channel in (*NUSCENES_CAMERAS, "LIDAR_TOP"):
        t["sensor"].append({"token": f"sensor-{channel}", "channel": channel})
        t["calibrated_sensor"].append({"token": f"cs-{channel}", "sensor_token": f"sensor-{channel}",
                                       "translation": [1.0, 0.0, 1.5], "rotation": [0.5, -0.5, 0.5, -0.5],
                                       "camera_intrinsic": K if channel != "LIDAR_TOP" else []})
    n = len(images_between) + 1
    tokens = [f"s{i}" for i in range(n)]
    t["scene"].append({"token": "scene", "name": "scene-0061", "first_sample_token": tokens[0],
                       "last_sample_token": tokens[-1]})
    last = {c: "" for c in NUSCENES_CAMERAS}

    def add(sd: str, channel: str, ts: int, key: bool, sample: str) -> None:
        t["ego_pose"].append({"token": f"ep-{sd}", "timestamp": ts, "translation": [ts * 1e-6, 0.0, 0.0],
                              "rotation": [1.0, 0.0, 0.0, 0.0]})
        t["sample_data"].append({"token": sd, "sample_token": sample, "ego_pose_token": f"ep-{sd}",
                                 "calibrated_sensor_token": f"cs-{channel}", "timestamp": ts, "is_key_frame": key,
                                 "filename": f"{'samples' if key else 'sweeps'}/{channel}/{sd}.jpg",
                                 "prev": last.get(channel, ""), "next": ""})
        last[channel] = sd

    for i, tok in enumerate(tokens):
        ts = 1_000_000_000 + i * 500_000
        t["sample"].append({"token": tok, "timestamp": ts, "scene_token": "scene",
                            "prev": tokens[i - 1] if i else "", "next": tokens[i + 1] if i + 1 < n else ""})
        if i:
            for cam in NUSCENES_CAMERAS:
                count = images_between[i - 1][cam]
                for j in range(count):  # oldest first, so each one's 'prev' is the one before
                    add(f"{cam}-{i}-{j}", cam, ts - 500_000 + (j + 1) * 500_000 // (count + 1), False, tokens[i - 1])
        for cam in NUSCENES_CAMERAS:
            add(f"{cam}-k{i}", cam, ts, True, tok)
        add(f"lidar-k{i}", "LIDAR_TOP", ts, True, tok)
    folder = root / "v1.0-mini"
    folder.mkdir(parents=True)
    for name, records in t.items():
        (folder / f"{name}.json").write_text(json.dumps(records))


def test_tables_give_the_official_five_steps_back_per_camera(tmp_path: Path):
    five = {c: 5 for c in NUSCENES_CAMERAS}
    four = {**five, "CAM_BACK": 4}  # a camera that took only 4 images in the interval
    _write_tables(tmp_path / "ns", [five, four])
    build_nuscenes_infos(tmp_path / "ns", tmp_path / "out", version="v1.0-mini")
    s0, s1, s2 = load_infos(tmp_path / "out" / "infos_train.pkl")
    assert s0.cam_sweeps == []  # a scene's first keyframe: none (sample 'prev' is empty)
    assert [e["CAM_FRONT"].image_path for e in s1.cam_sweeps] == [f"sweeps/CAM_FRONT/CAM_FRONT-1-{j}.jpg"
                                                                  for j in (4, 3, 2, 1, 0)]  # newest first
    # Upstream ignores is_key_frame: 5 steps from a camera with 4 images reach the previous keyframe.
    assert [e["CAM_BACK"].image_path for e in s2.cam_sweeps][-2:] == ["sweeps/CAM_BACK/CAM_BACK-2-0.jpg",
                                                                      "samples/CAM_BACK/CAM_BACK-k1.jpg"]
    sweep = s1.cam_sweeps[0]["CAM_FRONT"]
    assert sweep.timestamp == 1_000_000_000 + 5 * 500_000 // 6
    np.testing.assert_allclose(sweep.ego2global[:3, 3], [sweep.timestamp * 1e-6, 0, 0])  # its own ego pose
    np.testing.assert_allclose(sweep.intrinsics, K)
    # The sparseocc frame choice now reads the sweeps themselves.
    by_token = {s.token: s for s in (s0, s1, s2)}
    entries = S.prev_list(s2, by_token)
    assert len(entries) == 12 and entries[5] is s1 and entries[11] is s0
    assert entries[6].cams["CAM_FRONT"].image_path == "sweeps/CAM_FRONT/CAM_FRONT-1-4.jpg"
    # --camera-sweeps 0 records none.
    build_nuscenes_infos(tmp_path / "ns", tmp_path / "none", version="v1.0-mini", camera_sweeps=0)
    assert all(not s.cam_sweeps for s in load_infos(tmp_path / "none" / "infos_train.pkl"))
    with pytest.raises(ValueError, match="camera_sweeps"):
        build_nuscenes_infos(tmp_path / "ns", tmp_path / "bad", version="v1.0-mini", camera_sweeps=-1)


def test_a_chain_that_ends_repeats_the_last_complete_entry(tmp_path: Path):
    # Keyframe 1 has a previous keyframe but only 2 images before it on CAM_FRONT_LEFT, then the chain ends.
    short = {**{c: 5 for c in NUSCENES_CAMERAS}}
    _write_tables(tmp_path / "ns", [short])
    table = tmp_path / "ns" / "v1.0-mini" / "sample_data.json"
    records = json.loads(table.read_text())
    for r in records:
        if r["token"] == "CAM_FRONT_LEFT-1-3":
            r["prev"] = ""
    table.write_text(json.dumps(records))
    build_nuscenes_infos(tmp_path / "ns", tmp_path / "out", version="v1.0-mini")
    s1 = load_infos(tmp_path / "out" / "infos_train.pkl")[1]
    paths = [e["CAM_FRONT_LEFT"].image_path.rsplit("/", 1)[1] for e in s1.cam_sweeps]
    assert paths == ["CAM_FRONT_LEFT-1-4.jpg", "CAM_FRONT_LEFT-1-3.jpg", "CAM_FRONT_LEFT-1-3.jpg",
                     "CAM_FRONT_LEFT-1-3.jpg", "CAM_FRONT_LEFT-1-3.jpg"]


@pytest.fixture(scope="module")
def synth_sweeps(tmp_path_factory):
    from flashocc.data.synth import SynthConfig, generate_synthetic_set

    config = SynthConfig(scenes=1, frames_per_scene=3, seed=0, image_size=(176, 99), lidar_azimuth_steps=90,
                         lidar_sweeps=0, camera_sweeps=2)
    return generate_synthetic_set(tmp_path_factory.mktemp("synth_sweeps"), config), config


def test_the_synthetic_world_renders_camera_sweeps(synth_sweeps):
    from flashocc.data.synth import SynthConfig
    from flashocc.data.synth.generate import camera_sweep_times, recorded_config, scene_world
    from flashocc.data.synth.marker import synthetic_set_problem
    from flashocc.data.synth.rig import nuscenes_rig

    root, config = synth_sweeps
    assert synthetic_set_problem(root, config) is None  # the marker counts the sweep images
    samples = sorted(load_infos(root / "infos_train.pkl"), key=lambda s: s.timestamp)
    assert [len(s.cam_sweeps) for s in samples] == [0, 2, 2]
    assert camera_sweep_times(config, 2) == pytest.approx([1.0 - 0.5 / 3, 1.0 - 1.0 / 3])
    world, rig = scene_world(config, 0), nuscenes_rig(config.image_size)
    for j, t in enumerate(camera_sweep_times(config, 2)):
        for cam in rig.cameras:
            rec = samples[2].cam_sweeps[j][cam.name]
            assert (root / rec.image_path).is_file() and rec.image_path.startswith(f"sweeps/{cam.name}/")
            np.testing.assert_allclose(rec.ego2global, world.ego_pose(t + cam.time_offset_us * 1e-6))
            assert samples[1].timestamp < rec.timestamp < samples[2].timestamp
    # Off by default: the recorded config of a default set is what it was before the field existed.
    assert "camera_sweeps" not in recorded_config(SynthConfig()) and recorded_config(config)["camera_sweeps"] == 2


def test_the_sparseocc_pipeline_reads_the_rendered_sweeps(synth_sweeps):
    from flashocc.data.dataset import DataConfig, OccDataset

    root, _ = synth_sweeps
    cfg = DataConfig(input_size=(64, 192), num_adjacent=7, pipeline="sparseocc")
    ds = OccDataset(root, root / "infos_train.pkl", cfg, train=True, aug_seed=3)
    item = ds[2]
    frames = S.sparseocc_frames(ds.samples[2], ds._by_token, True, np.random.default_rng(0))
    # 6 entries (2 sweeps + keyframe per interval, 2 intervals) <= 7: read whole, padded with the last.
    assert [f.token.rsplit("/", 1)[-1] for f in frames[1:4]] == ["cam_sweep0", "cam_sweep1", ds.samples[1].token]
    assert item["img"].shape == (48, 3, 64, 192)
    assert not np.allclose(item["img"][6].numpy(), item["img"][18].numpy())  # sweep 0 is not keyframe t-1
    cur, sweep = frames[0], frames[1].cams[cfg.cameras[0]]
    point = np.array([8.0, 1.0, 0.5, 1.0])
    l2c = np.linalg.inv(sweep.ego2global @ sweep.sensor2ego) @ cur.ego2global @ cur.lidar2ego
    uvd = np.asarray(sweep.intrinsics, np.float64) @ (l2c @ point)[:3]
    rot, tran = np.asarray(item["post_rots"][6], np.float64), np.asarray(item["post_trans"][6], np.float64)
    got = item["lidar2img"][6].double().numpy() @ point
    assert np.allclose(got[:2] / got[2], rot[:2, :2] @ (uvd[:2] / uvd[2]) + tran[:2], rtol=1e-4, atol=1e-3)


def test_the_cli_flags(tmp_path: Path):
    from flashocc.cli import build_parser, main

    _write_tables(tmp_path / "ns", [{c: 5 for c in NUSCENES_CAMERAS}])
    assert main(["data", "nuscenes", "--root", str(tmp_path / "ns"), "--out", str(tmp_path / "o"), "--version",
                 "v1.0-mini", "--camera-sweeps", "2"]) == 0
    assert [len(s.cam_sweeps) for s in load_infos(tmp_path / "o" / "infos_train.pkl")] == [0, 2]
    args = build_parser().parse_args(["data", "synth", "--out", str(tmp_path / "s"), "--camera-sweeps", "5"])
    assert args.camera_sweeps == 5
    assert build_parser().parse_args(["data", "synth", "--out", str(tmp_path / "s")]).camera_sweeps == 0


def test_a_bad_camera_sweep_count_is_refused():
    from flashocc.data.synth import SynthConfig

    for bad in (-1, True, 2.5):
        with pytest.raises(ValueError, match="SynthConfig.camera_sweeps"):
            SynthConfig(camera_sweeps=bad).validate()
