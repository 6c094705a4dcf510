"""Headless occupancy pictures: 3D voxel views, BEV maps, comparisons, camera overlays and videos.

Everything takes (Dx, Dy, Dz) label volumes indexed [x, y, z] in the ego frame (x forward, y left,
z up; 17 = free for Occ3D) and returns PIL images; only Pillow and numpy are needed. Example::

    from flashocc.viz import render_bev, render_voxels, save_image
    save_image(render_voxels(labels, mask=mask_camera), "occ_3d.png")
    save_image(render_bev(labels), "occ_bev.png")
"""
from flashocc.viz.bev import bev_labels, render_bev
from flashocc.viz.cameras import CameraCalib, overlay_occupancy, render_cameras
from flashocc.viz.common import load_labels_npz, save_image
from flashocc.viz.compare import ErrorCounts, count_errors, error_volume, render_comparison, render_error_bev
from flashocc.viz.instances import instance_colors, render_instances
from flashocc.viz.pyvista_backend import render_voxels_pyvista
from flashocc.viz.render import ChaseCamera, render_overview, render_voxels
from flashocc.viz.run import VizOutputs, visualize
from flashocc.viz.video import save_sequence_gif, save_sequence_mp4

__all__ = [
    "CameraCalib", "ChaseCamera", "ErrorCounts", "VizOutputs", "bev_labels", "count_errors", "error_volume",
    "load_labels_npz", "overlay_occupancy", "render_bev", "render_overview", "render_cameras", "render_comparison",
    "render_error_bev", "instance_colors", "render_instances", "render_voxels", "render_voxels_pyvista", "save_image", "save_sequence_gif",
    "save_sequence_mp4", "visualize",
]
