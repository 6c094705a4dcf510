"""The paper's ablation on its own: BEV encoder + occupancy head of flashocc-r50-m1 (channel-to-height)
against bevdetocc-r50 (3D convs), latency and peak memory growth, each in a fresh process.

Usage: python benchmarks/head_2d_vs_3d.py [--repeats 5] [--threads 2] [--device cpu|cuda]
(`flashocc bench PRESET` prints the same rows under its main table.)
"""
from __future__ import annotations

import argparse
import sys

from flashocc.deploy.bench import head_ablation


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    rows = head_ablation(args.batch, args.repeats, device=args.device, threads=args.threads)
    print(f"{'preset':<18}{'head':<20}{'latency ms':>11}{'mem MiB':>9}{'params':>12}")
    for r in rows:
        print(f"{r['preset']:<18}{r['head']:<20}{r['latency_ms']:>11.1f}{r['peak_mem_mib']:>9.1f}{r['params']:>12,}")
    two_d, three_d = rows
    print(f"3D / 2D: latency x{three_d['latency_ms'] / two_d['latency_ms']:.2f}, "
          f"memory x{three_d['peak_mem_mib'] / max(two_d['peak_mem_mib'], 1e-6):.2f} "
          f"(paper, RTX 3090: 7.3 -> 3.1 ms, 398 -> 124 MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
