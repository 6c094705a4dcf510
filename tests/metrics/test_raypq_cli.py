"""`flashocc evaluate --panoptic`: RayPQ beside RayIoU and mIoU, equal to the metric classes on the same
data, for our prediction files and the official panoptic result layouts; errors name the file."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from flashocc.cli import main
from flashocc.data.infos import CameraInfo, SampleInfo, save_infos
from flashocc.data.panoptic import EgoBoxes, assign_instances
from flashocc.grid import OCC3D_NUSCENES as GRID
from flashocc.metrics import OccMIoU, RayIoU, RayPQ, ray_origins_from_infos

from _metrics_helpers import shifted

SCENE = "scene-1077"
TOKENS = ("29796060110c4163b07f06eff4af0753", "d" * 32)
FREE = GRID.free_label
STUFF = [c for c, n in enumerate(GRID.class_names[:FREE]) if n not in
         ("car", "truck", "construction_vehicle", "bus", "trailer", "motorcycle", "bicycle", "pedestrian")]


def _instances(sem: np.ndarray, seed: int) -> np.ndarray:
    """Occ3D-panoptic ids from boxes dropped on thing voxels of ``sem``."""
    rng = np.random.default_rng(seed)
    things = np.argwhere(np.isin(sem, [3, 4, 6]))
    pick = things[rng.choice(len(things), 25, replace=False)]
    boxes = EgoBoxes.from_yaw(GRID.voxel_centers()[tuple(pick.T)], np.tile([4.5, 2.2, 2.0], (25, 1)),
                              rng.uniform(-math.pi, math.pi, 25), sem[tuple(pick.T)])
    return assign_instances(sem, boxes, GRID)


@pytest.fixture()
def panoptic(tmp_path: Path, occ3d):
    """An Occ3D-panoptic GT tree of two samples, their infos, and panoptic predictions (shifted, ids perturbed)."""
    gts = tmp_path / "occ3d_panoptic"
    gt, pred = {}, {}
    for i, token in enumerate(TOKENS):
        sem = occ3d["semantics"] if i == 0 else shifted(occ3d["semantics"], 1)
        inst = _instances(sem, i)
        (gts / SCENE / token).mkdir(parents=True)
        np.savez_compressed(gts / SCENE / token / "labels.npz", semantics=sem, mask_lidar=occ3d["mask_lidar"],
                            mask_camera=occ3d["mask_camera"], instances=inst)
        gt[token] = (sem, inst)
        p_sem = shifted(sem, 0)
        p_inst = shifted(inst, 0).astype(np.int32)
        p_inst[p_inst == p_inst.max()] = 1                  # two instances merged into one
        p_inst[p_sem == FREE] = 0
        pred[token] = (p_sem, p_inst)
    lidar2ego = np.eye(4)
    lidar2ego[:3, 3] = (0.94, 0.0, 1.84)
    cams = {n: CameraInfo(f"{n}.jpg", np.diag([1000.0, 1000.0, 1.0]), np.eye(4), np.eye(4)) for n in
            ("CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_LEFT", "CAM_BACK", "CAM_BACK_RIGHT")}
    infos = []
    for i, token in enumerate(TOKENS):
        ego2global = np.eye(4)
        ego2global[0, 3] = 8.0 * i
        infos.append(SampleInfo(token, SCENE, "st", i, "", lidar2ego, ego2global, cams))
    return {"root": tmp_path, "gts": gts, "gt": gt, "pred": pred, "infos": infos,
            "infos_path": save_infos(infos, tmp_path / "infos_val.pkl"), "mask": occ3d["mask_camera"]}


def _write(root: Path, pred: dict, layout: str) -> Path:
    out = root / f"pred_{layout}"
    for token, (sem, inst) in pred.items():
        if layout == "ours":                          # flashocc predict: <scene>/<token>/labels.npz
            (out / SCENE / token).mkdir(parents=True)
            np.savez_compressed(out / SCENE / token / "labels.npz", semantics=sem, instances=inst.astype(np.uint16))
        elif layout == "flashocc":                    # BEVDepthPano results: stuff voxels carry their class id
            out.mkdir(exist_ok=True)
            stuff = np.isin(sem, STUFF + [FREE])
            pano = np.where(stuff, sem.astype(np.int32), 18 + inst)
            np.savez_compressed(out / f"{token}.npz", pred_occ=sem.astype(np.int32), pano_inst=pano)
        else:                                         # SparseOcc results: sparse, batch axis of 1
            out.mkdir(exist_ok=True)
            loc = np.argwhere(sem != FREE)
            np.savez_compressed(out / f"{token}.npz", occ_loc=loc[None].astype(np.uint8),
                                pano_sem=sem[tuple(loc.T)][None], pano_inst=inst[tuple(loc.T)][None].astype(np.int16))
    return out


def _evaluate(p, pred_dir: Path, *extra: str) -> dict:
    out = pred_dir.parent / f"{pred_dir.name}.json"
    rc = main(["evaluate", "--pred", str(pred_dir), "--gt", str(p["gts"]), "--infos", str(p["infos_path"]),
               "--panoptic", "--workers", "0", "--json", str(out), *extra])
    assert rc == 0
    return json.loads(out.read_text())


def test_cli_raypq_equals_the_metric_classes(panoptic, capsys):
    p = panoptic
    result = _evaluate(p, _write(p["root"], p["pred"], "ours"))
    origins = ray_origins_from_infos(p["infos"])
    pq, iou, miou = RayPQ(), RayIoU(), OccMIoU()
    for token in TOKENS:
        (sem, inst), (p_sem, p_inst) = p["gt"][token], p["pred"][token]
        pq.update(p_sem, sem, p_inst, inst, origins[token])
        iou.update(p_sem, sem, origins[token])
        miou.update(p_sem, sem, p["mask"])
    want_pq, want_iou = pq.compute(), iou.compute()
    for key in ("RayPQ", "RayPQ@1", "RayPQ@2", "RayPQ@4"):
        assert result[key] == pytest.approx(want_pq[key], abs=1e-12)
    for name, row in want_pq["per_class"].items():
        for t, v in row.items():
            got = result["RayPQ_per_class"][name][t]
            assert got is None if v != v else got == pytest.approx(v, abs=1e-12), (name, t)   # JSON writes NaN as null
    assert result["RayIoU"] == pytest.approx(want_iou["RayIoU"], abs=1e-12)
    assert result["mIoU"] == pytest.approx(miou.compute()["mIoU"], abs=1e-9)
    assert 0.2 < result["RayPQ"] < 0.95            # a real score, neither trivial nor zero
    printed = capsys.readouterr().out
    assert "RayPQ@1" in printed and f"RayPQ of 2 samples: {result['RayPQ']:.4f}" in printed and "RayIoU@4" in printed


def test_official_result_layouts_score_the_same(panoptic):
    p = panoptic
    ours = _evaluate(p, _write(p["root"], p["pred"], "ours"))
    for layout in ("flashocc", "sparseocc"):
        other = _evaluate(p, _write(p["root"], p["pred"], layout))
        for key in ("RayPQ", "RayPQ@1", "RayPQ@2", "RayPQ@4", "RayIoU", "mIoU"):
            assert other[key] == ours[key], (layout, key)
        assert other["RayPQ_per_class"] == ours["RayPQ_per_class"]


def test_panoptic_errors_name_the_file(panoptic, capsys):
    p = panoptic
    token = TOKENS[0]
    sem, inst = p["pred"][token]

    def run(pred_dir: Path, gt: Path | None = None) -> str:
        rc = main(["evaluate", "--pred", str(pred_dir), "--gt", str(gt or p["gts"]), "--infos", str(p["infos_path"]),
                   "--panoptic", "--workers", "0", "--allow-missing"])
        assert rc == 1
        return capsys.readouterr().err

    d = p["root"] / "no_inst" / SCENE / token
    d.mkdir(parents=True)
    np.savez_compressed(d / "labels.npz", semantics=sem)
    err = run(p["root"] / "no_inst")
    assert str(d / "labels.npz") in err and "instance ids (one of ['instances', 'pano_inst'])" in err

    np.savez_compressed(d / "labels.npz", semantics=sem, instances=inst[:, :, :8])
    err = run(p["root"] / "no_inst")
    assert f"{d / 'labels.npz'} [instances]" in err and "shape (200, 200, 16)" in err

    bad = inst.astype(np.int16)
    bad[3, 4, 5] = -2
    np.savez_compressed(d / "labels.npz", semantics=sem, instances=bad)
    err = run(p["root"] / "no_inst")
    assert f"{d / 'labels.npz'} [instances]" in err and "instance ids must be 0..65534" in err

    loc = np.argwhere(sem != FREE)
    loc[0] = (200, 0, 0)
    np.savez_compressed(d / "labels.npz", occ_loc=loc, pano_sem=sem[sem != FREE], pano_inst=inst[sem != FREE])
    err = run(p["root"] / "no_inst")
    assert str(d / "labels.npz") in err and "occ_loc [200, 0, 0] lies outside" in err

    # A plain Occ3D tree has no instances: the GT file is named and the panoptic tree suggested.
    plain = p["root"] / "gts" / SCENE / token
    plain.mkdir(parents=True)
    np.savez_compressed(plain / "labels.npz", semantics=sem, mask_lidar=p["mask"], mask_camera=p["mask"])
    err = run(_write(p["root"], {token: p["pred"][token]}, "ours"), p["root"] / "gts")
    assert str(plain / "labels.npz") in err and "missing keys ['instances']" in err and "flashocc data panoptic" in err

    rc = main(["evaluate", "--pred", str(p["root"] / "pred_ours"), "--gt", str(p["gts"]), "--panoptic"])
    assert rc == 1 and "--infos" in capsys.readouterr().err
