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
    assert S.prev_entry_indices(6, True, rng) == [5] * 7                # m = 0: index -1, the last entry
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
