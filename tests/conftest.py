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
