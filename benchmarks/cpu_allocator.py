"""The CPU forward with glibc's default allocator against ``flashocc.cpu_memory.reuse_freed_memory()``.

The setting is process-wide and cannot be undone, so each measurement is a child process: the parent
starts them alternately (default, reuse, default, reuse, ...) so that a load change hits both alike.
Each child runs ``measure`` of benchmarks/fused_inference.py (the preset with ``torch.manual_seed(0)``,
BatchNorm statistics from one example batch, ``--rounds`` stage-timed forwards of the eager model and its
fused copy after an untimed one) and prints its medians as JSON; the parent prints the median over the children of
each variant and the default / reuse ratios, and with ``--conv`` also a 64 -> 256 1x1 convolution on a
(6, 64, 64, 176) input, the ResNet-50 layer1 shape whose 69 MB output page-faults on every call.

  python benchmarks/cpu_allocator.py --preset flashocc-r50-m0 --children 2 --rounds 4 --threads 2 --conv
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time


def child(preset: str, rounds: int, threads: int, reuse: bool, conv: bool) -> dict:
    from flashocc.cpu_memory import reuse_freed_memory

    applied = reuse_freed_memory() if reuse else False  # before torch allocates anything
    import torch

    from fused_inference import measure  # this folder's eager / fused stage timing (sys.path[0] when run)

    torch.set_num_threads(threads)
    result = measure(preset, rounds, channels_last=True)
    out = {"applied": applied, "peak_gflops_per_s": result["peak_gflops_per_s"], **result["median_ms"]}
    if conv:
        x = torch.randn(6, 64, 64, 176).contiguous(memory_format=torch.channels_last)
        w = torch.randn(256, 64, 1, 1).contiguous(memory_format=torch.channels_last)
        ms = []
        for _ in range(rounds + 2):
            start = time.perf_counter()
            torch.nn.functional.conv2d(x, w)
            ms.append((time.perf_counter() - start) * 1e3)
        out["conv1x1_64_256_ms"] = statistics.median(ms[2:])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="flashocc-r50-m0")
    parser.add_argument("--children", type=int, default=2, help="child processes per setting")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--conv", action="store_true", help="also time the 64 -> 256 1x1 convolution")
    parser.add_argument("--child", choices=("default", "reuse"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.preset, args.rounds, args.threads, args.child == "reuse", args.conv)))
        return
    results: dict[str, list[dict]] = {"default": [], "reuse": []}
    for _ in range(args.children):
        for setting in results:
            cmd = [sys.executable, __file__, "--child", setting, "--preset", args.preset, "--rounds",
                   str(args.rounds), "--threads", str(args.threads)] + (["--conv"] if args.conv else [])
            line = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            results[setting].append(json.loads(line))
            print(setting, line, flush=True)
    if not all(r["applied"] for r in results["reuse"]):
        sys.exit("reuse_freed_memory() did not apply (not glibc?): no comparison")
    print(f"\n{args.preset}, {args.threads} threads, median over {args.children} children x {args.rounds} rounds (ms):")
    for variant in ("eager", "fused"):
        for stage in results["default"][0][variant]:
            d = statistics.median(r[variant][stage] for r in results["default"])
            u = statistics.median(r[variant][stage] for r in results["reuse"])
            print(f"  {variant:<6} {stage:<15} default {d:8.1f}   reuse {u:8.1f}   default / reuse {d / u:5.2f}x")
    if args.conv:
        d = statistics.median(r["conv1x1_64_256_ms"] for r in results["default"])
        u = statistics.median(r["conv1x1_64_256_ms"] for r in results["reuse"])
        print(f"  1x1 conv 64->256 on (6, 64, 64, 176): default {d:.1f}   reuse {u:.1f}   {d / u:.2f}x")


if __name__ == "__main__":
    main()
