"""Occ3D-nuScenes ground truth: ``gts/<scene>/<token>/labels.npz``.

Format: Occ3D@6e8563a README.md; loaded like FlashOCC@4084861
projects/mmdet3d_plugin/datasets/pipelines/loading.py, LoadOccGTFromFile; see
docs/official-behaviour.md#occ3d-labels.

Three uint8 arrays indexed [x, y, z] in the LiDAR-keyframe ego frame: ``semantics`` (0..17, 17 = free),
``mask_lidar`` and ``mask_camera`` (0/1). The panoptic variant (``occ3d_panoptic/<scene>/<token>/labels.npz``,
``flashocc.data.panoptic``) adds a fourth, ``instances``: uint8 segment ids, 0 on free voxels.
"""
from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flashocc.atomic import atomic_write
from flashocc.errors import DataError, MissingFileError
from flashocc.grid import OCC3D_NUSCENES, OccGrid

LABEL_KEYS: tuple[str, ...] = ("semantics", "mask_lidar", "mask_camera")
INSTANCES_KEY = "instances"
LABELS_FILE = "labels.npz"


@dataclass
class OccLabels:
    semantics: np.ndarray    # (Dx, Dy, Dz) uint8, 0..num_classes-1
    mask_lidar: np.ndarray   # (Dx, Dy, Dz) uint8 0/1
    mask_camera: np.ndarray  # (Dx, Dy, Dz) uint8 0/1
    instances: np.ndarray | None = None  # (Dx, Dy, Dz) uint8 segment ids, 0 on free voxels (panoptic files)


def labels_file(occ_dir: str | os.PathLike) -> Path:
    """Info files store the sample's folder; the archive inside it is always ``labels.npz``."""
    occ_dir = Path(occ_dir)
    return occ_dir if occ_dir.suffix == ".npz" else occ_dir / LABELS_FILE


def read_npz(path: str | os.PathLike, keys: Sequence[str], where: str | None = None,
             what: str = ".npz archive") -> tuple[dict[str, np.ndarray], list[str]]:
    """The arrays under ``keys`` that an ``.npz`` archive holds, and the names of all its members.

    Never unpickles (an object array is refused, not built) and checks each member's CRC (``np.load``
    reads only as far as the array ends, so a flipped byte in a stored member would pass). Every way a
    corrupt archive fails (``zipfile.BadZipFile``, ``zlib.error``, ``struct.error``, ``EOFError``,
    ``NotImplementedError`` for an unknown compression, a header that does not parse or does not fit
    the data, ...) becomes a ``DataError`` "<where>: corrupt <what> (...)", ``where`` being the path
    unless given. Missing keys are left to the caller.
    """
    path = Path(path)
    where = where or str(path)
    if not path.is_file():
        raise MissingFileError(f"{where}: file not found")
    arrays: dict[str, np.ndarray] = {}
    try:
        with open(path, "rb") as f:
            if f.read(6) == b"\x93NUMPY":
                raise DataError(f"{where}: corrupt {what}: expected an .npz (a zip of arrays), found a single .npy")
        with zipfile.ZipFile(path) as archive:
            members = {info.filename: info for info in archive.infolist()}
            present = [name[:-4] if name.endswith(".npy") else name for name in members]
            for key in keys:
                info = members.get(f"{key}.npy")
                if info is None:
                    if key in members:  # np.savez names every member <key>.npy
                        raise DataError(f"{where}: corrupt {what}: member '{key}' is not a .npy array")
                    continue
                if info.file_size > MAX_MEMBER_BYTES:
                    raise DataError(f"{where}: corrupt {what}: member '{info.filename}' claims {info.file_size} "
                                    f"bytes, more than the {MAX_MEMBER_BYTES} an occupancy volume needs")
                raw = archive.read(info)  # reads to the member's end, which checks its CRC-32
                arrays[key] = np.lib.format.read_array(io.BytesIO(raw), allow_pickle=False)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{where}: corrupt {what} ({_reason(exc)})") from exc
    return arrays, present


MAX_MEMBER_BYTES = 1 << 30  # a guard against zip bombs: a 512x512x40 int64 volume is 84 MB


def _reason(exc: BaseException, limit: int = 300) -> str:
    """``zlib.error: ...`` (the module says which library failed where the bare class name does not)."""
    kind = type(exc).__name__ if type(exc).__module__ == "builtins" else f"{type(exc).__module__}.{type(exc).__name__}"
    text = str(exc)
    return f"{kind}: {text if len(text) <= limit else text[:limit] + '...'}"


def load_labels(path: str | os.PathLike, token: str = "?", grid: OccGrid = OCC3D_NUSCENES,
                instances: bool = False) -> OccLabels:
    """Load and validate one ``labels.npz`` (or the folder holding it); ``instances`` also reads (and
    requires) the panoptic ``instances`` array.

    Errors name the sample token and the file: missing file (``MissingFileError``); unreadable archive,
    missing key, wrong shape or dtype, labels out of range (``DataError``).
    """
    path = labels_file(path)
    where = f"sample {token}: {path}"
    if not path.is_file():
        raise MissingFileError(f"{where}: Occ3D labels not found; expected gts/<scene>/<token>/labels.npz "
                               f"(pass the Occ3D 'gts' folder with --occ when building infos)")
    keys = LABEL_KEYS + ((INSTANCES_KEY,) if instances else ())
    arrays, present = read_npz(path, keys, where, "labels archive")
    missing = [key for key in LABEL_KEYS if key not in arrays]
    if missing:
        raise DataError(f"{where}: missing keys {missing}; expected {list(LABEL_KEYS)}, found {present}")
    if instances and INSTANCES_KEY not in arrays:
        raise DataError(f"{where}: no '{INSTANCES_KEY}' array (found {present}); instance ids come from the "
                        f"Occ3D-panoptic labels, occ3d_panoptic/<scene>/<token>/labels.npz "
                        f"(write them with 'flashocc data panoptic'; a synthetic set older than its instance ids: "
                        f"regenerate it with 'flashocc data synth')")
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
    inst = labels.instances
    if inst is not None:
        if inst.shape != grid.shape or inst.dtype != np.uint8:
            raise DataError(f"{where}: '{INSTANCES_KEY}' must be uint8 {grid.shape}, found {inst.dtype} {inst.shape}")
        # Every writer (SparseOcc@af4d9df gen_instance_info.py, ours) leaves free voxels at id 0.
        on_free = (inst != 0) & (labels.semantics == grid.free_label)
        if on_free.any():
            bad = np.argwhere(on_free)[0].tolist()
            raise DataError(f"{where}: '{INSTANCES_KEY}' has id {int(inst[tuple(bad)])} on a free voxel (e.g. at "
                            f"{bad}); expected 0 wherever 'semantics' is {grid.free_label} (free)")


def save_labels(labels: OccLabels, path: str | os.PathLike, grid: OccGrid = OCC3D_NUSCENES) -> Path:
    """Write ``labels.npz`` (compressed, as Occ3D does) atomically; ``path`` may be the sample folder."""
    path = labels_file(path)
    validate_labels(labels, str(path), grid)
    with atomic_write(path) as f:
        arrays = {key: getattr(labels, key) for key in LABEL_KEYS}
        if labels.instances is not None:
            arrays[INSTANCES_KEY] = labels.instances
        np.savez_compressed(f, **arrays)
    return path
