"""Streaming (``StereoStream``) against the batch forward of a temporal model, per frame of a drive.

The batch forward encodes t and t-1 and the stride-4 stem of t-2 for every frame; streaming encodes
only the new frame and re-lifts the cached previous one. Prints median seconds per frame, image
backbone passes per frame, and the largest logit difference (it should be 0):

    python benchmarks/temporal_streaming.py --preset flashocc-tiny-m2 --frames 6
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from flashocc.models.examples import example_sequence, temporal_batch
from flashocc.models.presets import build_model, get_config
from flashocc.models.temporal import StereoStream


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="flashocc-tiny-m2")
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = get_config(args.preset)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    passes = [0]
    model.img_backbone.register_forward_hook(lambda *_: passes.__setitem__(0, passes[0] + 1))
    seq = example_sequence(cfg, num_frames=args.frames)
    stream = StereoStream(model)
    batch_s, stream_s, diff = [], [], 0.0
    batch_passes = stream_passes = 0
    for k, frame in enumerate(seq):
        passes[0] = 0
        t0 = time.perf_counter()
        with torch.no_grad():
            ref = model(temporal_batch(seq, k))
        batch_s.append(time.perf_counter() - t0)
        batch_passes += passes[0]
        passes[0] = 0
        t0 = time.perf_counter()
        out = stream.step(frame)
        stream_s.append(time.perf_counter() - t0)
        stream_passes += passes[0]
        diff = max(diff, float((out - ref).abs().max()))
    # Frame 0 has no history in either mode; the steady state starts at frame 2.
    b, s = statistics.median(batch_s[2:]), statistics.median(stream_s[2:])
    print(f"{args.preset}: median s/frame (frames 2..{args.frames - 1}): batch {b:.3f}, streaming {s:.3f}, "
          f"ratio {b / s:.2f}x; full backbone passes/frame: batch {batch_passes / args.frames:.2f}, "
          f"streaming {stream_passes / args.frames:.2f}; max |logit diff| {diff:.2e}")


if __name__ == "__main__":
    main()
