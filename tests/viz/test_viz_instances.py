"""Instance pictures: one colour per id, the same id the same colour in every frame; `flashocc viz --instances`."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from flashocc.cli import main
from flashocc.grid import OCC3D_NUSCENES as GRID
from flashocc.viz.instances import instance_bev, instance_color_ids, instance_colors

CAR, DRIVEABLE, FREE = 4, 11, GRID.free_label


def _frame(cars: dict[int, tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """A road with 2x2-voxel cars at (x, y) index corners, keyed by instance id (road id 1)."""
    sem = np.full(GRID.shape, FREE, np.uint8)
    inst = np.zeros(GRID.shape, np.uint8)
    sem[30:170, 50:140, 0], inst[30:170, 50:140, 0] = DRIVEABLE, 1     # a patch: fewer faces to draw
    for i, (x, y) in cars.items():
        sem[x:x + 2, y:y + 2, 1:3], inst[x:x + 2, y:y + 2, 1:3] = CAR, i
    return sem, inst


def _bev_pixel(image: Image.Image, x: int, y: int, scale: int = 4) -> tuple[int, int, int]:
    """The BEV pixel at the centre of voxel column (x, y)."""
    r, c = GRID.shape[0] - 1 - x, GRID.shape[1] - 1 - y          # forward up, left on the left
    return image.getpixel((c * scale + scale // 2, r * scale + scale // 2))


def test_colours_follow_the_id_across_frames():
    colours = instance_colors(np.arange(1, 60))
    assert len({tuple(c) for c in colours}) == 59                       # distinct ids, distinct colours
    np.testing.assert_array_equal(instance_colors([7, 7, 30]), np.stack([colours[6], colours[6], colours[29]]))

    first, second = _frame({3: (150, 60), 9: (40, 120)}), _frame({9: (60, 130), 12: (150, 60)})
    bevs = []
    for sem, inst in (first, second):
        ids, table, count = instance_color_ids(sem, inst, GRID)
        assert count == 2
        bevs.append(instance_bev(ids, table, GRID))
    # Instance 9 moved between the frames and keeps its colour; 12 took 3's place with its own colour.
    assert _bev_pixel(bevs[0], 40, 120) == _bev_pixel(bevs[1], 60, 130) == tuple(instance_colors([9])[0])
    assert _bev_pixel(bevs[0], 150, 60) == tuple(instance_colors([3])[0])
    assert _bev_pixel(bevs[1], 150, 60) == tuple(instance_colors([12])[0]) != _bev_pixel(bevs[0], 150, 60)
    # The road is one stuff segment: drawn in its class colour, faded, whatever its id.
    road = _bev_pixel(bevs[0], 150, 100)
    assert road == _bev_pixel(bevs[1], 150, 100) and road not in {tuple(c) for c in colours}
    assert all(r >= g for r, g in zip(road, GRID.colors[DRIVEABLE]))     # lighter than the class colour


def test_a_car_voxel_without_an_id_keeps_the_class_colour():
    sem, inst = _frame({5: (100, 100)})
    inst[100, 100, 1:3] = 0
    ids, table, _ = instance_color_ids(sem, inst, GRID)
    assert ids[100, 100, 2] == CAR and ids[101, 101, 2] == GRID.num_classes   # the first (only) instance colour


def test_cli_draws_instances_and_notes_files_without(tmp_path: Path, capsys):
    preds = tmp_path / "preds" / "scene-1"
    for n, cars in enumerate(({4: (150, 90)}, {4: (152, 90)})):
        sem, inst = _frame(cars)
        (preds / f"tok{n}").mkdir(parents=True)
        np.savez_compressed(preds / f"tok{n}" / "labels.npz", semantics=sem, instances=inst)
    (preds / "plain").mkdir()
    np.savez_compressed(preds / "plain" / "labels.npz", semantics=_frame({})[0])
    out = tmp_path / "out"
    rc = main(["viz", str(tmp_path / "preds"), "--out", str(out), "--instances", "--gif", "--json"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    names = {Path(f).name for f in report["files"]}
    assert {"scene-1_tok0_instances.png", "scene-1_tok1_instances.png", "sequence.gif"} <= names
    assert "scene-1_plain_instances.png" not in names
    assert any("plain" in note and "no 'instances'" in note for note in report["notes"])
    with Image.open(out / "scene-1_tok0_instances.png") as im:
        assert im.width > im.height                                       # 3D view with legend, then the BEV
