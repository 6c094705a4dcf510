from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The real nuScenes / Occ3D fixtures beside the repo (../shared/fixtures)."""
    if not FIXTURES.is_dir():
        pytest.skip(f"real-data fixtures not found at {FIXTURES} (expected ../shared/fixtures beside the repo)")
    return FIXTURES


@pytest.fixture(scope="session")
def nuscenes_sample_dir(fixtures_dir: Path) -> Path:
    return fixtures_dir / "nuscenes_sample"


@pytest.fixture(scope="session")
def occ3d_labels_path(fixtures_dir: Path) -> Path:
    return fixtures_dir / "occ3d_gt" / "scene-1077" / "29796060110c4163b07f06eff4af0753" / "labels.npz"


@pytest.fixture(scope="session")
def nuscenes_rig(nuscenes_sample_dir: Path):
    """The real keyframe's LiDAR sweep in the ego frame (M, 3) and every camera's (cam2ego, cam2img)."""
    import numpy as np

    from flashocc.data.infos import safe_load_pickle
    from flashocc.geometry import NUSCENES_CAMERAS

    info = safe_load_pickle(next(nuscenes_sample_dir.glob("*.pkl")))["data_list"][0]
    lidar = np.fromfile(nuscenes_sample_dir / info["lidar_points"]["lidar_path"], dtype=np.float32).reshape(-1, 5)
    lidar2ego = np.asarray(info["lidar_points"]["lidar2ego"])
    points_ego = lidar[:, :3] @ lidar2ego[:3, :3].T + lidar2ego[:3, 3]
    cams = {name: (np.asarray(info["images"][name]["cam2ego"]), np.asarray(info["images"][name]["cam2img"]))
            for name in NUSCENES_CAMERAS}
    return points_ego, cams
