"""Bundled pretrained weights: fp16 state dicts shipped in ``flashocc/weights/`` with a SHA-256 manifest.

``manifest.json`` is ``{"format": 1, "weights": {preset: {file, sha256, bytes, dtype, trained_on, scores,
command}}}``; each file is ``<preset>-<first 8 hex of sha256>.pt`` holding a plain state dict. The hash is
checked before the file is deserialised, and deserialising goes through the same weights-only loader as
any checkpoint (flashocc/safe_load.py), so a swapped or tampered file is refused without being read.
``python -m flashocc.engine.bundle`` writes and verifies them.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from flashocc.errors import CheckpointError, CheckpointMismatchError, ConfigError, MissingFileError
from flashocc.safe_load import torch_load

# Read at call time (never bound at import) so tests and the packer can point it at another folder.
WEIGHTS_DIR: Path = Path(__file__).resolve().parent.parent / "weights"
MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class BundledWeights:
    """One manifest entry: which file, its hash and size, and what the weights are and how they were made."""

    preset: str
    file: str
    sha256: str
    bytes: int
    dtype: str
    trained_on: str  # plain words, e.g. "synthetic world only (...); not for real nuScenes images"
    scores: dict  # {"mIoU": ..., "RayIoU": ..., "eval_set": "..."}
    command: str  # the exact commands that trained the weights

    @property
    def path(self) -> Path:
        return Path(WEIGHTS_DIR) / self.file


def weight_file_name(preset: str, sha256: str) -> str:
    return f"{preset}-{sha256[:8]}.pt"


def manifest_path() -> Path:
    return Path(WEIGHTS_DIR) / MANIFEST_NAME


def bundled_weights() -> dict[str, BundledWeights]:
    """The manifest's entries by preset; ``{}`` when there is no manifest. A malformed manifest is a
    ``ConfigError`` naming the file and the field."""
    path = manifest_path()
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable JSON manifest ({exc})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a JSON object with 'format' and 'weights', got {type(raw).__name__}")
    if raw.get("format") != MANIFEST_FORMAT:
        raise ConfigError(f"{path}: field 'format' must be {MANIFEST_FORMAT}, got {raw.get('format')!r}")
    weights = raw.get("weights")
    if not isinstance(weights, dict):
        raise ConfigError(f"{path}: field 'weights' must be an object of preset -> entry, got {type(weights).__name__}")
    return {preset: _parse_entry(path, preset, entry) for preset, entry in weights.items()}


def _parse_entry(path: Path, preset: str, entry: object) -> BundledWeights:
    where = f"{path}: weights.{preset}"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected an object, got {type(entry).__name__}")
    expected = {"file": str, "sha256": str, "bytes": int, "dtype": str, "trained_on": str, "scores": dict,
                "command": str}
    for name, kind in expected.items():
        value = entry.get(name)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(f"{where}.{name}: expected {kind.__name__}, got "
                              f"{'nothing' if name not in entry else type(value).__name__}")
    unknown = sorted(set(entry) - set(expected))
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown}; expected {sorted(expected)}")
    if not _SHA256.match(entry["sha256"]):
        raise ConfigError(f"{where}.sha256: expected 64 lowercase hex digits, got {entry['sha256']!r}")
    # The file name is fixed by preset and hash: a manifest cannot point outside the weights folder.
    want = weight_file_name(preset, entry["sha256"])
    if entry["file"] != want:
        raise ConfigError(f"{where}.file: expected {want!r} (<preset>-<first 8 hex of sha256>.pt), got {entry['file']!r}")
    if entry["bytes"] <= 0:
        raise ConfigError(f"{where}.bytes: expected a positive size, got {entry['bytes']}")
    if entry["dtype"] not in DTYPES:
        raise ConfigError(f"{where}.dtype: expected one of {sorted(DTYPES)}, got {entry['dtype']!r}")
    return BundledWeights(preset=preset, **entry)


def bundled_presets() -> list[str]:
    return sorted(bundled_weights())


def require_bundled_weights(preset: str) -> BundledWeights:
    found = bundled_weights()
    if preset not in found:
        raise ConfigError(f"{preset} has no bundled weights; bundled: {sorted(found)}; "
                          "train one with flashocc demo --train / flashocc train")
    return found[preset]


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_bundled_file(entry: BundledWeights) -> Path:
    """The entry's file, after its size and SHA-256 match the manifest (nothing is deserialised here)."""
    path = entry.path
    if not path.is_file():
        raise MissingFileError(f"bundled weights of {entry.preset} not found: {path} (listed in {manifest_path()})")
    size = path.stat().st_size
    if size != entry.bytes:
        raise CheckpointError(f"{path}: {size} bytes, but {manifest_path()} expects {entry.bytes}; the file is "
                              "truncated or was replaced (reinstall flashocc or re-pack the weights)")
    actual = file_sha256(path)
    if actual != entry.sha256:
        raise CheckpointError(f"{path}: SHA-256 mismatch: expected {entry.sha256}, actual {actual}; the file was "
                              "changed after packing and was not loaded (reinstall flashocc or re-pack the weights)")
    return path


def read_bundled_state_dict(preset: str) -> dict[str, torch.Tensor]:
    """The preset's bundled tensors: hash checked first, then read weights-only."""
    entry = require_bundled_weights(preset)
    path = check_bundled_file(entry)
    state = torch_load(path, "cpu", trusted=False, what="bundled weights file")
    if (not isinstance(state, Mapping) or not state or not all(isinstance(k, str) for k in state)
            or not all(isinstance(v, torch.Tensor) for v in state.values())):
        raise CheckpointError(f"{path}: expected a plain state dict (names -> tensors), got {type(state).__name__}")
    return dict(state)


def load_bundled_weights(model: nn.Module, preset: str) -> nn.Module:
    """Load ``preset``'s bundled weights into ``model`` strictly, each tensor cast to the model's own
    dtype for that entry; returns the model in eval mode."""
    state = read_bundled_state_dict(preset)
    own = model.state_dict()
    cast = {k: (v.to(own[k].dtype) if k in own and v.is_floating_point() else v) for k, v in state.items()}
    missing = [k for k in own if k not in cast]
    unexpected = [k for k in cast if k not in own]
    shapes = [f"{k}: file {tuple(cast[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in cast and cast[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        lines = [f"{title} ({len(keys)}): {', '.join(keys[:10])}{' ...' if len(keys) > 10 else ''}"
                 for title, keys in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)) if keys]
        raise CheckpointMismatchError(f"bundled weights {require_bundled_weights(preset).path} do not match "
                                      f"the {preset} model:\n" + "\n".join(lines))
    model.load_state_dict(cast, strict=True)
    return model.eval()


__all__ = ["WEIGHTS_DIR", "BundledWeights", "bundled_weights", "bundled_presets", "require_bundled_weights",
           "load_bundled_weights", "check_bundled_file", "file_sha256", "weight_file_name", "manifest_path"]
