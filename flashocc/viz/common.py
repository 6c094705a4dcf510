"""Shared pieces of the visualisers: input checks, npz loading, fonts, legends and atomic saving."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from flashocc.grid import OccGrid

BACKGROUND = (255, 255, 255)
TEXT_COLOR = (20, 20, 20)
EGO_COLOR = (64, 64, 64)
# Typical nuScenes ego car footprint in the ego frame (origin at the rear axle, on the ground):
# about 4.4 m long from 1 m behind the axle, 1.8 m wide and 1.6 m tall. Drawn only as a landmark.
EGO_BOX_LOWER = (-1.0, -0.9, -0.6)
EGO_BOX_UPPER = (3.4, 0.9, 1.0)


def check_labels(labels: np.ndarray, grid: OccGrid, name: str = "labels") -> np.ndarray:
    """Return ``labels`` as an integer array of ``grid.shape`` or raise a ValueError saying what was found."""
    arr = np.asarray(labels)
    if arr.shape != grid.shape:
        raise ValueError(f"{name}: expected an occupancy volume of shape {grid.shape} indexed [x, y, z], "
                         f"found shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name}: expected integer class labels 0..{grid.num_classes - 1}, found dtype {arr.dtype}")
    bad = ((arr < 0) | (arr >= grid.num_classes)) & (arr != grid.ignore_label)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{name}: label {int(arr[where])} at {list(where)}; expected 0..{grid.num_classes - 1} "
                         f"({grid.free_label} = free) or {grid.ignore_label} (ignore)")
    return arr


def check_mask(mask: np.ndarray | None, grid: OccGrid, name: str = "mask") -> np.ndarray | None:
    """Return ``mask`` as a bool array of ``grid.shape`` (or None)."""
    if mask is None:
        return None
    arr = np.asarray(mask)
    if arr.shape != grid.shape:
        raise ValueError(f"{name}: expected a visibility mask of shape {grid.shape}, found shape {arr.shape}")
    return arr.astype(bool)


def occupied(labels: np.ndarray, grid: OccGrid, mask: np.ndarray | None = None) -> np.ndarray:
    """Bool volume of drawn voxels: a real class (not free, not ignore) and inside ``mask`` when given."""
    occ = (labels != grid.free_label) & (labels >= 0) & (labels < grid.num_classes)
    if mask is not None:
        occ &= mask
    return occ


def palette(grid: OccGrid, extra: Sequence[tuple[int, int, int]] = ()) -> np.ndarray:
    """(num_classes + len(extra), 3) uint8 colour table; ``extra`` colours get the next indices."""
    return np.asarray(list(grid.colors) + list(extra), dtype=np.uint8)


def ego_box_index(grid: OccGrid) -> tuple[slice, slice, slice]:
    """Index slices of the voxels covered by the ego car landmark box."""
    lo, _ = grid.points_to_index(np.asarray(EGO_BOX_LOWER) + 1e-6)
    hi, _ = grid.points_to_index(np.asarray(EGO_BOX_UPPER) - 1e-6)
    shape = grid.shape
    return tuple(slice(max(int(a), 0), min(int(b) + 1, n)) for a, b, n in zip(lo, hi, shape))


def font(size: int = 14) -> ImageFont.ImageFont:
    """Pillow's bundled font at ``size`` (Pillow >= 10.1 scales it; older Pillow gets the fixed bitmap font)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def legend_entries(labels_present: np.ndarray, grid: OccGrid) -> list[tuple[str, tuple[int, int, int]]]:
    """(name, colour) for every non-free class whose id appears in ``labels_present``."""
    present = set(int(v) for v in np.unique(labels_present))
    return [(grid.class_names[c], grid.colors[c]) for c in grid.semantic_classes if c in present]


def draw_legend(image: Image.Image, entries: Sequence[tuple[str, tuple[int, int, int]]],
                origin: tuple[int, int], size: int = 14) -> None:
    """Draw colour swatches with names, one per line, from ``origin`` (x, y), in place; "" names leave a gap."""
    draw = ImageDraw.Draw(image)
    fnt = font(size)
    x, y = origin
    step = int(size * 1.5)
    for name, color in entries:
        if not name:  # an empty name is a spacer between groups
            y += step
            continue
        draw.rectangle([x, y, x + size, y + size], fill=tuple(color), outline=(90, 90, 90))
        draw.text((x + size + 6, y - 1), name, fill=TEXT_COLOR, font=fnt)
        y += step


def draw_title(image: Image.Image, text: str, size: int = 16, origin: tuple[int, int] = (8, 6)) -> None:
    """Write ``text`` in the top-left corner, on a white box so it reads over any picture."""
    draw = ImageDraw.Draw(image)
    fnt = font(size)
    left, top, right, bottom = draw.textbbox(origin, text, font=fnt)
    draw.rectangle([left - 4, top - 3, right + 4, bottom + 3], fill=(255, 255, 255))
    draw.text(origin, text, fill=TEXT_COLOR, font=fnt)


def tile(images: Sequence[Image.Image], columns: int, gap: int = 4, background=BACKGROUND) -> Image.Image:
    """Lay images out row by row, ``columns`` per row; each column is as wide as its widest image and
    each row as tall as its tallest."""
    if not images:
        raise ValueError("tile: no images to lay out")
    rows = (len(images) + columns - 1) // columns
    widths = [max(im.width for im in images[c::columns]) for c in range(min(columns, len(images)))]
    heights = [max(im.height for im in images[r * columns:(r + 1) * columns]) for r in range(rows)]
    out = Image.new("RGB", (sum(widths) + gap * (len(widths) - 1), sum(heights) + gap * (rows - 1)), background)
    for i, im in enumerate(images):
        r, c = divmod(i, columns)
        out.paste(im.convert("RGB"), (sum(widths[:c]) + gap * c, sum(heights[:r]) + gap * r))
    return out


def temp_beside(path: Path, suffix: str = ".tmp") -> Path:
    """An empty temp file in ``path``'s folder (created if needed), to be renamed over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    return Path(tmp)


def replace_atomically(tmp: Path, path: Path) -> Path:
    # mkstemp makes owner-only files; pictures are meant to be shared like any other output.
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path


def save_image(image: Image.Image, path: str | os.PathLike) -> Path:
    """Write a PNG/JPEG atomically (temp file in the same folder, then rename); the format follows the suffix."""
    path = Path(path)
    tmp = temp_beside(path)
    try:
        image.save(tmp, format=Image.registered_extensions().get(path.suffix.lower(), "PNG"))
        return replace_atomically(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_labels_npz(path: str | os.PathLike, grid: OccGrid | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Read an Occ3D ``labels.npz`` (key ``semantics``), an official ``pred.npz`` (key ``pred``) or a
    challenge-style ``<token>.npz`` (key ``arr_0``).

    Returns ``(labels, mask_camera)``; the mask is None when the file has none.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"occupancy file not found: {path}")
    with np.load(path, allow_pickle=False) as data:
        keys = list(data.keys())
        key = next((k for k in ("semantics", "pred", "arr_0") if k in data), None)
        if key is None:
            raise ValueError(f"{path}: expected an occupancy volume under key 'semantics' (labels.npz), "
                             f"'pred' (official pred.npz) or 'arr_0', found keys {keys}")
        labels = np.asarray(data[key])
        mask = np.asarray(data["mask_camera"]) if "mask_camera" in data else None
    if grid is not None:
        check_labels(labels, grid, name=f"{path}:{key}")
        check_mask(mask, grid, name=f"{path}:mask_camera")
    return labels, mask
