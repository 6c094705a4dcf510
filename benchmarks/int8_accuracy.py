"""mIoU of a trained model on a validation set: PyTorch fp32 vs ONNX Runtime fp32 vs ONNX Runtime INT8,
with the end-to-end latency of each, side by side in one process.

Run: python benchmarks/int8_accuracy.py RUN/config.yaml --checkpoint RUN/last.pt --data DATA \
         [--calib-samples 16] [--threads 2] [--workdir runs/int8]
(e.g. the run folder and synthetic set of `flashocc demo`: runs/demo/train, runs/demo/data).
"""
from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from flashocc.config import load_run_config
from flashocc.data.dataset import collate_batch
from flashocc.deploy import OnnxOccModel, export_onnx
from flashocc.deploy.quantize import calibration_batches, quantize_int8
from flashocc.engine.evaluate import eval_dataset, load_model_for_inference
from flashocc.metrics import OccMIoU


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--calib-samples", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", default="runs/int8")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_run_config(args.config)
    cfg = replace(cfg, model=replace(cfg.model, class_weights=()))  # loss settings do not matter here
    model = load_model_for_inference(cfg, args.checkpoint, torch.device("cpu"), use_ema=True)
    work = Path(args.workdir)
    fp32_path = export_onnx(model, work / "model_fp32.onnx", mode="precomputed")
    calib = calibration_batches(cfg.model.name, args.calib_samples, args.data, Path(args.data) / cfg.train_infos)
    int8_path = quantize_int8(fp32_path, work / "model_int8.onnx", calib)
    runners = {
        "PyTorch fp32": lambda b: model(b).argmax(-1).numpy(),
        "ONNX Runtime fp32": (lambda r: (lambda b: r(b).argmax(-1)))(OnnxOccModel(fp32_path, threads=args.threads)),
        "ONNX Runtime int8": (lambda r: (lambda b: r(b).argmax(-1)))(OnnxOccModel(int8_path, threads=args.threads)),
    }
    dataset = eval_dataset(cfg, args.data)
    metrics = {name: OccMIoU() for name in runners}
    times: dict[str, list[float]] = {name: [] for name in runners}
    with torch.no_grad():
        for i in range(len(dataset)):
            batch = collate_batch([dataset[i]])
            for name, run in runners.items():
                t = time.perf_counter()
                pred = run(batch)
                times[name].append(time.perf_counter() - t)
                metrics[name].update(pred[0], batch["voxel_semantics"][0].numpy(), batch["mask_camera"][0].numpy())
    print(f"{cfg.model.name} on {len(dataset)} val samples of {args.data}, {args.threads} threads, "
          f"INT8 calibrated on {len(calib)} train samples")
    base = metrics["PyTorch fp32"].compute()["mIoU"]
    for name in runners:
        miou = metrics[name].compute()["mIoU"]
        ms = statistics.median(times[name][1:] or times[name]) * 1e3
        print(f"  {name:<18} mIoU {miou:6.2f} ({miou - base:+.2f})  latency {ms:8.1f} ms (median)")


if __name__ == "__main__":
    main()
