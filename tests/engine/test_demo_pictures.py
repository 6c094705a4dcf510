"""The demo's pictures: the quick camera overlay (viz/camera_points.py) and the drive's frame order."""
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

# Camera (x right, y down, z forward) at the ego origin looking along ego +x.
CAM2EGO = np.eye(4)
CAM2EGO[:3, :3] = [[0, 0, 1], [-1, 0, 0], [0, -1, 0]]
K = np.array([[50.0, 0, 32], [0, 50.0, 24], [0, 0, 1]])
GREY, RED, BLUE = (100, 100, 100), (255, 0, 0), (0, 0, 255)


def test_the_nearest_voxel_wins_its_pixels_and_the_rest_of_the_photo_is_untouched():
    from flashocc.viz.camera_points import overlay_points

    photo = Image.new("RGB", (64, 48), GREY)
    centres = np.array([[10.0, 0, 0], [5.0, 0, 0], [-5.0, 0, 0]])  # far red, near blue, one behind the camera
    colors = np.array([RED, BLUE, RED], dtype=np.float32)
    out = np.asarray(overlay_points(photo, CAM2EGO, K, centres, colors, voxel=0.4, alpha=0.5))
    blended_blue = np.round(0.5 * np.array(GREY) + 0.5 * np.array(BLUE))
    # The near voxel: a square of radius round(0.5 * 50 * 0.4 / 5) = 2 around (32, 24), over the far one.
    assert (out[22:27, 30:35] == blended_blue).all()
    assert (out[21, 32] == GREY).all() and (out[24, 35] == GREY).all()
    painted = (out != GREY).any(axis=2)
    assert painted.sum() == 25


def test_a_voxel_outside_the_view_leaves_the_photo_as_it_was():
    from flashocc.viz.camera_points import overlay_points

    photo = Image.new("RGB", (64, 48), GREY)
    out = overlay_points(photo, CAM2EGO, K, np.array([[5.0, 40.0, 0]]), np.array([RED], dtype=np.float32))
    assert np.array_equal(np.asarray(out), np.asarray(photo))


def test_render_camera_points_tiles_six_views():
    from flashocc.grid import OCC3D_NUSCENES
    from flashocc.viz.camera_points import render_camera_points

    labels = np.full(OCC3D_NUSCENES.shape, OCC3D_NUSCENES.free_label, dtype=np.uint8)
    labels[120, 100, 2] = 4  # one car voxel 8 m ahead
    images = [Image.new("RGB", (64, 48), GREY)] * 6
    out = render_camera_points(images, [SimpleNamespace(sensor2ego=CAM2EGO, intrinsics=K)] * 6, labels, tile_width=64)
    assert out.size == (3 * 64 + 2 * 4, 2 * 48 + 4)
    with pytest.raises(ValueError, match="expected 6 images and calibrations"):
        render_camera_points(images[:5], [None] * 5, labels)


def test_the_drive_is_the_first_scene_in_time_order():
    from flashocc.engine.demo_pictures import FramePrediction, drive_order

    samples = [SimpleNamespace(token=t, scene_name=s, timestamp=ts)
               for t, s, ts in [("b", "s0", 2), ("a", "s0", 1), ("c", "s1", 0), ("d", "s0", 3)]]
    frames = {t: FramePrediction(t, np.zeros(1), np.zeros(1), None) for t in "abc"}  # d was not scored
    assert [f.token for f in drive_order(samples, frames)] == ["a", "b"]
    assert drive_order(samples, {}) == []
