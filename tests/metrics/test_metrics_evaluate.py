"""`flashocc evaluate` on temporary prediction / GT trees built from the real Occ3D volume."""
import json
from pathlib import Path

import numpy as np
import pytest

from flashocc.cli import main
from flashocc.data.infos import CameraInfo, SampleInfo, save_infos
from flashocc.geometry import NUSCENES_CAMERAS
from flashocc.metrics.evaluate import EvalConfig, evaluate_dirs

from _metrics_helpers import HAS_SCIPY, shifted

SCENE = "scene-1077"
TOKENS = ("29796060110c4163b07f06eff4af0753", "a" * 32, "b" * 32)


@pytest.fixture()
def trees(tmp_path: Path, occ3d):
    """gts/ with three samples (the real volume and two shifted copies) and matching infos."""
    gts = tmp_path / "gts"
    volumes = [occ3d["semantics"], shifted(occ3d["semantics"], 0), shifted(occ3d["semantics"], 1)]
    for token, sem in zip(TOKENS, volumes):
        d = gts / SCENE / token
        d.mkdir(parents=True)
        np.savez_compressed(d / "labels.npz", semantics=sem, mask_lidar=occ3d["mask_lidar"],
                            mask_camera=occ3d["mask_camera"])
    lidar2ego = np.eye(4)
    lidar2ego[:3, 3] = (0.94, 0.0, 1.84)
    # RayIoU only reads the LiDAR poses; the camera records just make the info file valid
    cams = {name: CameraInfo(image_path=f"{name}.jpg", intrinsics=np.diag([1000.0, 1000.0, 1.0]),
                             sensor2ego=np.eye(4), ego2global=np.eye(4)) for name in NUSCENES_CAMERAS}
    infos = []
    for i, token in enumerate(TOKENS):
        ego2global = np.eye(4)
        ego2global[0, 3] = 8.0 * i
        infos.append(SampleInfo(token=token, scene_name=SCENE, scene_token="st", timestamp=i, lidar_path="",
                                lidar2ego=lidar2ego, ego2global=ego2global, cams=cams))
    infos_path = save_infos(infos, tmp_path / "infos.pkl")
    return {"gts": gts, "volumes": dict(zip(TOKENS, volumes)), "infos": infos_path, "root": tmp_path}


def _write_preds(root: Path, volumes: dict, layout: str) -> Path:
    out = root / f"pred_{layout}"
    for token, sem in volumes.items():
        if layout == "ours":
            (out / SCENE / token).mkdir(parents=True)
            np.savez_compressed(out / SCENE / token / "labels.npz", semantics=sem)
        elif layout == "show_dir":
            (out / SCENE / token).mkdir(parents=True)
            np.savez_compressed(out / SCENE / token / "pred.npz", pred=sem, gt=sem, sample_token=token)
        else:
            out.mkdir(exist_ok=True)
            np.savez_compressed(out / f"{token}.npz", sem)
    return out


@pytest.mark.parametrize("layout", ["ours", "show_dir", "flat"])
def test_cli_scores_every_layout(trees, layout, capsys):
    pred = _write_preds(trees["root"], trees["volumes"], layout)
    out = trees["root"] / "res.json"
    rc = main(["evaluate", "--pred", str(pred), "--gt", str(trees["gts"]), "--infos", str(trees["infos"]),
               "--metrics", "miou,rayiou,fscore" if HAS_SCIPY else "miou,rayiou", "--json", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    assert result["num_samples"] == 3 and result["mIoU"] == 100.0 and result["RayIoU"] == 1.0
    if HAS_SCIPY:
        assert result["F-score"] == pytest.approx(1.0, abs=1e-7)
    printed = capsys.readouterr().out
    assert "===> mIoU of 3 samples: 100.0" in printed and "===> car - IoU = 100.0" in printed
    assert "RayIoU@1" in printed and "MEAN" in printed


def test_library_matches_metric_classes(trees, occ3d):
    gt = trees["volumes"]
    preds = {t: shifted(v, 2) for t, v in gt.items()}
    pred_dir = _write_preds(trees["root"], preds, "ours")
    r = evaluate_dirs(pred_dir, trees["gts"], config=EvalConfig(metrics=("miou",), workers=0))
    from flashocc.metrics import OccMIoU
    m = OccMIoU()
    for t in TOKENS:
        m.update(preds[t], gt[t], occ3d["mask_camera"])
    assert r["mIoU"] == m.compute()["mIoU"]


def test_errors_name_the_file(trees, capsys):
    vols = dict(trees["volumes"])
    vols["c" * 32] = vols[TOKENS[0]]                 # a prediction with no ground truth
    pred = _write_preds(trees["root"], vols, "ours")
    rc = main(["evaluate", "--pred", str(pred), "--gt", str(trees["gts"])])
    err = capsys.readouterr().err
    assert rc == 1 and "no ground truth" in err and str(pred / SCENE / ("c" * 32) / "labels.npz") in err

    bad = {TOKENS[0]: trees["volumes"][TOKENS[0]].astype(np.float32)}
    pred = _write_preds(trees["root"] / "x", bad, "show_dir")
    assert main(["evaluate", "--pred", str(pred), "--gt", str(trees["gts"])]) == 1
    err = capsys.readouterr().err
    assert "pred.npz [pred]" in err and "dtype" in err

    labels = trees["volumes"][TOKENS[0]].copy()
    labels[1, 2, 3] = 18
    pred = _write_preds(trees["root"] / "y", {TOKENS[0]: labels}, "ours")
    assert main(["evaluate", "--pred", str(pred), "--gt", str(trees["gts"])]) == 1
    err = capsys.readouterr().err
    assert "labels.npz [semantics]" in err and "label 18 at [1, 2, 3]" in err

    pred = _write_preds(trees["root"] / "z", {TOKENS[0]: trees["volumes"][TOKENS[0]]}, "ours")
    assert main(["evaluate", "--pred", str(pred), "--gt", str(trees["gts"]), "--metrics", "rayiou"]) == 1
    assert "--infos" in capsys.readouterr().err
