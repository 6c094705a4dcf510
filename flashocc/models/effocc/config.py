"""``EFFOccConfig``: LiDAR-camera fusion (``FlashFusionOCC``) and LiDAR-only (``FlashLiDAROCC``) EFFOcc models.

Official values: EFFOcc@9544ca0 configs/effocc_fusion_r18_data_scales/flashocc_fusion_r18_base_100%_seqs.py
and configs/effocc_fusion_more_backbones/*. The camera side shares the camera lift-splat fields (and
their meaning) with ``configs.ModelConfig``; ``camera=False`` is the LiDAR-only model, which refuses
any camera field changed from its default (it has no camera branch to honour it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Literal, get_args

import torch

from flashocc.errors import ConfigError
from flashocc.grid import OCC3D_CLASS_FREQUENCIES, OCC3D_NUSCENES, OccGrid
from flashocc.models.configs import BACKBONES, DEPTH_TARGETS, IMAGE_NECKS, stage_stride
from flashocc.models.swin import SWIN_LAYOUTS

LidarEncoder = Literal["sparse", "height"]
LIDAR_ENCODERS: tuple[str, ...] = get_args(LidarEncoder)
SPARSE_BACKENDS = ("torch", "spconv")
# Fields only the camera branch (and its depth losses) reads.
CAMERA_FIELDS = ("backbone", "backbone_out_indices", "with_cp", "drop_path_rate", "img_neck", "img_neck_channels",
                 "input_size", "downsample", "depth_bins", "sid", "bev_channels", "lidar_depth_input",
                 "depth_loss_weight", "depth_target", "semantic_loss_weight", "fuser_channels")
# Fields only the sparse LiDAR encoder reads.
SPARSE_FIELDS = ("voxel_size", "max_points", "max_voxels", "sparse_backend")


@dataclass(frozen=True)
class EFFOccConfig:
    """EFFOcc: [camera LSS BEV (``bev_channels``) ⊕] LiDAR BEV -> ConvFuser2D -> SECOND + SECONDFPN ->
    channel-to-height head. Built by ``effocc.builder.build_effocc``."""

    family: ClassVar[str] = "effocc"
    num_frames: ClassVar[int] = 1

    name: str
    description: str = ""
    camera: bool = True                          # False: FlashLiDAROCC (no camera branch, no fuser)
    # Camera branch (as ModelConfig's fields of the same names).
    backbone: str = "resnet18"
    backbone_out_indices: tuple[int, ...] = (1, 2, 3)
    with_cp: bool = False
    drop_path_rate: float = 0.0
    img_neck: str = "custom_fpn"
    img_neck_channels: int = 128
    input_size: tuple[int, int] = (256, 704)
    downsample: int = 8
    depth_bins: tuple[float, float, float] = (1.0, 45.0, 0.5)
    sid: bool = False
    bev_channels: int = 64                       # numC_Trans: camera BEV channels into the fuser
    lidar_depth_input: bool = True               # LiDAR-assisted depth net (with_depth_from_lidar)
    # LiDAR branch.
    lidar_encoder: LidarEncoder = "sparse"       # "sparse": mmdet3d SparseEncoder; "height": dense 0.4 m bins
    voxel_size: tuple[float, float, float] = (0.05, 0.05, 0.16)
    max_points: int = 10
    max_voxels: tuple[int, int] = (90000, 120000)   # train, test
    sparse_backend: str = "torch"                # "spconv": spconv 2.x (optional extra) with the same weights
    lidar_channels: int = 128                    # sparse: conv_out channels (x z cells = BEV); height: conv width
    # Fuser, BEV trunk and head.
    fuser_channels: int = 256
    second_channels: tuple[int, ...] = (128, 256)
    second_layers: tuple[int, ...] = (5, 5)
    second_strides: tuple[int, ...] = (1, 2)
    fpn_channels: tuple[int, ...] = (256, 256)
    head_channels: int = 256
    # Losses (models/criterion.py; same meaning as ModelConfig's).
    use_mask: bool = True
    class_balance: bool = False
    class_weights: tuple[float, ...] = ()
    depth_loss_weight: float = 0.0
    depth_target: str = "lidar"
    semantic_loss_weight: float = 0.0
    affinity_loss_weight: float = 0.0
    grid: OccGrid = field(default=OCC3D_NUSCENES)

    def __post_init__(self) -> None:
        checks = [
            ("name", isinstance(self.name, str) and bool(self.name), "a non-empty preset name"),
            ("camera", isinstance(self.camera, bool), "true or false"),
            ("backbone", self.backbone in BACKBONES or self.backbone in SWIN_LAYOUTS, f"one of {list(BACKBONES)}"),
            ("backbone_out_indices", _ints(self.backbone_out_indices) and len(self.backbone_out_indices) > 0
             and list(self.backbone_out_indices) == sorted(set(self.backbone_out_indices))
             and all(0 <= i <= 3 for i in self.backbone_out_indices), "ascending stage numbers in 0..3"),
            ("drop_path_rate", _num(self.drop_path_rate) and 0 <= self.drop_path_rate < 1, "a rate in [0, 1)"),
            ("img_neck", self.img_neck in IMAGE_NECKS, f"one of {list(IMAGE_NECKS)}"),
            ("img_neck_channels", _pos(self.img_neck_channels), "an integer > 0"),
            ("input_size", _ints(self.input_size) and len(self.input_size) == 2 and min(self.input_size) > 0,
             "(H, W) with H, W > 0"),
            ("downsample", self.downsample in (4, 8, 16, 32), "a backbone stage stride: 4, 8, 16 or 32"),
            ("depth_bins", len(self.depth_bins) == 3 and all(_num(v) for v in self.depth_bins)
             and 0 < self.depth_bins[0] < self.depth_bins[1] and self.depth_bins[2] > 0,
             "(start, stop, step) metres with 0 < start < stop and step > 0"),
            ("bev_channels", _pos(self.bev_channels), "an integer > 0"),
            ("lidar_depth_input", isinstance(self.lidar_depth_input, bool), "true or false"),
            ("lidar_encoder", self.lidar_encoder in LIDAR_ENCODERS, f"one of {list(LIDAR_ENCODERS)}"),
            ("voxel_size", len(self.voxel_size) == 3 and all(_num(v) and v > 0 for v in self.voxel_size),
             "three sizes > 0 (x, y, z metres)"),
            ("max_points", _pos(self.max_points), "an integer > 0"),
            ("max_voxels", _ints(self.max_voxels) and len(self.max_voxels) == 2 and min(self.max_voxels) > 0,
             "(train, test) counts > 0"),
            ("sparse_backend", self.sparse_backend in SPARSE_BACKENDS, f"one of {list(SPARSE_BACKENDS)}"),
            ("lidar_channels", _pos(self.lidar_channels), "an integer > 0"),
            ("fuser_channels", _pos(self.fuser_channels), "an integer > 0"),
            ("second_channels", len(self.second_channels) > 0 and all(_pos(c) for c in self.second_channels),
             "channel counts > 0, one per SECOND block"),
            ("second_layers", len(self.second_layers) == len(self.second_channels)
             and all(isinstance(c, int) and c >= 0 for c in self.second_layers),
             "one layer count >= 0 per SECOND block"),
            ("second_strides", len(self.second_strides) == len(self.second_channels)
             and all(s in (1, 2) for s in self.second_strides), "one stride of 1 or 2 per SECOND block"),
            ("fpn_channels", len(self.fpn_channels) == len(self.second_channels)
             and all(_pos(c) for c in self.fpn_channels), "one channel count > 0 per SECOND block"),
            ("head_channels", _pos(self.head_channels), "an integer > 0"),
            ("class_weights", all(_num(w) and w >= 0 for w in self.class_weights),
             "finite weights >= 0, one per class (or none)"),
            ("depth_target", self.depth_target in DEPTH_TARGETS, f"one of {list(DEPTH_TARGETS)}"),
            ("grid", isinstance(self.grid, OccGrid), "an OccGrid"),
        ]
        checks += [(k, _num(getattr(self, k)) and getattr(self, k) >= 0, "a finite weight >= 0")
                   for k in ("depth_loss_weight", "semantic_loss_weight", "affinity_loss_weight")]
        for name, ok, expected in checks:
            if not ok:
                _refuse(name, expected, getattr(self, name))

    # ---- the interface the tools read from every model config --------------------------------------
    @property
    def temporal(self) -> bool:
        return False

    @property
    def bev_is_3d(self) -> bool:
        return False

    @property
    def num_depth_bins(self) -> int:
        return len(torch.arange(*self.depth_bins))

    @property
    def point_range(self) -> tuple[float, ...]:
        """The LiDAR range: the occupancy grid's box (official point_cloud_range)."""
        return (*self.grid.lower, *self.grid.upper)

    @property
    def sparse_shape(self) -> tuple[int, int, int]:
        """(z, y, x) of the sparse grid: one padding layer in z, as the official [41, 1600, 1600]."""
        nx, ny, nz = (int(round((hi - lo) / s)) for lo, hi, s in zip(self.grid.lower, self.grid.upper, self.voxel_size))
        return nz + 1, ny, nx

    def data_requirements(self) -> dict[str, Any]:
        needs: dict[str, Any] = {"input_size": tuple(self.input_size), "num_adjacent": 0, "load_points": True}
        if self.camera and self.lidar_depth_input:
            needs["load_lidar_depth"] = True
        if self.camera and self.depth_loss_weight > 0 and self.depth_target == "lidar":
            needs.update(load_depth=True, depth_range=(float(self.depth_bins[0]), float(self.depth_bins[1])))
        return needs

    def check(self) -> EFFOccConfig:
        """Refuse what the builder cannot honour given the other fields; returns self."""
        where = f"(effocc family, preset {self.name})"
        if not self.camera:
            defaults = {f.name: f.default for f in fields(EFFOccConfig)}
            for name in CAMERA_FIELDS:
                if getattr(self, name) != defaults[name]:
                    _refuse(name, f"its default {defaults[name]!r}: the LiDAR-only model (model.camera=False) has "
                            f"no camera branch {where}", getattr(self, name))
        else:
            self._check_camera(where)
        if self.lidar_encoder == "height":
            defaults = {f.name: f.default for f in fields(EFFOccConfig)}
            for name in SPARSE_FIELDS:
                if getattr(self, name) != defaults[name]:
                    _refuse(name, f"its default {defaults[name]!r}: only model.lidar_encoder='sparse' voxelizes "
                            f"at model.voxel_size {where}", getattr(self, name))
        else:
            vx, vy, _ = self.voxel_size
            gx, gy, _ = self.grid.voxel_size
            # The sparse encoder reduces x/y by 8: its BEV cell must be the grid's cell.
            if not (math.isclose(8 * vx, gx, rel_tol=1e-6) and math.isclose(8 * vy, gy, rel_tol=1e-6)):
                _refuse("voxel_size", f"x/y sizes of grid cell / 8 = ({gx / 8}, {gy / 8}) (the sparse encoder's "
                        f"x/y stride) {where}", self.voxel_size)
        stride = math.prod(self.second_strides)
        dx, dy, _ = self.grid.shape
        if dx % stride or dy % stride:
            _refuse("second_strides", f"a total stride dividing the BEV size {(dx, dy)} {where}", self.second_strides)
        k = self.grid.num_classes
        if self.class_weights and len(self.class_weights) != k:
            _refuse("class_weights", f"{k} weights (one per class of the grid) {where}", self.class_weights)
        if self.class_weights and self.class_balance:
            _refuse("class_balance", f"False with explicit model.class_weights {where}", self.class_balance)
        if self.class_balance and k != len(OCC3D_CLASS_FREQUENCIES):
            _refuse("class_balance", f"a grid with the {len(OCC3D_CLASS_FREQUENCIES)} Occ3D classes {where}",
                    self.class_balance)
        return self

    def _check_camera(self, where: str) -> None:
        if self.backbone.startswith("resnet") and self.drop_path_rate != 0:
            _refuse("drop_path_rate", f"0.0: stochastic depth is a Swin option {where}", self.drop_path_rate)
        neck = tuple(self.backbone_out_indices)
        if self.img_neck == "fpn_lss" and (len(neck) != 2 or neck[1] != neck[0] + 1):
            _refuse("backbone_out_indices", f"two consecutive stages for img_neck 'fpn_lss' {where}", neck)
        if self.downsample != stage_stride(neck[0]):
            _refuse("downsample", f"{stage_stride(neck[0])}, the stride of the image neck's output {where}",
                    self.downsample)
        if self.lidar_depth_input and self.downsample < 8:
            # lidar_input_net: stride 4, then stride 2·downsample/8.
            _refuse("downsample", f">= 8 with the LiDAR depth stem (model.lidar_depth_input) {where}", self.downsample)
        h, w = self.input_size
        need = stage_stride(neck[-1]) if self.img_neck == "fpn_lss" else self.downsample
        if h % need or w % need:
            _refuse("input_size", f"(H, W) divisible by {need} {where}", self.input_size)
        if self.sid and (self.num_depth_bins < 2 or self.depth_bins[1] - 1 <= self.depth_bins[0]):
            _refuse("depth_bins", f"at least 2 bins and stop - 1 > start for sid bins {where}", self.depth_bins)
        if self.depth_target == "occupancy" and self.depth_loss_weight == 0:
            _refuse("depth_target", f"'lidar' while model.depth_loss_weight is 0 {where}", self.depth_target)

    @classmethod
    def field_hint(cls, name: str) -> str | None:
        if name in ("encoder_channels", "encoder_layers", "encoder_strides", "bev_neck_channels"):
            return ("the EFFOcc BEV trunk is SECOND + SECONDFPN: model.second_channels, model.second_layers, "
                    "model.second_strides, model.fpn_channels")
        return None


def _pos(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _ints(v: Any) -> bool:
    return isinstance(v, tuple) and all(isinstance(x, int) and not isinstance(x, bool) for x in v)


def _refuse(name: str, expected: str, found: Any) -> None:
    raise ConfigError(f"model.{name}: expected {expected}, found {found!r}")


__all__ = ["EFFOccConfig", "LIDAR_ENCODERS", "CAMERA_FIELDS"]
