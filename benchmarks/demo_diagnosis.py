"""Why a trained demo model scores what it scores: per-class IoU, recall and precision on a split, and
what a test-time logit adjustment would change.

Reads a ``flashocc demo`` run (its ``train/config.yaml`` and ``train/last.pt``, EMA weights) and scores
every ``--every``-th frame of the chosen split on the camera mask. Besides the plain argmax it scores
argmax(log p - tau * log w) for each ``--tau``, w being the run's class weights: tau = 1 takes the
class-weight prior back out of the prediction. If some tau > 0 scored higher, the weighted loss had only
shifted the decision threshold; if none does, the errors are localisation. Prints a table:

    python benchmarks/demo_diagnosis.py runs/demo --split train --every 10
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    from flashocc.config import load_run_config
    from flashocc.data.dataset import OccDataset, collate_batch
    from flashocc.engine.evaluate import load_model_for_inference
    from flashocc.metrics import OccMIoU

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a flashocc demo output folder")
    parser.add_argument("--data", type=Path, help="dataset root (default: the one in the run's report.json)")
    parser.add_argument("--split", default="val", choices=("train", "val"))
    parser.add_argument("--every", type=int, default=2, help="score every n-th frame")
    parser.add_argument("--tau", type=float, nargs="*", default=[0.25, 0.5, 1.0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    cfg = load_run_config(str(args.run / "train" / "config.yaml"))
    if args.data is None:
        report = args.run / "report.json"
        if not report.is_file():
            raise SystemExit(f"{report} not found: pass --data DATASET_ROOT (the run's synthetic set)")
        args.data = Path(json.loads(report.read_text())["data"])
    grid = cfg.model.grid
    k = grid.num_classes
    weights = torch.tensor(cfg.model.class_weights) if cfg.model.class_weights else torch.ones(k)
    model = load_model_for_inference(cfg, args.run / "train" / "last.pt", torch.device("cpu"))
    dataset = OccDataset(args.data, args.data / f"infos_{args.split}.pkl", cfg.data, train=False)
    taus = [0.0, *args.tau]
    scores = {tau: OccMIoU(grid) for tau in taus}
    frames = range(0, len(dataset), args.every)
    with torch.no_grad():
        for i in frames:
            batch = collate_batch([dataset[i]])
            log_probs = model(batch)[0].float().log_softmax(dim=-1)
            for tau in taus:
                pred = (log_probs - tau * weights.log()).argmax(dim=-1).to(torch.uint8)
                scores[tau].update(pred.numpy(), batch["voxel_semantics"][0].numpy(), batch["mask_camera"][0].numpy())

    print(f"{args.run} · {args.split} split · {len(frames)} frames · camera mask")
    names = grid.class_names
    for tau in taus:
        print(f"tau {tau:4.2f}: mIoU {scores[tau].compute()['mIoU']:6.2f}")
    h = scores[0.0].confusion
    print(f"\n{'class':22s} {'gt':>9s} {'predicted':>9s} {'IoU':>6s} {'recall':>6s} {'prec.':>6s}  most often predicted as")
    for c in range(k):
        gt_count, pred_count, tp = h[c].sum(), h[:, c].sum(), h[c, c]
        top = np.argsort(-h[c])[:2]
        confused = ", ".join(f"{names[j]} {h[c, j] / max(gt_count, 1):.2f}" for j in top)
        print(f"{names[c]:22s} {gt_count:9d} {pred_count:9d} {tp / max(1, gt_count + pred_count - tp):6.2f} "
              f"{tp / max(gt_count, 1):6.2f} {tp / max(pred_count, 1):6.2f}  {confused}")


if __name__ == "__main__":
    main()
