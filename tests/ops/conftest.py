import numpy as np
import pytest
import torch

@pytest.fixture(scope="session")
def lidar_points(nuscenes_sample_dir) -> torch.Tensor:
    """The real keyframe's LIDAR_TOP points (N, 5) in the ego frame: x, y, z, intensity, time lag 0."""
    from flashocc.data.infos import safe_load_pickle

    info = safe_load_pickle(next(nuscenes_sample_dir.glob("*.pkl")))["data_list"][0]
    raw = np.fromfile(nuscenes_sample_dir / info["lidar_points"]["lidar_path"], dtype=np.float32).reshape(-1, 5)
    lidar2ego = np.asarray(info["lidar_points"]["lidar2ego"])
    pts = raw.copy()
    pts[:, :3] = raw[:, :3] @ lidar2ego[:3, :3].T + lidar2ego[:3, 3]
    pts[:, 4] = 0.0  # keyframe: time lag 0 (mmdet3d LoadPointsFromMultiSweeps)
    return torch.from_numpy(pts.astype(np.float32))
