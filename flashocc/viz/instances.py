"""Panoptic pictures: every instance of a detection class in its own colour, the other classes faded.

An instance's colour is a function of its id alone (golden-ratio hue steps), so an object whose id
persists from frame to frame keeps its colour in every picture and video frame. Reads the
Occ3D-panoptic ``instances`` array (``flashocc data panoptic``, the synthetic set) and the official
``pano_inst`` of the panoptic models (stuff voxels there carry their class id as instance id).
"""
from __future__ import annotations

import colorsys
import os
from pathlib import Path

import numpy as np
from PIL import Image

from flashocc.grid import OCC3D_NUSCENES, OccGrid
from flashocc.viz.bev import draw_ego_marker, to_map_orientation
from flashocc.viz.common import BACKGROUND, check_labels, check_mask, occupied
from flashocc.viz.render import ChaseCamera, render_color_ids, side_by_side

INSTANCE_KEYS: tuple[str, ...] = ("instances", "pano_inst")
# Classes drawn per instance: the detection classes, whose Occ3D-panoptic ids are one per box.
INSTANCE_CLASSES: tuple[str, ...] = ("barrier", "bicycle", "bus", "car", "construction_vehicle", "motorcycle",
                                     "pedestrian", "traffic_cone", "trailer", "truck")
_FADE = 0.65          # other classes: this share of the way to white, so instances stand out
_GOLDEN = 0.618033988749895


def instance_colors(ids: np.ndarray) -> np.ndarray:
    """(N, 3) uint8 colour of each instance id: the same id always gets the same colour."""
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    out = np.zeros((len(ids), 3), np.uint8)
    for i, v in enumerate(ids.tolist()):
        hue = (v * _GOLDEN) % 1.0
        sat = 0.65 + 0.3 * ((v * 7) % 3) / 2          # three saturation and value steps keep near hues apart
        val = 0.95 - 0.2 * ((v * 5) % 3) / 2
        out[i] = np.round(np.asarray(colorsys.hsv_to_rgb(hue, sat, val)) * 255)
    return out


def instance_color_ids(labels: np.ndarray, instances: np.ndarray, grid: OccGrid = OCC3D_NUSCENES,
                       mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """(Dx, Dy, Dz) colour ids (-1 = not drawn), the (K, 3) uint8 table they index and the instance count.

    Colour c < num_classes is class c faded (other classes, and instance-class voxels with id 0); the
    entries after them are one per instance id present.
    """
    labels = check_labels(labels, grid)
    instances = np.asarray(instances)
    if instances.shape != labels.shape or not np.issubdtype(instances.dtype, np.integer):
        raise ValueError(f"instances: expected integer ids of shape {labels.shape}, found {instances.dtype} "
                         f"{instances.shape}")
    drawn = occupied(labels, grid, check_mask(mask, grid))
    per_instance = drawn & np.isin(labels, [grid.class_names.index(n) for n in INSTANCE_CLASSES
                                            if n in grid.class_names]) & (instances > 0)
    present, rank = np.unique(instances[per_instance], return_inverse=True)
    ids = np.where(drawn, labels.astype(np.int64), -1)
    ids[per_instance] = grid.num_classes + rank.reshape(-1)
    faded = np.asarray(grid.colors, np.float64) * (1 - _FADE) + 255 * _FADE
    table = np.concatenate([np.round(faded).astype(np.uint8), instance_colors(present)])
    return ids, table, len(present)


def instance_bev(ids: np.ndarray, table: np.ndarray, grid: OccGrid = OCC3D_NUSCENES, scale: int = 4,
                 draw_ego: bool = True) -> Image.Image:
    """Top-down map of colour ids (``instance_color_ids``): each column shows its highest drawn voxel,
    forward up and left on the left, ``scale`` px per voxel (``flashocc.viz.bev`` layout)."""
    drawn = ids >= 0
    top = grid.shape[2] - 1 - np.argmax(drawn[:, :, ::-1], axis=2)
    column = np.take_along_axis(ids, top[:, :, None], axis=2)[:, :, 0]
    rgb = np.full((*column.shape, 3), BACKGROUND, np.uint8)
    has = drawn.any(axis=2)
    rgb[has] = table[column[has]]
    rgb = np.repeat(np.repeat(to_map_orientation(rgb), scale, axis=0), scale, axis=1)
    image = Image.fromarray(np.ascontiguousarray(rgb), "RGB")
    if draw_ego:
        draw_ego_marker(image, grid, scale)
    return image


def render_instances(labels: np.ndarray, instances: np.ndarray, mask: np.ndarray | None = None,
                     grid: OccGrid = OCC3D_NUSCENES, size: tuple[int, int] = (1024, 720),
                     camera: ChaseCamera = ChaseCamera()) -> Image.Image:
    """The 3D view (with a legend) and the BEV map of one panoptic volume side by side, coloured by instance."""
    ids, table, count = instance_color_ids(labels, instances, grid, mask)
    legend = [(f"{count} instances", (60, 60, 60)), ("", (0, 0, 0))]
    legend += [(grid.class_names[c], tuple(int(v) for v in table[c])) for c in grid.semantic_classes
               if (ids == c).any()]
    view = render_color_ids(ids, table, grid, size=size, camera=camera, legend=legend)
    return side_by_side(view, instance_bev(ids, table, grid))


def load_instances_npz(path: str | os.PathLike, grid: OccGrid = OCC3D_NUSCENES) -> np.ndarray | None:
    """The instance ids of a label file (``instances`` or ``pano_inst``), None when it has none."""
    from flashocc.data.occ3d import read_npz

    arrays, _ = read_npz(Path(path), INSTANCE_KEYS, what="label archive")
    key = next((k for k in INSTANCE_KEYS if k in arrays), None)
    if key is None:
        return None
    inst = arrays[key]
    if inst.shape != grid.shape or not np.issubdtype(inst.dtype, np.integer):
        raise ValueError(f"{path}:{key}: expected integer instance ids of shape {grid.shape}, found "
                         f"{inst.dtype} {inst.shape}")
    return inst
