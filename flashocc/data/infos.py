"""Sample info records: our own format, plus readers for BEVDet and mmdet3d info pickles.

One ``SampleInfo`` per keyframe. Paths are relative to the data root. Transforms are float64
4x4 matrices: ``sensor2ego`` (camera -> that camera's ego), ``ego2global`` (that camera's own ego
pose at its timestamp). Our own files are pickles of plain containers and numpy arrays, read with a
restricted unpickler like every other info file.
"""
from __future__ import annotations

import io
import os
import pickle
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

FORMAT_NAME = "flashocc-infos"
FORMAT_VERSION = 1


@dataclass
class CameraInfo:
    image_path: str                 # relative to the data root
    intrinsics: np.ndarray          # (3, 3)
    sensor2ego: np.ndarray          # (4, 4) camera -> ego at the camera's timestamp
    ego2global: np.ndarray          # (4, 4) the camera's own ego pose
    timestamp: int = 0              # microseconds


@dataclass
class SampleInfo:
    token: str
    scene_name: str
    scene_token: str
    timestamp: int                  # microseconds (LiDAR keyframe)
    lidar_path: str                 # relative to the data root; (M, 5) float32 x, y, z, intensity, ring
    lidar2ego: np.ndarray           # (4, 4)
    ego2global: np.ndarray          # (4, 4) ego pose at the LiDAR timestamp
    cams: dict[str, CameraInfo] = field(default_factory=dict)  # keyed by camera name, NUSCENES_CAMERAS order
    occ_path: str | None = None     # folder holding labels.npz, relative to the data root
    prev_token: str = ""            # previous keyframe of the same scene ("" at a scene start)


def sample_to_dict(sample: SampleInfo) -> dict:
    return asdict(sample)


def sample_from_dict(d: dict) -> SampleInfo:
    cams = {name: CameraInfo(**cam) for name, cam in d["cams"].items()}
    return SampleInfo(**{**d, "cams": cams})


def save_infos(samples: list[SampleInfo], path: str | os.PathLike, metadata: dict | None = None) -> Path:
    """Write our info file atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "metadata": dict(metadata or {}),
               "samples": [sample_to_dict(s) for s in samples]}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump(payload, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


class _RestrictedUnpickler(pickle.Unpickler):
    """Only numpy arrays/scalars and plain containers: info pickles may come from anywhere."""

    _ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"), ("numpy", "bool_"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),  # protocol-2 pickles store array bytes through it; it only encodes text
        ("collections", "OrderedDict"), ("builtins", "set"), ("builtins", "frozenset"),
        ("builtins", "slice"), ("builtins", "complex"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED or (module == "numpy" and name.endswith("DType")) or module == "numpy.dtypes":
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: info files may only hold numpy arrays and plain containers")


def safe_load_pickle(path: str | os.PathLike):
    """Unpickle an info file with the restricted unpickler; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"info file not found: {path}")
    data = path.read_bytes()
    try:
        return _RestrictedUnpickler(io.BytesIO(data)).load()
    except Exception as exc:  # pickle raises many types on garbage input
        raise ValueError(f"{path}: not a readable info pickle ({type(exc).__name__}: {exc})") from exc


def load_infos(path: str | os.PathLike) -> list[SampleInfo]:
    """Read our own info file. (Readers for BEVDet and mmdet3d formats are added beside this.)"""
    payload = safe_load_pickle(path)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
        raise ValueError(f"{path}: not a {FORMAT_NAME} file (no 'format' key)")
    return [sample_from_dict(d) for d in payload["samples"]]
