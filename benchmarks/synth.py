"""Synthetic world generation speed (frames/s, written to disk) and the README preview picture.

    python benchmarks/synth.py                       # 1 and 2 workers, 8 frames x 3 repeats at 704x396
    python benchmarks/synth.py --preview docs/images/synth_frame.png --frames 0

Frames/s counts everything `flashocc data synth` does per frame: ray casting the six cameras,
the LiDAR sweep, voxelising the labels, both visibility masks, JPEG/npz/bin writing. The median
over repeats is printed; the machine is noted by hand in docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from PIL import Image

from flashocc.data.synth import SynthConfig, generate_synthetic_set, nuscenes_rig, scene_world, simulate_frame
from flashocc.grid import OCC3D_NUSCENES
from flashocc.viz.bev import render_bev
from flashocc.viz.common import draw_title, tile


def measure(frames: int, workers: int, repeats: int, size: tuple[int, int]) -> tuple[list[float], list[float]]:
    """Wall-clock frames/s per run, and (one worker only) CPU seconds per frame of this process."""
    rates, cpu = [], []
    for r in range(repeats):
        config = SynthConfig(scenes=1, frames_per_scene=frames, seed=100 + r, image_size=size, workers=workers,
                             val_scenes=0)
        with tempfile.TemporaryDirectory() as tmp:
            start, start_cpu = time.perf_counter(), time.process_time()
            generate_synthetic_set(Path(tmp) / "set", config)
            rates.append(frames / (time.perf_counter() - start))
            cpu.append((time.process_time() - start_cpu) / frames)
    return rates, cpu


def preview(path: Path, size: tuple[int, int], seed: int = 2, time_s: float = 3.0) -> None:
    """Six camera images (2 x 3, model order) beside the BEV of the labels (camera-visible voxels)."""
    config = SynthConfig(seed=seed, image_size=size)
    rig = nuscenes_rig(size)
    frame = simulate_frame(scene_world(config, 0), rig, time_s)
    half = (size[0] // 2, size[1] // 2)
    views = []
    for cam in rig.cameras:
        im = Image.fromarray(frame.images[cam.name]).resize(half, Image.Resampling.BILINEAR)
        draw_title(im, cam.name, size=12, origin=(6, 4))
        views.append(im)
    grid_img = tile(views, columns=3, gap=3)
    bev = render_bev(frame.semantics, OCC3D_NUSCENES, scale=2, mask=frame.mask_camera.astype(bool), legend=True)
    bev = bev.resize((round(bev.width * grid_img.height / bev.height), grid_img.height), Image.Resampling.NEAREST)
    draw_title(bev, "labels (mask_camera), BEV", size=12, origin=(6, 4))
    out = tile([grid_img, bev], columns=2, gap=6)
    path.parent.mkdir(parents=True, exist_ok=True)
    out.save(path)
    print(f"wrote {path} ({out.width}x{out.height})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=8, help="frames per run (0: skip the timing)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", default="1,2", help="comma list of worker counts")
    parser.add_argument("--image-size", default="704x396")
    parser.add_argument("--preview", type=Path, help="also write the README picture here")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.image_size.lower().split("x"))
    if args.frames > 0:
        for workers in (int(w) for w in args.workers.split(",")):
            rates, cpu = measure(args.frames, workers, args.repeats, size)
            line = (f"workers={workers} image={size[0]}x{size[1]} frames={args.frames} repeats={args.repeats}: "
                    f"median {statistics.median(rates):.2f} frames/s (runs: {', '.join(f'{r:.2f}' for r in rates)})")
            if workers == 1:  # the CPU time of one process says what a free core would do
                line += f"; CPU {statistics.median(cpu):.2f} s/frame"
            print(line)
    if args.preview:
        preview(args.preview, size)


if __name__ == "__main__":
    main()
