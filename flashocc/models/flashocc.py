"""FlashOcc: the composition image encoder -> view transform -> BEV encoder -> occupancy head.

The child names are the official state-dict prefixes (``img_backbone``, ``img_neck``,
``img_view_transformer``, ``img_bev_encoder_backbone``, ``img_bev_encoder_neck``, ``occ_head``), so
official checkpoints load strictly. The 3D-conv baseline (BEVDetOcc) is the same class with 3D parts.
"""
from __future__ import annotations

from collections.abc import Mapping
from contextlib import nullcontext

import torch
from torch import nn

from flashocc.batch import TARGET_KEYS, check_inputs
from flashocc.grid import OCC3D_NUSCENES, OccGrid
from flashocc.models.losses import affinity_loss, cell_depth_loss, depth_loss, occupancy_loss, semantic_loss
from flashocc.models.ray_targets import ray_targets
from flashocc.ops.bev_pool import BevPoolIndices


def _autocast_enabled(device_type: str) -> bool:
    if device_type not in ("cpu", "cuda"):
        return False  # e.g. the meta device used for FLOP counting
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4 has no device argument
        return torch.is_autocast_enabled() if device_type == "cuda" else torch.is_autocast_cpu_enabled()


class FlashOcc(nn.Module):
    """Multi-camera images -> semantic occupancy logits (B, Dx, Dy, Dz, K) indexed [x, y, z, class].

    ``forward(batch)``: in eval mode returns logits; in train mode returns a dict of named losses
    and needs ``voxel_semantics`` and ``mask_camera`` (plus ``gt_depth`` when ``depth_loss_weight`` > 0
    and ``depth_target`` is "lidar").

    Optional training aids, off in the official presets: ``depth_target="occupancy"`` takes each
    feature cell's depth from the first occupied voxel on its ray instead of from LiDAR, a
    ``semantic_head`` (1x1 conv on the lifted context features) learns that voxel's class per pixel,
    weighted by ``semantic_loss_weight`` (flashocc/models/ray_targets.py), and ``affinity_loss_weight``
    adds per-class precision/recall/specificity terms (losses.affinity_loss). None changes inference.
    """

    def __init__(
        self,
        img_backbone: nn.Module,
        img_neck: nn.Module,
        img_view_transformer: nn.Module,
        img_bev_encoder_backbone: nn.Module,
        img_bev_encoder_neck: nn.Module,
        occ_head: nn.Module,
        use_mask: bool = True,
        class_weights: torch.Tensor | None = None,
        depth_loss_weight: float = 0.0,
        ignore_label: int = 255,
        depth_target: str = "lidar",
        semantic_head: nn.Module | None = None,
        semantic_loss_weight: float = 0.0,
        grid: OccGrid = OCC3D_NUSCENES,
        affinity_loss_weight: float = 0.0,
    ) -> None:
        super().__init__()
        self.img_backbone = img_backbone
        self.img_neck = img_neck
        self.img_view_transformer = img_view_transformer
        self.img_bev_encoder_backbone = img_bev_encoder_backbone
        self.img_bev_encoder_neck = img_bev_encoder_neck
        self.occ_head = occ_head
        self.use_mask = use_mask
        self.depth_loss_weight = depth_loss_weight
        self.ignore_label = ignore_label
        if depth_target not in ("lidar", "occupancy"):
            raise ValueError(f"depth_target must be 'lidar' or 'occupancy', got {depth_target!r}")
        if (semantic_head is None) != (semantic_loss_weight == 0):
            raise ValueError("give a semantic_head exactly when semantic_loss_weight > 0")
        self.depth_target = depth_target
        self.semantic_head = semantic_head  # None in the official layout: no extra state-dict keys
        self.semantic_loss_weight = semantic_loss_weight
        self.grid = grid
        self.affinity_loss_weight = affinity_loss_weight
        # Not a checkpoint entry in the official code, so not in our state dict either.
        self.register_buffer("class_weights", class_weights, persistent=False)

    # ---- stages (callable on their own for benchmarks and tests) ----------------------------------
    def image_encoder(self, img: torch.Tensor) -> torch.Tensor:
        """(B, N, 3, H, W) normalised BGR -> (B, N, C, H/16, W/16)."""
        b, n, c, h, w = img.shape
        x = self.img_neck(self.img_backbone(img.reshape(b * n, c, h, w)))
        return x.view(b, n, *x.shape[1:])

    def view_transform(self, feats: torch.Tensor, batch: Mapping[str, torch.Tensor],
                       indices: BevPoolIndices | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.img_view_transformer(feats, batch, indices)

    def bev_encoder(self, bev: torch.Tensor) -> torch.Tensor:
        # Official detail (flashocc.md §12.23): the BEV encoder runs in fp32 even under AMP.
        device_type = bev.device.type
        guard = torch.autocast(device_type, enabled=False) if _autocast_enabled(device_type) else nullcontext()
        with guard:
            return self.img_bev_encoder_neck(self.img_bev_encoder_backbone(bev.float()))

    def forward_features(self, batch: Mapping[str, torch.Tensor], indices: BevPoolIndices | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logits, depth probabilities, image features (B, N, C, fH, fW))."""
        check_inputs(batch)
        feats = self.image_encoder(batch["img"])
        bev, depth = self.view_transform(feats, batch, indices)
        return self.occ_head(self.bev_encoder(bev)), depth, feats

    def forward_logits(self, batch: Mapping[str, torch.Tensor],
                       indices: BevPoolIndices | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        logits, depth, _ = self.forward_features(batch, indices)
        return logits, depth

    # ---- public entry points ----------------------------------------------------------------------
    def forward(self, batch: Mapping[str, torch.Tensor], indices: BevPoolIndices | None = None):
        if not self.training:
            return self.forward_logits(batch, indices)[0]
        missing = [k for k in TARGET_KEYS if k not in batch]
        if self.depth_loss_weight > 0 and self.depth_target == "lidar" and "gt_depth" not in batch:
            missing.append("gt_depth")
        if missing:
            raise ValueError(f"train mode needs targets {missing} in the batch; call model.eval() for logits")
        if self.semantic_head is None:
            return self.losses(*self.forward_logits(batch, indices), batch)
        logits, depth, feats = self.forward_features(batch, indices)
        return self.losses(logits, depth, batch, feats)

    def losses(self, logits: torch.Tensor, depth: torch.Tensor, batch: Mapping[str, torch.Tensor],
               feats: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        mask = batch["mask_camera"] if self.use_mask else None
        out = {"loss_occ": occupancy_loss(logits, batch["voxel_semantics"], mask, self.class_weights, self.ignore_label)}
        if self.affinity_loss_weight > 0:
            out["loss_affinity"] = self.affinity_loss_weight * affinity_loss(
                logits, batch["voxel_semantics"], mask, self.grid.free_label, self.ignore_label)
        vt = self.img_view_transformer
        rays = None
        if self.semantic_head is not None or (self.depth_loss_weight > 0 and self.depth_target == "occupancy"):
            rays = ray_targets(batch, vt.input_size, vt.downsample, self.depth_bins_range(), self.grid)
        if self.depth_loss_weight > 0:
            if self.depth_target == "occupancy":
                loss = cell_depth_loss(depth, rays[0], vt.depth_bins, vt.sid)
            else:
                loss = depth_loss(depth, batch["gt_depth"], vt.downsample, vt.depth_bins, vt.sid)
            out["loss_depth"] = self.depth_loss_weight * loss
        if self.semantic_head is not None:
            if feats is None:
                raise ValueError("the semantic loss needs the image features; call forward() in train mode")
            # On the lifted context features (the 1x1 depth net's context channels, recomputed here):
            # what is splatted into BEV is then taught to say what each pixel sees.
            context = vt.depth_net(feats.flatten(0, 1))[:, vt.num_depth:vt.num_depth + vt.out_channels]
            seg = self.semantic_head(context)
            out["loss_semantic"] = self.semantic_loss_weight * semantic_loss(seg, rays[1], self.class_weights,
                                                                             self.ignore_label)
        return out

    def depth_bins_range(self) -> tuple[float, float]:
        """Metres covered by the depth bins: the rays of the occupancy targets stop where the bins do."""
        start, stop, _ = self.img_view_transformer.depth_bins
        return float(start), float(stop)

    @torch.no_grad()
    def predict(self, batch: Mapping[str, torch.Tensor], indices: BevPoolIndices | None = None) -> torch.Tensor:
        """Class labels (B, Dx, Dy, Dz) uint8 (argmax of the logits; the official softmax is redundant).
        Call ``model.eval()`` first, as for any inference."""
        logits, _ = self.forward_logits(batch, indices)
        return logits.argmax(dim=-1).to(torch.uint8)
