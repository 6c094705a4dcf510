from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flashocc.data.infos import safe_load_pickle
from flashocc.geometry import NUSCENES_CAMERAS, project_to_image
from flashocc.grid import OCC3D_NUSCENES as GRID
from flashocc.viz import CameraCalib, overlay_occupancy, render_cameras

CAR, FREE = 4, GRID.free_label
WIDTH = 400  # tile width; the photos are 1600 wide


@pytest.fixture(scope="module")
def sample(nuscenes_sample_dir: Path):
    record = safe_load_pickle(nuscenes_sample_dir / "n015-2018-07-24-11-22-45+0800.pkl")["data_list"][0]
    images = {n: nuscenes_sample_dir / record["images"][n]["img_path"] for n in NUSCENES_CAMERAS}
    cams = {n: CameraCalib(np.asarray(record["images"][n]["cam2ego"]), np.asarray(record["images"][n]["cam2img"]))
            for n in NUSCENES_CAMERAS}
    return images, cams


def car_ahead() -> tuple[np.ndarray, np.ndarray]:
    """A 4 m x 2.4 m x 1.6 m block of car voxels 10 m ahead of the ego, and its centre (metres)."""
    labels = np.full(GRID.shape, FREE, dtype=np.uint8)
    lo = GRID.points_to_index(np.array([10.0, -1.2, -0.6]))[0]
    labels[lo[0]:lo[0] + 10, lo[1]:lo[1] + 6, lo[2]:lo[2] + 4] = CAR
    return labels, np.array([12.0, 0.0, 0.2])


def test_car_ahead_shows_in_front_camera_only(sample):
    images, cams = sample
    labels, centre = car_ahead()
    front = cams["CAM_FRONT"]
    uv, depth = project_to_image(centre[None], front.sensor2ego, front.intrinsics)
    assert depth[0] > 0
    u, v = (uv[0] * WIDTH / 1600).astype(int)
    opaque = overlay_occupancy(images["CAM_FRONT"], front.sensor2ego, front.intrinsics, labels, alpha=1.0, width=WIDTH)
    patch = np.asarray(opaque)[v - 3:v + 4, u - 3:u + 4].reshape(-1, 3)
    assert (np.all(patch == GRID.colors[CAR], axis=-1)).mean() > 0.5
    # Semi-transparent by default: the car tint is mixed with the photo.
    blended = np.asarray(overlay_occupancy(images["CAM_FRONT"], front.sensor2ego, front.intrinsics, labels,
                                           width=WIDTH))[v, u].astype(int)
    photo = np.asarray(Image.open(images["CAM_FRONT"]).convert("RGB").resize(opaque.size, Image.BILINEAR))[v, u]
    assert np.abs(blended - (photo.astype(int) + np.asarray(opaque)[v, u]) / 2).max() <= 1
    back = cams["CAM_BACK"]
    behind = overlay_occupancy(images["CAM_BACK"], back.sensor2ego, back.intrinsics, labels, alpha=1.0, width=WIDTH)
    plain = Image.open(images["CAM_BACK"]).convert("RGB").resize(behind.size, Image.BILINEAR)
    assert np.array_equal(np.asarray(behind), np.asarray(plain))


def test_grid_of_six(sample):
    images, cams = sample
    labels, _ = car_ahead()
    image = render_cameras(images, cams, labels, tile_width=WIDTH)
    tile_h = round(900 * WIDTH / 1600)
    assert image.size == (3 * WIDTH + 2 * 4, 2 * tile_h + 4)
    # The car is in the front row's middle tile (CAM_FRONT), lower half (below the horizon).
    opaque = render_cameras([images[n] for n in NUSCENES_CAMERAS], [cams[n] for n in NUSCENES_CAMERAS],
                            labels, tile_width=WIDTH, alpha=1.0)
    car = np.all(np.asarray(opaque) == GRID.colors[CAR], axis=-1)
    rows, cols = np.nonzero(car)
    assert len(rows) > 100
    assert (cols > WIDTH + 4).all() and (cols < 2 * WIDTH + 4).all() and (rows < tile_h).all()


def test_bad_inputs_are_named(sample):
    images, cams = sample
    labels, _ = car_ahead()
    with pytest.raises(ValueError, match="no calibration for"):
        render_cameras(images, {"CAM_FRONT": cams["CAM_FRONT"]}, labels)
    with pytest.raises(ValueError, match="sensor2ego"):
        render_cameras(list(images.values()), [object()] * 6, labels)
