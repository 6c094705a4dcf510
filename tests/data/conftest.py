"""Shared fixtures for the real-data pipeline tests: the mmdet3d fixture sample and a tmp data root."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from flashocc.data.infos import SampleInfo, load_infos

FIXTURE_PKL = "n015-2018-07-24-11-22-45+0800.pkl"


@pytest.fixture(scope="session")
def fixture_pkl(nuscenes_sample_dir: Path) -> Path:
    return nuscenes_sample_dir / FIXTURE_PKL


@pytest.fixture(scope="session")
def fixture_sample(fixture_pkl: Path) -> SampleInfo:
    return load_infos(fixture_pkl)[0]


@pytest.fixture(scope="session")
def fixture_points_ego(nuscenes_sample_dir: Path, fixture_sample: SampleInfo) -> np.ndarray:
    """(M, 3) fixture LiDAR points in the LiDAR-keyframe ego frame."""
    pts = np.fromfile(nuscenes_sample_dir / Path(fixture_sample.lidar_path).name, np.float32).reshape(-1, 5)
    l2e = fixture_sample.lidar2ego
    return pts[:, :3].astype(np.float64) @ l2e[:3, :3].T + l2e[:3, 3]


@pytest.fixture()
def data_root(tmp_path: Path, nuscenes_sample_dir: Path, occ3d_labels_path: Path,
              fixture_sample: SampleInfo) -> tuple[Path, SampleInfo]:
    """A nuScenes-layout root in tmp (symlinks to the fixtures, never copies) with Occ3D labels.

    The Occ3D volume belongs to another keyframe (fixtures/README.md); pairing it here only exercises
    loading and flipping, not geometry.
    """
    root = tmp_path / "nuscenes"
    for rel in [cam.image_path for cam in fixture_sample.cams.values()] + [fixture_sample.lidar_path]:
        dst = root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.symlink_to(nuscenes_sample_dir / Path(rel).name)
    occ_dir = root / "gts" / "scene-0061" / fixture_sample.token
    occ_dir.mkdir(parents=True)
    (occ_dir / "labels.npz").symlink_to(occ3d_labels_path)
    sample = dataclasses.replace(fixture_sample, scene_name="scene-0061", scene_token="scene-0061-token",
                                 occ_path=f"gts/scene-0061/{fixture_sample.token}")
    return root, sample
