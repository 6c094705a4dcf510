"""Occ3D-panoptic instance ids (`flashocc data panoptic`): a hand-built scene, a literal re-implementation
of the official loop on the real Occ3D volume, the nuScenes box reader and the command."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from flashocc.cli import main
from flashocc.data.infos import CameraInfo, SampleInfo, save_infos
from flashocc.data.occ3d import load_labels
from flashocc.data.panoptic import (
    BOX_MARGIN, DETECTION_CLASSES, MAX_SEGMENTS, EgoBoxes, assign_instances, boxes_in_ego, number_objects,
)
from flashocc.errors import DataError
from flashocc.geometry import NUSCENES_CAMERAS
from flashocc.grid import OCC3D_NUSCENES as GRID

FREE = GRID.free_label
OTHERS, BARRIER, CAR, PED, TRUCK = 0, 1, 4, 7, 10
DRIVEABLE, MANMADE, VEGETATION = 11, 15, 16


def centre(i: int, j: int, k: int) -> np.ndarray:
    return np.asarray(GRID.lower) + (np.array([i, j, k]) + 0.5) * 0.4


def voxel_at(point) -> tuple[int, int, int]:
    idx, inside = GRID.points_to_index(np.asarray(point, np.float64) + 1e-9)
    assert inside
    return tuple(int(v) for v in idx)


def test_hand_built_scene():
    sem = np.full(GRID.shape, FREE, np.uint8)
    sem[:, :, 0] = DRIVEABLE                                  # stuff: one id for the whole road
    sem[10:12, 150:152, 1:6] = MANMADE
    sem[20, 20, 1:3] = VEGETATION
    sem[30, 30, 1] = OTHERS                                   # 'others' is stuff too (first in class order)

    # Car A: axis-aligned, 4 x 2 x 1.6 m, centred on a voxel centre.
    a = centre(125, 100, 3)
    sem[121:130, 98:103, 2:5] = CAR                           # 3.6 x 2.0 x 1.2 m of car voxels, all inside A
    # Car B: turned 45 degrees, 4 m long and 1.2 m wide.
    b = centre(60, 140, 3)
    along, across = voxel_at(b + [1.2, 1.2, 0]), voxel_at(b + [1.2, -1.2, 0])
    beyond = voxel_at(b + [1.6, 1.6, 0])                      # 2.26 m along: outside B, inside B + 0.8 m
    for v in (voxel_at(b), along, across, beyond):
        sem[v] = CAR
    # Car C sits 3 m behind B on the same diagonal; a leftover between them is nearer to C's centre.
    c = b - 3.0 / math.sqrt(2) * np.array([1.0, 1.0, 0.0])
    sem[voxel_at(c)] = CAR
    between = voxel_at(b - [1.6, 1.6, 0])                     # 2.26 m from B, 0.74 m from C: inside both grown
    sem[between] = CAR
    far = (180, 20, 2)                                        # a car voxel in no box at all
    sem[far] = CAR
    # A barrier box with barrier voxels: boxes give barriers ids too (RayPQ merges them later).
    bar = centre(100, 60, 1)
    sem[99:102, 60, 1] = BARRIER
    # Truck box over car voxels of A: the class differs, it claims nothing.
    boxes = EgoBoxes.from_yaw(
        center=[centre(150, 150, 3), a, b, a, bar, c],
        size=[(1.0, 1.0, 1.8), (4.0, 2.0, 1.6), (4.0, 1.2, 1.6), (6.0, 3.0, 3.0), (1.6, 0.6, 1.0), (1.2, 1.2, 1.6)],
        yaw=[0.0, 0.0, math.pi / 4, 0.0, 0.0, math.pi / 4],
        label=[PED, CAR, CAR, TRUCK, BARRIER, CAR])

    inst = assign_instances(sem, boxes, GRID)

    # Boxes in order, numbered only when they claim voxels: the empty pedestrian box and the truck box get none.
    assert (inst[121:130, 98:103, 2:5] == 1).all()                          # A
    assert inst[voxel_at(b)] == 2 and inst[along] == 2                      # B, turned: along its length ...
    assert inst[across] == 0                                                # ... not across it (outside even + 0.8 m)
    assert inst[beyond] == 2                                                # leftover -> the grown box holding it
    assert (inst[99:102, 60, 1] == 3).all()                                 # the barrier box
    assert inst[voxel_at(c)] == 4 and inst[between] == 4                    # nearest centre wins, not the first box
    assert inst[far] == 0                                                   # in no grown box: stays unassigned
    # Stuff, one id per class in class order after the boxes: others, driveable_surface, manmade, vegetation.
    assert inst[30, 30, 1] == 5 and (inst[:, :, 0] == 6).all()
    assert (inst[10:12, 150:152, 1:6] == 7).all() and (inst[20, 20, 1:3] == 8).all()
    assert (inst[sem == FREE] == 0).all() and inst.dtype == np.uint8
    assert set(np.unique(inst)) == set(range(9))


def test_an_earlier_box_keeps_its_voxels():
    sem = np.full(GRID.shape, FREE, np.uint8)
    sem[100:110, 100, 2] = CAR
    boxes = EgoBoxes.from_yaw([centre(102, 100, 2), centre(106, 100, 2)], [(2.0, 1, 1), (4.2, 1, 1)],
                              [0.0, 0.0], [CAR, CAR])
    inst = assign_instances(sem, boxes, GRID)
    # Box 1 holds the centres of x-voxels 100..104 and box 2 those of 101..111: the overlap stays with box 1.
    assert inst[100:105, 100, 2].tolist() == [1] * 5 and inst[105:110, 100, 2].tolist() == [2] * 5


def test_more_segments_than_uint8_ids_is_an_error_naming_the_sample():
    sem = np.full(GRID.shape, FREE, np.uint8)
    idx = [(i, j, 2) for i in range(0, 200, 10) for j in range(0, 200, 10)][:MAX_SEGMENTS + 1]
    for v in idx:
        sem[v] = CAR
    boxes = EgoBoxes.from_yaw([centre(*v) for v in idx], [(0.3, 0.3, 0.3)] * len(idx), [0.0] * len(idx),
                              [CAR] * len(idx))
    with pytest.raises(DataError, match=r"sample tok-x: 255 segments .* 254 ids"):
        assign_instances(sem, boxes, GRID, where="sample tok-x")
    inst = assign_instances(sem, boxes.subset(np.arange(MAX_SEGMENTS)), GRID, where="sample tok-x")
    assert inst.max() == MAX_SEGMENTS     # 254 fit


# ---- the official loop, literally ---------------------------------------------------------------
def _devkit_points_in_box(corners: np.ndarray, points: np.ndarray) -> np.ndarray:
    """nuscenes-devkit geometry_utils.points_in_box on (8, 3) corners in the devkit's corner order."""
    p1, p_x, p_y, p_z = corners[0], corners[1], corners[3], corners[4]
    i, j, k = p_x - p1, p_y - p1, p_z - p1
    v = points - p1
    iv, jv, kv = v @ i, v @ j, v @ k
    return (0 <= iv) & (iv <= i @ i) & (0 <= jv) & (jv <= j @ j) & (0 <= kv) & (kv <= k @ k)


def _devkit_corners(center, size, rotation) -> np.ndarray:
    length, w, h = size       # devkit Box.corners: x along length, y along width, front corners first
    x = length / 2 * np.array([1, 1, 1, 1, -1, -1, -1, -1])
    y = w / 2 * np.array([1, -1, -1, 1, 1, -1, -1, 1])
    z = h / 2 * np.array([1, 1, -1, -1, 1, 1, -1, -1])
    return (rotation @ np.stack([x, y, z])).T + center


def _official_loop(sem: np.ndarray, boxes: EgoBoxes) -> np.ndarray:
    """SparseOcc@af4d9df gen_instance_info.py, process_add_instance_info, line by line."""
    names = GRID.class_names
    pts = GRID.voxel_centers()
    valid = np.where(sem < 17)
    flat_occ, flat_pts = sem[valid], pts[valid]
    flat_inst = np.zeros(flat_occ.shape, np.uint8)
    instance_id, kept = 1, []
    for n in range(len(boxes)):
        mask = _devkit_points_in_box(_devkit_corners(boxes.center[n], boxes.size[n], boxes.rotation[n]), flat_pts)
        mask[mask] = flat_occ[mask] == boxes.label[n]
        mask[mask] = flat_inst[mask] == 0
        if mask.sum() > 0:
            flat_inst[mask] = instance_id
            instance_id += 1
            kept.append(n)
    present = np.unique(sem)
    for i, name in enumerate(names):
        if name in DETECTION_CLASSES or name == "free" or i not in present:
            continue
        flat_inst[flat_occ == i] = instance_id
        instance_id += 1
    uncover = np.where(flat_inst == 0)
    u_pts, u_occ = flat_pts[uncover], flat_occ[uncover]
    u_inst = np.zeros(len(u_pts), np.uint8)
    u_dist = np.ones(len(u_pts)) * 1e8
    for i, n in enumerate(kept):
        mask = _devkit_points_in_box(_devkit_corners(boxes.center[n], boxes.size[n] + BOX_MARGIN, boxes.rotation[n]),
                                     u_pts)
        mask[u_occ != boxes.label[n]] = False
        dist = np.sum((boxes.center[n] - u_pts) ** 2, axis=-1)
        mask[dist >= u_dist] = False
        u_dist[mask] = dist[mask]
        u_inst[mask] = i + 1
    flat_inst[uncover] = u_inst
    out = np.zeros(sem.shape, np.uint8)
    out[valid] = flat_inst
    return out


def test_matches_the_official_loop_on_the_real_volume(occ3d_labels_path: Path):
    sem = load_labels(occ3d_labels_path).semantics.copy()
    # The fixture has cars, buses, barriers and motorcycles; make some vehicles other classes too, so boxes of
    # several classes overlap voxels of several classes.
    rng = np.random.default_rng(7)
    thing = np.argwhere(np.isin(sem, [1, 3, 4, 6]))
    pick = thing[rng.choice(len(thing), 40, replace=False)]
    labels = sem[tuple(pick.T)].astype(np.int64)
    labels[::7] = TRUCK                                      # boxes whose class matches nothing here
    centers = GRID.voxel_centers()[tuple(pick.T)] + rng.uniform(-0.6, 0.6, (40, 3))
    sizes = np.column_stack([rng.uniform(1.0, 6.0, 40), rng.uniform(0.8, 2.5, 40), rng.uniform(1.0, 3.0, 40)])
    boxes = EgoBoxes.from_yaw(centers, sizes, rng.uniform(-math.pi, math.pi, 40), labels)
    tilt = np.array([[1, 0, 0], [0, math.cos(0.05), -math.sin(0.05)], [0, math.sin(0.05), math.cos(0.05)]])
    boxes.rotation[::3] = tilt @ boxes.rotation[::3]          # ego poses are not always level
    ours, official = assign_instances(sem, boxes, GRID), _official_loop(sem, boxes)
    assert (ours == official).all()
    assert len(np.unique(ours)) > 20 and ((ours == 0) & (sem != FREE)).any()   # leftovers exercised


def test_object_numbering_follows_the_same_conventions():
    sem = np.full(GRID.shape, FREE, np.uint8)
    objects = np.full(GRID.shape, -1, np.int64)
    sem[:, :, 0] = DRIVEABLE
    sem[5:8, 5, 1], objects[5:8, 5, 1] = CAR, 9              # object 9: one car of three voxels
    sem[50, 50, 1:3], objects[50, 50, 1:3] = PED, 4          # object 4 comes first in object order
    sem[60, 60, 1], objects[60, 60, 1] = VEGETATION, 11      # a tree: stuff, its object does not matter
    inst = number_objects(sem, objects, GRID)
    assert inst[50, 50, 1] == inst[50, 50, 2] == 1 and (inst[5:8, 5, 1] == 2).all()
    assert (inst[:, :, 0] == 3).all() and inst[60, 60, 1] == 4 and (inst[sem == FREE] == 0).all()


# ---- nuScenes boxes and the command ------------------------------------------------------------
def _yaw_q(rad: float) -> list[float]:
    return [math.cos(rad / 2), 0.0, 0.0, math.sin(rad / 2)]


def _tables(root: Path, anns: list[dict]) -> None:
    folder = root / "v1.0-mini"
    folder.mkdir(parents=True)
    cats = {"vehicle.car": "c-car", "animal": "c-animal", "movable_object.barrier": "c-bar"}
    (folder / "category.json").write_text(json.dumps([{"token": t, "name": n} for n, t in cats.items()]))
    (folder / "instance.json").write_text(json.dumps(
        [{"token": f"i-{a['token']}", "category_token": cats[a.pop("category")]} for a in anns]))
    for a in anns:
        a["instance_token"] = f"i-{a['token']}"
    (folder / "sample_annotation.json").write_text(json.dumps(anns))


def _ego_pose(yaw: float, t) -> np.ndarray:
    out = np.eye(4)
    out[:2, :2] = [[math.cos(yaw), -math.sin(yaw)], [math.sin(yaw), math.cos(yaw)]]
    out[:3, 3] = t
    return out


def test_boxes_move_from_global_to_ego_and_keep_annotation_order(tmp_path: Path):
    ego2global = _ego_pose(math.pi / 2, [100.0, 200.0, 0.0])  # ego x points along global +y
    anns = [
        {"token": "a1", "sample_token": "s", "category": "vehicle.car", "translation": [95.0, 210.0, 1.0],
         "size": [2.0, 4.5, 1.6], "rotation": _yaw_q(math.pi / 2)},
        {"token": "a2", "sample_token": "s", "category": "animal", "translation": [100.0, 200.0, 0.0],
         "size": [1, 1, 1], "rotation": _yaw_q(0)},
        {"token": "a3", "sample_token": "s", "category": "movable_object.barrier", "translation": [100.0, 190.0, 0.5],
         "size": [0.5, 2.0, 1.0], "rotation": _yaw_q(0.0)},
    ]
    _tables(tmp_path, anns)
    from flashocc.data.nuscenes_tables import load_tables

    tables = load_tables(tmp_path, "v1.0-mini", ("sample_annotation", "instance", "category"))
    boxes = boxes_in_ego(list(tables["sample_annotation"].values()), tables, ego2global, GRID)
    assert boxes.tokens == ("a1", "a3") and boxes.label.tolist() == [CAR, BARRIER]   # the animal has no class
    np.testing.assert_allclose(boxes.center, [[10.0, 5.0, 1.0], [-10.0, 0.0, 0.5]], atol=1e-9)
    np.testing.assert_allclose(boxes.size, [[4.5, 2.0, 1.6], [2.0, 0.5, 1.0]])       # (length, width, height)
    np.testing.assert_allclose(boxes.rotation[0], np.eye(3), atol=1e-12)              # same heading as the ego
    np.testing.assert_allclose(boxes.rotation[1][:2, 0], [0.0, -1.0], atol=1e-12)     # global x = ego -y


def test_cli_writes_the_panoptic_tree(tmp_path: Path, capsys):
    root = tmp_path / "nuscenes"
    ego2global = _ego_pose(0.3, [500.0, 600.0, 0.0])
    car_ego = centre(130, 90, 3)
    car_global = ego2global[:3, :3] @ car_ego + ego2global[:3, 3]
    _tables(root, [{"token": "a1", "sample_token": "tok", "category": "vehicle.car",
                    "translation": car_global.tolist(), "size": [2.0, 4.0, 1.6], "rotation": _yaw_q(0.3 + 0.5)},
                   {"token": "a9", "sample_token": "other", "category": "vehicle.car",
                    "translation": car_global.tolist(), "size": [9.0, 9.0, 9.0], "rotation": _yaw_q(0.0)}])
    sem = np.full(GRID.shape, FREE, np.uint8)
    sem[:, :, 0] = DRIVEABLE
    sem[128:133, 88:93, 2:5] = CAR
    gts = root / "gts" / "scene-0061" / "tok"
    gts.mkdir(parents=True)
    masks = (sem != FREE).astype(np.uint8)
    np.savez_compressed(gts / "labels.npz", semantics=sem, mask_lidar=masks, mask_camera=masks)
    cams = {n: CameraInfo(f"{n}.jpg", np.diag([1000.0, 1000.0, 1.0]), np.eye(4), ego2global) for n in NUSCENES_CAMERAS}
    info = SampleInfo("tok", "scene-0061", "st", 0, "lidar.bin", np.eye(4), ego2global, cams,
                      occ_path="gts/scene-0061/tok")
    infos = save_infos([info], tmp_path / "infos_val.pkl")
    out = root / "occ3d_panoptic"
    rc = main(["data", "panoptic", "--root", str(root), "--infos", str(infos), "--out", str(out),
               "--version", "v1.0-mini", "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["samples"] == 1 and summary["boxes"] == 1 and summary["max_segments"] == 2
    labels = load_labels(out / "scene-0061" / "tok", "tok", instances=True)
    np.testing.assert_array_equal(labels.semantics, sem)
    np.testing.assert_array_equal(labels.mask_camera, masks)
    expected = assign_instances(sem, EgoBoxes.from_yaw([car_ego], [(4.0, 2.0, 1.6)], [0.5], [CAR]), GRID)
    np.testing.assert_array_equal(labels.instances, expected)
    assert labels.instances[130, 90, 3] == 1 and (labels.instances[:, :, 0] == 2).all()
    # Another Occ3D folder is read when --occ names it; a sample it lacks names the file expected.
    rc = main(["data", "panoptic", "--root", str(root), "--infos", str(infos), "--out", str(out),
               "--occ", str(tmp_path), "--version", "v1.0-mini"])
    assert rc == 1 and f"{tmp_path / 'scene-0061' / 'tok' / 'labels.npz'}" in capsys.readouterr().err


def test_instances_array_is_validated(tmp_path: Path):
    sem = np.full(GRID.shape, FREE, np.uint8)
    sem[0, 0, 0] = CAR
    zeros = np.zeros(GRID.shape, np.uint8)
    inst = zeros.copy()
    inst[1, 1, 1] = 3                                          # an id on a free voxel
    np.savez_compressed(tmp_path / "labels.npz", semantics=sem, mask_lidar=zeros, mask_camera=zeros, instances=inst)
    with pytest.raises(DataError, match=r"sample t: .*labels\.npz: 'instances' has id 3 on a free voxel"):
        load_labels(tmp_path, "t", instances=True)
    np.savez_compressed(tmp_path / "labels.npz", semantics=sem, mask_lidar=zeros, mask_camera=zeros)
    load_labels(tmp_path, "t")                                 # plain Occ3D is fine without instances ...
    with pytest.raises(DataError, match=r"no 'instances' array .*flashocc data panoptic"):
        load_labels(tmp_path, "t", instances=True)             # ... but not when they are asked for
