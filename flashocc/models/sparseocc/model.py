"""SparseOcc: images -> ResNet + FPN -> sparse voxel decoder -> mask transformer -> labels on kept voxels.

State-dict names are the official ones (SparseOcc@af4d9df models/sparseocc.py, SparseOcc; its
``pts_bbox_head`` is models/sparseocc_head.py, SparseOccHead, whose ``transformer`` holds
``voxel_decoder`` and ``decoder``), so a released checkpoint loads strictly.

Batch contract (``forward``; checked on entry):
  img        (B, T·N, 3, H, W) float, **BGR 0..255** (as mmcv reads the files), frames outer: images
             0..N−1 are the keyframe's N cameras, then frame t−1, ...; the model normalises them in RGB
             (Official quirk: unlike FlashOcc's BGR normalisation, done in the data pipeline there).
  lidar2img  (B, T·N, 4, 4) per image: points of the **current** LiDAR frame -> that image's pixels
             (after the image augmentation). Past frames map the current frame into the past image
             (static world, no ego-motion warp).
  ego2lidar  optional (B, 4, 4) or (B, T·N, 4, 4): occupancy-grid ego frame -> LiDAR frame, including the
             inverse BEV augmentation; identity when absent. Sampling points live in the grid's frame.
Targets (train mode): voxel_semantics (B, Dx, Dy, Dz) with 255 = ignore; panoptic models also
voxel_instances (B, Dx, Dy, Dz), 0 = no instance (Occ3D-panoptic ``instances``).
Eval output (dict): ``occ_loc`` (B, K, 3) long voxel indices, ``sem_pred`` (B, K) labels, ``semantics``
(B, Dx, Dy, Dz) uint8 with free everywhere else; panoptic models also ``pano_inst``/``pano_sem`` (B, K) and
``instances`` (B, Dx, Dy, Dz) int16, with ``semantics`` taken from ``pano_sem`` (as upstream scores it).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from flashocc.models.sparseocc.config import SparseOccConfig
from flashocc.models.sparseocc.mask_decoder import MaskFormerOccDecoder
from flashocc.models.sparseocc.merge import merge_panoptic, merge_semantic, to_dense
from flashocc.models.sparseocc.photometric import photometric_distortion
from flashocc.models.sparseocc.sampling import ImageContext
from flashocc.models.sparseocc.voxel_decoder import SparseVoxelDecoder, VoxelLevel
from flashocc.ops.msmv_sampling import split_groups


class SparseOccTransformer(nn.Module):
    def __init__(self, voxel_decoder: SparseVoxelDecoder, decoder: MaskFormerOccDecoder) -> None:
        super().__init__()
        self.voxel_decoder = voxel_decoder
        self.decoder = decoder


class SparseOccHead(nn.Module):
    """Holds the two decoders under the official prefix (``pts_bbox_head.transformer.*``)."""

    def __init__(self, transformer: SparseOccTransformer) -> None:
        super().__init__()
        self.transformer = transformer

    @torch.no_grad()
    def init_weights(self) -> None:
        self.transformer.voxel_decoder.init_weights()
        self.transformer.decoder.init_weights()


class SparseOcc(nn.Module):
    """See the module docstring for the batch contract. ``forward(batch)`` returns the criterion's loss
    dict in train mode and the outputs in eval; ``return_intermediates=True`` adds ``voxel_levels`` (one
    ``VoxelLevel`` per voxel-decoder level: kept coordinates, logits, features) and every mask-decoder
    prediction set (``mask_preds``, ``class_preds``)."""

    def __init__(self, img_backbone: nn.Module, img_neck: nn.Module, pts_bbox_head: SparseOccHead, cfg: SparseOccConfig,
                 criterion: nn.Module | None = None) -> None:
        super().__init__()
        self.img_backbone = img_backbone
        self.img_neck = img_neck
        self.pts_bbox_head = pts_bbox_head
        self.criterion = criterion
        self.cfg = cfg
        # Buffers would enter the state dict and break strict loading of official checkpoints.
        self._mean = tuple(cfg.img_mean)
        self._std = tuple(cfg.img_std)
        # Source of the photometric augmentation's draws: None = numpy's global generator, as upstream; tests
        # and callers may set a numpy.random.RandomState (a module object would not survive deepcopy / EMA).
        self.color_rng: np.random.RandomState | None = None
        self.color_aug = cfg.color_aug
        self.inference_only = False  # set by fuse(): BatchNorm folded, training would be wrong
        self._freeze_stages()

    # ---- training-mode details of the official backbone (mmdet ResNet frozen_stages, norm_eval) -------
    def _frozen_modules(self) -> list[nn.Module]:
        if self.cfg.frozen_stages < 0:
            return []
        stem = [self.img_backbone.conv1, self.img_backbone.bn1]
        return stem + [getattr(self.img_backbone, f"layer{i}") for i in range(1, self.cfg.frozen_stages + 1)]

    def _freeze_stages(self) -> None:
        for module in self._frozen_modules():
            module.eval()
            for p in module.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> SparseOcc:
        if mode and self.inference_only:
            raise RuntimeError("a fused SparseOcc is for inference only (BatchNorm is folded into the convolutions); "
                               "train the eager model and fuse it again")
        super().train(mode)
        if mode:
            self._freeze_stages()
            if self.cfg.norm_eval:
                for m in self.img_backbone.modules():
                    if isinstance(m, nn.modules.batchnorm._BatchNorm):
                        m.eval()
        return self

    # ---- stages --------------------------------------------------------------------------------------
    def normalize(self, img: torch.Tensor) -> torch.Tensor:
        """(M, 3, H, W) BGR 0..255 -> RGB normalised, zero-padded to multiples of 32 (upstream extract_feat)."""
        img = img.float()[:, [2, 1, 0]]
        img = (img - img.new_tensor(self._mean).view(1, 3, 1, 1)) / img.new_tensor(self._std).view(1, 3, 1, 1)
        h, w = img.shape[-2:]
        return F.pad(img, [0, -w % 32, 0, -h % 32])

    def image_encoder(self, img: torch.Tensor) -> list[torch.Tensor]:
        """(B, M, 3, H, W) BGR 0..255 -> FPN levels (B, M, C, H/s, W/s), s = 4, 8, 16, 32. In training with
        ``cfg.color_aug`` every image first gets the official photometric augmentation (photometric.py)."""
        b, m = img.shape[:2]
        img = img.flatten(0, 1)
        if self.training and self.color_aug:
            img = photometric_distortion(img.float(), self.color_rng)
        feats = self.img_neck(self.img_backbone(self.normalize(img)))
        return [f.view(b, m, *f.shape[1:]) for f in feats]

    def group_features(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """FPN levels (B, T·N, C, h, w) -> the layout the samplers read (``split_groups``)."""
        cfg = self.cfg
        return [split_groups(f, cfg.num_frames, cfg.num_views, cfg.num_groups) for f in feats]

    @torch.no_grad()
    def encode_grouped(self, img: torch.Tensor) -> list[torch.Tensor]:
        """Inference: (B, T·N, 3, H, W) -> ``group_features(image_encoder(img))``, one frame (N images) at a
        time, each frame's FPN output written straight into the grouped layout. The backbone activations of
        only N images and one copy of the features exist at once (upstream runs all T·N images in one
        batch, then copies the features into the sampling layout: SparseOcc@af4d9df models/sparseocc.py
        extract_img_feat, models/sparseocc_transformer.py SparseOccTransformer.forward)."""
        cfg = self.cfg
        b, t, n, g = img.shape[0], cfg.num_frames, cfg.num_views, cfg.num_groups
        out: list[torch.Tensor] | None = None
        for i in range(b):
            for j in range(t):
                feats = self.img_neck(self.img_backbone(self.normalize(img[i, j * n:(j + 1) * n])))
                if out is None:
                    out = [f.new_zeros(b * t * g, f.shape[1] // g, n * (f.shape[2] + 1) + 1, f.shape[3])
                           for f in feats]
                row = (i * t + j) * g
                for level, f in zip(out, feats):
                    c, h, w = f.shape[1] // g, f.shape[2], f.shape[3]
                    # (N, G·C, h, w) -> (G, C, N, h, w) into the views' rows (stack_views' layout)
                    level[row:row + g, :, 1:].view(g, c, n, h + 1, w)[:, :, :, :h] = \
                        f.reshape(n, g, c, h, w).permute(1, 2, 0, 3, 4)
        assert out is not None
        return out

    def image_context(self, grouped: list[torch.Tensor], batch: Mapping[str, Any], image_hw: tuple[int, int]
                      ) -> ImageContext:
        """Grouped FPN levels (``group_features`` / ``encode_grouped``) + the batch's projections."""
        cfg = self.cfg
        lidar2img = batch["lidar2img"].float()
        ego2lidar = batch.get("ego2lidar")
        if ego2lidar is not None:
            ego2lidar = ego2lidar.float()
            lidar2img = lidar2img @ (ego2lidar[:, None] if ego2lidar.dim() == 3 else ego2lidar)
        return ImageContext(grouped, lidar2img, image_hw, cfg.num_frames, cfg.num_views)

    def decode(self, ctx: ImageContext, batch_size: int, generator: torch.Generator | None = None
               ) -> tuple[list[VoxelLevel], list[torch.Tensor], list[torch.Tensor]]:
        """-> voxel-decoder levels, mask logits and class logits per prediction set."""
        transformer = self.pts_bbox_head.transformer
        levels = transformer.voxel_decoder(ctx, batch_size)
        occ_loc, mask_feat = levels[-1].coords, levels[-1].feats
        mask_preds, class_preds = transformer.decoder(occ_loc, mask_feat, ctx, generator)
        return levels, mask_preds, class_preds

    def merge(self, levels: list[VoxelLevel], mask_preds: list[torch.Tensor], class_preds: list[torch.Tensor]
              ) -> dict[str, torch.Tensor]:
        cfg, grid = self.cfg, self.cfg.grid
        occ_loc = levels[-1].coords
        sem = merge_semantic(class_preds[-1], mask_preds[-1], grid.free_label, cfg.score_threshold)
        out = {"occ_loc": occ_loc, "sem_pred": sem}
        if cfg.panoptic:
            inst, pano_sem = merge_panoptic(class_preds[-1], mask_preds[-1], grid, cfg.score_threshold,
                                            cfg.overlap_threshold)
            out.update(pano_inst=inst, pano_sem=pano_sem, instances=to_dense(occ_loc, inst, grid.shape, 0))
            sem = pano_sem  # upstream scores pano_sem in panoptic mode
        out["semantics"] = to_dense(occ_loc, sem.to(torch.uint8), grid.shape, grid.free_label)
        return out

    # ---- entry points --------------------------------------------------------------------------------
    def check_batch(self, batch: Mapping[str, Any]) -> tuple[int, int]:
        cfg = self.cfg
        m = cfg.num_frames * cfg.num_views
        for key in ("img", "lidar2img"):
            if key not in batch:
                raise KeyError(f"SparseOcc batch is missing '{key}'; expected img (B, {m}, 3, H, W) BGR 0..255 "
                               f"and lidar2img (B, {m}, 4, 4)")
        img = batch["img"]
        if img.dim() != 5 or img.shape[1] != m or img.shape[2] != 3:
            raise ValueError(f"batch['img'] must be (B, T·N = {m}, 3, H, W) for {cfg.num_frames} frames of "
                             f"{cfg.num_views} cameras, got {tuple(img.shape)}")
        b = img.shape[0]
        if tuple(batch["lidar2img"].shape) != (b, m, 4, 4):
            raise ValueError(f"batch['lidar2img'] must be ({b}, {m}, 4, 4), got {tuple(batch['lidar2img'].shape)}")
        e2l = batch.get("ego2lidar")
        if e2l is not None and tuple(e2l.shape) not in ((b, 4, 4), (b, m, 4, 4)):
            raise ValueError(f"batch['ego2lidar'] must be ({b}, 4, 4) or ({b}, {m}, 4, 4), got {tuple(e2l.shape)}")
        return b, m

    def sampling_generator(self, generator: torch.Generator | None) -> torch.Generator | None:
        """The generator of the mask-guided draws: the caller's, else a fresh one seeded with
        ``cfg.sampling_seed`` (deterministic mode), else None (the global CPU generator, as upstream)."""
        if generator is None and self.cfg.sampling_seed is not None:
            generator = torch.Generator().manual_seed(self.cfg.sampling_seed)
        return generator

    def forward_features(self, feats: list[torch.Tensor], batch: Mapping[str, Any], image_hw: tuple[int, int],
                         generator: torch.Generator | None = None, grouped: list[torch.Tensor] | None = None
                         ) -> dict[str, Any]:
        """FPN levels (or, with ``grouped``, the levels already in the sampling layout; ``feats`` is then
        ignored and may be None) -> voxel levels and prediction sets."""
        if grouped is None:
            grouped = self.group_features(feats)
            feats = None  # the grouped copy replaces the FPN outputs (freed here unless a caller holds them)
        ctx = self.image_context(grouped, batch, image_hw)
        levels, mask_preds, class_preds = self.decode(ctx, batch["img"].shape[0], self.sampling_generator(generator))
        return {"voxel_levels": levels, "mask_preds": mask_preds, "class_preds": class_preds}

    def forward(self, batch: Mapping[str, Any], return_intermediates: bool = False,
                generator: torch.Generator | None = None) -> dict[str, Any]:
        self.check_batch(batch)
        if self.training and "voxel_semantics" not in batch:
            raise KeyError("SparseOcc training needs batch['voxel_semantics'] (B, Dx, Dy, Dz) labels, 255 = ignore")
        hw = padded_hw(batch["img"])
        if self.training or torch.is_grad_enabled():
            outs = self.forward_features(self.image_encoder(batch["img"]), batch, hw, generator)
        else:  # inference: frame by frame, a fraction of the peak memory, the same features
            outs = self.forward_features(None, batch, hw, generator, grouped=self.encode_grouped(batch["img"]))
        if self.training:
            if self.criterion is None:
                raise RuntimeError("this SparseOcc was built without a criterion; build it with build_sparseocc")
            return self.criterion(outs, batch)
        return self.outputs(outs, return_intermediates)

    def outputs(self, outs: dict[str, Any], return_intermediates: bool = False) -> dict[str, Any]:
        """``forward_features``' result -> the eval output dict (see the module docstring)."""
        result = self.merge(outs["voxel_levels"], outs["mask_preds"], outs["class_preds"])
        if return_intermediates:
            result.update(outs)
        return result

    def fuse(self, channels_last: bool = True, compile: bool | str = False) -> SparseOcc:
        """An inference-only copy with the same outputs and less work (this model is left as it is): the
        backbone's BatchNorm folded into its convolutions, channels-last convolution weights, no criterion;
        ``compile``: True (inductor) or a ``torch.compile`` backend for the backbone and the FPN. Its state
        dict has no BatchNorm entries: save the eager model's."""
        from flashocc.models.fuse import inference_copy

        fused = inference_copy(self, channels_last, compile, ("img_backbone", "img_neck"))
        fused.criterion = None
        fused.inference_only = True
        return fused

    @torch.no_grad()
    def predict(self, batch: Mapping[str, Any], generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, Dx, Dy, Dz) uint8 labels, free outside the kept voxels. Call ``model.eval()`` first."""
        return self.forward(batch, generator=generator)["semantics"]


def padded_hw(img: torch.Tensor) -> tuple[int, int]:
    """The (H, W) the sampling normalises pixels by: the input padded to multiples of 32 (``normalize``)."""
    h, w = img.shape[-2:]
    return h + -h % 32, w + -w % 32


__all__ = ["SparseOcc", "SparseOccHead", "SparseOccTransformer", "padded_hw"]
