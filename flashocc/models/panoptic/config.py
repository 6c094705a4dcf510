"""The Panoptic-FlashOcc config (``BEVDepthPano``): FlashOcc M1's layout with the camera-aware BEVDepth
depth net, the ``BEVOCCHead2D_V2`` losses and an instance-centre head on the same BEV feature.

Official configs: FlashOCC@4084861 projects/configs/panoptic-flashocc/panoptic-flashocc-r50-depth*-pano.py.
The loss weights are the official constants (panoptic/criterion.py); what a user may change is the
architecture, the centre decoding and the instance assignment:

* ``official_class_mapping``: the released code maps detection labels to occupancy classes with tables
  written for the nuScenes-devkit class order while its centre head predicts in config order
  (FlashOCC@4084861 projects/mmdet3d_plugin/models/detectors/bevdet_occ.py, ``detind2occind`` and
  ``occind2detind_cuda``). False (default) uses the correct mapping; True reproduces the released
  behaviour, for comparing with the published RayPQ (docs/panoptic.md, "Differences from the released code").
* ``assign_radius``: 0 = no limit (official); > 0 leaves thing voxels farther than this many voxels
  from every centre of their class as one segment of their class.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from flashocc.models.configs import ModelConfig, _number, _positive_int, _refuse, _require


@dataclass(frozen=True)
class PanopticConfig(ModelConfig):
    """Panoptic-FlashOcc (single frame). Built by ``panoptic.builder.build_panoptic``."""

    family: ClassVar[str] = "panoptic"

    # Official pano configs: no camera mask in training, class-balanced focal loss, depth loss 1.
    use_mask: bool = False
    class_balance: bool = True
    depth_loss_weight: float = 1.0
    centre_head: bool = True             # False: the non-pano BEVDepthOCC of the same configs
    aspp_channels: int = 96              # DepthNet ASPP width (depthnet_cfg aspp_mid_channels)
    centre_channels: int = 64            # Centerness_Head share_conv_channel and head_conv
    centre_score_threshold: float = 0.3  # CenterPointBBoxCoder score_threshold
    max_centres: int = 500               # CenterPointBBoxCoder max_num (top-k before the threshold)
    official_class_mapping: bool = False
    assign_radius: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self, [
            ("centre_head", isinstance(self.centre_head, bool), "true or false"),
            ("aspp_channels", _positive_int(self.aspp_channels), "an integer > 0"),
            ("centre_channels", _positive_int(self.centre_channels), "an integer > 0"),
            ("centre_score_threshold", _number(self.centre_score_threshold) and 0 <= self.centre_score_threshold < 1,
             "a score in [0, 1)"),
            ("max_centres", _positive_int(self.max_centres), "an integer > 0"),
            ("official_class_mapping", isinstance(self.official_class_mapping, bool), "true or false"),
            ("assign_radius", _number(self.assign_radius) and self.assign_radius >= 0,
             "a radius in voxels >= 0 (0 = no limit)"),
        ])

    def _check_family(self, where: str) -> None:
        if not self.centre_head:
            for name, default in (("centre_channels", 64), ("centre_score_threshold", 0.3), ("max_centres", 500),
                                  ("official_class_mapping", False), ("assign_radius", 0.0)):
                if getattr(self, name) != default:
                    _refuse(name, f"{default!r}: it configures the centre head, and model.centre_head is false "
                            f"{where}", getattr(self, name))
        names = self.grid.class_names
        missing = [n for n in ("car", "pedestrian", "barrier", "traffic_cone") if n not in names]
        if missing:
            _refuse("grid", f"a grid with the Occ3D class names (the centre head's detection classes map onto "
                    f"them; missing {missing}) {where}", self.grid.shape)

    def data_requirements(self) -> dict[str, Any]:
        # The centre targets are read off the Occ3D-panoptic instance ids (panoptic/targets.py).
        needs = super().data_requirements()
        return {**needs, "load_instances": True} if self.centre_head else needs


@dataclass(frozen=True)
class Panoptic4DConfig(PanopticConfig):
    """Panoptic-FlashOcc 4D (``BEVDepth4DPano`` / ``BEVDepth4DOCC``): the BEV maps of the current frame and
    ``num_adj`` previous keyframes, each through ``pre_process_net``, concatenated [t, t-1, ...] before the
    BEV encoder (FlashOCC@4084861 projects/configs/panoptic-flashocc/panoptic-flashocc-r50-depth4d*.py,
    ``multi_adj_frame_id_cfg = (1, num_adj + 1, 1)``). Built by ``panoptic.builder.build_panoptic4d``."""

    family: ClassVar[str] = "panoptic-4d"

    num_adj: int = 1

    @property
    def num_frames(self) -> int:  # type: ignore[override]  # a field here, a class constant elsewhere
        return self.num_adj + 1

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self, [("num_adj", _positive_int(self.num_adj), "an integer > 0 (previous keyframes)")])


__all__ = ["PanopticConfig", "Panoptic4DConfig"]
