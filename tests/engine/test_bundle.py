"""python -m flashocc.engine.bundle: pack a training checkpoint into bundled fp16 weights, verify them."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from flashocc.engine import bundle
from flashocc.engine.checkpoint import atomic_torch_save
from flashocc.errors import CheckpointMismatchError, ConfigError
from flashocc.models import build_model, pretrained

PRESET = "effocc-lidar-tiny"


@pytest.fixture
def weights_dir(tmp_path, monkeypatch):
    folder = tmp_path / "weights"
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", folder)
    return folder


def _random_state(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = build_model(PRESET)
    for p in model.parameters():
        p.data.normal_()
    return model.state_dict()


def _training_checkpoint(path, seed: int = 0, ema: bool = True):
    """The layout engine/train.py save_training_state writes (model, optimizer, EMA, preset)."""
    model, averaged = _random_state(seed), _random_state(seed + 100)
    payload = {"model": model, "optimizer": {"state": {}, "param_groups": []}, "preset": PRESET,
               "ema": {"state_dict": averaged, "updates": 7} if ema else None, "train_state": {"step": 3}}
    atomic_torch_save(payload, path)
    return model, averaged


def _report(path, **extra):
    path.write_text(json.dumps({"preset": PRESET, "mIoU": 50.371234, "RayIoU": 0.4231, "val_samples": 24,
                                "synthetic_set": {"seed": 1018}, **extra}))
    return path


def test_pack_verify_and_load_round_trip(tmp_path, weights_dir, capsys):
    _, averaged = _training_checkpoint(tmp_path / "last.pt")
    entry = bundle.pack(PRESET, tmp_path / "last.pt", ema=True, scores=_report(tmp_path / "report.json"),
                        command="flashocc train effocc-lidar-tiny --data runs/synth")
    assert entry.file == f"{PRESET}-{entry.sha256[:8]}.pt" and (weights_dir / entry.file).stat().st_size == entry.bytes
    manifest = json.loads((weights_dir / "manifest.json").read_text())
    assert manifest["format"] == 1
    assert manifest["weights"][PRESET] == {
        "file": entry.file, "sha256": entry.sha256, "bytes": entry.bytes, "dtype": "float16",
        "trained_on": bundle.DEFAULT_TRAINED_ON, "command": "flashocc train effocc-lidar-tiny --data runs/synth",
        "scores": {"mIoU": 50.3712, "RayIoU": 0.4231, "eval_set": "held-out synthetic, seed 1018, 24 frames"}}
    assert "EMA weights (7 updates)" in capsys.readouterr().out
    # the file is a plain fp16 state dict
    saved = torch.load(weights_dir / entry.file, weights_only=True)
    assert all(v.dtype == torch.float16 for v in saved.values() if v.is_floating_point())
    assert bundle.verify(load=True) == []
    loaded = build_model(PRESET, pretrained=True).state_dict()
    for key, value in averaged.items():  # the EMA weights, fp16-rounded
        expected = value.half().to(value.dtype) if value.is_floating_point() else value
        assert torch.equal(loaded[key], expected), key


def test_pack_without_ema_or_without_ema_weights_takes_the_model(tmp_path, weights_dir, capsys):
    model, _ = _training_checkpoint(tmp_path / "plain.pt", ema=False)
    bundle.pack(PRESET, tmp_path / "plain.pt", ema=True)
    assert "the checkpoint has no EMA weights" in capsys.readouterr().out
    key = next(k for k, v in model.items() if v.is_floating_point())
    assert torch.equal(build_model(PRESET, pretrained=True).state_dict()[key], model[key].half().float())


def test_repacking_replaces_the_older_file(tmp_path, weights_dir):
    _training_checkpoint(tmp_path / "a.pt", seed=0)
    _training_checkpoint(tmp_path / "b.pt", seed=1)
    first = bundle.pack(PRESET, tmp_path / "a.pt")
    (weights_dir / "flashocc-tiny-0badc0de.pt").write_bytes(b"another preset's file")  # not touched
    second = bundle.pack(PRESET, tmp_path / "b.pt")
    assert first.file != second.file and not (weights_dir / first.file).exists()
    assert (weights_dir / "flashocc-tiny-0badc0de.pt").exists()
    assert list(pretrained.bundled_weights()) == [PRESET]


def test_pack_refuses_what_does_not_fit_and_writes_nothing(tmp_path, weights_dir):
    _training_checkpoint(tmp_path / "last.pt")
    with pytest.raises(ConfigError, match="trained as preset 'effocc-lidar-tiny', not 'flashocc-tiny'"):
        bundle.pack("flashocc-tiny", tmp_path / "last.pt")
    payload = torch.load(tmp_path / "last.pt", weights_only=True)
    payload.pop("preset")
    torch.save(payload, tmp_path / "anonymous.pt")
    with pytest.raises(CheckpointMismatchError, match="anonymous.pt does not match the model:(.|\n)*missing in checkpoint"):
        bundle.pack("flashocc-tiny", tmp_path / "anonymous.pt")  # another preset's tensors, not named in the file
    with pytest.raises(ConfigError, match="unknown preset"):
        bundle.pack("no-such-preset", tmp_path / "last.pt")
    assert not weights_dir.exists()


@pytest.mark.parametrize("kwargs, field", [
    ({"command": "flashocc train x --data /home/me/runs/synth"}, "--command"),
    ({"trained_on": "synthetic world at C:\\data\\synth"}, "--trained-on"),
    ({"eval_set": "frames in ~/runs/val"}, "eval_set"),
])
def test_absolute_machine_paths_are_refused(tmp_path, weights_dir, kwargs, field):
    _training_checkpoint(tmp_path / "last.pt")
    scores = _report(tmp_path / "report.json") if "eval_set" in kwargs else None
    with pytest.raises(ConfigError, match=rf"{field}: .* is an absolute path"):
        bundle.pack(PRESET, tmp_path / "last.pt", scores=scores, **kwargs)
    assert not (weights_dir / "manifest.json").exists()
    bundle.pack(PRESET, tmp_path / "last.pt", command="flashocc train x --data runs/synth (mIoU / RayIoU)")


def test_a_report_without_scores_is_named(tmp_path, weights_dir):
    _training_checkpoint(tmp_path / "last.pt")
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"RayIoU": 0.1}))
    with pytest.raises(ConfigError, match=rf"^{report}: field 'mIoU' must be a number, got None"):
        bundle.pack(PRESET, tmp_path / "last.pt", scores=report)


def test_verify_reports_every_problem_with_a_nonzero_exit(tmp_path, weights_dir, capsys):
    _training_checkpoint(tmp_path / "last.pt")
    entry = bundle.pack(PRESET, tmp_path / "last.pt")
    assert bundle.main(["verify", "--load"]) == 0
    path = weights_dir / entry.file
    data = bytearray(path.read_bytes())
    data[100] ^= 1
    path.write_bytes(bytes(data))
    (weights_dir / "stray-00000000.pt").write_bytes(b"x")
    capsys.readouterr()
    assert bundle.main(["verify"]) == 1
    err = capsys.readouterr().err
    assert f"FAIL {PRESET}: {path}: SHA-256 mismatch: expected {entry.sha256}" in err
    assert "stray-00000000.pt: a weight file that manifest.json does not list" in err
    (weights_dir / "manifest.json").write_text('{"format": 1, "weights": {"x": 3}}')
    assert bundle.main(["verify"]) == 1
    assert "weights.x: expected an object, got int" in capsys.readouterr().err


def test_the_module_runs_from_the_command_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", pretrained.WEIGHTS_DIR)  # --weights-dir sets it; restored after
    _training_checkpoint(tmp_path / "last.pt")
    folder = tmp_path / "cli_weights"
    args = ["--weights-dir", str(folder), "pack", "--preset", PRESET, "--checkpoint"]
    assert bundle.main([*args, str(tmp_path / "last.pt"), "--ema", "--command", "flashocc train x"]) == 0
    assert pretrained.WEIGHTS_DIR == folder and (folder / "manifest.json").is_file()
    assert bundle.main([*args, str(tmp_path / "missing.pt")]) == 2
    assert capsys.readouterr().err.startswith("error: checkpoint not found:")
    # One real `python -m` run (a subprocess costs seconds on the shared CI box).
    verified = subprocess.run([sys.executable, "-m", "flashocc.engine.bundle", "--weights-dir", str(folder),
                               "verify", "--load"], capture_output=True, text=True)
    assert verified.returncode == 0, verified.stderr
    assert f"ok  {PRESET}" in verified.stdout and "(loads strictly)" in verified.stdout
