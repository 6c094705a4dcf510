"""BEV pooling at the FlashOcc-M1 size: ours (gather + index_add, hand-written backward) against the
naive LSS cumsum trick, side by side in one process.

M1: 6 cameras x 88 depth bins x 16 x 44 = 371,712 frustum points, 64 channels, 200 x 200 BEV.
Run: python benchmarks/bev_pool.py [--device cuda] [--repeats 20]
"""
from __future__ import annotations

import argparse
import platform

import torch
import torch.utils.benchmark as tb

from flashocc.models.presets import build_model, example_batch, get_config
from flashocc.ops.bev_pool import bev_pool, bev_pool_naive_cumsum


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    device = torch.device(args.device)
    cfg = get_config("flashocc-r50-m1")
    model = build_model(cfg).to(device)
    batch = example_batch(cfg, device=device)
    vt = model.img_view_transformer
    coords = vt.ego_coords(batch)
    b, n, d, fh, fw, _ = coords.shape
    channels = cfg.bev_channels
    torch.manual_seed(0)
    depth = torch.rand(b, n, d, fh, fw, device=device).softmax(2).requires_grad_()
    feat = torch.randn(b, n, fh, fw, channels, device=device).requires_grad_()
    indices = vt.pool_indices(batch)
    grad = torch.randn(b, channels, 1, 200, 200, device=device)

    torch.testing.assert_close(bev_pool(depth, feat, indices), bev_pool_naive_cumsum(depth, feat, indices),
                               rtol=1e-4, atol=1e-4)
    points, kept = b * n * d * fh * fw, indices.num_points
    # Bytes a perfect kernel must move: depth + gathered feature rows + 3 index arrays in, output out.
    bytes_fwd = kept * 4 + kept * channels * 4 + 3 * kept * 8 + b * 200 * 200 * channels * 4

    def fwd(fn):
        with torch.no_grad():
            fn(depth, feat, indices)

    def fwd_bwd(fn):
        fn(depth, feat, indices).backward(grad)

    env = {"fwd": fwd, "fwd_bwd": fwd_bwd, "ours": bev_pool, "naive": bev_pool_naive_cumsum,
           "prepare": lambda: vt.pool_indices(batch)}
    results = {}
    for label, stmt in [("ours forward", "fwd(ours)"), ("naive cumsum forward", "fwd(naive)"),
                        ("ours forward+backward", "fwd_bwd(ours)"), ("naive cumsum forward+backward", "fwd_bwd(naive)"),
                        ("index preparation (per calibration)", "prepare()")]:
        m = tb.Timer(stmt, globals=env).timeit(args.repeats)
        results[label] = m.median * 1e3
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()}-thread CPU ({platform.processor() or platform.machine()})"
    print(f"BEV pooling, M1 size: {points:,} frustum points ({kept:,} inside the grid), {channels} channels, 200x200; {where}")
    for label, ms in results.items():
        print(f"  {label:<38} {ms:9.2f} ms (median of {args.repeats})")
    print(f"  forward speed-up ours vs naive: {results['naive cumsum forward'] / results['ours forward']:.2f}x; "
          f"forward+backward: {results['naive cumsum forward+backward'] / results['ours forward+backward']:.2f}x")
    print(f"  ours forward effective bandwidth: {bytes_fwd / (results['ours forward'] * 1e-3) / 1e9:.2f} GB/s "
          f"({bytes_fwd / 1e6:.1f} MB moved)")


if __name__ == "__main__":
    main()
