from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def occ3d(occ3d_labels_path: Path) -> dict[str, np.ndarray]:
    """The real Occ3D GT volume: semantics, mask_camera, mask_lidar (read-only arrays)."""
    with np.load(occ3d_labels_path) as z:
        out = {k: z[k] for k in ("semantics", "mask_camera", "mask_lidar")}
    for v in out.values():
        v.setflags(write=False)
    return out
