import sys

import numpy as np
import pytest

from flashocc.grid import OCC3D_NUSCENES as GRID
from flashocc.viz import ChaseCamera, load_labels_npz, render_voxels
from flashocc.viz.render import face_shade, project_point, visible_faces

FREE, CAR, BUS = GRID.free_label, 4, 3
SIZE = (400, 300)


def empty() -> np.ndarray:
    return np.full(GRID.shape, FREE, dtype=np.uint8)


def block(labels, lower_m, upper_m, cls):
    lo = GRID.points_to_index(np.asarray(lower_m) + 1e-6)[0]
    hi = GRID.points_to_index(np.asarray(upper_m) - 1e-6)[0]
    labels[lo[0]:hi[0] + 1, lo[1]:hi[1] + 1, lo[2]:hi[2] + 1] = cls
    return labels


def drawn_pixels(image) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.nonzero(np.any(np.asarray(image) != 255, axis=-1))
    return rows, cols


def test_size_with_and_without_legend():
    labels = block(empty(), (5, -1, -1), (9, 1, 0.6), CAR)
    assert render_voxels(labels, size=SIZE, legend=False).size == SIZE
    with_legend = render_voxels(labels, size=SIZE)
    assert with_legend.size[1] == SIZE[1] and with_legend.size[0] > SIZE[0]


def test_only_exposed_faces_towards_the_camera():
    eye = ChaseCamera().eye()
    one = np.full(GRID.shape, -1)
    one[150, 100, 2] = 0
    corners, normals, _ = visible_faces(one, eye, GRID)
    # Seen from behind, above and exactly on the y = 0 plane: the top and the back (-x) face.
    assert sorted(map(tuple, normals.astype(int))) == [(-1, 0, 0), (0, 0, 1)]
    solid = np.full(GRID.shape, -1)
    solid[150:153, 100:103, 2:5] = 0  # a 3x3x3 cube: interior and far faces are culled
    _, normals, _ = visible_faces(solid, eye, GRID)
    assert len(normals) == 9 + 9
    assert corners.shape == (2, 4, 3)


def test_voxel_ahead_appears_above_the_ego_and_centred():
    labels = block(empty(), (14, -1, -1), (18, 1, 0.6), CAR)
    image = render_voxels(labels, size=SIZE, legend=False, draw_ego=False)
    rows, cols = drawn_pixels(image)
    assert len(rows) > 0
    ego_u, ego_v = project_point((0.0, 0.0, 0.0), SIZE)
    assert rows.mean() < ego_v and rows.mean() < SIZE[1] / 2
    assert abs(cols.mean() - SIZE[0] / 2) < SIZE[0] / 10
    assert abs(ego_u - SIZE[0] / 2) < 1


def test_voxel_on_the_left_appears_left():
    labels = block(empty(), (0, 10, -1), (4, 14, 0.6), BUS)
    rows, cols = drawn_pixels(render_voxels(labels, size=SIZE, legend=False, draw_ego=False))
    assert cols.max() < SIZE[0] / 2


def test_class_colour_where_the_voxels_are():
    labels = block(empty(), (6, -6, -1), (18, 6, -0.6), BUS)  # a flat 12 m x 12 m slab
    image = render_voxels(labels, size=SIZE, legend=False, draw_ego=False, edges=False, supersample=1)
    u, v = project_point((12.0, 0.0, -0.6), SIZE)  # centre of the slab's top
    expected = np.asarray(GRID.colors[BUS]) * face_shade(np.array([[0.0, 0.0, 1.0]]))[0]
    got = np.asarray(image.getpixel((int(u), int(v))))
    assert np.abs(got - expected).max() <= 1.5
    assert np.asarray(image.getpixel((2, 2))).tolist() == [255, 255, 255]


def test_mask_and_ego_box():
    labels = block(empty(), (14, -1, -1), (18, 1, 0.6), CAR)
    hidden = render_voxels(labels, mask=np.zeros(GRID.shape, bool), size=SIZE, legend=False, draw_ego=False)
    assert (np.asarray(hidden) == 255).all()
    ego_only = np.asarray(render_voxels(empty(), size=SIZE, legend=False))
    u, v = project_point((1.2, 0.0, 1.0), SIZE)  # top of the ego box
    assert (ego_only[int(v) - 2:int(v) + 3, int(u) - 2:int(u) + 3] < 100).all()


def test_real_occ3d_frame_renders_a_street(occ3d_labels_path):
    labels, mask = load_labels_npz(occ3d_labels_path, GRID)
    image = np.asarray(render_voxels(labels, mask=mask, size=(512, 360), legend=False, supersample=1, edges=False))
    road_top = (np.asarray(GRID.colors[11]) * face_shade(np.array([[0.0, 0.0, 1.0]]))[0]).astype(np.uint8)
    road = np.all(np.abs(image.astype(int) - road_top) <= 1, axis=-1)
    assert road.mean() > 0.05
    # The road runs ahead of the ego: road pixels both above and below the ego in the picture.
    ego_u, ego_v = project_point((0.0, 0.0, 0.0), (512, 360))
    rows, _ = np.nonzero(road)
    assert rows.min() < ego_v - 50 and rows.max() > ego_v


def test_pyvista_backend_missing_gives_install_hint(monkeypatch):
    from flashocc.viz import render_voxels_pyvista

    monkeypatch.setitem(sys.modules, "pyvista", None)
    with pytest.raises(ImportError, match=r"pip install \"flashocc\[viz\]\""):
        render_voxels_pyvista(empty())


def test_pyvista_backend_same_view_when_installed():
    pytest.importorskip("pyvista")
    from flashocc.viz import render_voxels_pyvista

    labels = block(empty(), (14, -1, -1), (18, 1, 0.6), CAR)
    image = np.asarray(render_voxels_pyvista(labels, size=SIZE, edges=False))
    assert image.shape == (SIZE[1], SIZE[0], 3)
    orange = (image[..., 0] > 150) & (image[..., 2] < 80)
    rows, cols = np.nonzero(orange)
    assert len(rows) > 0 and rows.mean() < SIZE[1] / 2


def test_overview_is_view_and_bev_side_by_side():
    from flashocc.viz import render_overview

    labels = block(empty(), (14, -1, -1), (18, 1, 0.6), CAR)
    image = render_overview(labels, size=SIZE)
    assert image.height == SIZE[1]
    assert image.width > SIZE[0] + SIZE[1]  # view + legend strip + square BEV
