"""SparseOcc's data: the official choice of the 7 past frames (test: t-1 ... t-7; train: a random interval;
clamping and repetition at scene starts), one image augmentation for all 48 images, BGR 0..255 images and
``lidar2img`` mapping the current LiDAR frame into every (past) image."""
import numpy as np
import pytest

from flashocc.data import sparseocc_frames as S
from flashocc.data import transforms as T
from flashocc.data.dataset import DataConfig, OccDataset
from flashocc.data.infos import SampleInfo
from flashocc.errors import ConfigError


def _scene(n: int) -> list[SampleInfo]:
    out = []
    for i in range(n):
        out.append(SampleInfo(token=f"t{i}", scene_name="s", scene_token="s", timestamp=i * 500_000, lidar_path="x",
                              lidar2ego=np.eye(4), ego2global=np.eye(4), prev_token=f"t{i - 1}" if i else ""))
    return out


def _chosen(samples, index, train=False, rng=None):
    by_token = {s.token: s for s in samples}
    return [int(f.token[1:]) for f in S.sparseocc_frames(samples[index], by_token, train, rng)]


def test_test_time_frames_are_the_seven_previous_keyframes_clamped_at_the_scene_start():
    scene = _scene(12)
    assert _chosen(scene, 11) == [11, 10, 9, 8, 7, 6, 5, 4]
    assert _chosen(scene, 3) == [3, 2, 1, 0, 0, 0, 0, 0]  # short list: clamp to its last (oldest) entry
    assert _chosen(scene, 0) == [0] * 8                   # empty list: the current images 7 times


def test_official_entry_indices():
    assert S.prev_entry_indices(60, False, None) == [5, 11, 17, 23, 29, 35, 41]
    rng = np.random.default_rng(0)
    for _ in range(20):  # m = 8: interval in [4, 8]
        idx = S.prev_entry_indices(60, True, rng)
        interval = idx[0] + 1
        assert 4 <= interval <= 8 and idx == [(k + 1) * interval - 1 for k in range(7)]
    assert S.prev_entry_indices(12, True, rng) == [0, 1, 2, 3, 4, 5, 6]  # m = 1: interval 1
    assert S.prev_entry_indices(6, True, rng) == [0, 1, 2, 3, 4, 5, 5]  # <= 7 entries: all, padded with the last
    assert S.prev_entry_indices(7, True, rng) == [0, 1, 2, 3, 4, 5, 6]
    assert S.prev_entry_indices(20, False, None) == [5, 11, 17, 19, 19, 19, 19]  # clamped to the last entry
    assert S.prev_entry_indices(0, True, rng) == []
    with pytest.raises(ValueError):
        S.prev_entry_indices(60, True, None)


def test_training_entries_read_the_keyframe_nearest_in_time():
    # interval 4: entries 3, 7, ..., 27 lie 4/6, 8/6, ... keyframe intervals back.
    assert [S.entry_to_keyframes_back((k + 1) * 4 - 1) for k in range(7)] == [1, 1, 2, 3, 3, 4, 5]
    assert [S.entry_to_keyframes_back((k + 1) * 6 - 1) for k in range(7)] == [1, 2, 3, 4, 5, 6, 7]

    class Fixed:
        def integers(self, low, high):
            assert (low, high) == (4, 9)
            return 4

    assert _chosen(_scene(20), 19, train=True, rng=Fixed()) == [19, 18, 18, 17, 16, 16, 15, 14]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from flashocc.data.synth import SynthConfig, generate_synthetic_set

    return generate_synthetic_set(tmp_path_factory.mktemp("synth"),
                                  SynthConfig(scenes=1, frames_per_scene=3, seed=0, image_size=(176, 99),
                                              lidar_azimuth_steps=90))


@pytest.mark.parametrize("train", [False, True])
def test_dataset_gives_the_sparseocc_batch(synth, train):
    cfg = DataConfig(input_size=(64, 192), num_adjacent=7, pipeline="sparseocc")
    ds = OccDataset(synth, synth / "infos_train.pkl", cfg, train=train, aug_seed=3)
    item = ds[2]
    assert item["img"].shape == (48, 3, 64, 192) and item["lidar2img"].shape == (48, 4, 4)
    assert item["img"].max() > 1 and item["img"].min() >= 0  # BGR 0..255: the model normalises
    # One resize/crop/flip draw for all 48 images.
    assert all(np.allclose(item["post_rots"][0], r) and np.allclose(item["post_trans"][0], t)
               for r, t in zip(item["post_rots"], item["post_trans"]))
    # lidar2img: the current LiDAR frame -> each image; for the keyframe the usual lidar -> camera chain.
    frames = S.sparseocc_frames(ds.samples[2], ds._by_token, False, None)
    cur = frames[0]
    point = np.array([8.0, 1.0, 0.5, 1.0])
    for i, name in enumerate(cfg.cameras):
        cam = cur.cams[name]
        x = T.lidar_to_camera(cur.lidar2ego, cur.ego2global, cam.sensor2ego, cam.ego2global) @ point
        uvd = np.asarray(cam.intrinsics, np.float64) @ x[:3]
        uv = uvd[:2] / uvd[2]
        rot, tran = np.asarray(item["post_rots"][i], np.float64), np.asarray(item["post_trans"][i], np.float64)
        expected = rot[:2, :2] @ uv + tran[:2]
        got = item["lidar2img"][i].double().numpy() @ point
        assert np.allclose(got[:2] / got[2], expected, rtol=1e-4, atol=1e-3)
    # Past frames map the current LiDAR frame into the past image: frame 1 of sample 2 is keyframe 1.
    past = ds.samples[1]
    cam = past.cams[cfg.cameras[0]]
    l2c = np.linalg.inv(cam.ego2global @ cam.sensor2ego) @ cur.ego2global @ cur.lidar2ego
    got = item["lidar2img"][6].double().numpy() @ point
    uvd = np.asarray(cam.intrinsics, np.float64) @ (l2c @ point)[:3]
    rot, tran = np.asarray(item["post_rots"][6], np.float64), np.asarray(item["post_trans"][6], np.float64)
    assert np.allclose(got[:2] / got[2], rot[:2, :2] @ (uvd[:2] / uvd[2]) + tran[:2], rtol=1e-4, atol=1e-3)
    # ego2lidar carries the inverse BEV flip.
    bda4 = np.eye(4)
    bda4[:3, :3] = item["bda"].numpy()
    assert np.allclose(item["ego2lidar"].double().numpy() @ bda4 @ cur.lidar2ego, np.eye(4), atol=1e-5)


def test_the_model_asks_for_the_pipeline_and_the_field_is_validated():
    from flashocc.config import load_run_config

    cfg = load_run_config("sparseocc-tiny")
    assert (cfg.data.pipeline, cfg.data.num_adjacent, cfg.data.rot) == ("sparseocc", 7, (0.0, 0.0))
    assert cfg.eval.metrics[0] == "rayiou"  # RayIoU: no camera mask (the official protocol)
    assert load_run_config("flashocc-tiny").data.pipeline == "flashocc"
    with pytest.raises(ConfigError, match="data.pipeline"):
        DataConfig(pipeline="sparse")


def _cam(path: str, ts: int, x: float) -> "CameraInfo":
    from flashocc.data.infos import CameraInfo

    pose = np.eye(4)
    pose[0, 3] = x
    return CameraInfo(path, np.array([[100.0, 0, 50], [0, 100.0, 30], [0, 0, 1]]), np.eye(4), pose, ts)


def _scene_with_sweeps(n: int, per_interval: int = 5, cameras=S.NUSCENES_CAMERAS) -> list[SampleInfo]:
    """Keyframes every 0.5 s with ``per_interval`` camera sweeps between them; the first has none (official)."""
    scene = _scene(n)
    for i, sample in enumerate(scene):
        sample.cams = {c: _cam(f"k{i}/{c}", sample.timestamp, float(i)) for c in cameras}
        if i:
            dt = 500_000 // (per_interval + 1)
            sample.cam_sweeps = [{c: _cam(f"k{i}s{j}/{c}", sample.timestamp - (j + 1) * dt, i - (j + 1) / 6)
                                  for c in cameras} for j in range(per_interval)]
    return scene


def _names(frames) -> list[str]:
    return [f.cams["CAM_FRONT"].image_path.split("/")[0] for f in frames]


def test_the_prev_list_is_the_official_one_when_camera_sweeps_exist():
    scene = _scene_with_sweeps(12)
    by_token = {s.token: s for s in scene}
    entries = S.prev_list(scene[3], by_token)
    assert _names(entries) == ["k3s0", "k3s1", "k3s2", "k3s3", "k3s4", "k2",
                               "k2s0", "k2s1", "k2s2", "k2s3", "k2s4", "k1",
                               "k1s0", "k1s1", "k1s2", "k1s3", "k1s4", "k0"]  # k0 has no sweeps: the walk ends
    assert S.prev_list(scene[0], by_token) == []
    assert len(S.prev_list(scene[11], by_token)) == 66
    # Test: keyframes t-1 ... t-7, clamped at the scene start (same as the keyframe model).
    assert _names(S.sparseocc_frames(scene[11], by_token, False, None)) == [f"k{i}" for i in range(11, 3, -1)]
    assert _names(S.sparseocc_frames(scene[3], by_token, False, None)) == ["k3", "k2", "k1", "k0", "k0", "k0", "k0", "k0"]
    assert _names(S.sparseocc_frames(scene[0], by_token, False, None)) == ["k0"] * 8

    class Fixed:
        def integers(self, low, high):
            assert (low, high) == (4, 9)  # 66 entries: m = 9 -> interval in [4, 8]
            return 4

    # Training, interval 4: entries 3, 7, 11, ...; the camera sweeps themselves, not the nearest keyframes.
    got = _names(S.sparseocc_frames(scene[11], by_token, True, Fixed()))
    assert got == ["k11", "k11s3", "k10s1", "k9", "k9s3", "k8s1", "k7", "k7s3"]
    # The sweep's own pose goes into lidar2img: it maps the current frame into that image.
    frames = S.sparseocc_frames(scene[11], by_token, True, Fixed())
    m = S.lidar2img(scene[11], frames[1], "CAM_FRONT", np.eye(3), np.zeros(3))
    expected = S.lidar2img(scene[11], scene[11], "CAM_FRONT", np.eye(3), np.zeros(3))
    shift = np.eye(4)
    shift[0, 3] = 4 / 6  # the sweep camera sits 4/6 m behind the keyframe camera (current LiDAR = global here)
    assert np.allclose(m, expected @ shift)
    # Short training list (one interval, 6 entries): read whole, padded with its last entry.
    assert _names(S.sparseocc_frames(scene[1], by_token, True, np.random.default_rng(0))) == \
        ["k1", "k1s0", "k1s1", "k1s2", "k1s3", "k1s4", "k0", "k0"]


def test_an_entry_missing_a_camera_is_replaced_by_the_one_before():
    scene = _scene_with_sweeps(9)
    scene[8].cam_sweeps[4] = {"CAM_FRONT": scene[8].cam_sweeps[4]["CAM_FRONT"]}
    by_token = {s.token: s for s in scene}

    class Fixed:
        def integers(self, low, high):
            return 5

    assert _names(S.sparseocc_frames(scene[8], by_token, True, Fixed()))[1] == "k8s3"  # entry 4 -> entry 3


def test_infos_without_camera_sweeps_fall_back_to_the_nearest_keyframes(tmp_path):
    from flashocc.data.infos import load_infos, save_infos

    scene = _scene_with_sweeps(20)
    by_token = {s.token: s for s in scene}

    class Fixed:
        def integers(self, low, high):
            return 4

    exact = _names(S.sparseocc_frames(scene[19], by_token, True, Fixed()))
    for s in scene:
        s.cam_sweeps = []
    assert not S.has_camera_sweeps(scene[19])
    model = _names(S.sparseocc_frames(scene[19], by_token, True, Fixed()))
    assert model == ["k19", "k18", "k18", "k17", "k16", "k16", "k15", "k14"] != exact
    # Both round-trip through the info file; a record written before the field existed still loads.
    scene = _scene_with_sweeps(3)
    save_infos(scene, tmp_path / "i.pkl")
    back = load_infos(tmp_path / "i.pkl")
    assert [len(s.cam_sweeps) for s in back] == [0, 5, 5]
    assert back[2].cam_sweeps[1]["CAM_BACK"].image_path == "k2s1/CAM_BACK"
    np.testing.assert_allclose(back[2].cam_sweeps[1]["CAM_BACK"].ego2global, scene[2].cam_sweeps[1]["CAM_BACK"].ego2global)
    from flashocc.data.infos import sample_from_dict, sample_to_dict

    old = sample_to_dict(scene[2])
    del old["cam_sweeps"]
    assert sample_from_dict(old).cam_sweeps == []


def test_a_camera_sweep_after_its_keyframe_is_refused():
    from flashocc.data.infos import validate_sample
    from flashocc.errors import DataError

    scene = _scene_with_sweeps(2)
    scene[1].cam_sweeps[0]["CAM_BACK"].timestamp = scene[1].timestamp + 1
    with pytest.raises(DataError, match=r"cam_sweeps\[0\]\.CAM_BACK\.timestamp"):
        validate_sample(scene[1])
