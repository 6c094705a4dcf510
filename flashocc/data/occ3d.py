"""Occ3D-nuScenes ground truth: ``gts/<scene>/<token>/labels.npz``.

Format: Occ3D@6e8563a README.md; loaded like FlashOCC@4084861
projects/mmdet3d_plugin/datasets/pipelines/loading.py, LoadOccGTFromFile; see
docs/official-behaviour.md#occ3d-labels.

Three uint8 arrays indexed [x, y, z] in the LiDAR-keyframe ego frame: ``semantics`` (0..17, 17 = free),
``mask_lidar`` and ``mask_camera`` (0/1).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flashocc.atomic import atomic_write
from flashocc.errors import DataError, MissingFileError
from flashocc.grid import OCC3D_NUSCENES, OccGrid

LABEL_KEYS: tuple[str, ...] = ("semantics", "mask_lidar", "mask_camera")
LABELS_FILE = "labels.npz"


@dataclass
class OccLabels:
    semantics: np.ndarray    # (Dx, Dy, Dz) uint8, 0..num_classes-1
    mask_lidar: np.ndarray   # (Dx, Dy, Dz) uint8 0/1
    mask_camera: np.ndarray  # (Dx, Dy, Dz) uint8 0/1


def labels_file(occ_dir: str | os.PathLike) -> Path:
    """Info files store the sample's folder; the archive inside it is always ``labels.npz``."""
    occ_dir = Path(occ_dir)
    return occ_dir if occ_dir.suffix == ".npz" else occ_dir / LABELS_FILE


def read_npz(path: str | os.PathLike, keys: Sequence[str], where: str | None = None,
             what: str = ".npz archive") -> tuple[dict[str, np.ndarray], list[str]]:
    """The arrays under ``keys`` that an ``.npz`` archive holds, and the names of all its members.

    Never unpickles (``allow_pickle=False``: an object array is refused, not built). Every way a
    corrupt archive fails (``zipfile.BadZipFile``, ``zlib.error``, ``struct.error``, ``EOFError``,
    ``NotImplementedError`` for an unknown compression, a member that cannot be reshaped, ...) becomes
    a ``DataError`` "<where>: corrupt <what> (...)", ``where`` being the path unless given. Missing keys
    are left to the caller.
    """
    path = Path(path)
    where = where or str(path)
    if not path.is_file():
        raise MissingFileError(f"{where}: file not found")
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise DataError(f"{where}: corrupt {what}: not a readable .npz ({type(exc).__name__}: {_clip(exc)})") from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):  # np.load also reads a bare .npy
        raise DataError(f"{where}: corrupt {what}: expected an .npz (a zip of arrays), found a single .npy array")
    with archive:
        present = list(archive.files)
        try:
            arrays = {key: archive[key] for key in keys if key in present}  # reading a member decompresses it
        except Exception as exc:
            raise DataError(f"{where}: corrupt {what} ({type(exc).__name__}: {_clip(exc)})") from exc
    for key, value in arrays.items():
        if not isinstance(value, np.ndarray):  # NpzFile hands back the raw bytes of a member not named .npy
            raise DataError(f"{where}: corrupt {what}: member '{key}' is not a .npy array")
    return arrays, present


def _clip(exc: BaseException, limit: int = 300) -> str:
    text = str(exc)
    return text if len(text) <= limit else text[:limit] + "..."


def load_labels(path: str | os.PathLike, token: str = "?", grid: OccGrid = OCC3D_NUSCENES) -> OccLabels:
    """Load and validate one ``labels.npz`` (or the folder holding it).

    Errors name the sample token and the file: missing file (``MissingFileError``); unreadable archive,
    missing key, wrong shape or dtype, labels out of range (``DataError``).
    """
    path = labels_file(path)
    where = f"sample {token}: {path}"
    if not path.is_file():
        raise MissingFileError(f"{where}: Occ3D labels not found; expected gts/<scene>/<token>/labels.npz "
                               f"(pass the Occ3D 'gts' folder with --occ when building infos)")
    arrays, present = read_npz(path, LABEL_KEYS, where, "labels archive")
    missing = [key for key in LABEL_KEYS if key not in arrays]
    if missing:
        raise DataError(f"{where}: missing keys {missing}; expected {list(LABEL_KEYS)}, found {present}")
    labels = OccLabels(**arrays)
    validate_labels(labels, where, grid)
    return labels


def validate_labels(labels: OccLabels, where: str, grid: OccGrid = OCC3D_NUSCENES) -> None:
    for key in LABEL_KEYS:
        arr = getattr(labels, key)
        if arr.shape != grid.shape or arr.dtype != np.uint8:
            raise DataError(f"{where}: '{key}' must be uint8 {grid.shape}, found {arr.dtype} {arr.shape}")
    top = int(labels.semantics.max(initial=0))
    if top >= grid.num_classes:
        bad = np.argwhere(labels.semantics >= grid.num_classes)[0].tolist()
        raise DataError(f"{where}: 'semantics' has label {top} (e.g. at {bad}); expected 0..{grid.num_classes - 1}")
    for key in ("mask_lidar", "mask_camera"):
        if int(getattr(labels, key).max(initial=0)) > 1:
            raise DataError(f"{where}: '{key}' must hold 0/1, found {int(getattr(labels, key).max())}")


def save_labels(labels: OccLabels, path: str | os.PathLike, grid: OccGrid = OCC3D_NUSCENES) -> Path:
    """Write ``labels.npz`` (compressed, as Occ3D does) atomically; ``path`` may be the sample folder."""
    path = labels_file(path)
    validate_labels(labels, str(path), grid)
    with atomic_write(path) as f:
        np.savez_compressed(f, **{key: getattr(labels, key) for key in LABEL_KEYS})
    return path
