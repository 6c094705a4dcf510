"""Forward GFLOPs of one sample (6 cameras), counting a multiply-add as 2 FLOPs.

The dense stages run on the meta device (shapes only, instant) under ``FlopCounterMode``; what it
does not see is added analytically: BEV pooling (a gather/scatter, ~2 FLOPs per point and channel)
and, for the stereo models, cost-volume matching (3 FLOPs per depth, pixel and channel: subtract,
abs, accumulate; bilinear sampling not counted). The official README's "FLOPs" (mmcv ``get_flops``)
count multiply-adds: divide by 2 to compare.
"""
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from flashocc.models.builders import build_from_config
from flashocc.models.configs import ModelConfig
from flashocc.models.examples import example_batch


def gflops_unavailable(cfg) -> str | None:
    """Why ``count_gflops`` has no count for ``cfg`` (None when it has one)."""
    if cfg.family == "panoptic-4d":  # checked first: a ModelConfig, but neither the single-frame nor the stereo count
        return "no FLOPs model for BEVDepth4DPano (num_adj + 1 lifted frames) yet"
    if isinstance(cfg, ModelConfig):
        return None
    if cfg.family == "sparseocc":
        # Its work depends on the data: top-k voxels per level and the mask-guided sampling points.
        return "data-dependent sparse decoders (top-k voxels); time it with flashocc bench"
    return f"no FLOPs model for the {cfg.family} family (only the lift-splat families have one)"


def count_gflops(cfg) -> float | None:
    """GFLOPs of one sample for a lift-splat config; None for other families (``gflops_unavailable`` says why)."""
    if gflops_unavailable(cfg) is not None:
        return None
    if cfg.temporal:
        return _stereo4d_gflops(cfg)
    with torch.device("meta"):
        model = build_from_config(cfg).eval()
        batch = example_batch(cfg, device="meta")
    dx, dy, dz = cfg.grid.shape
    vt = model.img_view_transformer
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        feats = model.image_encoder(batch["img"])
        b, n, c, fh, fw = feats.shape
        vt.lift(feats)
        bev_z = dz if cfg.bev_is_3d else 1
        bev = torch.zeros(b, cfg.bev_channels, bev_z, dy, dx, device="meta")
        bev = bev if cfg.bev_is_3d else bev[:, :, 0]
        model.occ_head(model.bev_encoder(bev))
    pooling = 2 * n * vt.num_depth * fh * fw * cfg.bev_channels
    return (counter.get_total_flops() + pooling) / 1e9


def _stereo4d_gflops(cfg: ModelConfig) -> float:
    """The batch forward: image encoder for t and t-1, the stride-4 stem for t-2, two depth nets, two
    cost volumes, two poolings, two pre-process nets, the BEV encoder and the head. (Streaming saves
    one image encoder per frame.)"""
    with torch.device("meta"):
        model = build_from_config(cfg).eval()
        batch = example_batch(cfg, device="meta")
    dx, dy, _ = cfg.grid.shape
    vt = model.img_view_transformer
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.stereo_reference(batch["img"])
        for _ in range(2):
            feats, stereo = model.encode_frame(batch["img"])
            b, n, c, fh, fw = feats.shape
            cost = torch.zeros(b * n, vt.num_depth, *stereo.shape[-2:], device="meta")
            vt.lift(feats, torch.zeros(b, n, 27, device="meta"), cost)
            model.pre_process_net(torch.zeros(b, cfg.bev_channels, dy, dx, device="meta"))
        model.occ_head(model.bev_encoder(torch.zeros(b, 2 * cfg.bev_channels, dy, dx, device="meta")))
    matching = 2 * 3 * n * vt.num_depth * stereo.shape[-2] * stereo.shape[-1] * stereo.shape[2]
    pooling = 2 * 2 * n * vt.num_depth * fh * fw * cfg.bev_channels
    return (counter.get_total_flops() + matching + pooling) / 1e9
