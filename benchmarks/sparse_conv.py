"""Sparse 3D convolution on the real nuScenes LiDAR fixture: ours (plain PyTorch) and spconv when it is
installed and agrees with ours, side by side in one process.

The keyframe cloud (and the same cloud stacked 10x with small jitter, a 10-sweep stand-in) is voxelized
at EFFOcc's LiDAR voxel (0.05 x 0.05 x 0.16 m, 10 points, 120,000 voxels at test time) on the sparse
shape (41, 1600, 1600) of mmdet3d's SparseEncoder; then a SubM 3x3x3 16->16 conv (stage 1) and a strided
3x3x3 16->32 conv (stride 2, padding 1) on random features. Times are medians; "forward" reuses the
rulebook, which is timed on its own (built once per indice key per frame).

Run: python benchmarks/sparse_conv.py [--device cuda] [--repeats 10] [--threads 2]
"""
from __future__ import annotations

import argparse
import datetime
import platform
from pathlib import Path

import numpy as np
import torch
import torch.utils.benchmark as tb

from flashocc.ops.sparse_conv import SparseConv3d, SparseTensor, SubMConv3d
from flashocc.ops.sparse_ops import sparse_conv
from flashocc.ops.sparse_rules import build_rulebook
from flashocc.ops.sparse_spconv import spconv_available, spconv_self_check
from flashocc.ops.voxelize import hard_voxelize

VOXEL, RANGE, SHAPE = (0.05, 0.05, 0.16), (-40.0, -40.0, -1.0, 40.0, 40.0, 5.4), (41, 1600, 1600)
DEFAULT_FIXTURE = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "nuscenes_sample"


def load_points(fixture: Path) -> torch.Tensor:
    """The keyframe LIDAR_TOP cloud (N, 5) in the ego frame, time lag 0."""
    from flashocc.data.infos import safe_load_pickle

    info = safe_load_pickle(next(fixture.glob("*.pkl")))["data_list"][0]
    raw = np.fromfile(fixture / info["lidar_points"]["lidar_path"], dtype=np.float32).reshape(-1, 5)
    lidar2ego = np.asarray(info["lidar_points"]["lidar2ego"])
    pts = raw.copy()
    pts[:, :3] = raw[:, :3] @ lidar2ego[:3, :3].T + lidar2ego[:3, 3]
    pts[:, 4] = 0.0
    return torch.from_numpy(pts.astype(np.float32))


def stacked(points: torch.Tensor, sweeps: int, jitter: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    copies = [points]
    for s in range(1, sweeps):
        c = points.clone()
        c[:, :3] += torch.randn(len(c), 3, generator=g) * jitter
        c[:, 4] = 0.05 * s  # a sweep's time lag, as LoadPointsFromMultiSweeps writes it
        copies.append(c)
    return torch.cat(copies)


def median_ms(stmt: str, repeats: int, sync: bool, **env) -> float:
    if sync:
        stmt = f"{stmt}; torch.cuda.synchronize()"
    return tb.Timer(stmt, globals={"torch": torch, **env}).timeit(repeats).median * 1e3


def bench_cloud(points: torch.Tensor, device: torch.device, repeats: int, use_spconv: bool) -> list[dict]:
    sync = device.type == "cuda"
    points = points.to(device)
    vox_ms = median_ms("hard_voxelize(p, VOXEL, RANGE, 10, 120000)", repeats, sync,
                       hard_voxelize=hard_voxelize, p=points, VOXEL=VOXEL, RANGE=RANGE)
    _, coords, _ = hard_voxelize(points, VOXEL, RANGE, 10, 120000)
    indices = torch.nn.functional.pad(coords, (1, 0))  # (M, 4) batch 0
    g = torch.Generator().manual_seed(0)
    x = SparseTensor(torch.randn(len(indices), 16, generator=g).to(device), indices, SHAPE, 1)
    torch.manual_seed(0)
    layers = {"SubM 3x3x3 16->16": SubMConv3d(16, 16, 3, padding=1, bias=False, indice_key="subm1").to(device),
              "SparseConv3d 3x3x3 s2 16->32": SparseConv3d(16, 32, 3, stride=2, padding=1, bias=False).to(device)}
    rows = []
    for order, xin in (("first-hit rows", x), ("sorted rows", x.sort_sites())):
        for name, layer in layers.items():
            if order == "first-hit rows" and name.startswith("SparseConv3d"):
                continue  # strided outputs are sorted anyway; one order is enough
            rb = build_rulebook(xin.indices, SHAPE, 1, layer.geometry)
            feats = xin.features.clone().requires_grad_()
            env = {"build_rulebook": build_rulebook, "sparse_conv": sparse_conv, "x": xin, "layer": layer,
                   "rb": rb, "f": feats, "SHAPE": SHAPE}
            row = {"layer": name, "rows": order, "sites_in": len(indices), "sites_out": rb.num_out,
                   "pairs": rb.num_pairs, "voxelize_ms": vox_ms,
                   "rulebook_ms": median_ms("build_rulebook(x.indices, SHAPE, 1, layer.geometry)", repeats, sync, **env)}
            with torch.no_grad():
                row["ours_fwd_ms"] = median_ms("sparse_conv(x.features, layer.weight, rb)", repeats, sync, **env)
            row["ours_fwd_bwd_ms"] = median_ms("sparse_conv(f, layer.weight, rb).sum().backward()", repeats, sync, **env)
            if use_spconv:
                sp = type(layer)(16, layer.out_channels, 3, stride=layer.geometry.stride, padding=1, bias=False,
                                 indice_key=layer.indice_key, backend="spconv").to(device)
                sp.load_state_dict(layer.state_dict())
                env["sp"] = sp
                # spconv builds its rulebook inside the call; this times rulebook + product.
                with torch.no_grad():
                    row["spconv_fwd_ms"] = median_ms("sp(x)", repeats, sync, **env)
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--fixture", type=Path, default=DEFAULT_FIXTURE)
    parser.add_argument("--jitter", type=float, default=0.05, help="std (m) of the stacked sweeps' jitter")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    spconv_note = "spconv: not installed"
    use_spconv = False
    if spconv_available():
        problem = spconv_self_check(device)
        use_spconv = problem is None
        spconv_note = "spconv: agrees with ours, timed" if use_spconv else f"spconv: not timed, {problem}"
    points = load_points(args.fixture)
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"{torch.get_num_threads()}-thread CPU ({platform.processor() or platform.machine()})")
    print(f"Sparse conv on {args.fixture.name} LiDAR, voxel {VOXEL} m, shape {SHAPE}; {where}; torch "
          f"{torch.__version__}; {datetime.date.today()}; median of {args.repeats}")
    print(spconv_note)
    head = ("| cloud | layer | rows | sites in -> out | pairs | voxelize | rulebook | forward | forward+backward"
            + (" | spconv forward |" if use_spconv else " |"))
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for label, sweeps in (("1 sweep", 1), ("10x stacked", 10)):
        for r in bench_cloud(stacked(points, sweeps, args.jitter), device, args.repeats, use_spconv):
            line = (f"| {label} | {r['layer']} | {r['rows']} | {r['sites_in']:,} -> {r['sites_out']:,} | "
                    f"{r['pairs']:,} | {r['voxelize_ms']:.1f} ms | {r['rulebook_ms']:.1f} ms | "
                    f"{r['ours_fwd_ms']:.1f} ms | {r['ours_fwd_bwd_ms']:.1f} ms |")
            if use_spconv:
                line += f" {r['spconv_fwd_ms']:.1f} ms |"
            print(line)


if __name__ == "__main__":
    main()
