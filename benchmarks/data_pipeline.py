"""Train-pipeline throughput (decode + augment + normalise, 6 cameras, 256x704) on the real fixture images,
the exact PIL decode (``data.fast_decode=off``) side by side with the reduced JPEG decode (``train``).

Run by hand:  python benchmarks/data_pipeline.py [--samples 24] [--repeats 3] [--workers 0 2] [--depth]
                                                 [--modes off train]
Prints a per-stage CPU-time breakdown for one camera image and, per decode mode and worker count, the median
samples/s and CPU-seconds per sample (this process and its finished workers, from ``os.times``). On a
shared machine samples/s depends on the other jobs; CPU-seconds per sample much less so.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time
from pathlib import Path

import numpy as np

from flashocc.data import jpeg as J
from flashocc.data import transforms as T
from flashocc.data.dataset import DataConfig, OccDataset, build_dataloader
from flashocc.data.infos import load_infos

FIXTURE = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "nuscenes_sample"


def _cpu_seconds() -> float:
    t = os.times()  # children: DataLoader workers, counted once they have exited (they are not persistent)
    return t.user + t.system + t.children_user + t.children_system


def throughput(dataset: OccDataset, workers: int, batch_size: int, repeats: int) -> list[tuple[float, float]]:
    """(samples/s, CPU-seconds per sample) per epoch."""
    runs = []
    for epoch in range(repeats):
        dataset.set_epoch(epoch)
        loader = build_dataloader(dataset, batch_size=batch_size, workers=workers, shuffle=False)
        start, cpu = time.perf_counter(), _cpu_seconds()
        count = sum(len(batch["tokens"]) for batch in loader)  # includes worker start-up, as in training
        wall = time.perf_counter() - start
        del loader  # the workers have exited by now; their CPU time is in os.times
        runs.append((count / wall, (_cpu_seconds() - cpu) / count))
    return runs


def stage_breakdown(root: Path, image_path: str, repeats: int = 10) -> dict[str, float]:
    """Median CPU milliseconds per stage for one 1600x900 JPEG, full and reduced decode (CPU time, not wall
    time: the stages are single-threaded and other jobs on a shared machine would inflate wall time)."""
    path = root / Path(image_path).name
    aug = T.sample_image_aug(DataConfig(), (1600, 900), np.random.default_rng(0), train=True)
    stages = {
        "full decode": lambda _: T.load_image(path, "bench"),
        "resize+crop+flip+rotate": lambda img: T.augment_image(img, aug),
        "normalise (BGR)": T.normalize_image,
        "reduced decode": lambda _: J.load_reduced(path, "bench", aug.resize_dims),
        "reduced resize+crop+...": lambda reduced: J.augment_reduced(reduced, aug),
        "normalise (BGR) ": T.normalize_image,
    }
    times: dict[str, list[float]] = {key: [] for key in stages}
    for _ in range(repeats):
        value = None
        for key, stage in stages.items():
            t0 = time.process_time()
            value = stage(value)
            times[key].append((time.process_time() - t0) * 1e3)
    return {key: statistics.median(v) for key, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=FIXTURE)
    parser.add_argument("--samples", type=int, default=24, help="copies of the fixture keyframe per epoch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--modes", nargs="+", default=["off", "train"], choices=["off", "train"],
                        help="data.fast_decode values to compare (the training set)")
    parser.add_argument("--depth", action="store_true", help="also build LiDAR gt_depth maps")
    args = parser.parse_args()

    (sample,) = load_infos(args.root / "n015-2018-07-24-11-22-45+0800.pkl")
    samples = [dataclasses.replace(sample, token=f"{sample.token}-{i}", timestamp=sample.timestamp + i)
               for i in range(args.samples)]
    for stage, ms in stage_breakdown(args.root, sample.cams["CAM_FRONT"].image_path).items():
        print(f"  {stage:<26} {ms:7.1f} CPU-ms / image")
    for workers in args.workers:
        for mode in args.modes:
            config = DataConfig(load_occ=False, load_depth=args.depth, fast_decode=mode)
            dataset = OccDataset(args.root, samples, config, train=True, aug_seed=0)
            runs = throughput(dataset, workers, args.batch_size, args.repeats)
            rate = statistics.median(r for r, _ in runs)
            cpu = statistics.median(c for _, c in runs)
            print(f"workers={workers} fast_decode={mode:<5}: median {rate:.2f} samples/s, {cpu:.3f} CPU-s/sample "
                  f"({1 / cpu:.2f} samples per CPU-second; runs: {', '.join(f'{r:.2f}' for r, _ in runs)} samples/s; "
                  f"{args.samples} samples, batch {args.batch_size}, depth={'on' if args.depth else 'off'})")


if __name__ == "__main__":
    main()
