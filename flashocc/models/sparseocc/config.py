"""``SparseOccConfig``: every setting the SparseOcc builder reads, range-checked on construction.

Official values: SparseOcc@af4d9df configs/r50_nuimg_704x256_8f.py (v1.1) and the modules it names.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from flashocc.errors import ConfigError
from flashocc.grid import OCC3D_CLASS_FREQUENCIES, OCC3D_NUSCENES, OccGrid

RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")
# Classes whose GT segments are instances in the panoptic config (_pano.py, LoadOccGTFromFile
# inst_class_ids) and the classes the panoptic merge numbers as things (SparseOccHead.merge_panoseg_single).
PANO_INSTANCE_CLASSES = (2, 3, 4, 5, 6, 7, 9, 10)


@dataclass(frozen=True)
class SparseOccConfig:
    """SparseOcc: ResNet + FPN, a 3-level sparse voxel decoder and a mask transformer (one shared layer).

    Frames: ``num_frames`` frames of ``num_views`` cameras, frames outer (keyframe first). Images enter as
    BGR 0..255 and are normalised in RGB inside the model (``img_mean``/``img_std`` are RGB).
    """

    family: ClassVar[str] = "sparseocc"

    name: str
    description: str = ""
    # Image encoder: a ResNet (all 4 stages) and mmdet's FPN to ``embed_dims`` channels.
    backbone: str = "resnet50"
    with_cp: bool = False            # gradient checkpointing of the backbone blocks (official: True)
    # Activation checkpointing of the decoders' attention, sampling and mixing blocks in training
    # (official: always on); off only recomputes less, outputs and gradients are the same.
    decoder_cp: bool = True
    # The detector's photometric augmentation of every image in training, never in eval (official
    # img_color_aug=True; SparseOcc@af4d9df models/utils.py, GpuPhotoMetricDistortion): photometric.py.
    color_aug: bool = True
    frozen_stages: int = 1           # stem + layer1 frozen in training (official)
    norm_eval: bool = True           # backbone BatchNorm kept in eval mode while training (official)
    input_size: tuple[int, int] = (256, 704)
    img_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)   # RGB
    img_std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    # Decoders.
    embed_dims: int = 256
    num_groups: int = 4
    num_points: int = 4              # level 0 of the voxel decoder and every mask-decoder pass
    num_frames: int = 8
    num_views: int = 6
    num_voxel_layers: int = 3        # hard-coded upstream; query interval 2**layers voxels
    num_queries: int = 100
    num_mask_layers: int = 2         # passes of the one shared mask-decoder layer
    topk_training: tuple[int, ...] = (4000, 16000, 64000)
    topk_testing: tuple[int, ...] = (2000, 8000, 32000)
    # Outputs.
    panoptic: bool = False           # instance segments for PANO_INSTANCE_CLASSES and the panoptic merge
    score_threshold: float = 0.3
    overlap_threshold: float = 0.8
    # Mask-guided sampling at inference draws torch.rand (official). None: the global CPU generator, as
    # upstream; an int: a generator seeded with it on every forward (bit-reproducible).
    sampling_seed: int | None = None
    # Losses.
    loss_mask_weight: float = 5.0
    loss_dice_weight: float = 5.0
    loss_class_weight: float = 2.0
    cost_class: float = 2.0
    cost_mask: float = 5.0
    cost_dice: float = 5.0
    grid: OccGrid = field(default=OCC3D_NUSCENES)

    def __post_init__(self) -> None:
        dims = self.grid.shape if isinstance(self.grid, OccGrid) else (0, 0, 0)
        coarse = 2 ** self.num_voxel_layers if _pos_int(self.num_voxel_layers) else 1
        n0 = math.prod(math.ceil(d / coarse) for d in dims)
        checks = [
            ("name", isinstance(self.name, str) and bool(self.name), "a non-empty preset name"),
            ("backbone", self.backbone in RESNETS, f"one of {list(RESNETS)}"),
            ("decoder_cp", isinstance(self.decoder_cp, bool), "true or false"),
            ("color_aug", isinstance(self.color_aug, bool), "true or false"),
            ("frozen_stages", isinstance(self.frozen_stages, int) and -1 <= self.frozen_stages <= 4,
             "-1 (nothing frozen) .. 4"),
            ("input_size", _ints(self.input_size, 2) and all(v > 0 and v % 32 == 0 for v in self.input_size),
             "(H, W), both multiples of 32 (the FPN's coarsest stride; upstream pads to 32)"),
            ("img_mean", _floats(self.img_mean, 3), "three RGB means"),
            ("img_std", _floats(self.img_std, 3) and min(self.img_std) > 0, "three RGB stds > 0"),
            ("embed_dims", _pos_int(self.embed_dims), "an integer > 0"),
            ("num_groups", _pos_int(self.num_groups) and _pos_int(self.embed_dims)
             and self.embed_dims % self.num_groups == 0, "an integer > 0 that divides embed_dims"),
            ("num_points", _pos_int(self.num_points) and _pos_int(self.num_voxel_layers)
             and self.num_points % 2 ** (self.num_voxel_layers - 1) == 0,
             "an integer > 0 divisible by 2**(num_voxel_layers - 1) (halved per voxel-decoder level)"),
            ("num_frames", _pos_int(self.num_frames), "an integer > 0"),
            ("num_views", _pos_int(self.num_views), "an integer > 0"),
            ("num_voxel_layers", _pos_int(self.num_voxel_layers), "an integer > 0"),
            ("num_queries", _pos_int(self.num_queries), "an integer > 0"),
            ("num_mask_layers", _pos_int(self.num_mask_layers), "an integer > 0"),
            ("grid", isinstance(self.grid, OccGrid) and all(d % coarse == 0 for d in dims),
             f"an OccGrid whose shape is divisible by 2**num_voxel_layers = {coarse}"),
            ("topk_training", _topk_ok(self.topk_training, self.num_voxel_layers, n0),
             f"{self.num_voxel_layers} counts > 0, the first at most 8·{n0} and each at most 8x the previous"),
            ("topk_testing", _topk_ok(self.topk_testing, self.num_voxel_layers, n0),
             f"{self.num_voxel_layers} counts > 0, the first at most 8·{n0} and each at most 8x the previous"),
            ("score_threshold", _num(self.score_threshold) and 0 <= self.score_threshold < 1, "a value in [0, 1)"),
            ("overlap_threshold", _num(self.overlap_threshold) and 0 <= self.overlap_threshold <= 1,
             "a value in [0, 1]"),
            ("sampling_seed", self.sampling_seed is None or (isinstance(self.sampling_seed, int)
                                                             and not isinstance(self.sampling_seed, bool)),
             "None or an integer seed"),
        ]
        checks += [(k, _num(getattr(self, k)) and getattr(self, k) >= 0, "a finite weight >= 0")
                   for k in ("loss_mask_weight", "loss_dice_weight", "loss_class_weight", "cost_class",
                             "cost_mask", "cost_dice")]
        for name, ok, expected in checks:
            if not ok:
                raise ConfigError(f"model.{name}: expected {expected}, found {getattr(self, name)!r}")
        if self.grid.num_classes != len(OCC3D_CLASS_FREQUENCIES):
            raise ConfigError(f"model.grid: expected the {len(OCC3D_CLASS_FREQUENCIES)} Occ3D classes (the voxel "
                              f"decoder's CE weights come from their nuScenes frequencies), found "
                              f"{self.grid.num_classes}")

    # The interface the tools read from every model config.
    @property
    def temporal(self) -> bool:
        return self.num_frames > 1

    @property
    def bev_is_3d(self) -> bool:
        return True  # no BEV map: 3D voxel features (train.channels_last does not apply)

    def check(self) -> SparseOccConfig:
        """Cross-field checks that depend on override order (run when the config is resolved and built)."""
        default = SparseOccConfig.__dataclass_fields__["overlap_threshold"].default
        if not self.panoptic and self.overlap_threshold != default:
            # SparseOccHead.merge_panoseg_single is the only reader (SparseOcc@af4d9df models/sparseocc_head.py).
            raise ConfigError(f"model.overlap_threshold: expected {default} (the default) unless model.panoptic is "
                              f"true: only the panoptic merge reads it (preset {self.name}), found "
                              f"{self.overlap_threshold!r}")
        return self

    def data_requirements(self) -> dict[str, Any]:
        """What the loader must give: the input size, ``num_frames - 1`` past camera frames chosen as the
        official loader does, one image augmentation for all of them, BGR 0..255 images and ``lidar2img``
        (``DataConfig.pipeline = "sparseocc"``: flashocc.data.sparseocc_frames)."""
        return {"input_size": tuple(self.input_size), "num_adjacent": self.num_frames - 1, "pipeline": "sparseocc"}


def _pos_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _ints(v: Any, n: int) -> bool:
    return isinstance(v, tuple) and len(v) == n and all(isinstance(x, int) and not isinstance(x, bool) for x in v)


def _floats(v: Any, n: int) -> bool:
    return isinstance(v, tuple) and len(v) == n and all(_num(x) for x in v)


def _topk_ok(topk: Any, layers: Any, n0: int) -> bool:
    if not (_ints(topk, layers if _pos_int(layers) else -1) and all(k > 0 for k in topk)):
        return False
    available = n0
    for k in topk:
        if k > 8 * available:
            return False
        available = k
    return True


__all__ = ["SparseOccConfig", "PANO_INSTANCE_CLASSES", "RESNETS"]
