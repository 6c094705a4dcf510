"""Optional pyvista/VTK off-screen backend for the 3D voxel view (extra ``flashocc[viz]``).

The same exposed faces as the numpy renderer, as one quad mesh with per-face colours, lit by VTK
and rendered off-screen (no display needed when VTK has an off-screen build, e.g. OSMesa/EGL).
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from flashocc.grid import OCC3D_NUSCENES, OccGrid
from flashocc.viz.render import ChaseCamera, color_ids_for, visible_faces


def _import_pyvista():
    try:
        import pyvista
    except ImportError as exc:
        raise ImportError('the pyvista backend needs pyvista and VTK: pip install "flashocc[viz]" '
                          "(the default numpy renderer, render_voxels, needs neither)") from exc
    return pyvista


def render_pyvista(
    labels: np.ndarray,
    mask: np.ndarray | None = None,
    grid: OccGrid = OCC3D_NUSCENES,
    size: tuple[int, int] = (1024, 720),
    camera: ChaseCamera = ChaseCamera(),
    draw_ego: bool = True,
    edges: bool = True,
) -> Image.Image:
    """3D view of ``labels`` (Dx, Dy, Dz) [x, y, z] rendered by pyvista off-screen, as an RGB image.

    ``edges`` draws 1 px voxel outlines; turn them off for small pictures, where they dominate.
    """
    pv = _import_pyvista()
    ids, table = color_ids_for(labels, grid, mask, draw_ego)
    # An eye beyond every plane keeps all exposed faces (no back-face culling: VTK does its own).
    far = np.array([np.inf, np.inf, np.inf])
    faces = [visible_faces(ids, far * s, grid) for s in (1, -1)]
    corners = np.concatenate([f[0] for f in faces])
    face_ids = np.concatenate([f[2] for f in faces])
    plotter = pv.Plotter(off_screen=True, window_size=list(size))
    plotter.set_background("white")
    if len(corners):
        points = corners.reshape(-1, 3)
        cells = np.hstack([np.full((len(corners), 1), 4), np.arange(len(points)).reshape(-1, 4)]).ravel()
        mesh = pv.PolyData(points, cells)
        mesh.cell_data["rgb"] = table[face_ids]
        plotter.add_mesh(mesh, scalars="rgb", rgb=True, show_edges=edges, edge_color=(60, 60, 60), line_width=1)
    eye = camera.eye()
    plotter.camera.position = tuple(eye)
    plotter.camera.focal_point = (camera.look_ahead, 0.0, 0.0)
    plotter.camera.up = (0.0, 0.0, 1.0)
    plotter.camera.view_angle = camera.fov_deg
    pixels = plotter.screenshot(return_img=True)
    plotter.close()
    return Image.fromarray(np.ascontiguousarray(pixels[..., :3]), "RGB")


def render_voxels_pyvista(
    labels: np.ndarray,
    mask: np.ndarray | None = None,
    grid: OccGrid = OCC3D_NUSCENES,
    size: tuple[int, int] = (1024, 720),
    camera: ChaseCamera = ChaseCamera(),
    edges: bool = True,
) -> Image.Image:
    """The same view through pyvista/VTK off-screen (VTK lighting, slower). Needs ``flashocc[viz]``."""
    return render_pyvista(labels, mask=mask, grid=grid, size=size, camera=camera, edges=edges)
