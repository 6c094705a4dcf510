"""Bundled weights (models/pretrained.py): hash before deserialising, weights-only loading, strict loads,
clear errors for a malformed manifest, and the real manifest shipped in flashocc/weights/."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch

from flashocc.errors import CheckpointError, CheckpointMismatchError, ConfigError, MissingFileError
from flashocc.models import build_model, pretrained
from flashocc.models.presets import PRESETS

PRESET = "effocc-lidar-tiny"  # 0.2 M parameters: builds in well under a second


def _entry(file: str, data: bytes, **overrides) -> dict:
    return {"file": file, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "dtype": "float16",
            "trained_on": "synthetic world only (test)", "scores": {"mIoU": 1.0}, "command": "pytest", **overrides}


def _bundle(folder: Path, preset: str, obj: object) -> dict:
    """Write ``obj`` as the preset's weight file and list it in a manifest; returns the manifest entry."""
    path = folder / "payload.pt"
    torch.save(obj, path)
    data = path.read_bytes()
    path.unlink()
    sha = hashlib.sha256(data).hexdigest()
    name = f"{preset}-{sha[:8]}.pt"
    (folder / name).write_bytes(data)
    entry = _entry(name, data)
    (folder / "manifest.json").write_text(json.dumps({"format": 1, "weights": {preset: entry}}))
    return entry


def _fp16_state(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = build_model(PRESET)
    for p in model.parameters():  # random, not the init: a load that silently kept the init would fail
        p.data.normal_()
    return {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}


@pytest.fixture
def weights_dir(tmp_path, monkeypatch):
    folder = tmp_path / "weights"
    folder.mkdir()
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", folder)
    return folder


def test_no_manifest_means_no_bundled_weights(weights_dir):
    assert pretrained.bundled_weights() == {} and pretrained.bundled_presets() == []


def test_build_model_pretrained_loads_the_fp16_weights_strictly(weights_dir):
    state = _fp16_state()
    entry = _bundle(weights_dir, PRESET, state)
    found = pretrained.bundled_weights()[PRESET]
    assert found.sha256 == entry["sha256"] and found.path == weights_dir / entry["file"]
    assert pretrained.bundled_presets() == [PRESET]
    model = build_model(PRESET, pretrained=True)
    assert not model.training
    loaded = model.state_dict()
    assert loaded.keys() == state.keys()
    for key, value in state.items():
        # cast to the model's own dtype (fp32 here), values exactly the fp16 ones
        assert loaded[key].dtype == (torch.float32 if value.is_floating_point() else value.dtype)
        assert torch.equal(loaded[key], value.to(loaded[key].dtype)), key
    # a model in another dtype gets its own dtype
    half = pretrained.load_bundled_weights(build_model(PRESET).half(), PRESET)
    assert all(v.dtype == torch.float16 for v in half.state_dict().values() if v.is_floating_point())


def test_a_tampered_file_is_refused_before_torch_load(weights_dir, monkeypatch):
    entry = _bundle(weights_dir, PRESET, _fp16_state())
    path = weights_dir / entry["file"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other content
    path.write_bytes(bytes(data))
    calls = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(a))
    with pytest.raises(CheckpointError) as err:
        build_model(PRESET, pretrained=True)
    text = str(err.value)
    assert str(path) in text and entry["sha256"] in text and hashlib.sha256(bytes(data)).hexdigest() in text
    assert calls == []


def test_a_resized_or_missing_file_is_refused(weights_dir):
    entry = _bundle(weights_dir, PRESET, _fp16_state())
    path = weights_dir / entry["file"]
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match=rf"{len(path.read_bytes())} bytes, but .* expects {entry['bytes']}"):
        build_model(PRESET, pretrained=True)
    path.unlink()
    with pytest.raises(MissingFileError, match=f"bundled weights of {PRESET} not found"):
        build_model(PRESET, pretrained=True)


class _Touch:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_pickle_payload_that_would_run_code_is_refused(weights_dir, tmp_path):
    # The hash matches (the manifest lists this very file): only weights-only loading stands in the way.
    marker = tmp_path / "pwned"
    _bundle(weights_dir, PRESET, {**_fp16_state(), "hook": _Touch(marker)})
    with pytest.raises(CheckpointError, match="refused to load: the file asks for the global"):
        build_model(PRESET, pretrained=True)
    assert not marker.exists()


def test_weights_that_do_not_fit_the_preset_are_a_mismatch(weights_dir):
    state = _fp16_state()
    first = next(iter(state))
    state.pop(first)
    _bundle(weights_dir, PRESET, {**state, "extra.weight": torch.zeros(2)})
    with pytest.raises(CheckpointMismatchError, match=rf"missing \(1\): {first}(.|\n)*unexpected \(1\): extra.weight"):
        build_model(PRESET, pretrained=True)
    _bundle(weights_dir, PRESET, [torch.zeros(1)])  # not a state dict
    with pytest.raises(CheckpointError, match="expected a plain state dict"):
        build_model(PRESET, pretrained=True)


def test_a_preset_without_weights_is_a_config_error(weights_dir):
    _bundle(weights_dir, PRESET, _fp16_state())
    with pytest.raises(ConfigError, match=r"^flashocc-tiny has no bundled weights; bundled: \['effocc-lidar-tiny'\]; "
                                          r"train one with flashocc demo --train / flashocc train$"):
        build_model("flashocc-tiny", pretrained=True)
    with pytest.raises(ConfigError, match="takes a preset name"):
        build_model(PRESETS[PRESET][0](), pretrained=True)
    assert build_model(PRESETS[PRESET][0]()).training  # the config form still builds, untouched


@pytest.mark.parametrize("change, field", [
    (lambda m: "{not json", "not a readable JSON manifest"),
    (lambda m: [], "expected a JSON object"),
    (lambda m: {**m, "format": 2}, "field 'format' must be 1"),
    (lambda m: {**m, "weights": []}, "field 'weights' must be an object"),
    (lambda m: _edit(m, sha256=None), r"weights\.effocc-lidar-tiny\.sha256: expected str, got NoneType"),
    (lambda m: _edit(m, sha256="ab" * 31), r"\.sha256: expected 64 lowercase hex digits"),
    (lambda m: _edit(m, bytes="12"), r"\.bytes: expected int, got str"),
    (lambda m: _edit(m, file="../../evil.pt"), r"\.file: expected 'effocc-lidar-tiny-[0-9a-f]{8}\.pt'"),
    (lambda m: _edit(m, dtype="int8"), r"\.dtype: expected one of"),
    (lambda m: _edit(m, scores=None, drop="scores"), r"\.scores: expected dict, got nothing"),
    (lambda m: _edit(m, url="http://x"), r"unknown field\(s\) \['url'\]"),
])
def test_a_malformed_manifest_names_the_file_and_field(weights_dir, change, field):
    _bundle(weights_dir, PRESET, _fp16_state())
    manifest = weights_dir / "manifest.json"
    changed = change(json.loads(manifest.read_text()))
    manifest.write_text(changed if isinstance(changed, str) else json.dumps(changed))
    with pytest.raises(ConfigError, match=rf"^{manifest}: .*{field}"):
        pretrained.bundled_weights()
    with pytest.raises(ConfigError, match=str(manifest)):
        build_model(PRESET, pretrained=True)


def _edit(manifest: dict, drop: str | None = None, **fields) -> dict:
    entry = {**manifest["weights"][PRESET], **fields}
    if drop:
        entry.pop(drop)
    return {**manifest, "weights": {PRESET: entry}}


def test_the_shipped_manifest_verifies():
    """The real flashocc/weights/: every listed file matches its hash and loads strictly into its preset;
    with nothing listed, there is nothing bundled (the folder ships an empty manifest)."""
    folder = Path(pretrained.__file__).resolve().parent.parent / "weights"
    assert pretrained.WEIGHTS_DIR == folder and (folder / "manifest.json").is_file()
    entries = pretrained.bundled_weights()
    assert {p.name for p in folder.glob("*.pt")} == {e.file for e in entries.values()}
    if not entries:
        assert entries == {} and pretrained.bundled_presets() == []
    for preset, entry in entries.items():
        assert preset in PRESETS and entry.dtype == "float16"
        assert "synthetic" in entry.trained_on and {"mIoU", "RayIoU", "eval_set"} <= set(entry.scores)
        pretrained.check_bundled_file(entry)
        model = build_model(preset, pretrained=True)
        assert not model.training
