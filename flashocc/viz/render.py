"""3D voxel view without a 3D library: numpy face culling + Pillow polygons (painter's algorithm).

Only faces between a drawn voxel and a free (or outside) neighbour can be seen, and of those only
the ones turned towards the camera, so the full 200x200x16 grid reduces to tens of thousands of
quads. They are projected with a pinhole chase camera, sorted far-to-near and filled with Pillow,
which costs about a microsecond per quad; a full Occ3D frame renders in a fraction of a second
(docs/benchmarks.md, Visualization). matplotlib's ``ax.voxels`` takes minutes on the same grid.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from flashocc.grid import OCC3D_NUSCENES, OccGrid
from flashocc.viz.bev import add_legend_strip, render_bev
from flashocc.viz.common import (
    BACKGROUND, EGO_COLOR, check_labels, check_mask, ego_box_index, legend_entries, occupied, palette, tile,
)

# Light from above, slightly from the front-left, so the three visible sides of a voxel differ.
_LIGHT = np.array([0.35, 0.45, 1.0]) / np.linalg.norm([0.35, 0.45, 1.0])
_AMBIENT = 0.45


@dataclass(frozen=True)
class ChaseCamera:
    """Pinhole camera behind and above the ego car, looking forward (ego frame, metres, degrees).

    The eye sits ``behind`` metres behind the ego origin (x = -behind), ``side`` metres to its left
    and ``height`` metres up, looking at the point ``look_ahead`` metres ahead of the ego at z = 0.
    ``fov_deg`` is the vertical field of view. The defaults show the Occ3D grid ahead of and beside
    the ego with the ego near the picture centre; the official Open3D view (FlashOCC@4084861
    tools/analysis_tools/vis_occ.py, main) is lower (about 13 degrees) and hides much of the scene
    behind the first objects.
    """

    behind: float = 42.0
    height: float = 46.0
    look_ahead: float = 2.0
    side: float = 0.0
    fov_deg: float = 52.0

    def eye(self) -> np.ndarray:
        return np.array([-self.behind, self.side, self.height])

    def world_to_camera(self) -> np.ndarray:
        """(3, 4) [R | t] from ego to camera coordinates (x right, y down, z forward)."""
        eye = self.eye()
        forward = np.array([self.look_ahead, 0.0, 0.0]) - eye
        forward /= np.linalg.norm(forward)
        right = np.cross(forward, [0.0, 0.0, 1.0])
        right /= np.linalg.norm(right)
        up = np.cross(right, forward)
        rot = np.stack([right, -up, forward])
        return np.concatenate([rot, (-rot @ eye)[:, None]], axis=1)

    def intrinsics(self, width: int, height: int) -> np.ndarray:
        focal = 0.5 * height / math.tan(math.radians(self.fov_deg) / 2)
        return np.array([[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]])


def face_shade(normals: np.ndarray) -> np.ndarray:
    """Brightness factor (F,) of faces with unit ``normals`` (F, 3): ambient plus a Lambert term."""
    return _AMBIENT + (1 - _AMBIENT) * np.clip(np.asarray(normals, dtype=np.float64) @ _LIGHT, 0.0, None)


# Unit-square corner offsets (in voxel units) of the face on each side, walking around the quad.
def _face_corners(axis: int, sign: int) -> np.ndarray:
    b, c = [a for a in range(3) if a != axis]
    corners = np.zeros((4, 3))
    corners[:, axis] = 1.0 if sign > 0 else 0.0
    corners[:, b] = (0, 1, 1, 0)
    corners[:, c] = (0, 0, 1, 1)
    return corners


def visible_faces(color_ids: np.ndarray, eye: np.ndarray, grid: OccGrid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Faces of drawn voxels (``color_ids >= 0``) that border an empty cell and face ``eye``.

    Returns ``corners`` (F, 4, 3) metres in the ego frame, ``normals`` (F, 3) and ``ids`` (F,)
    (the colour id of the voxel each face belongs to). Each voxel spans its exact extent
    [lower + i*size, lower + (i+1)*size]; the official visualiser builds its Open3D voxels from the
    corner points i*size + lower (FlashOCC@4084861 tools/analysis_tools/vis_occ.py, voxel2points), which
    can shift them; we do not copy that.
    """
    drawn = color_ids >= 0
    lower = np.asarray(grid.lower, dtype=np.float64)
    size = np.asarray(grid.voxel_size, dtype=np.float64)
    padded = np.pad(drawn, 1, constant_values=False)
    all_corners, all_normals, all_ids = [], [], []
    for axis in range(3):
        n = grid.shape[axis]
        planes = lower[axis] + np.arange(n + 1) * size[axis]  # face planes along this axis
        for sign in (1, -1):
            # A face is seen from the eye only if the eye is on its outer side (back-face culling).
            if sign > 0:
                toward = eye[axis] > planes[1:]
            else:
                toward = eye[axis] < planes[:-1]
            if not toward.any():
                continue
            neighbour = [slice(1, -1)] * 3
            neighbour[axis] = slice(1 + sign, n + 1 + sign)
            exposed = drawn & ~padded[tuple(neighbour)]
            view = [None, None, None]
            view[axis] = slice(None)
            exposed &= toward[tuple(view)]
            idx = np.argwhere(exposed)
            if len(idx) == 0:
                continue
            corners = lower + (idx[:, None, :] + _face_corners(axis, sign)[None]) * size
            normal = np.zeros(3)
            normal[axis] = sign
            all_corners.append(corners)
            all_normals.append(np.broadcast_to(normal, (len(idx), 3)))
            all_ids.append(color_ids[idx[:, 0], idx[:, 1], idx[:, 2]])
    if not all_corners:
        return np.zeros((0, 4, 3)), np.zeros((0, 3)), np.zeros((0,), dtype=np.int64)
    return np.concatenate(all_corners), np.concatenate(all_normals), np.concatenate(all_ids).astype(np.int64)


def draw_faces(
    image: Image.Image,
    corners: np.ndarray,
    normals: np.ndarray,
    colors: np.ndarray,
    world_to_camera: np.ndarray,
    intrinsics: np.ndarray,
    edges: bool = True,
    near: float = 0.5,
) -> int:
    """Project faces (F, 4, 3) and paint them far-to-near onto ``image`` in place; returns the count drawn.

    ``colors`` (F, 3) uint8 are shaded by a fixed light; faces with a corner closer than ``near``
    metres to the camera are dropped. With ``edges`` each face larger than a few pixels gets a
    darker outline, a light version of the official wireframe (vis_occ.py, show_occ).
    """
    if len(corners) == 0:
        return 0
    rot, trans = world_to_camera[:, :3], world_to_camera[:, 3]
    cam = corners @ rot.T + trans  # (F, 4, 3) camera coordinates
    keep = (cam[..., 2] > near).all(axis=1)
    cam, normals, colors = cam[keep], normals[keep], colors[keep]
    uv = cam @ np.asarray(intrinsics).T
    uv = uv[..., :2] / uv[..., 2:3]  # (F, 4, 2) pixels
    width, height = image.size
    on_screen = ((uv[..., 0].max(1) >= 0) & (uv[..., 0].min(1) < width)
                 & (uv[..., 1].max(1) >= 0) & (uv[..., 1].min(1) < height))
    cam, normals, colors, uv = cam[on_screen], normals[on_screen], colors[on_screen], uv[on_screen]
    # Painter's algorithm: farthest face centre first, so nearer faces overwrite it.
    order = np.argsort(-np.square(cam.mean(axis=1)).sum(axis=1), kind="stable")
    fill = np.clip(colors * face_shade(normals)[:, None], 0, 255).astype(np.uint8)
    # Outlines on faces smaller than ~5 px would darken the far field into a grey wash.
    span = uv.max(axis=1) - uv.min(axis=1)
    big = (span.min(axis=1) > 5.0) & edges
    # Few distinct (fill, outline) styles: build their Pillow arguments once, not once per face.
    key = (fill.astype(np.int64) @ np.array([1 << 17, 1 << 9, 2])) + big
    styles, style_of = np.unique(key[order], return_inverse=True)
    args = []
    for k in styles.tolist():
        rgb = ((k >> 17) & 255, (k >> 9) & 255, (k >> 1) & 255)
        args.append((rgb, tuple(int(c * 0.72) for c in rgb) if k & 1 else None))
    draw = ImageDraw.Draw(image)
    polys = uv[order].reshape(len(order), 8).tolist()
    for poly, k in zip(polys, style_of.ravel().tolist()):
        f, o = args[k]
        draw.polygon(poly, fill=f, outline=o)
    return len(polys)


def color_ids_for(
    labels: np.ndarray, grid: OccGrid, mask: np.ndarray | None, draw_ego: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """(Dx, Dy, Dz) colour ids (-1 = not drawn) and the (K, 3) uint8 table they index.

    Class c maps to colour c; the ego landmark box (free cells only) gets the extra last colour.
    """
    labels = check_labels(labels, grid)
    ids = np.where(occupied(labels, grid, check_mask(mask, grid)), labels.astype(np.int64), -1)
    table = palette(grid, extra=[EGO_COLOR])
    if draw_ego:
        box = ids[ego_box_index(grid)]
        box[box < 0] = len(table) - 1
    return ids, table


def render_voxels(
    labels: np.ndarray,
    mask: np.ndarray | None = None,
    grid: OccGrid = OCC3D_NUSCENES,
    size: tuple[int, int] = (1024, 720),
    camera: ChaseCamera = ChaseCamera(),
    legend: bool = True,
    draw_ego: bool = True,
    edges: bool = True,
    supersample: int = 2,
) -> Image.Image:
    """3D view of an occupancy volume from a chase camera, as an RGB image.

    ``labels`` is (Dx, Dy, Dz) indexed [x, y, z] in the ego frame (x forward, y left, z up); free
    voxels (and voxels where ``mask`` is False, e.g. ``mask_camera``) are not drawn. Colours are
    ``grid.colors`` (the official Open3D ones, vis_occ.py colormap_to_colors). ``size`` is
    (width, height) of the 3D view; ``legend`` adds a 190 px strip on the right. ``supersample`` renders at that
    factor and downsamples, for smooth edges. ``draw_ego`` adds a dark box where the ego car is.
    """
    ids, table = color_ids_for(labels, grid, mask, draw_ego)
    entries = legend_entries(ids[ids < grid.num_classes], grid) if legend else []
    if legend and draw_ego:
        entries.append(("ego car", EGO_COLOR))
    return render_color_ids(ids, table, grid, size=size, camera=camera, legend=entries or None,
                            edges=edges, supersample=supersample)


def render_color_ids(
    ids: np.ndarray,
    table: np.ndarray,
    grid: OccGrid = OCC3D_NUSCENES,
    size: tuple[int, int] = (1024, 720),
    camera: ChaseCamera = ChaseCamera(),
    legend: list[tuple[str, tuple[int, int, int]]] | None = None,
    edges: bool = True,
    supersample: int = 2,
) -> Image.Image:
    """3D view of a volume of colour ids (-1 = not drawn) indexing ``table`` (K, 3) uint8.

    The building block of ``render_voxels``, also used for error maps; ``legend`` (name,
    colour) pairs, when given, go in a strip on the right.
    """
    width, height = size
    ss = max(int(supersample), 1)
    canvas = Image.new("RGB", (width * ss, height * ss), BACKGROUND)
    corners, normals, face_ids = visible_faces(ids, camera.eye(), grid)
    draw_faces(canvas, corners, normals, np.asarray(table)[face_ids].astype(np.float64), camera.world_to_camera(),
               camera.intrinsics(width * ss, height * ss), edges=edges)
    image = canvas.resize((width, height), Image.BOX) if ss > 1 else canvas
    if legend:
        image = add_legend_strip(image, legend)
    return image


def side_by_side(view: Image.Image, bev: Image.Image) -> Image.Image:
    """A 3D view with the BEV map beside it, scaled to the view's height (one video frame)."""
    return tile([view, bev.resize((view.height, view.height), Image.NEAREST)], columns=2)


def render_overview(
    labels: np.ndarray,
    mask: np.ndarray | None = None,
    grid: OccGrid = OCC3D_NUSCENES,
    size: tuple[int, int] = (1024, 720),
) -> Image.Image:
    """The 3D view (with legend) and the BEV map side by side: one picture per frame, for demos and videos."""
    return side_by_side(render_voxels(labels, mask=mask, grid=grid, size=size), render_bev(labels, grid, mask=mask))


def project_point(point: np.ndarray, size: tuple[int, int], camera: ChaseCamera = ChaseCamera()) -> tuple[float, float]:
    """Pixel (u, v) of an ego-frame point in the 3D view of ``size`` (without the legend strip)."""
    w2c = camera.world_to_camera()
    cam = w2c[:, :3] @ np.asarray(point, dtype=np.float64) + w2c[:, 3]
    uvw = camera.intrinsics(*size) @ cam
    return float(uvw[0] / uvw[2]), float(uvw[1] / uvw[2])
