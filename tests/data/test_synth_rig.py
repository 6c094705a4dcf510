"""The synthetic rig's embedded calibration equals the real nuScenes fixture."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flashocc.data.infos import safe_load_pickle
from flashocc.data.synth.rig import LIDAR_BEAMS, nuscenes_rig
from flashocc.geometry import NUSCENES_CAMERAS

FIXTURE_PKL = "n015-2018-07-24-11-22-45+0800.pkl"


@pytest.fixture(scope="module")
def fixture_record(nuscenes_sample_dir: Path) -> dict:
    return safe_load_pickle(nuscenes_sample_dir / FIXTURE_PKL)["data_list"][0]


def test_rig_constants_equal_the_fixture(fixture_record: dict):
    rig = nuscenes_rig((1600, 900))
    assert [cam.name for cam in rig.cameras] == list(NUSCENES_CAMERAS)
    for cam in rig.cameras:
        ref = fixture_record["images"][cam.name]
        np.testing.assert_array_equal(cam.intrinsics, np.asarray(ref["cam2img"], np.float64)[:3, :3])
        np.testing.assert_array_equal(cam.cam2ego, np.asarray(ref["cam2ego"], np.float64))
        offset_us = round((ref["timestamp"] - fixture_record["timestamp"]) * 1e6)
        assert cam.time_offset_us == offset_us, cam.name
    np.testing.assert_array_equal(rig.lidar2ego, np.asarray(fixture_record["lidar_points"]["lidar2ego"], np.float64))


def test_intrinsics_scale_with_the_image_size():
    full, half = nuscenes_rig((1600, 900)), nuscenes_rig((800, 450))
    for a, b in zip(full.cameras, half.cameras):
        np.testing.assert_allclose(b.intrinsics[:2], a.intrinsics[:2] * 0.5)
        np.testing.assert_array_equal(b.cam2ego, a.cam2ego)
    pitches = np.degrees(full.lidar_pitches())
    assert len(pitches) == LIDAR_BEAMS == 32
    assert pitches[0] == pytest.approx(-30.67) and pitches[-1] == pytest.approx(10.67)
    with pytest.raises(ValueError, match="at least 8x8"):
        nuscenes_rig((4, 900))
