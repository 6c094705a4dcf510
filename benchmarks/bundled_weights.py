"""Do the bundled weights reproduce the scores their manifest documents?

For every preset with bundled weights (or those named), run the default ``flashocc demo`` path —
generate the demo's held-out synthetic set, load the weights (hash checked), score mIoU and RayIoU,
draw the pictures — in a fresh output folder, and compare with ``flashocc/weights/manifest.json``.
Exits non-zero when a measured mIoU is more than ``--tolerance`` away from the documented one.

    python benchmarks/bundled_weights.py --out runs/bundled_check
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from flashocc.engine.demo import run_demo
from flashocc.models.pretrained import bundled_weights


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/bundled_check"))
    parser.add_argument("--presets", nargs="+", default=None, help="default: every preset with bundled weights")
    parser.add_argument("--tolerance", type=float, default=0.5, help="largest accepted |measured - documented| mIoU")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--keep-data", action="store_true", help="reuse the held-out sets of an earlier run")
    args = parser.parse_args()

    entries = bundled_weights()
    presets = args.presets or sorted(entries)
    rows, failed = [], False
    for preset in presets:
        if preset not in entries:
            print(f"{preset}: no bundled weights (bundled: {sorted(entries)})", file=sys.stderr)
            return 2
        out = args.out / preset
        if out.exists() and not args.keep_data:
            shutil.rmtree(out)
        started = time.perf_counter()
        report = run_demo(out, preset=preset, device=args.device, overwrite=True)
        seconds = time.perf_counter() - started
        documented = entries[preset].scores
        delta = report["mIoU"] - documented["mIoU"]
        ok = abs(delta) <= args.tolerance
        failed |= not ok
        rows.append((preset, documented["mIoU"], report["mIoU"], delta, documented.get("RayIoU"), report["RayIoU"],
                     seconds, "ok" if ok else "FAIL"))

    print("| preset | documented mIoU | measured mIoU | Δ | documented RayIoU | measured RayIoU | demo wall s | within tolerance |")
    print("|---|---|---|---|---|---|---|---|")
    for preset, doc, got, delta, doc_ray, got_ray, seconds, verdict in rows:
        doc_ray_text = "—" if doc_ray is None else f"{doc_ray:.3f}"
        print(f"| {preset} | {doc:.2f} | {got:.2f} | {delta:+.2f} | {doc_ray_text} | {got_ray:.3f} | {seconds:.0f} | {verdict} |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
