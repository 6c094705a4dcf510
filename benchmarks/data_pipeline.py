"""Train-pipeline throughput (decode + augment + normalise, 6 cameras, 256x704) on the real fixture images.

Run by hand:  python benchmarks/data_pipeline.py [--samples 24] [--repeats 3] [--workers 0 2] [--depth]
Prints the median samples/s per worker count and a per-stage breakdown for one camera image.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path

import numpy as np

from flashocc.data import transforms as T
from flashocc.data.dataset import DataConfig, OccDataset, build_dataloader
from flashocc.data.infos import load_infos

FIXTURE = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "nuscenes_sample"


def throughput(dataset: OccDataset, workers: int, batch_size: int, repeats: int) -> list[float]:
    rates = []
    for epoch in range(repeats):
        dataset.set_epoch(epoch)
        loader = build_dataloader(dataset, batch_size=batch_size, workers=workers, shuffle=False)
        start = time.perf_counter()
        count = sum(len(batch["tokens"]) for batch in loader)  # includes worker start-up, as in training
        rates.append(count / (time.perf_counter() - start))
    return rates


def stage_breakdown(root: Path, image_path: str, repeats: int = 10) -> dict[str, float]:
    """Median milliseconds per stage for one 1600x900 JPEG."""
    path = root / Path(image_path).name
    aug = T.sample_image_aug(DataConfig(), (1600, 900), np.random.default_rng(0), train=True)
    times: dict[str, list[float]] = {"decode": [], "resize+crop+flip+rotate": [], "normalise (BGR)": []}
    for _ in range(repeats):
        t0 = time.perf_counter()
        img = T.load_image(path, "bench")
        t1 = time.perf_counter()
        out = T.augment_image(img, aug)
        t2 = time.perf_counter()
        T.normalize_image(out)
        t3 = time.perf_counter()
        for key, dt in zip(times, (t1 - t0, t2 - t1, t3 - t2)):
            times[key].append(dt * 1e3)
    return {key: statistics.median(v) for key, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=FIXTURE)
    parser.add_argument("--samples", type=int, default=24, help="copies of the fixture keyframe per epoch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--depth", action="store_true", help="also build LiDAR gt_depth maps")
    args = parser.parse_args()

    (sample,) = load_infos(args.root / "n015-2018-07-24-11-22-45+0800.pkl")
    samples = [dataclasses.replace(sample, token=f"{sample.token}-{i}", timestamp=sample.timestamp + i)
               for i in range(args.samples)]
    config = DataConfig(load_occ=False, load_depth=args.depth)
    dataset = OccDataset(args.root, samples, config, train=True, aug_seed=0)
    for stage, ms in stage_breakdown(args.root, sample.cams["CAM_FRONT"].image_path).items():
        print(f"  {stage:<26} {ms:7.1f} ms / image")
    for workers in args.workers:
        rates = throughput(dataset, workers, args.batch_size, args.repeats)
        print(f"workers={workers}: median {statistics.median(rates):.2f} samples/s "
              f"(runs: {', '.join(f'{r:.2f}' for r in rates)}; {args.samples} samples, batch {args.batch_size}, "
              f"depth={'on' if args.depth else 'off'})")


if __name__ == "__main__":
    main()
