"""Deployment benchmark: `flashocc bench` for one preset, saved as JSON and printed as a table.

Usage (the figures in docs/benchmarks.md "Deployment"):
    python benchmarks/deploy.py flashocc-r50-m0 --backend torch,onnxruntime --precision fp32,int8 \
        --threads 2 --repeats 5 --json runs/bench_m0.json
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from flashocc.deploy.bench import BenchConfig, format_table, run_bench


def fixture_agreement(preset: str, workdir: Path, fixture: Path, threads: int | None) -> str:
    """Agreement of every graph the bench left in ``workdir`` with PyTorch (same weights) on the real keyframe."""
    import torch

    from flashocc.data.dataset import DataConfig, OccDataset, collate_batch
    from flashocc.data.infos import load_infos
    from flashocc.deploy import OnnxOccModel
    from flashocc.models.presets import build_model

    model = build_model(preset)
    model.load_state_dict(torch.load(workdir / "bench_weights.pt", weights_only=True))
    model.eval()
    (pkl,) = fixture.glob("*.pkl")
    dataset = OccDataset(fixture, load_infos(pkl), DataConfig(input_size=model.config.input_size, load_occ=False))
    batch = collate_batch([dataset[0]])
    with torch.no_grad():
        ref = model(batch).numpy()
    lines = [f"real fixture keyframe ({fixture.name}), argmax agreement with torch fp32:"]
    for path in sorted(workdir.glob(f"{preset}_*.onnx")):
        logits = OnnxOccModel(path, threads=threads)(batch)
        lines.append(f"  {path.name:<45} {100 * (logits.argmax(-1) == ref.argmax(-1)).mean():.3f} %")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("preset")
    p.add_argument("--backend", default="torch,onnxruntime")
    p.add_argument("--precision", default="fp32,int8")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--calib-samples", type=int, default=4)
    p.add_argument("--workdir", default=None, help="keep the exported graphs here")
    p.add_argument("--data", default=None, help="set root with infos_train.pkl (calibration) and infos_val.pkl")
    p.add_argument("--no-ablation", action="store_true")
    p.add_argument("--fixture", default=None,
                   help="also report argmax agreement of the exported graphs with PyTorch on this nuScenes "
                        "fixture folder (one keyframe + mmdet3d info pkl; needs --workdir)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    cfg = BenchConfig(args.preset, backends=tuple(args.backend.split(",")), precisions=tuple(args.precision.split(",")),
                      batch_size=args.batch, repeats=args.repeats, threads=args.threads,
                      calib_samples=args.calib_samples, workdir=args.workdir, data=args.data, ablation=not args.no_ablation)
    report = run_bench(cfg)
    print(format_table(report))
    if args.fixture and args.workdir:
        print(fixture_agreement(args.preset, Path(args.workdir), Path(args.fixture), args.threads))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(report.to_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())
