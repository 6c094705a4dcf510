import numpy as np
import pytest

from flashocc.grid import OCC3D_NUSCENES as GRID
from flashocc.viz import bev_labels, load_labels_npz, render_bev

FREE = GRID.free_label
CAR, BUS, VEG, ROAD = 4, 3, 16, 11


def empty() -> np.ndarray:
    return np.full(GRID.shape, FREE, dtype=np.uint8)


def pixel_of_column(ix: int, iy: int, scale: int) -> tuple[int, int]:
    """(col, row) of the centre of voxel column [ix, iy] in a BEV: forward up, left on the left."""
    dx, dy = GRID.shape[:2]
    return (dy - 1 - iy) * scale + scale // 2, (dx - 1 - ix) * scale + scale // 2


def test_size_and_background():
    image = render_bev(empty(), scale=3, draw_ego=False)
    assert image.size == (200 * 3, 200 * 3)
    assert image.mode == "RGB"
    assert (np.asarray(image) == 255).all()
    assert render_bev(empty(), scale=2, legend=True).size[0] > 400


def test_class_colour_at_its_column_and_highest_voxel_wins():
    labels = empty()
    labels[30, 150, 0] = ROAD
    labels[30, 150, 5] = CAR  # above the road: the column shows the car
    labels[170, 20, 2] = VEG
    image = render_bev(labels, scale=4)
    assert image.getpixel(pixel_of_column(30, 150, 4)) == GRID.colors[CAR]
    assert image.getpixel(pixel_of_column(170, 20, 4)) == GRID.colors[VEG]
    assert bev_labels(labels)[30, 150] == CAR


def test_ahead_is_up_and_left_is_left():
    labels = empty()
    ahead = (GRID.points_to_index(np.array([15.0, 0.0, 0.5]))[0])
    left = (GRID.points_to_index(np.array([0.0, 15.0, 0.5]))[0])
    labels[tuple(ahead)] = CAR
    labels[tuple(left)] = BUS
    image = np.asarray(render_bev(labels, scale=4, draw_ego=False))
    rows, cols = np.nonzero(np.all(image == GRID.colors[CAR], axis=-1))
    assert rows.max() < image.shape[0] / 2 and abs(cols.mean() - image.shape[1] / 2) < 8
    rows, cols = np.nonzero(np.all(image == GRID.colors[BUS], axis=-1))
    assert cols.max() < image.shape[1] / 2 and abs(rows.mean() - image.shape[0] / 2) < 8


def test_mask_hides_voxels_and_free_or_ignore_are_not_drawn():
    labels = empty()
    labels[10, 10, 3] = CAR
    labels[12, 12, 3] = GRID.ignore_label
    mask = np.ones(GRID.shape, dtype=bool)
    mask[10, 10, :] = False
    assert bev_labels(labels, mask=mask)[10, 10] == FREE
    assert bev_labels(labels)[12, 12] == FREE


def test_bad_shape_names_the_problem():
    with pytest.raises(ValueError, match=r"shape \(200, 200, 16\).*found shape \(200, 200\)"):
        render_bev(np.zeros((200, 200), dtype=np.uint8))


def test_real_occ3d_frame(occ3d_labels_path, tmp_path):
    labels, mask = load_labels_npz(occ3d_labels_path, GRID)
    image = render_bev(labels, mask=mask, scale=2)
    pixels = np.asarray(image).reshape(-1, 3)
    colours, counts = np.unique(pixels, axis=0, return_counts=True)
    allowed = {tuple(c) for c in GRID.colors} | {(64, 64, 64)}
    assert {tuple(c) for c in colours} <= allowed
    # A street: after empty space, the road is the commonest colour, and the ego sits on it.
    ranked = [tuple(c) for c in colours[np.argsort(-counts)]]
    assert ranked[0] == (255, 255, 255) and ranked[1] == GRID.colors[ROAD]
    top = bev_labels(labels, mask=mask)
    assert top[100, 100] == ROAD
    for cls in np.unique(top):
        if cls != FREE:
            ix, iy = np.argwhere(top == cls)[0]
            col, row = pixel_of_column(ix, iy, 2)
            if not (95 <= ix <= 110 and 95 <= iy <= 104):  # the ego marker covers these
                assert image.getpixel((col, row)) == GRID.colors[cls]


def test_out_of_range_label_is_named():
    labels = empty()
    labels[12, 40, 3] = 23
    with pytest.raises(ValueError, match=r"label 23 at \[12, 40, 3\]"):
        render_bev(labels)
