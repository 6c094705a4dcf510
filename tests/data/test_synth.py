"""The synthetic world: on-disk format, determinism, sensor/label consistency, poses, visibility masks."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flashocc.data.infos import load_infos
from flashocc.data.synth import SynthConfig, generate_synthetic_set, nuscenes_rig, scene_world, simulate_frame
from flashocc.data.synth.world import (
    BOX, DRIVEABLE, MANMADE, TERRAIN, Primitives, Road, World,
)
from flashocc.geometry import NUSCENES_CAMERAS
from flashocc.grid import OCC3D_NUSCENES as GRID

TINY = SynthConfig(scenes=2, frames_per_scene=3, seed=3, image_size=(96, 54), lidar_azimuth_steps=360)


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory) -> Path:
    return generate_synthetic_set(tmp_path_factory.mktemp("synth") / "a", TINY)


def _labels(root: Path, sample) -> dict[str, np.ndarray]:
    with np.load(root / sample.occ_path / "labels.npz") as z:
        return {k: z[k] for k in z.files}


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_infos_and_labels(tiny_set: Path):
    train, val = load_infos(tiny_set / "infos_train.pkl"), load_infos(tiny_set / "infos_val.pkl")
    assert len(train) == 3 and len(val) == 3        # 2 scenes: the last one (max(1, 2 // 5)) is val
    assert {s.scene_name for s in train}.isdisjoint({s.scene_name for s in val})
    for sample in train + val:
        assert list(sample.cams) == list(NUSCENES_CAMERAS)
        for name, cam in sample.cams.items():
            path = tiny_set / cam.image_path
            assert path.parent.name == name and path.parent.parent.name == "samples"
            with Image.open(path) as im:
                assert im.format == "JPEG" and im.size == TINY.image_size
            # Intrinsics of the written size: the principal point sits near the image centre.
            assert 0.4 * 96 < cam.intrinsics[0, 2] < 0.6 * 96 and 0.4 * 54 < cam.intrinsics[1, 2] < 0.6 * 54
        assert sample.lidar_path.startswith("samples/LIDAR_TOP/")
        points = np.fromfile(tiny_set / sample.lidar_path, np.float32).reshape(-1, 5)
        assert len(points) > 3000
        assert set(np.unique(points[:, 4])) <= set(range(32)) and (points[:, 3] >= 0).all()
        assert sample.occ_path == f"gts/{sample.scene_name}/{sample.token}"
        labels = _labels(tiny_set, sample)
        assert sorted(labels) == ["instances", "mask_camera", "mask_lidar", "semantics"]   # Occ3D-panoptic layout
        for key, arr in labels.items():
            assert arr.shape == (200, 200, 16) and arr.dtype == np.uint8, key
        assert labels["semantics"].max() <= 17 and set(np.unique(labels["mask_camera"])) == {0, 1}
        occupied = set(np.unique(labels["semantics"])) - {GRID.free_label}
        assert len(occupied) >= 6, f"{sample.token}: only classes {sorted(occupied)}"


def test_same_seed_same_bytes_other_seed_differs(tiny_set: Path, tmp_path: Path):
    again = generate_synthetic_set(tmp_path / "b", dataclasses.replace(TINY, workers=2))
    first, second = _files(tiny_set), _files(again)
    assert first.keys() == second.keys()
    assert [k for k in first if first[k] != second[k]] == []
    other = generate_synthetic_set(tmp_path / "c", dataclasses.replace(TINY, scenes=1, frames_per_scene=1, seed=4))
    a, b = load_infos(tiny_set / "infos_train.pkl")[0], load_infos(other / "infos_val.pkl")[0]
    assert a.token != b.token
    assert not np.array_equal(_labels(tiny_set, a)["semantics"], _labels(other, b)["semantics"])
    img_a = np.asarray(Image.open(tiny_set / a.cams["CAM_FRONT"].image_path))
    img_b = np.asarray(Image.open(other / b.cams["CAM_FRONT"].image_path))
    assert not np.array_equal(img_a, img_b)


def test_every_lidar_return_is_in_or_next_to_an_occupied_voxel(tiny_set: Path):
    for sample in load_infos(tiny_set / "infos_train.pkl") + load_infos(tiny_set / "infos_val.pkl"):
        pts = np.fromfile(tiny_set / sample.lidar_path, np.float32).reshape(-1, 5)[:, :3].astype(np.float64)
        ego = pts @ sample.lidar2ego[:3, :3].T + sample.lidar2ego[:3, 3]
        idx, inside = GRID.points_to_index(ego)
        occupied = _labels(tiny_set, sample)["semantics"] != GRID.free_label
        near = np.zeros_like(occupied)                 # occupied dilated by one voxel (3x3x3)
        padded = np.pad(occupied, 1)
        for dx in range(3):
            for dy in range(3):
                for dz in range(3):
                    near |= padded[dx:dx + 200, dy:dy + 200, dz:dz + 16]
        i = idx[inside]
        assert inside.sum() > 2000
        assert near[i[:, 0], i[:, 1], i[:, 2]].all(), f"{sample.token}: returns far from any occupied voxel"
        # Most returns fall in an occupied voxel itself, not only next to one.
        assert occupied[i[:, 0], i[:, 1], i[:, 2]].mean() > 0.97


def test_ego_drives_forward_along_the_road_with_smooth_poses(tiny_set: Path):
    samples = load_infos(tiny_set / "infos_train.pkl")
    assert samples[0].prev_token == ""
    for prev, cur in zip(samples, samples[1:]):
        assert cur.prev_token == prev.token and cur.scene_token == prev.scene_token
        assert cur.timestamp - prev.timestamp == 500_000
        step = np.linalg.inv(prev.ego2global) @ cur.ego2global      # motion in the previous ego frame
        speed = step[0, 3] / 0.5
        assert TINY.speed_range[0] - 1e-6 <= speed <= TINY.speed_range[1] + 1e-6
        assert abs(step[1, 3]) < 0.05 * step[0, 3] and step[2, 3] == 0.0
        assert abs(np.arctan2(step[1, 0], step[0, 0])) < 0.05     # gentle road curvature
        # Each camera has its own, slightly earlier ego pose (nuScenes exposure times).
        front_left = cur.cams["CAM_FRONT_LEFT"]
        lag = np.linalg.inv(cur.ego2global) @ front_left.ego2global
        assert -0.5 < lag[0, 3] < 0.0 and front_left.timestamp < cur.timestamp


def _wall_world(ground_z: float = -0.7) -> World:
    """Straight road, ego at the origin at rest, a 10 m tall wall across the road 15..19 m ahead."""
    road = Road(origin=(0.0, 0.0), heading=0.0, curvature=0.0, lanes_per_direction=2, lane_width=3.5,
                parking_width=0.0, sidewalk_width=3.0, curb_height=0.15)
    wall = Primitives(kind=np.array([BOX], np.uint8), center=np.array([[17.0, 0.0, ground_z + 5.0]]),
                      half=np.array([[2.0, 30.0, 5.0]]), yaw=np.zeros(1), label=np.array([MANMADE], np.uint8),
                      color=np.full((1, 3), 0.6, np.float32), material=np.zeros(1, np.uint8))
    return World(road, ground_z, wall, np.full((2, 4), TERRAIN, np.uint8), 50.0, (-100.0, 100.0),
                 np.array([0.0, 0.0, 1.0]), np.zeros((256, 256), np.float32), ego_lateral=0.0, ego_speed=0.0)


def _index(x: float, y: float, z: float) -> tuple[int, int, int]:
    idx, inside = GRID.points_to_index(np.array([x, y, z]))
    assert inside
    return tuple(int(v) for v in idx)


def test_voxels_behind_a_wall_are_hidden_and_the_road_in_front_is_seen():
    frame = simulate_frame(_wall_world(), nuscenes_rig((160, 90)), 0.0, lidar_azimuth_steps=720)
    sem, cam, lidar = frame.semantics, frame.mask_camera, frame.mask_lidar
    road = _index(8.0, 0.0, -0.8)
    wall_face, wall_inside, behind = _index(15.1, 0.0, 1.0), _index(17.0, 0.0, 1.0), _index(25.0, 0.0, 1.0)
    assert sem[road] == DRIVEABLE and cam[road] == 1 and lidar[road] == 1
    assert sem[wall_face] == MANMADE and cam[wall_face] == 1 and lidar[wall_face] == 1
    assert sem[wall_inside] == MANMADE and cam[wall_inside] == 0 and lidar[wall_inside] == 0
    assert sem[behind] == GRID.free_label and cam[behind] == 0 and lidar[behind] == 0
    # Nothing beyond the wall is observed by the front cameras' rays, at any height below its top.
    assert cam[_index(19.6, 0, -0.8)[0]:, 80:120, :10].sum() == 0
    # The air in front of the wall, in the front camera's view, is observed free space.
    assert (cam[_index(6.0, 0, 0)[0]:_index(14.0, 0, 0)[0], 95:105, 3:8] == 1).all()


def test_camera_rays_observe_every_voxel_they_cross_before_the_first_hit():
    world = scene_world(TINY, 0)
    rig = nuscenes_rig((160, 90))
    frame = simulate_frame(world, rig, 0.5, lidar_azimuth_steps=360)
    rng = np.random.default_rng(0)
    crossed, seen = 0, 0
    for cam in rig.cameras:
        cam2lidar_ego = np.linalg.inv(frame.ego2global) @ frame.cam_ego2global[cam.name] @ cam.cam2ego
        depth = frame.depths[cam.name]
        v, u = rng.integers(0, 90, 300), rng.integers(0, 160, 300)
        rays = np.linalg.inv(cam.intrinsics) @ np.stack([u, v, np.ones_like(u)]).astype(np.float64)
        rays /= np.linalg.norm(rays, axis=0)
        dirs = (cam2lidar_ego[:3, :3] @ rays).T
        for d, t_hit in zip(dirs, np.minimum(depth[v, u], 60.0)):
            steps = np.arange(0.5, t_hit - 0.3, 0.1)           # stop short of the hit voxel's far side
            idx, inside = GRID.points_to_index(cam2lidar_ego[:3, 3] + steps[:, None] * d)
            idx = np.unique(idx[inside], axis=0)
            crossed += len(idx)
            seen += frame.mask_camera[idx[:, 0], idx[:, 1], idx[:, 2]].sum()
    assert crossed > 10_000
    # A voxel crossed by a ray is observed unless a neighbouring pixel's ray is blocked closer (edges).
    assert seen / crossed > 0.99


def test_road_frame_round_trip():
    for curvature in (0.0, 1 / 150, -1 / 300):
        road = Road((10.0, -5.0), 0.7, curvature, 2, 3.5, 2.4, 3.0, 0.15)
        s, d = np.linspace(-60, 120, 7), np.linspace(-12, 12, 7)
        x, y, _ = road.pose(s, d)
        s2, d2 = road.to_road(x, y)
        np.testing.assert_allclose(s2, s, atol=1e-9)
        np.testing.assert_allclose(d2, d, atol=1e-9)


def test_bad_config_is_refused_with_the_field_name(tmp_path: Path):
    with pytest.raises(ValueError, match="SynthConfig.scenes"):
        generate_synthetic_set(tmp_path, SynthConfig(scenes=0))
    with pytest.raises(ValueError, match="SynthConfig.image_size"):
        generate_synthetic_set(tmp_path, SynthConfig(image_size=(4, 4)))


def test_a_synthetic_set_goes_through_the_real_data_pipeline(tiny_set: Path):
    import torch

    from flashocc.batch import check_inputs
    from flashocc.data.dataset import DataConfig, OccDataset, collate_batch

    ds = OccDataset(tiny_set, tiny_set / "infos_train.pkl", DataConfig(load_depth=True, num_adjacent=1), train=True,
                    aug_seed=0)
    batch = collate_batch([ds[0], ds[2]])
    assert check_inputs(batch) == (2, 12)                    # 6 cameras x (current + 1 previous frame)
    assert batch["img"].shape[-2:] == (256, 704) and batch["img"].dtype == torch.float32
    assert batch["voxel_semantics"].shape == (2, 200, 200, 16)
    assert batch["mask_camera"].sum() > 0 and (batch["gt_depth"] > 0).sum() > 100
    labels = _labels(tiny_set, load_infos(tiny_set / "infos_train.pkl")[0])
    vs = batch["voxel_semantics"][0].numpy()
    # Only BEV flips may touch the labels: the volume is the file's, flipped or not.
    assert any(np.array_equal(vs, labels["semantics"][::fx, ::fy]) for fx in (1, -1) for fy in (1, -1))


def test_lidar_points_project_onto_the_camera_pixels_that_see_them_at_the_same_depth():
    from flashocc.geometry import project_to_image

    world = scene_world(TINY, 1)
    rig = nuscenes_rig((320, 180))
    frame = simulate_frame(world, rig, 1.0, lidar_azimuth_steps=720)
    ego = frame.points[:, :3].astype(np.float64) @ rig.lidar2ego[:3, :3].T + rig.lidar2ego[:3, 3]
    checked, agree = 0, 0
    for cam in rig.cameras:
        # Camera -> LiDAR-keyframe ego, through the camera's own ego pose (as the data pipeline composes it).
        cam2ego = np.linalg.inv(frame.ego2global) @ frame.cam_ego2global[cam.name] @ cam.cam2ego
        uv, z = project_to_image(ego, cam2ego, cam.intrinsics)
        col, row = np.rint(uv[:, 0]), np.rint(uv[:, 1])
        ok = (z > 1.0) & (col >= 0) & (col < 320) & (row >= 0) & (row < 180)
        dist = np.linalg.norm(ego[ok] - cam2ego[:3, 3], axis=1)
        rendered = frame.depths[cam.name][row[ok].astype(int), col[ok].astype(int)]
        checked += ok.sum()
        # The cameras stand ~1 m from the LiDAR, so some returns are hidden from them (or sit on an edge).
        agree += (np.abs(rendered - dist) < 0.05 * dist + 0.1).sum()
    assert checked > 10_000
    assert agree / checked > 0.9


# ---- completion marker and safe regeneration ------------------------------------------------------
ONE = SynthConfig(scenes=1, frames_per_scene=1, seed=9, image_size=(64, 36), lidar_azimuth_steps=90)


def _copy(tiny_set: Path, dst: Path) -> Path:
    import shutil

    return Path(shutil.copytree(tiny_set, dst, symlinks=True))


def test_the_marker_is_written_last_and_describes_the_set(tiny_set: Path):
    import json

    from flashocc.data.synth import MARKER_NAME, synthetic_set_problem
    from flashocc.data.synth.marker import config_record

    record = json.loads((tiny_set / MARKER_NAME).read_text())
    on_disk = [p for p in tiny_set.rglob("*") if p.is_file() and p.name != MARKER_NAME]
    # 8 files per frame; sweeps: 10 before the first keyframe, then 9 more each (the 10th is the previous keyframe)
    assert record["files"] == len(on_disk) == 2 * 3 * 8 + 2 * (10 + 9 + 9) + 2 and record["config"] == config_record(TINY)
    newest = max(p.stat().st_mtime_ns for p in on_disk)
    assert (tiny_set / MARKER_NAME).stat().st_mtime_ns >= newest
    assert synthetic_set_problem(tiny_set, TINY) is None and synthetic_set_problem(tiny_set) is None
    assert synthetic_set_problem(tiny_set, dataclasses.replace(TINY, workers=3)) is None  # output is the same
    problem = synthetic_set_problem(tiny_set, dataclasses.replace(TINY, seed=4))
    assert problem == "it was generated with other settings (seed=3; requested seed=4)"


def test_a_set_missing_a_file_is_incomplete(tiny_set: Path, tmp_path: Path):
    from flashocc.data.synth import synthetic_set_problem

    root = _copy(tiny_set, tmp_path / "set")
    next((root / "samples" / "CAM_BACK").iterdir()).unlink()
    assert "lists 106 files but 105 are there" in synthetic_set_problem(root, TINY)
    (root / "synth_complete.json").write_text("{not json")
    assert "synth_complete.json is unreadable" in synthetic_set_problem(root, TINY)


def test_an_interrupted_regeneration_is_detected_and_replaced(tiny_set: Path, tmp_path: Path):
    from flashocc.data.synth import MARKER_NAME, synthetic_set_problem

    root = _copy(tiny_set, tmp_path / "set")
    seen = []

    def interrupt(done: int, total: int) -> None:
        # the old marker and info files went first, before any new frame was written
        seen.append([(root / name).exists() for name in (MARKER_NAME, "infos_train.pkl", "infos_val.pkl")])
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate_synthetic_set(root, ONE, progress=interrupt)
    assert seen == [[False, False, False]]
    assert synthetic_set_problem(root, ONE).startswith("no synth_complete.json: the set is incomplete")
    assert not list(root.glob("samples/*/synth-0003-*"))              # nothing of the old set is left to mix in
    generate_synthetic_set(root, ONE)
    assert synthetic_set_problem(root, ONE) is None
    assert len([p for p in root.rglob("*") if p.is_file()]) == 8 + 10 + 2 + 1   # 10 sweeps before the keyframe
    assert not (root / "gts" / "synth-0003-0000").exists()


def _foreign(tiny_set: Path, tmp_path: Path, case: str) -> tuple[Path, Path]:
    """A folder holding something the generator did not write, and that thing."""
    import pickle

    if case == "nuscenes":
        root = tmp_path / "nuscenes"
        thing = root / "samples" / "CAM_FRONT" / "n015-2018-07-24-11-22-45+0800__CAM_FRONT__1532402927612460.jpg"
        thing.parent.mkdir(parents=True)
        thing.write_bytes(b"jpeg")
        (root / "v1.0-mini").mkdir()
        (root / "v1.0-mini" / "scene.json").write_text("[]")
        return root, thing
    root = _copy(tiny_set, tmp_path / "set")
    if case == "user_file":
        thing = root / "notes.txt"
        thing.write_text("mine")
    elif case == "real_image_among_synthetic":
        thing = root / "samples" / "CAM_FRONT" / "n015-2018-07-24-11-22-45+0800__CAM_FRONT__1.jpg"
        thing.write_bytes(b"jpeg")
    elif case == "other_infos":
        thing = root / "infos_train.pkl"
        thing.write_bytes(pickle.dumps({"infos": [], "metadata": {"version": "v1.0-trainval"}}))
    else:  # a linked folder: never followed, never deleted
        target = tmp_path / "elsewhere"
        target.mkdir()
        (target / "keep.bin").write_bytes(b"x")
        thing = root / "gts" / "synth-0003-0009"
        thing.symlink_to(target, target_is_directory=True)
    return root, thing


@pytest.mark.parametrize("case", ["nuscenes", "user_file", "real_image_among_synthetic", "other_infos", "symlink"])
def test_a_folder_the_generator_did_not_write_is_refused_untouched(tiny_set: Path, tmp_path: Path, case: str):
    from flashocc.errors import RunFolderError

    root, thing = _foreign(tiny_set, tmp_path, case)
    before = sorted(str(p) for p in root.rglob("*"))
    rel = str(thing.relative_to(root))
    with pytest.raises(RunFolderError, match=rf"{root}: holds {re.escape(rel)}, .*refusing to write a synthetic set "
                                             r"there.*Choose an empty or new folder"):
        generate_synthetic_set(root, ONE)
    assert sorted(str(p) for p in root.rglob("*")) == before


def test_demo_reuses_only_a_complete_set_of_its_settings(tiny_set: Path, tmp_path: Path, monkeypatch, caplog):
    import logging

    from flashocc.engine import demo
    from flashocc.errors import RunFolderError

    calls = []
    monkeypatch.setattr(demo, "generate_synthetic_set", lambda root, config, progress=None: calls.append(config))
    root = _copy(tiny_set, tmp_path / "set")
    caplog.set_level(logging.INFO, logger="flashocc.engine.demo")
    assert demo.ensure_synthetic_set(root, TINY) == root and calls == []
    assert "reusing the complete synthetic set" in caplog.text
    demo.ensure_synthetic_set(root, ONE, require_config=False)        # the user's own --data set: kept
    assert calls == [] and "not the demo's own settings" in caplog.text
    demo.ensure_synthetic_set(root, ONE)                              # the demo's folder: its settings
    assert calls == [ONE] and "not reusing" in caplog.text and "other settings (frames_per_scene=3" in caplog.text
    (root / "synth_complete.json").unlink()
    caplog.clear()
    demo.ensure_synthetic_set(root, TINY, require_config=False)
    assert calls == [ONE, TINY] and "no synth_complete.json" in caplog.text
    monkeypatch.undo()
    caplog.clear()
    real, thing = _foreign(tiny_set, tmp_path / "real", "nuscenes")
    with pytest.raises(RunFolderError, match=r"^flashocc demo --data: .*holds samples/CAM_FRONT/n015.*flashocc train"):
        demo.ensure_synthetic_set(real, ONE, require_config=False)
    assert thing.read_bytes() == b"jpeg" and (real / "v1.0-mini" / "scene.json").exists()
    assert "regenerating" not in caplog.text
