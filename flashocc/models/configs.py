"""Model configs: one frozen dataclass per model family, each read completely by its one builder.

| family            | config              | builder (builders.py) | presets                                         |
| camera lift-splat | ``CameraLSSConfig`` | ``build_camera_lss``  | flashocc-r50-m0/m1, bevdetocc-r50, flashocc-tiny, |
|                   |                     |                       | flashocc-tiny-demo, bevdetocc-tiny              |
| stereo 4D         | ``Stereo4DConfig``  | ``build_stereo4d``    | flashocc-r50-m2, flashocc-swinb-m3, flashocc-tiny-m2 |

``ModelConfig`` is what both share: image encoder (backbone + neck), lift-splat view transform, BEV
encoder and head, and the loss settings the criterion reads. The preset picks the family; a field
only one family has (``head_3d``, ``aspp_channels``) exists only on that family's class.

Checks happen in two places. ``__post_init__`` refuses a value that is out of range on its own
(channels <= 0, depth bins with start >= stop, an unknown backbone). ``check()`` refuses what no
builder can honour given the other fields (a ``downsample`` that is not the image features' stride,
``drop_path_rate`` on a ResNet, ``class_weights`` that do not fit the grid): it runs when a config
is resolved (``flashocc.config.load_run_config``) and when a model is built, not on construction,
because ``key=value`` overrides are applied one at a time and two keys that must change together
(``model.backbone_out_indices=[1,2] model.downsample=8``) pass through a mixed state in between.
Every refusal is a ``ConfigError`` naming ``model.<field>``.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Literal, get_args

import torch

from flashocc.errors import ConfigError
from flashocc.grid import OCC3D_CLASS_FREQUENCIES, OCC3D_NUSCENES, OccGrid
from flashocc.models.swin import SWIN_LAYOUTS

log = logging.getLogger(__name__)

Backbone = Literal["resnet18", "resnet34", "resnet50", "resnet101", "swin-t", "swin-b"]
ImageNeck = Literal["custom_fpn", "fpn_lss"]
DepthTarget = Literal["lidar", "occupancy"]
BACKBONES: tuple[str, ...] = get_args(Backbone)
IMAGE_NECKS: tuple[str, ...] = get_args(ImageNeck)
DEPTH_TARGETS: tuple[str, ...] = get_args(DepthTarget)

NUM_FRAMES = 3  # temporal stereo: t, t-1 (BEV maps) and t-2 (stereo reference only)


def stage_stride(stage: int) -> int:
    """Output stride of backbone stage ``stage``: 4 after the ResNet stem or the 4x4 Swin patch
    embedding, halved per stage (0 = layer1 / Swin stage 0)."""
    return 4 * 2 ** stage


@dataclass(frozen=True)
class ModelConfig:
    """Fields both families share; build a ``CameraLSSConfig`` or a ``Stereo4DConfig`` (see the presets)."""

    family: ClassVar[str] = ""
    num_frames: ClassVar[int] = 1      # frames of one sample the model reads

    name: str
    description: str = ""
    # Image encoder.
    backbone: Backbone = "resnet50"              # ResNet-18/34/50/101 or a Swin layout
    backbone_out_indices: tuple[int, ...] = (2, 3)   # backbone stages returned (0 = layer1 / Swin stage 0)
    with_cp: bool = False                        # gradient checkpointing of the image backbone blocks
    drop_path_rate: float = 0.0                  # Swin stochastic depth (ResNets have none)
    img_neck: ImageNeck = "custom_fpn"           # "fpn_lss": the Swin configs' neck (cat + 2 convs)
    img_neck_channels: int = 256
    input_size: tuple[int, int] = (256, 704)     # (H, W) of the network input
    downsample: int = 16                         # stride of the image features that are lifted
    # Lift-splat view transform.
    depth_bins: tuple[float, float, float] = (1.0, 45.0, 0.5)   # start, stop, step (metres)
    sid: bool = False                            # log-spaced (SID) depth bins
    bev_channels: int = 64                       # numC_Trans: context channels lifted into BEV
    # BEV encoder and head.
    encoder_channels: tuple[int, ...] = (128, 256, 512)
    encoder_layers: tuple[int, ...] = (2, 2, 2)
    encoder_strides: tuple[int, ...] = (2, 2, 2)
    bev_neck_channels: int = 256
    head_channels: int = 256
    # Losses (models/criterion.py).
    use_mask: bool = True                        # occupancy loss over camera-visible voxels only
    class_balance: bool = False                  # official 1/log(f) weights from the nuScenes frequencies
    class_weights: tuple[float, ...] = ()        # explicit per-class loss weights (instead of class_balance)
    depth_loss_weight: float = 0.0
    # Training aids, off in the official presets (models/ray_targets.py): depth targets from the first
    # occupied voxel on each ray instead of LiDAR, an auxiliary per-pixel class loss, and per-class
    # precision/recall/specificity terms (losses.affinity_loss).
    depth_target: DepthTarget = "lidar"
    semantic_loss_weight: float = 0.0
    affinity_loss_weight: float = 0.0
    grid: OccGrid = field(default=OCC3D_NUSCENES)

    def __post_init__(self) -> None:
        if type(self) is ModelConfig:
            raise ConfigError("ModelConfig is the fields the model families share; build a CameraLSSConfig "
                              "(single frame) or a Stereo4DConfig (temporal stereo), or start from a preset "
                              "(flashocc.models.presets.get_config)")
        _require(self, [
            ("name", isinstance(self.name, str) and bool(self.name), "a non-empty preset name"),
            # A layout added to SWIN_LAYOUTS in code (experiments, tests) is accepted too.
            ("backbone", self.backbone in BACKBONES or self.backbone in SWIN_LAYOUTS, f"one of {list(BACKBONES)}"),
            ("backbone_out_indices", _ints(self.backbone_out_indices) and len(self.backbone_out_indices) > 0
             and list(self.backbone_out_indices) == sorted(set(self.backbone_out_indices))
             and all(0 <= i <= 3 for i in self.backbone_out_indices), "ascending stage numbers in 0..3"),
            ("drop_path_rate", _number(self.drop_path_rate) and 0 <= self.drop_path_rate < 1, "a rate in [0, 1)"),
            ("img_neck", self.img_neck in IMAGE_NECKS, f"one of {list(IMAGE_NECKS)}"),
            ("img_neck_channels", _positive_int(self.img_neck_channels), "an integer > 0"),
            ("input_size", _ints(self.input_size) and len(self.input_size) == 2 and min(self.input_size) > 0,
             "(H, W) with H, W > 0"),
            ("downsample", self.downsample in (4, 8, 16, 32), "a backbone stage stride: 4, 8, 16 or 32"),
            ("depth_bins", len(self.depth_bins) == 3 and all(_number(v) for v in self.depth_bins)
             and 0 < self.depth_bins[0] < self.depth_bins[1] and self.depth_bins[2] > 0,
             "(start, stop, step) metres with 0 < start < stop and step > 0"),
            ("bev_channels", _positive_int(self.bev_channels), "an integer > 0"),
            ("encoder_channels", len(self.encoder_channels) == 3
             and all(_positive_int(c) for c in self.encoder_channels),
             "three channel counts > 0 (one per BEV encoder stage)"),
            ("encoder_layers", len(self.encoder_layers) == 3 and all(_positive_int(c) for c in self.encoder_layers),
             "three block counts >= 1"),
            ("encoder_strides", len(self.encoder_strides) == 3 and _ints(self.encoder_strides)
             and all(s in (1, 2) for s in self.encoder_strides), "three strides of 1 or 2"),
            ("bev_neck_channels", _positive_int(self.bev_neck_channels), "an integer > 0"),
            ("head_channels", _positive_int(self.head_channels), "an integer > 0"),
            ("class_weights", all(_number(w) and w >= 0 for w in self.class_weights),
             "finite weights >= 0, one per class (or none)"),
            ("depth_loss_weight", _weight(self.depth_loss_weight), "a finite weight >= 0"),
            ("depth_target", self.depth_target in DEPTH_TARGETS, f"one of {list(DEPTH_TARGETS)}"),
            ("semantic_loss_weight", _weight(self.semantic_loss_weight), "a finite weight >= 0"),
            ("affinity_loss_weight", _weight(self.affinity_loss_weight), "a finite weight >= 0"),
            ("grid", isinstance(self.grid, OccGrid), "an OccGrid"),
        ])

    # ---- derived ----------------------------------------------------------------------------------
    @property
    def temporal(self) -> bool:
        """True for the families that read earlier frames (read-only; the preset picks the family)."""
        return self.num_frames > 1

    @property
    def num_depth_bins(self) -> int:
        # The bins are torch.arange values (geometry.depth_bin_values): counted the same way.
        return len(torch.arange(*self.depth_bins))

    @property
    def neck_stages(self) -> tuple[int, ...]:
        """Backbone stages the image neck reads."""
        return tuple(self.backbone_out_indices)

    @property
    def bev_is_3d(self) -> bool:
        """True when the BEV map keeps the grid's z cells (the BEVDetOcc 3D encoder and head)."""
        return False

    def data_requirements(self) -> dict[str, Any]:
        """``DataConfig`` fields this model needs (``flashocc.config.data_config_for`` applies them): its
        input size, the frames it reads, and LiDAR depth maps over the depth bins' range for a LiDAR
        depth loss."""
        needs: dict[str, Any] = {"input_size": tuple(self.input_size), "num_adjacent": self.num_frames - 1}
        if self.depth_loss_weight > 0 and self.depth_target == "lidar":
            # Official PointToMultiViewDepth (FlashOCC@4084861 projects/mmdet3d_plugin/datasets/pipelines/
            # loading.py) keeps the points inside grid_config['depth'][:2].
            needs.update(load_depth=True, depth_range=(float(self.depth_bins[0]), float(self.depth_bins[1])))
        return needs

    # ---- consistency (when the config is resolved) --------------------------------------------------
    def check(self) -> ModelConfig:
        """Refuse what the family's builder cannot honour given the other fields; returns self."""
        where = f"({self.family} family, preset {self.name})"
        self._check_family(where)
        if self.backbone.startswith("resnet") and self.drop_path_rate != 0:
            _refuse("drop_path_rate", f"0.0: stochastic depth is a Swin option and {self.backbone} has none {where}",
                    self.drop_path_rate)
        neck = self.neck_stages
        if not neck:
            _refuse("backbone_out_indices", f"at least one stage for the image neck {where}", self.backbone_out_indices)
        if self.img_neck == "fpn_lss" and (len(neck) != 2 or neck[1] != neck[0] + 1):
            _refuse("backbone_out_indices", f"two consecutive neck stages for img_neck 'fpn_lss' (it concatenates "
                    f"one stage with the next, upsampled x2), found neck stages {neck} {where}",
                    self.backbone_out_indices)
        stride = stage_stride(neck[0])
        if self.downsample != stride:
            _refuse("downsample", f"{stride}, the stride of the image neck's output (backbone stage {neck[0]}, "
                    f"model.backbone_out_indices={tuple(self.backbone_out_indices)}) {where}", self.downsample)
        h, w = self.input_size
        # CustomFPN resizes to the finest level, so only the lifted stride must divide the input;
        # fpn_lss upsamples by a fixed x2 and needs the coarser stage to divide it too.
        need = stage_stride(neck[-1]) if self.img_neck == "fpn_lss" else self.downsample
        if h % need or w % need:
            which = "coarsest neck" if need != self.downsample else "lifted"
            _refuse("input_size", f"(H, W) divisible by {need} (the {which} feature stride) {where}", self.input_size)
        start, stop, _ = self.depth_bins
        count = self.num_depth_bins
        if self.sid and (count < 2 or stop - 1 <= start):
            _refuse("depth_bins", f"at least 2 bins and stop - 1 > start for log-spaced (sid) bins {where}",
                    self.depth_bins)
        expected_strides = (1, 2, 2) if self.bev_is_3d else (2, 2, 2)
        if tuple(self.encoder_strides) != expected_strides:
            # 2D: FPN_LSS upsamples stage 2 x4 onto stage 0 and then x2 back to the grid; 3D: LSSFPN3D
            # upsamples x2 and x4 onto a full-resolution stage 0.
            _refuse("encoder_strides", f"{expected_strides}, the strides the {'3D' if self.bev_is_3d else '2D'} BEV "
                    f"neck upsamples back to the grid {where}", self.encoder_strides)
        dims = self.grid.shape if self.bev_is_3d else self.grid.shape[:2]
        factor = math.prod(expected_strides)
        if any(d % factor for d in dims):
            _refuse("grid", f"BEV dimensions {dims} divisible by {factor} (the BEV encoder's total stride) {where}",
                    self.grid.shape)
        k = self.grid.num_classes
        if self.class_weights and len(self.class_weights) != k:
            _refuse("class_weights", f"{k} weights (one per class of the grid) {where}; found "
                    f"{len(self.class_weights)}", self.class_weights)
        if self.class_weights and self.class_balance:
            _refuse("class_balance", f"False with explicit model.class_weights (they replace the class-balance "
                    f"weights; set one of the two) {where}", self.class_balance)
        if self.class_balance and k != len(OCC3D_CLASS_FREQUENCIES):
            _refuse("class_balance", f"a grid with the {len(OCC3D_CLASS_FREQUENCIES)} Occ3D classes (its weights come "
                    f"from their nuScenes frequencies); give model.class_weights instead {where}", self.class_balance)
        if self.depth_target == "occupancy" and self.depth_loss_weight == 0:
            _refuse("depth_target", f"'lidar' while model.depth_loss_weight is 0 (the target of a depth loss that "
                    f"is off would be ignored) {where}", self.depth_target)
        return self

    def _check_family(self, where: str) -> None:
        """Checks of one family (overridden)."""

    # ---- hints for keys a family does not have ----------------------------------------------------
    @classmethod
    def field_hint(cls, name: str) -> str | None:
        """Why ``model.<name>`` is not a field of this family, for the unknown-key message (or None)."""
        if name == "temporal":
            return ("the preset chooses the model family: temporal stereo presets build a Stereo4DConfig "
                    f"({', '.join(STEREO_PRESETS)}), the others a single-frame CameraLSSConfig")
        if name == "backbone_depth":
            return "the ResNet depth is part of model.backbone (e.g. model.backbone=resnet18)"
        for other in (CameraLSSConfig, Stereo4DConfig):
            if other is not cls and name in {f.name for f in fields(other)}:
                return f"model.{name} belongs to the {other.family} family; this preset is {cls.family}"
        return None


@dataclass(frozen=True)
class CameraLSSConfig(ModelConfig):
    """Single-frame camera lift-splat: FlashOcc M0/M1 (2D BEV, channel-to-height head), BEVDetOcc
    (``head_3d``: 3D BEV encoder, neck and head) and our tiny presets. Built by
    ``builders.build_camera_lss``; its depth net is one 1x1 conv (official ``LSSViewTransformer``)."""

    family: ClassVar[str] = "camera-lss"

    head_3d: bool = False  # BEVDetOcc: keep the z cells (3D encoder/neck/head) instead of channel-to-height

    @property
    def bev_is_3d(self) -> bool:
        return self.head_3d


@dataclass(frozen=True)
class Stereo4DConfig(ModelConfig):
    """Temporal stereo (BEVStereo4D): FlashOcc M2 (R50) and M3 (Swin-B), frames t, t-1 and t-2.

    With a ResNet, ``backbone_out_indices`` starts with 0 (layer1 is the stride-4 stereo feature) and
    the rest feed the neck, as in the official M2 config; a Swin returns its stage-0 map as the stereo
    feature on its own (official ``return_stereo_feat``), so all its indices feed the neck.
    Built by ``builders.build_stereo4d``.
    """

    family: ClassVar[str] = "stereo-4d"
    num_frames: ClassVar[int] = NUM_FRAMES

    aspp_channels: int = 96  # DepthNet ASPP width

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self, [("aspp_channels", _positive_int(self.aspp_channels), "an integer > 0")])

    @property
    def neck_stages(self) -> tuple[int, ...]:
        if self.backbone.startswith("resnet"):
            return tuple(self.backbone_out_indices[1:])
        return tuple(self.backbone_out_indices)

    def _check_family(self, where: str) -> None:
        if self.backbone.startswith("resnet") and self.backbone_out_indices[0] != 0:
            _refuse("backbone_out_indices", f"a first index of 0: layer1 is the stride-4 stereo feature of a ResNet "
                    f"(official M2: (0, 2, 3)) {where}", self.backbone_out_indices)
        if self.downsample != 16:
            # DepthNet's cost_volumn_net reduces the stride-4 cost volume by two stride-2 convs.
            _refuse("downsample", f"16: the stereo cost volume (stride 4) is reduced x4 onto the lifted features "
                    f"{where}", self.downsample)


CONFIG_FAMILIES: tuple[type[ModelConfig], ...] = (CameraLSSConfig, Stereo4DConfig)
STEREO_PRESETS: tuple[str, ...] = ("flashocc-r50-m2", "flashocc-swinb-m3", "flashocc-tiny-m2")


def convert_family(cfg: ModelConfig, family: type[ModelConfig], **changes: Any) -> ModelConfig:
    """``cfg``'s shared fields in another family's config (e.g. the single-frame twin of a temporal
    preset), with ``changes`` applied; fields the target family lacks are dropped."""
    shared = {f.name: getattr(cfg, f.name) for f in fields(family) if f.init and hasattr(cfg, f.name)}
    return family(**{**shared, **changes})


# ---- config.yaml files written before the per-family configs ------------------------------------------
LEGACY_FIELDS = ("temporal", "backbone_depth")


def upgrade_model_fields(preset_cfg: ModelConfig, saved: Mapping[str, Any], source: str
                         ) -> tuple[ModelConfig, dict[str, Any]]:
    """A saved ``model:`` section -> (a config of the family it was trained as, the fields to apply).

    Sections in today's layout pass through unchanged. The earlier layout (one flat ModelConfig with
    ``temporal``, ``backbone_depth`` and ``backbone: resnet``) is converted to the model its builder
    really built: the single-frame builder of that version read neither ``backbone``, ``img_neck``,
    ``sid``, ``drop_path_rate`` nor ``aspp_channels``, and explicit class weights replaced
    ``class_balance``; a value the old builder ignored is logged and loaded as it was trained.
    """
    saved = dict(saved)
    if not any(k in saved for k in LEGACY_FIELDS):
        return preset_cfg, saved
    temporal = bool(saved.pop("temporal", preset_cfg.temporal))
    depth = saved.pop("backbone_depth", 50)
    family = Stereo4DConfig if temporal else CameraLSSConfig
    out = dict(saved)
    backbone = out.get("backbone", "resnet")
    if backbone == "resnet":
        out["backbone"] = f"resnet{depth}"
    if family is CameraLSSConfig:
        as_built = {"backbone": f"resnet{depth}", "img_neck": "custom_fpn", "sid": False, "drop_path_rate": 0.0}
        for key, value in as_built.items():
            if key in out and out[key] != value:
                log.warning("%s: model.%s=%r was ignored by the single-frame builder that trained this run; "
                            "loading it as trained (%r)", source, key, out[key], value)
            out[key] = value
        out.pop("aspp_channels", None)
    else:
        if out.pop("head_3d", False):
            raise ConfigError(f"{source}: model.head_3d=True with temporal=True was never buildable; remove one "
                              "of them (the temporal stereo family has the 2D head only)")
    if out.get("class_weights") and out.get("class_balance"):
        out["class_balance"] = False  # the old builders let explicit weights win
    if out.get("depth_target") == "occupancy" and not out.get("depth_loss_weight"):
        out["depth_target"] = "lidar"  # no depth loss: the target was never used
    base = preset_cfg if isinstance(preset_cfg, family) else convert_family(preset_cfg, family)
    log.info("%s: converted a model section of the layout before per-family configs (%s)", source, family.__name__)
    return base, out


# ---- helpers --------------------------------------------------------------------------------------
def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _ints(values: Any) -> bool:
    return isinstance(values, tuple) and all(isinstance(v, int) and not isinstance(v, bool) for v in values)


def _positive_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _weight(v: Any) -> bool:
    return _number(v) and v >= 0


def _require(cfg: Any, checks: list[tuple[str, bool, str]]) -> None:
    for name, ok, expected in checks:
        if not ok:
            _refuse(name, expected, getattr(cfg, name))


def _refuse(name: str, expected: str, found: Any) -> None:
    raise ConfigError(f"model.{name}: expected {expected}, found {found!r}")


__all__ = ["ModelConfig", "CameraLSSConfig", "Stereo4DConfig", "CONFIG_FAMILIES", "NUM_FRAMES", "BACKBONES",
           "IMAGE_NECKS", "DEPTH_TARGETS", "convert_family", "upgrade_model_fields", "stage_stride"]
