"""Eager against fused inference (``flashocc.models.fuse``), stage by stage, side by side in one process.

Per round, each variant runs one forward through its four stage methods (``torch_stage_times``, whose
stages add up to the forward), rounds interleaved so a load change on a shared machine hits both
variants alike; medians over the rounds. The fp32 peak is timed in every round too (``gemm_peak_gflops``: the faster of a GEMM and a 3x3
convolution, best of 5 each).
Weights: random, with BatchNorm statistics from one example batch (``calibrate_random_model``), so the
folding moves real statistics. Reports GFLOP/s from the eager model's FLOPs (``stage_gflop``).

Run: python benchmarks/fused_inference.py --presets flashocc-r50-m0,flashocc-r50-m1 --rounds 5 --threads 2 [--compile]
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics

import torch

from flashocc.deploy.bench import STAGES, calibrate_random_model, gemm_peak_gflops, stage_gflop, torch_stage_times
from flashocc.models.examples import example_model_batch
from flashocc.models.fuse import fuse_for_inference
from flashocc.models.presets import build_model


def measure(preset: str, rounds: int, channels_last: bool, compiled: bool = False) -> dict:
    torch.manual_seed(0)
    model = build_model(preset)
    calibrate_random_model(model, [example_model_batch(model.config)])
    batch = example_model_batch(model.config)
    variants = {"eager": model.eval(), "fused": fuse_for_inference(model, channels_last=channels_last)}
    if compiled:  # inductor, compiled on the warm-up call below (not timed)
        variants["compiled"] = fuse_for_inference(model, channels_last=channels_last, compile=True)
    device = torch.device("cpu")
    with torch.no_grad():
        ref = model(batch)
        outs = {k: v(batch) for k, v in variants.items() if k != "eager"}
    agreement = {k: float((ref.argmax(-1) == o.argmax(-1)).double().mean()) for k, o in outs.items()}
    max_diff = {k: float((ref - o).abs().max()) for k, o in outs.items()}
    times = {k: {s: [] for s in (*STAGES, "total")} for k in variants}
    peaks = []
    for k, v in variants.items():  # warm-up (first-call allocations, the fused index cache)
        torch_stage_times(v, batch, 1, 0, device)
    for _ in range(rounds):
        peaks.append(gemm_peak_gflops(device))
        for k, v in variants.items():
            stages = torch_stage_times(v, batch, 1, 0, device)
            for s, t in stages.items():
                times[k][s].append(t)
            times[k]["total"].append(sum(stages.values()))
    gflop = stage_gflop(model.config)
    gflop["total"] = sum(gflop.values())
    peak = statistics.median(peaks)
    med = {k: {s: statistics.median(v) for s, v in d.items()} for k, d in times.items()}
    return {"preset": preset, "rounds": rounds, "channels_last": channels_last, "gflop": gflop,
            "peak_gflops_per_s": peak, "peaks": peaks, "median_ms": med, "all_ms": times,
            "argmax_agreement": agreement, "max_abs_logit_diff": max_diff}


def table(results: list[dict]) -> str:
    head = "| preset | variant | " + " | ".join(f"{s} ms (GFLOP/s, % peak)" for s in (*STAGES, "total")) + " |"
    lines = [head, "|" + "---|" * (2 + len(STAGES) + 1)]
    for r in results:
        for k, med in r["median_ms"].items():
            cells = []
            for s in (*STAGES, "total"):
                rate = r["gflop"][s] / (med[s] / 1e3)
                cells.append(f"{med[s]:.0f} ({rate:.1f}, {100 * rate / r['peak_gflops_per_s']:.0f} %)")
            lines.append(f"| {r['preset']} | {k} | " + " | ".join(cells) + " |")
        for k in r["median_ms"]:
            if k == "eager":
                continue
            ratio = " | ".join(f"{r['median_ms']['eager'][s] / r['median_ms'][k][s]:.2f}x" for s in (*STAGES, "total"))
            lines.append(f"| {r['preset']} | eager / {k} | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="flashocc-r50-m0,flashocc-r50-m1")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true", help="also time fuse(compile=True) (torch.compile, inductor)")
    parser.add_argument("--json", default=None, help="also write the raw numbers here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = []
    for preset in args.presets.split(","):
        results.append(measure(preset, args.rounds, not args.no_channels_last, args.compile))
        print(json.dumps({k: v for k, v in results[-1].items() if k != "all_ms"}), flush=True)
    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, {args.threads} threads; fp32 peak per round (best of GEMM and 3x3 conv) {[round(p, 1) for p in results[0]['peaks']]}")
    print(table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
