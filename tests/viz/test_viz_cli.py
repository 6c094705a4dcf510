import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from flashocc.cli import main
from flashocc.grid import OCC3D_NUSCENES as GRID

TOKEN = "29796060110c4163b07f06eff4af0753"
CAMERA_TOKEN = "ca9a282c9e77460f8360f564131a8af5"  # the nuScenes camera fixture's sample


def test_single_file(occ3d_labels_path, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["viz", str(occ3d_labels_path), "--out", str(out), "--json"]) == 0
    written = sorted(Path(p).name for p in json.loads(capsys.readouterr().out)["files"])
    assert written == [f"{TOKEN}_3d.png", f"{TOKEN}_bev.png"]
    assert sorted(p.name for p in out.iterdir()) == written
    with Image.open(out / f"{TOKEN}_bev.png") as bev:
        assert bev.format == "PNG" and bev.height == 800


def test_folder_with_ground_truth_and_gif(occ3d_labels_path, tmp_path, capsys):
    preds = tmp_path / "preds" / "scene-1077"
    (preds / TOKEN).mkdir(parents=True)
    shutil.copy(occ3d_labels_path, preds / TOKEN / "labels.npz")
    with np.load(occ3d_labels_path) as data:
        other = np.roll(data["semantics"], 5, axis=0)
    (preds / "nextsample").mkdir()
    np.savez_compressed(preds / "nextsample" / "pred.npz", pred=other)  # a prediction file: key 'pred'
    gt_root = occ3d_labels_path.parents[1]
    out = tmp_path / "out"
    rc = main(["viz", str(tmp_path / "preds"), "--gt", str(gt_root), "--out", str(out), "--gif", "--mask", "none"])
    assert rc == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([
        f"scene-1077_{TOKEN}_3d.png", f"scene-1077_{TOKEN}_bev.png", f"scene-1077_{TOKEN}_compare.png",
        "scene-1077_nextsample_3d.png", "scene-1077_nextsample_bev.png", "sequence.gif",
    ] + (["sequence.mp4"] if (out / "sequence.mp4").exists() else []))
    with Image.open(out / "sequence.gif") as gif:
        assert gif.n_frames == 2
    assert "no ground truth for sample nextsample" in capsys.readouterr().out


def test_camera_overlay_from_info_folder(nuscenes_sample_dir, tmp_path):
    labels = np.full(GRID.shape, GRID.free_label, dtype=np.uint8)
    labels[:, :, 0] = 11
    labels[125:135, 97:103, 1:5] = 4
    sample = tmp_path / "pred" / CAMERA_TOKEN
    sample.mkdir(parents=True)
    np.savez_compressed(sample / "labels.npz", semantics=labels)
    out = tmp_path / "out"
    assert main(["viz", str(tmp_path / "pred"), "--images", str(nuscenes_sample_dir), "--out", str(out)]) == 0
    with Image.open(out / f"{CAMERA_TOKEN}_cameras.png") as cams:
        assert cams.width > 3 * 400 and cams.height > cams.width / 3


def test_errors_are_reported(tmp_path, capsys):
    assert main(["viz", str(tmp_path / "missing.npz")]) == 1
    assert "no occupancy file or folder" in capsys.readouterr().err
    np.savez(tmp_path / "bad.npz", voxels=np.zeros((2, 2, 2), np.uint8))
    assert main(["viz", str(tmp_path / "bad.npz"), "--out", str(tmp_path / "o")]) == 1
    assert "key 'semantics'" in capsys.readouterr().err
