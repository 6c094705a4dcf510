import numpy as np

from flashocc.grid import OCC3D_NUSCENES as GRID
from flashocc.viz import count_errors, error_volume, load_labels_npz, render_comparison, render_error_bev
from flashocc.viz.compare import CORRECT, ERROR_COLORS, FALSE_OCCUPIED, MISSED, NONE, WRONG_CLASS

FREE, CAR, TRUCK, ROAD = GRID.free_label, 4, 10, 11


def volumes():
    gt = np.full(GRID.shape, FREE, dtype=np.uint8)
    pred = gt.copy()
    gt[20, 30, 0] = pred[20, 30, 0] = ROAD        # correct
    gt[40, 50, 2], pred[40, 50, 2] = CAR, TRUCK   # wrong class
    gt[60, 70, 3] = CAR                           # missed
    pred[150, 160, 4] = CAR                       # false occupied
    return pred, gt


def test_error_codes():
    pred, gt = volumes()
    codes = error_volume(pred, gt)
    assert codes[20, 30, 0] == CORRECT
    assert codes[40, 50, 2] == WRONG_CLASS
    assert codes[60, 70, 3] == MISSED
    assert codes[150, 160, 4] == FALSE_OCCUPIED
    assert codes[0, 0, 0] == NONE
    assert count_errors(codes).__dict__ == {"correct": 1, "wrong_class": 1, "missed": 1, "false_occupied": 1}
    mask = np.ones(GRID.shape, bool)
    mask[150, 160, :] = False  # outside the camera mask: not an error
    assert count_errors(error_volume(pred, gt, mask)).false_occupied == 0


def test_error_map_marks_each_kind_with_a_distinct_colour():
    pred, gt = volumes()
    scale = 4
    image = render_error_bev(error_volume(pred, gt), scale=scale, draw_ego=False)
    assert image.size == (800, 800)

    def at(ix, iy):
        return image.getpixel(((199 - iy) * scale + 1, (199 - ix) * scale + 1))

    seen = [at(40, 50), at(60, 70), at(150, 160), at(20, 30)]
    assert seen == [ERROR_COLORS[WRONG_CLASS], ERROR_COLORS[MISSED], ERROR_COLORS[FALSE_OCCUPIED], ERROR_COLORS[CORRECT]]
    assert len(set(seen)) == 4
    assert at(100, 180) == (255, 255, 255)


def test_comparison_on_real_frame(occ3d_labels_path):
    gt, mask = load_labels_npz(occ3d_labels_path, GRID)
    pred = gt.copy()
    pred[pred == CAR] = TRUCK
    image = render_comparison(pred, gt, mask=mask, view_size=(320, 220), bev_scale=1)
    assert image.width > 3 * 320 and image.height >= 220 + 200
    pixels = {tuple(p) for p in np.asarray(image).reshape(-1, 3)[::7]}
    assert ERROR_COLORS[WRONG_CLASS] in pixels  # cars called trucks
    assert ERROR_COLORS[CORRECT] in pixels
