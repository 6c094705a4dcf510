"""Bad input: every error names the sample token and the file (issue 3)."""
from __future__ import annotations

import copy
import dataclasses
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from flashocc.data.dataset import DataConfig, OccDataset
from flashocc.data.infos import load_infos, safe_load_pickle
from flashocc.data.occ3d import OccLabels, load_labels, save_labels

TOKEN = "ca9a282c9e77460f8360f564131a8af5"


def _labels(**overrides) -> dict:
    base = {key: np.zeros((200, 200, 16), np.uint8) for key in ("semantics", "mask_lidar", "mask_camera")}
    base["semantics"][:] = 17
    return {**base, **overrides}


def test_missing_image(data_root):
    root, sample = data_root
    cams = dict(sample.cams)
    cams["CAM_BACK"] = dataclasses.replace(cams["CAM_BACK"], image_path="samples/CAM_BACK/gone.jpg")
    ds = OccDataset(root, [dataclasses.replace(sample, cams=cams)], DataConfig(load_occ=False))
    with pytest.raises(FileNotFoundError, match=rf"{TOKEN}.*CAM_BACK image not found.*gone\.jpg"):
        ds[0]


def test_corrupt_image(data_root):
    root, sample = data_root
    bad = root / "samples" / "CAM_FRONT" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    cams = dict(sample.cams)
    cams["CAM_FRONT"] = dataclasses.replace(cams["CAM_FRONT"], image_path="samples/CAM_FRONT/broken.jpg")
    ds = OccDataset(root, [dataclasses.replace(sample, cams=cams)], DataConfig(load_occ=False))
    with pytest.raises(ValueError, match=rf"{TOKEN}.*cannot decode image .*broken\.jpg"):
        ds[0]


def test_missing_labels_npz(data_root):
    root, sample = data_root
    ds = OccDataset(root, [dataclasses.replace(sample, occ_path="gts/scene-0061/nowhere")], DataConfig())
    with pytest.raises(FileNotFoundError, match=rf"{TOKEN}.*gts/scene-0061/nowhere/labels\.npz"):
        ds[0]


def test_sample_without_occ_path(data_root):
    root, sample = data_root
    ds = OccDataset(root, [dataclasses.replace(sample, occ_path=None)], DataConfig())
    with pytest.raises(ValueError, match=rf"{TOKEN}.*no occ_path"):
        ds[0]


@pytest.mark.parametrize("case, pattern", [
    ("corrupt", r"corrupt labels archive"),
    ("shape", r"'semantics' must be uint8 \(200, 200, 16\), found uint8 \(200, 200, 8\)"),
    ("dtype", r"'mask_camera' must be uint8 \(200, 200, 16\), found int64"),
    ("missing_key", r"missing keys \['mask_lidar'\]"),
    ("range", r"'semantics' has label 23"),
])
def test_bad_labels_npz(tmp_path: Path, case: str, pattern: str):
    path = tmp_path / "gts" / "scene-0061" / "tok123" / "labels.npz"
    path.parent.mkdir(parents=True)
    if case == "corrupt":
        path.write_bytes(b"PK\x03\x04 truncated zip")
    elif case == "shape":
        np.savez(path, **_labels(semantics=np.zeros((200, 200, 8), np.uint8)))
    elif case == "dtype":
        np.savez(path, **_labels(mask_camera=np.zeros((200, 200, 16), np.int64)))
    elif case == "missing_key":
        arrays = _labels()
        del arrays["mask_lidar"]
        np.savez(path, **arrays)
    else:
        arrays = _labels()
        arrays["semantics"][3, 4, 5] = 23
        np.savez(path, **arrays)
    with pytest.raises(ValueError, match=rf"sample tok123: {path}.*{pattern}"):
        load_labels(path.parent, "tok123")


def test_labels_round_trip(tmp_path: Path, occ3d_labels_path: Path):
    labels = load_labels(occ3d_labels_path, "29796060110c4163b07f06eff4af0753")
    assert labels.semantics.shape == (200, 200, 16) and labels.mask_camera.sum() > 0
    assert not (labels.mask_camera > labels.mask_lidar).any()  # camera-visible ⊂ lidar-observed on the fixture
    back = load_labels(save_labels(labels, tmp_path / "t"), "t")
    for key in ("semantics", "mask_lidar", "mask_camera"):
        np.testing.assert_array_equal(getattr(back, key), getattr(labels, key))
    with pytest.raises(ValueError, match="must be uint8"):
        save_labels(OccLabels(labels.semantics.astype(np.int32), labels.mask_lidar, labels.mask_camera), tmp_path / "u")


def test_non_rotation_calibration(tmp_path: Path, fixture_pkl: Path):
    payload = copy.deepcopy(safe_load_pickle(fixture_pkl))
    cam2ego = np.array(payload["data_list"][0]["images"]["CAM_FRONT"]["cam2ego"])
    cam2ego[:3, :3] *= 1.2  # a scaled matrix is not a rotation
    payload["data_list"][0]["images"]["CAM_FRONT"]["cam2ego"] = cam2ego.tolist()
    path = tmp_path / "bad_calib.pkl"
    path.write_bytes(pickle.dumps(payload))
    with pytest.raises(ValueError, match=rf"bad_calib\.pkl: sample {TOKEN}: field 'cams\.CAM_FRONT\.sensor2ego'.*not a rotation"):
        load_infos(path)


def test_bevdet_non_unit_quaternion(tmp_path: Path):
    record = {"token": "tokq", "timestamp": 1, "lidar_path": "x.bin", "lidar2ego_translation": [0, 0, 0],
              "lidar2ego_rotation": [2.0, 0.0, 0.0, 0.0], "ego2global_translation": [0, 0, 0],
              "ego2global_rotation": [1.0, 0.0, 0.0, 0.0], "cams": {}}
    path = tmp_path / "bevdetv2-nuscenes_infos_val.pkl"
    path.write_bytes(pickle.dumps({"infos": [record], "metadata": {}}))
    with pytest.raises(ValueError, match=r"bevdetv2-nuscenes_infos_val\.pkl: sample tokq.*unit quaternion"):
        load_infos(path)


@pytest.mark.parametrize("payload", [[1, 2, 3], {"foo": 1}, "text"])
def test_pickle_that_is_not_an_info_file(tmp_path: Path, payload):
    path = tmp_path / "other.pkl"
    path.write_bytes(pickle.dumps(payload))
    with pytest.raises(ValueError, match=r"other\.pkl: not an info file"):
        load_infos(path)


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_pickle_is_refused(tmp_path: Path):
    marker = tmp_path / "pwned"
    path = tmp_path / "infos_evil.pkl"
    path.write_bytes(pickle.dumps({"infos": [_Evil(marker)]}))
    with pytest.raises(ValueError, match=r"infos_evil\.pkl: not a readable info pickle.*refusing to load (posix|os)\.system"):
        load_infos(path)
    assert not marker.exists()


def test_garbage_and_missing_info_files(tmp_path: Path):
    path = tmp_path / "garbage.pkl"
    path.write_bytes(b"\x00\x01 not a pickle")
    with pytest.raises(ValueError, match=r"garbage\.pkl: not a readable info pickle"):
        load_infos(path)
    with pytest.raises(FileNotFoundError, match=r"info file not found: .*absent\.pkl"):
        load_infos(tmp_path / "absent.pkl")


def test_missing_lidar_for_depth(data_root):
    root, sample = data_root
    ds = OccDataset(root, [dataclasses.replace(sample, lidar_path="samples/LIDAR_TOP/none.bin")],
                    DataConfig(load_occ=False, load_depth=True))
    with pytest.raises(FileNotFoundError, match=rf"{TOKEN}.*LiDAR sweep not found.*none\.bin"):
        ds[0]


@pytest.mark.parametrize("field, value", [("rot", (5.4, -5.4)), ("flip_dx_ratio", 1.5), ("input_size", (0, 704)),
                                          ("num_adjacent", -1)])
def test_data_config_refuses_bad_values(field: str, value):
    with pytest.raises(ValueError, match=rf"^data\.{field}: expected"):
        DataConfig(**{field: value})
