"""`flashocc evaluate` and the shared OccScorer on temporary prediction / GT trees (the real Occ3D
volume where the fixtures are present, small synthetic volumes otherwise)."""
import json
import os
from pathlib import Path

import numpy as np
import pytest

from flashocc.cli import main
from flashocc.data.infos import CameraInfo, SampleInfo, load_infos, save_infos
from flashocc.geometry import NUSCENES_CAMERAS
from flashocc.errors import ConfigError, DataError, MissingFileError
from flashocc.grid import OCC3D_NUSCENES, OccGrid
from flashocc.metrics import OccMIoU
from flashocc.metrics.evaluate import evaluate_dirs
from flashocc.metrics.scorer import OccScorer, ScoreConfig

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
    r = evaluate_dirs(pred_dir, trees["gts"], config=ScoreConfig(metrics=("miou",)), workers=0)
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


# ---- coverage against the split (synthetic volumes: no fixtures needed) ---------------------------
def _synthetic_volume(seed: int) -> np.ndarray:
    """A floor of driveable surface and a few labelled boxes on the Occ3D grid, the rest free."""
    rng = np.random.default_rng(seed)
    vol = np.full(OCC3D_NUSCENES.shape, 17, dtype=np.uint8)
    vol[:, :, 0] = 11
    for _ in range(12):
        x, y = rng.integers(0, 190, size=2)
        vol[x:x + 8, y:y + 5, 1:4] = rng.integers(0, 11)
    return vol


def _infos(tokens, path: Path) -> Path:
    lidar2ego = np.eye(4)
    lidar2ego[:3, 3] = (0.94, 0.0, 1.84)
    cams = {name: CameraInfo(image_path=f"{name}.jpg", intrinsics=np.diag([1000.0, 1000.0, 1.0]),
                             sensor2ego=np.eye(4), ego2global=np.eye(4)) for name in NUSCENES_CAMERAS}
    infos = []
    for i, token in enumerate(tokens):
        ego2global = np.eye(4)
        ego2global[0, 3] = 8.0 * i
        infos.append(SampleInfo(token=token, scene_name=SCENE, scene_token="st", timestamp=i, lidar_path="",
                                lidar2ego=lidar2ego, ego2global=ego2global, cams=cams))
    return save_infos(infos, path)


@pytest.fixture()
def synth(tmp_path: Path):
    """gts/ for TOKENS plus one more sample that the split does not list, and the split's infos."""
    extra = "d" * 32
    volumes = {t: _synthetic_volume(i) for i, t in enumerate((*TOKENS, extra))}
    camera = np.zeros(OCC3D_NUSCENES.shape, dtype=np.uint8)
    camera[100:] = 1                                   # the camera sees the front half only
    for token, sem in volumes.items():
        d = tmp_path / "gts" / SCENE / token
        d.mkdir(parents=True)
        np.savez_compressed(d / "labels.npz", semantics=sem, mask_camera=camera,
                            mask_lidar=np.ones_like(camera))
    return {"root": tmp_path, "gts": tmp_path / "gts", "volumes": volumes, "extra": extra, "camera": camera,
            "infos": _infos(TOKENS, tmp_path / "infos_val.pkl")}


def _evaluate(synth, pred: Path, *flags: str) -> tuple[int, dict | None]:
    out = synth["root"] / "res.json"
    if out.exists():
        out.unlink()
    rc = main(["evaluate", "--pred", str(pred), "--gt", str(synth["gts"]), "--metrics", "miou", "--workers", "0",
               "--json", str(out), *flags])
    return rc, (json.loads(out.read_text()) if out.exists() else None)


def test_predictions_for_part_of_the_split_fail_with_the_count_tokens_and_paths(synth, capsys):
    pred = _write_preds(synth["root"], {TOKENS[0]: synth["volumes"][TOKENS[0]]}, "ours")
    rc, result = _evaluate(synth, pred, "--infos", str(synth["infos"]))
    err = capsys.readouterr().err
    assert rc == 1 and result is None
    assert f"2 of 3 samples listed in {synth['infos']} have no prediction" in err
    assert TOKENS[1] in err and str(pred / SCENE / TOKENS[1] / "labels.npz") in err and "--allow-missing" in err
    with pytest.raises(MissingFileError, match="2 of 3 samples"):
        evaluate_dirs(pred, synth["gts"], load_infos(synth["infos"]), workers=0)


def test_allow_missing_scores_the_subset_and_the_report_says_so(synth, capsys):
    vol = synth["volumes"][TOKENS[0]]
    pred = _write_preds(synth["root"], {TOKENS[0]: shifted(vol, 0)}, "ours")
    rc, result = _evaluate(synth, pred, "--infos", str(synth["infos"]), "--allow-missing")
    printed = capsys.readouterr().out
    assert rc == 0 and result["num_samples"] == 1
    cov = result["coverage"]
    assert cov["checked"] and not cov["complete"] and (cov["listed"], cov["scored"], cov["missing"]) == (3, 1, 2)
    assert cov["missing_tokens"] == sorted(TOKENS[1:])
    summary = f"scored 1 of 3 samples listed in {synth['infos']}; 2 missing, e.g. "
    assert cov["summary"].startswith(summary) and summary in printed and "WARNING: not the whole split" in printed
    m = OccMIoU()
    m.update(shifted(vol, 0), vol, synth["camera"])
    assert result["mIoU"] == pytest.approx(m.compute()["mIoU"])


def test_predictions_outside_the_split_fail_unless_ignored(synth, capsys):
    pred = _write_preds(synth["root"], synth["volumes"], "ours")      # TOKENS + one stale sample
    rc, _ = _evaluate(synth, pred, "--infos", str(synth["infos"]))
    err = capsys.readouterr().err
    assert rc == 1 and "1 of 4 predictions" in err and str(pred / SCENE / synth["extra"] / "labels.npz") in err
    assert "--ignore-extra" in err

    rc, result = _evaluate(synth, pred, "--infos", str(synth["infos"]), "--ignore-extra")
    printed = capsys.readouterr().out
    assert rc == 0 and result["num_samples"] == 3 and result["mIoU"] == 100.0
    cov = result["coverage"]
    assert cov["complete"] and cov["ignored"] == 1 and cov["ignored_tokens"] == [synth["extra"]]
    assert "ignored 1 predictions not in the split" in printed


def test_without_infos_the_report_says_coverage_was_not_checked(synth, capsys):
    pred = _write_preds(synth["root"], {TOKENS[0]: synth["volumes"][TOKENS[0]]}, "flat")
    rc, result = _evaluate(synth, pred)
    printed = capsys.readouterr().out
    assert rc == 0 and result["num_samples"] == 1 and result["mIoU"] == 100.0
    assert result["coverage"]["checked"] is False and "coverage not checked against a split" in printed
    assert main(["evaluate", "--pred", str(pred), "--gt", str(synth["gts"]), "--allow-missing"]) == 1
    assert "--infos" in capsys.readouterr().err


def test_empty_split_prediction_folder_or_gt_folder_fail_clearly(synth, capsys):
    pred = _write_preds(synth["root"], synth["volumes"], "ours")
    empty_infos = _infos([], synth["root"] / "empty.pkl")
    assert _evaluate(synth, pred, "--infos", str(empty_infos))[0] == 1
    assert f"{empty_infos} lists no samples" in capsys.readouterr().err

    (synth["root"] / "nothing").mkdir()
    rc = main(["evaluate", "--pred", str(synth["root"] / "nothing"), "--gt", str(synth["gts"])])
    assert rc == 1 and "no predictions under" in capsys.readouterr().err
    rc = main(["evaluate", "--pred", str(pred), "--gt", str(synth["root"] / "nothing")])
    assert rc == 1 and "no <scene>/<token>/labels.npz under" in capsys.readouterr().err

    other = _infos(["e" * 32], synth["root"] / "other.pkl")       # a split none of the predictions is for
    assert _evaluate(synth, pred, "--infos", str(other), "--allow-missing", "--ignore-extra")[0] == 1
    assert "none of the 4 predictions" in capsys.readouterr().err


# ---- OccScorer on a small grid -------------------------------------------------------------------
SMALL = OccGrid(lower=(-3.2, -3.2, -0.8), upper=(3.2, 3.2, 0.8))      # 16 x 16 x 4 voxels of 0.4 m


def _small_samples(n: int = 4):
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        gt = rng.integers(0, 18, size=SMALL.shape).astype(np.uint8)
        pred = np.where(rng.random(SMALL.shape) < 0.7, gt, rng.integers(0, 18, size=SMALL.shape)).astype(np.uint8)
        masks = {"mask_camera": rng.random(SMALL.shape) < 0.5, "mask_lidar": np.ones(SMALL.shape, bool)}
        out.append((f"tok{i}", pred, {"semantics": gt, **masks}))
    return out


def test_scorer_refuses_samples_outside_the_split_twice_or_missing():
    samples = _small_samples(3)
    scorer = OccScorer(ScoreConfig(), SMALL, expected=["tok0", "tok1"], split="val.pkl")
    scorer.update(*samples[0])
    with pytest.raises(DataError, match="sample tok0 was scored twice"):
        scorer.update(*samples[0])
    with pytest.raises(DataError, match="sample tok2 is not listed in val.pkl"):
        scorer.update(*samples[2])
    with pytest.raises(DataError, match="1 of 2 samples listed in val.pkl were not scored, e.g. tok1"):
        scorer.result()
    partial = OccScorer(ScoreConfig(), SMALL, expected=["tok0", "tok1"], split="val.pkl", allow_missing=True)
    partial.update(*samples[0])
    assert partial.result()["coverage"]["missing_tokens"] == ["tok1"]
    with pytest.raises(DataError, match="val.pkl lists no samples"):
        OccScorer(ScoreConfig(), SMALL, expected=[], split="val.pkl")
    with pytest.raises(DataError, match="no samples were scored"):
        OccScorer(ScoreConfig(), SMALL).result()
    with pytest.raises(DataError, match="RayIoU needs its ray origins"):
        OccScorer(ScoreConfig(metrics=("rayiou",)), SMALL).update(*samples[0])


def test_scorer_follows_its_grid_mask_and_metrics():
    renamed = OccGrid(lower=SMALL.lower, upper=SMALL.upper,
                      class_names=tuple(f"c{i}" for i in range(17)) + ("free",))
    results = {}
    for mask in ("camera", "lidar", "none"):
        scorer = OccScorer(ScoreConfig(metrics=("miou",), mask=mask), renamed)
        reference = OccMIoU(renamed)
        for token, pred, gt in _small_samples():
            scorer.update(token, pred, gt)
            reference.update(pred, gt["semantics"], None if mask == "none" else gt[f"mask_{mask}"])
        results[mask] = scorer.result()
        assert results[mask]["mIoU"] == reference.compute()["mIoU"] and results[mask]["mask"] == mask
        assert list(results[mask]["mIoU_per_class"])[:2] == ["c0", "c1"] and "RayIoU" not in results[mask]
    assert results["camera"]["mIoU"] != results["none"]["mIoU"]
    assert results["lidar"]["mIoU"] == results["none"]["mIoU"]          # the lidar mask is all ones here
    with pytest.raises(ValueError, match=r"16, 16, 4\)"):
        OccScorer(ScoreConfig(), SMALL).update("t", np.zeros((200, 200, 16), np.uint8),
                                               {"semantics": np.zeros((200, 200, 16), np.uint8),
                                                "mask_camera": np.ones((200, 200, 16), bool)})


@pytest.mark.parametrize("kwargs, field", [({"metrics": ("miou", "iou")}, "metrics"), ({"metrics": ()}, "metrics"),
                                           ({"mask": "cam"}, "mask"), ({"backend": "cuda"}, "backend")])
def test_score_config_names_the_bad_field(kwargs, field):
    with pytest.raises(ConfigError, match=f"ScoreConfig.{field}: expected"):
        ScoreConfig(**kwargs)


def _score_share(rank: int, world: int, init_file: str, out_file: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    samples = _small_samples()
    scorer = OccScorer(ScoreConfig(metrics=("miou", "rayiou"), backend="torch"), SMALL, expected=[t for t, _, _ in samples])
    for token, pred, gt in samples[rank::world]:
        scorer.update(token, pred, gt, np.zeros((1, 3)))
    scorer.all_reduce()
    if rank == 0:
        Path(out_file).write_text(json.dumps(scorer.result()))
    dist.destroy_process_group()


def test_scorer_all_reduce_over_two_processes_equals_one(tmp_path):
    import torch.multiprocessing as mp

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_score_share, args=(2, str(tmp_path / "init"), str(tmp_path / "two.json")), nprocs=2)
    two = json.loads((tmp_path / "two.json").read_text())
    one = OccScorer(ScoreConfig(metrics=("miou", "rayiou"), backend="torch"), SMALL, expected=[t for t, _, _ in _small_samples()])
    for token, pred, gt in _small_samples():
        one.update(token, pred, gt, np.zeros((1, 3)))
    assert two == json.loads(json.dumps(one.result()))
    assert two["coverage"]["complete"] and two["num_samples"] == 4
