"""Render times of the visualisers on the full 200x200x16 Occ3D grid (medians over --repeats runs).

    python benchmarks/viz.py [--labels ../shared/fixtures/occ3d_gt/.../labels.npz] [--repeats 7]

Prints a markdown table for docs/benchmarks.md (Visualization). The dense row is a worst case:
every voxel of the grid occupied with probability 0.3 and a random class.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from flashocc.geometry import NUSCENES_CAMERAS
from flashocc.grid import OCC3D_NUSCENES as GRID
from flashocc.viz import (
    CameraCalib, ChaseCamera, load_labels_npz, render_bev, render_cameras, render_comparison, render_voxels,
)
from flashocc.viz.render import color_ids_for, visible_faces

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
DEFAULT_LABELS = FIXTURES / "occ3d_gt" / "scene-1077" / "29796060110c4163b07f06eff4af0753" / "labels.npz"


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up (font loading, numpy caches)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def face_count(labels, mask=None) -> int:
    ids, _ = color_ids_for(labels, GRID, mask, draw_ego=True)
    return len(visible_faces(ids, ChaseCamera().eye(), GRID)[0])


def camera_inputs():
    from flashocc.data.infos import load_infos

    sample = load_infos(FIXTURES / "nuscenes_sample" / "n015-2018-07-24-11-22-45+0800.pkl")[0]
    root = FIXTURES / "nuscenes_sample"
    images = [root / Path(sample.cams[n].image_path).name for n in NUSCENES_CAMERAS]
    cams = [CameraCalib(sample.cams[n].sensor2ego, sample.cams[n].intrinsics) for n in NUSCENES_CAMERAS]
    return images, cams


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labels", type=Path, default=DEFAULT_LABELS)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    labels, mask = load_labels_npz(args.labels, GRID)
    rng = np.random.default_rng(0)
    dense = np.where(rng.random(GRID.shape) < 0.3, rng.integers(0, 17, GRID.shape), GRID.free_label).astype(np.uint8)
    pred = np.roll(labels, 2, axis=0)
    rows = [
        ("3D view, Occ3D frame, all voxels (1024x720, 2x supersampled)", face_count(labels),
         lambda: render_voxels(labels)),
        ("3D view, Occ3D frame, mask_camera", face_count(labels, mask), lambda: render_voxels(labels, mask=mask)),
        ("3D view, Occ3D frame, no supersampling", face_count(labels), lambda: render_voxels(labels, supersample=1)),
        ("3D view, dense random grid (30% occupied)", face_count(dense), lambda: render_voxels(dense)),
        ("BEV map (800x800)", None, lambda: render_bev(labels)),
        ("comparison (3 views + 3 BEVs)", None, lambda: render_comparison(pred, labels, mask)),
    ]
    if (FIXTURES / "nuscenes_sample").is_dir():
        images, cams = camera_inputs()
        rows.append(("6 camera overlays (480 px tiles, JPEG decode included)", None,
                     lambda: render_cameras(images, cams, labels)))
    try:
        import pyvista  # noqa: F401
        from flashocc.viz import render_voxels_pyvista
        rows.append(("3D view via pyvista off-screen (optional backend)", None,
                     lambda: render_voxels_pyvista(labels)))
    except ImportError:
        pass
    print("| what | faces drawn | median |")
    print("|---|---|---|")
    for name, faces, fn in rows:
        seconds = median_seconds(fn, args.repeats)
        print(f"| {name} | {'-' if faces is None else f'{faces:,}'} | {seconds * 1000:.0f} ms |", flush=True)


if __name__ == "__main__":
    main()
