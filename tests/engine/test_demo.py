"""``flashocc demo``: bundled weights on a fresh held-out set by default, training from scratch with --train."""
import hashlib
import json
import os

import pytest
import torch
from PIL import Image

from flashocc.cli import main
from flashocc.config import load_run_config
from flashocc.errors import ConfigError, RunFolderError

# The same micro model as tests/engine/test_train.py, so the --train path takes seconds.
MICRO = ["model.input_size=(64,176)", "model.img_neck_channels=32", "model.bev_channels=8",
         "model.encoder_channels=(8,16,32)", "model.bev_neck_channels=8", "model.head_channels=8",
         "train.batch_size=1", "train.workers=0", "train.warmup_iters=2", "train.log_every=1"]
PRESET = "flashocc-tiny-demo"
DOCUMENTED = {"mIoU": 50.37, "RayIoU": 0.423, "eval_set": "demo held-out synthetic, seed 1018, 24 frames"}


def pack_random_weights(folder, preset=PRESET, seed=0):
    """A random-weight model packed as the bundled-weights manifest describes (fp16 state dict,
    ``<preset>-<sha8>.pt``); returns the float32 state the demo must end up with."""
    from flashocc.models.presets import build_model

    torch.manual_seed(seed)
    model = build_model(preset)
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "packing.pt"
    torch.save(state, tmp)
    sha = hashlib.sha256(tmp.read_bytes()).hexdigest()
    name = f"{preset}-{sha[:8]}.pt"
    tmp.rename(folder / name)
    entry = {"file": name, "sha256": sha, "bytes": (folder / name).stat().st_size, "dtype": "float16",
             "trained_on": "random weights (test)", "scores": DOCUMENTED, "command": "tests/engine/test_demo.py"}
    (folder / "manifest.json").write_text(json.dumps({"format": 1, "weights": {preset: entry}}))
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    return folder, pack_random_weights(folder)


@pytest.fixture
def bundled(weights_dir, monkeypatch):
    from flashocc.models import pretrained

    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", weights_dir[0])
    return weights_dir[1]


def _valid_image(path, kind):
    with Image.open(path) as im:
        assert im.format == kind, path
        frames = getattr(im, "n_frames", 1)
        im.verify()
    return frames


def test_default_demo_scores_the_bundled_weights_and_draws(bundled, tmp_path, monkeypatch):
    from flashocc.engine import demo
    from flashocc.engine.evaluate import eval_dataset, evaluate_model
    from flashocc.models.presets import build_model

    out = tmp_path / "demo"
    report = demo.run_demo(out, eval_scenes=1, eval_frames=2, device="cpu")
    saved = json.loads((out / "report.json").read_text())
    assert saved["mode"] == "bundled" and saved["preset"] == PRESET and saved["val_samples"] == 2
    assert saved["eval_set"]["seed"] == demo.EVAL_SEED and saved["eval_set"]["image_size"] == [256, 144]
    assert saved["eval_set"]["lidar_sweeps"] == 0  # the camera model reads no sweeps
    assert not (out / "train").exists()             # nothing trained
    assert set(saved["timing_s"]) == {"data", "inference_scoring", "pictures"}
    assert saved["bundled_weights"]["documented_scores"] == DOCUMENTED
    assert saved["measured_vs_documented"]["mIoU"] == {"measured": saved["mIoU"], "documented": 50.37}
    assert len(saved["mIoU_per_class"]) == 17 and 0 <= saved["RayIoU"] <= 1
    assert "bundled weights" in report["summary"] and "documented 50.37" in report["summary"]

    # The scores are those of the packed weights: the same model loaded by hand scores the same.
    cfg = load_run_config(PRESET)
    model = build_model(cfg.model)
    model.load_state_dict(bundled)
    direct = evaluate_model(model.eval(), eval_dataset(cfg, out / "eval_data"), torch.device("cpu"),
                            grid=cfg.model.grid)
    assert saved["mIoU"] == pytest.approx(direct["mIoU"]) and saved["RayIoU"] == pytest.approx(direct["RayIoU"])

    names = sorted(os.path.basename(p) for p in saved["pictures"])
    assert len(names) == 5
    assert [n.split("_")[0] for n in names] == ["cameras", "cameras", "drive.gif", "pred", "pred"]
    for path in saved["pictures"]:
        if path.endswith(".gif"):
            assert _valid_image(path, "GIF") == 2  # one frame per frame of the drive
        else:
            _valid_image(path, "PNG")
    with Image.open(next(p for p in saved["pictures"] if "cameras_" in p)) as im:
        assert im.size == (3 * 352 + 2 * 4, 2 * 198 + 4)  # 2x3 camera tiles, 352 px wide, 4 px apart

    # A second run is refused; --overwrite replaces the report and reuses the held-out set as it is.
    with pytest.raises(RunFolderError, match="already holds a demo run.*--overwrite"):
        demo.run_demo(out, eval_scenes=1, eval_frames=2, device="cpu")
    monkeypatch.setattr(demo, "generate_synthetic_set", lambda *a, **k: pytest.fail("regenerated the eval set"))
    scored = []
    monkeypatch.setattr(demo, "bundled_demo", lambda out, cfg, root, device, timing: scored.append(root) or {})
    demo.run_demo(out, eval_scenes=1, eval_frames=2, device="cpu", overwrite=True)
    assert scored == [out / "eval_data"]


def test_a_preset_without_bundled_weights_fails_before_any_work(bundled, tmp_path):
    from flashocc.engine.demo import run_demo

    with pytest.raises(ConfigError, match=r"^flashocc-tiny has no bundled weights; bundled: \['flashocc-tiny-demo'\]; "
                                          r"train one with flashocc demo --train"):
        run_demo(tmp_path / "demo", preset="flashocc-tiny")
    assert not (tmp_path / "demo").exists()


def test_a_tampered_weight_file_is_refused_before_scoring(weights_dir, tmp_path, monkeypatch):
    import shutil

    from flashocc.engine.demo import run_demo
    from flashocc.errors import CheckpointError
    from flashocc.models import pretrained

    folder = tmp_path / "weights"
    shutil.copytree(weights_dir[0], folder)
    weight = next(folder.glob("*.pt"))
    data = bytearray(weight.read_bytes())
    data[-10] ^= 0xFF  # same size, different bytes
    weight.write_bytes(bytes(data))
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", folder)
    with pytest.raises(CheckpointError, match="SHA-256 mismatch"):
        run_demo(tmp_path / "demo", eval_scenes=1, eval_frames=1, device="cpu")
    assert not (tmp_path / "demo" / "report.json").exists()


def test_the_eval_set_follows_the_model():
    from flashocc.engine.demo import EVAL_SEED, eval_synth_config

    camera = eval_synth_config(load_run_config(PRESET))
    assert (camera.seed, camera.image_size, camera.lidar_sweeps) == (EVAL_SEED, (256, 144), 0)
    assert camera.num_val_scenes == camera.scenes == 2 and camera.frames_per_scene == 12
    fusion = eval_synth_config(load_run_config("effocc-fusion-tiny"), scenes=1, frames=3)
    assert fusion.lidar_sweeps == load_run_config("effocc-fusion-tiny").data.sweeps_used > 0
    assert (fusion.scenes, fusion.frames_per_scene) == (1, 3)


@pytest.mark.parametrize("argv, train, minutes", [
    ([], False, None),
    (["--train"], True, None),
    (["--minutes", "2"], True, 2.0),
    (["train.lr=1e-3"], True, None),
])
def test_minutes_or_overrides_imply_train(argv, train, minutes, monkeypatch, tmp_path, capsys):
    from flashocc.engine import demo

    calls = []
    monkeypatch.setattr(demo, "run_demo", lambda *a, **k: calls.append(k) or {"summary": "done"})
    assert main(["demo", "--out", str(tmp_path / "d"), *argv]) == 0
    assert calls[0]["train"] is train and calls[0]["minutes"] == minutes
    said = capsys.readouterr().out
    assert ("training from scratch (--train)" in said) is (train and "--train" not in argv)


def test_help_says_what_implies_train(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "implies --train" in text and "imply --train" in text and "bundled weights" in text


def test_demo_train_writes_report_and_pictures(synth_root, tmp_path):
    from flashocc.engine.demo import run_demo

    report = run_demo(tmp_path / "demo", minutes=0.05, data=synth_root, overrides=[*MICRO, "train.workers=0"])
    saved = json.loads((tmp_path / "demo" / "report.json").read_text())
    for key in ("mIoU", "RayIoU", "train_minutes", "samples_seen", "summary", "timing_s"):
        assert key in saved
    assert saved["mode"] == "train" and saved["samples_seen"] >= 1 and report["steps"] >= 1
    assert set(saved["timing_s"]) == {"data", "train", "inference_scoring", "pictures"}
    assert all(os.path.exists(p) for p in saved["pictures"])
    # 2 comparisons + 2 camera overlays + the drive GIF (synth_root's held-out scene has 3 frames)
    assert len(saved["pictures"]) == 5 and _valid_image(saved["pictures"][-1], "GIF") == 3


@pytest.mark.parametrize("preset", ["effocc-lidar-tiny", "effocc-fusion-tiny"])
def test_default_demo_runs_the_shipped_lidar_models(preset, tmp_path):
    """The real bundled LiDAR and fusion weights through the default demo path (points, sweeps and
    LiDAR depth in the held-out set), on a two-frame set to stay fast."""
    from flashocc.engine.demo import run_demo
    from flashocc.models.pretrained import bundled_weights

    assert preset in bundled_weights(), "the package ships these weights (flashocc/weights/manifest.json)"
    report = run_demo(tmp_path / "demo", preset=preset, device="cpu", eval_scenes=1, eval_frames=2)
    assert report["mode"] == "bundled" and report["preset"] == preset
    assert report["val_samples"] == 2
    assert report["eval_set"]["lidar_sweeps"] == load_run_config(preset).data.sweeps_used
    assert 0.0 < report["mIoU"] <= 100.0 and 0.0 < report["RayIoU"] <= 1.0
    assert (tmp_path / "demo" / "report.json").is_file()
