"""Temporal stereo FlashOcc (BEVStereo4D): FlashOcc M2 (R50) and M3 (Swin-B), plus streaming inference.

Frames (flashocc.md §1.3, §9): the current frame t and t-1 each give a BEV map; t-2 only provides
the stride-4 stereo reference for t-1's cost volume. t-1 and t-2 run without gradients. The earlier
frame is lifted straight into the *current* key-ego frame through its own sensor2keyego
(``align_after_view_transfromation=False``: no BEV warping), both maps pass ``pre_process_net`` and
are concatenated **[t-1, t]** before the BEV encoder.

Batch contract (the ``flashocc.batch`` keys, with T frames stacked frame-major along the view axis,
exactly what ``OccDataset`` yields with ``DataConfig(num_adjacent=2)``):
  img                      (B, T·N, 3, H, W)  views [cams of t, cams of t-1, cams of t-2]
  sensor2ego, ego2global   (B, T·N, 4, 4)     each frame's own camera poses
  intrinsics, post_rots    (B, T·N, 3, 3)     only the current frame's are read: the official
  post_trans               (B, T·N, 3)        pipeline copies them to adjacent frames (§4.3)
  bda                      (B, 3, 3)
T is 1, 2 or 3 (N = ``num_cameras``). Missing frames are the current frame, which is the official
fallback at a scene start (§4.2): T = 1 is "no previous frame". Targets are the current frame's
(``voxel_semantics``, ``mask_camera``, ``gt_depth`` (B, N, H, W)).

Streaming (``StereoStream``): one backbone pass per frame. Each frame's image-neck and stride-4
stereo features are cached; the previous frame is re-lifted into the new key-ego frame (depth net
and pooling only), so logits equal the batch forward on [t, t-1, t-2] with the official fallbacks.
The official ``extract_img_feat_sequential`` instead reuses the previous BEV map, which needs
``align_after_view_transfromation=True`` and does not reproduce M2's numbers.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from flashocc.batch import check_inputs
from flashocc.geometry import sensor_to_key_ego
from flashocc.models.depthnet import StereoViewTransformer, camera_mlp_input
from flashocc.models.flashocc import FlashOcc
from flashocc.models.resnet import ResNet
from flashocc.models.stereo import current_to_adjacent_sensor
from flashocc.ops.bev_pool import BevPoolIndices

log = logging.getLogger(__name__)

NUM_FRAMES = 3  # t, t-1 (BEV maps) and t-2 (stereo reference only)


def data_requirements(model_cfg) -> dict:
    """``DataConfig`` fields a model needs: the adjacent frames of temporal models and the LiDAR depth
    maps of the depth loss (e.g. ``replace(data_cfg, **data_requirements(model_cfg))``)."""
    needs: dict = {}
    if getattr(model_cfg, "temporal", False):
        needs["num_adjacent"] = NUM_FRAMES - 1
    if model_cfg.depth_loss_weight > 0 and getattr(model_cfg, "depth_target", "lidar") == "lidar":
        needs["load_depth"] = True
    return needs


@dataclass
class FrameFeatures:
    """One frame's image features and camera poses; all tensors lead with (B, N)."""

    feats: torch.Tensor | None  # (B, N, C, fH, fW) image-neck output; None for a stereo-only reference
    stereo: torch.Tensor        # (B, N, Cs, H/4, W/4) stride-4 stereo feature
    sensor2ego: torch.Tensor  # (B, N, 4, 4)
    ego2global: torch.Tensor  # (B, N, 4, 4)

    def select(self, use_other: torch.Tensor, other: FrameFeatures) -> FrameFeatures:
        """Per sample: ``other`` where ``use_other`` (B,) is True, else self."""
        def pick(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
            if a is None or b is None:
                return None
            return torch.where(use_other.view(-1, *([1] * (a.dim() - 1))), b, a)
        return FrameFeatures(pick(self.feats, other.feats), pick(self.stereo, other.stereo),
                             pick(self.sensor2ego, other.sensor2ego), pick(self.ego2global, other.ego2global))


class FlashOccStereo4D(FlashOcc):
    """BEVStereo4D occupancy model; child names are the official state-dict prefixes
    (``img_backbone``, ``img_neck``, ``img_view_transformer``, ``pre_process_net``,
    ``img_bev_encoder_backbone``, ``img_bev_encoder_neck``, ``occ_head``).

    ``img_backbone`` returns [stereo feature (stride 4), neck inputs...]; ``forward(batch)`` follows
    ``FlashOcc``: logits in eval, {"loss_occ", "loss_depth"} in train.
    """

    def __init__(self, img_backbone: nn.Module, img_neck: nn.Module, img_view_transformer: StereoViewTransformer,
                 pre_process_net: nn.Module, img_bev_encoder_backbone: nn.Module, img_bev_encoder_neck: nn.Module,
                 occ_head: nn.Module, num_cameras: int = 6, **kwargs) -> None:
        super().__init__(img_backbone, img_neck, img_view_transformer, img_bev_encoder_backbone,
                         img_bev_encoder_neck, occ_head, **kwargs)
        self.pre_process_net = pre_process_net
        self.num_cameras = num_cameras

    # ---- stages -----------------------------------------------------------------------------------
    def encode_frame(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N, 3, H, W) -> (neck features (B, N, C, fH, fW), stereo feature (B, N, Cs, H/4, W/4))."""
        b, n = img.shape[:2]
        outs = self.img_backbone(img.reshape(b * n, *img.shape[2:]))
        stereo, x = outs[0], self.img_neck(outs[1:])
        return x.view(b, n, *x.shape[1:]), stereo.view(b, n, *stereo.shape[1:])

    def image_encoder(self, img: torch.Tensor) -> torch.Tensor:
        return self.encode_frame(img)[0]

    def stereo_reference(self, img: torch.Tensor) -> torch.Tensor:
        """Stride-4 feature only (stem + first stage), for the t-2 reference frame."""
        b, n = img.shape[:2]
        x = img.reshape(b * n, *img.shape[2:])
        backbone = self.img_backbone
        if isinstance(backbone, ResNet):
            x = backbone.layer1(backbone.maxpool(backbone.relu(backbone.bn1(backbone.conv1(x)))))
        else:
            x = backbone.stereo_features(x)
        return x.view(b, n, *x.shape[1:])

    def view_transform(self, feats: torch.Tensor, batch: Mapping[str, torch.Tensor],
                       indices: BevPoolIndices | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Stage API of ``FlashOcc`` (for per-stage benchmarks): lift the current frame's features
        (B, N, C, fH, fW) as at a scene start without a stereo feature (zero cost volume), and return
        the [prev, curr] map the BEV encoder takes, with both halves this frame, plus the depth."""
        if indices is not None:
            raise ValueError("temporal models compute pooling indices per frame; call without indices")
        frames, geometry = self.split_frames(batch)
        n = self.num_cameras
        s2k = sensor_to_key_ego(frames[0]["sensor2ego"], frames[0]["ego2global"])
        mlp_input = camera_mlp_input(s2k, geometry["intrinsics"].float(), geometry["post_rots"].float(),
                                     geometry["post_trans"].float(), geometry["bda"].float())
        bev, depth = self.img_view_transformer(feats[:, :n], mlp_input, None, s2k, geometry["intrinsics"],
                                               geometry["post_rots"], geometry["post_trans"], geometry["bda"])
        bev = self.pre_process_net(bev)[0]
        return torch.cat([bev, bev], dim=1), depth

    def lift(self, frame: FrameFeatures, adjacent: FrameFeatures, sensor2keyego: torch.Tensor, mlp_input: torch.Tensor,
             geometry: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """One frame's BEV map (after ``pre_process_net``) and depth, with the cost volume against ``adjacent``."""
        vt: StereoViewTransformer = self.img_view_transformer
        curr2adj = current_to_adjacent_sensor(frame.sensor2ego, frame.ego2global, adjacent.sensor2ego,
                                              adjacent.ego2global)
        cost = vt.cost_volume(adjacent.stereo.flatten(0, 1), frame.stereo.flatten(0, 1), curr2adj,
                              geometry["intrinsics"], geometry["post_rots"], geometry["post_trans"])
        bev, depth = vt(frame.feats, mlp_input, cost, sensor2keyego, geometry["intrinsics"], geometry["post_rots"],
                        geometry["post_trans"], geometry["bda"])
        return self.pre_process_net(bev)[0], depth

    def fuse(self, curr: FrameFeatures, prev: FrameFeatures, ref: FrameFeatures,
             geometry: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames t, t-1, t-2 -> (logits (B, Dx, Dy, Dz, K), depth of t (B·N, D, fH, fW)).

        t-2 (``ref``) only provides its stereo feature and poses; t-1 is lifted without gradients.
        """
        n = curr.feats.shape[1]
        # Key ego = the current frame's camera 0 for every frame (flashocc.md §9, §12.14).
        s2k = sensor_to_key_ego(torch.cat([curr.sensor2ego, prev.sensor2ego], 1),
                                torch.cat([curr.ego2global, prev.ego2global], 1))
        # Official detail (§9): mlp_input uses the key frame's sensor2keyego for every frame.
        mlp_input = camera_mlp_input(s2k[:, :n], geometry["intrinsics"].float(), geometry["post_rots"].float(),
                                     geometry["post_trans"].float(), geometry["bda"].float())
        with torch.no_grad():
            bev_prev, _ = self.lift(prev, ref, s2k[:, n:], mlp_input, geometry)
        bev_curr, depth = self.lift(curr, prev, s2k[:, :n], mlp_input, geometry)
        # Official order (§9, §12.14): [previous, current], unlike BEVDet4D's [current, previous].
        bev = torch.cat([bev_prev, bev_curr], dim=1)
        return self.occ_head(self.bev_encoder(bev)), depth

    # ---- batch forward ----------------------------------------------------------------------------
    def split_frames(self, batch: Mapping[str, torch.Tensor]) -> tuple[list[dict[str, torch.Tensor]], dict]:
        """Per-frame (img, sensor2ego, ego2global) for [t, t-1, t-2], padded with the current frame,
        and the current frame's geometry (intrinsics, post_rots, post_trans, bda)."""
        b, views = check_inputs(batch)
        n = self.num_cameras
        if views % n or not 1 <= views // n <= NUM_FRAMES:
            raise ValueError(f"batch['img'] has {views} views; a temporal model expects T·{n} views (T = 1..3 "
                             f"frames, frame-major [t, t-1, t-2]), e.g. OccDataset with DataConfig(num_adjacent=2)")
        frames = [{k: batch[k][:, i * n:(i + 1) * n] for k in ("img", "sensor2ego", "ego2global")}
                  for i in range(views // n)]
        if self.training and len(frames) == 1 and not getattr(self, "_warned_single_frame", False):
            self._warned_single_frame = True
            log.warning("training a temporal model on single-frame batches: every frame falls back to the "
                        "current one; build the data with DataConfig(num_adjacent=%d)", NUM_FRAMES - 1)
        frames += [frames[0]] * (NUM_FRAMES - len(frames))  # official scene-start fallback (§4.2)
        geometry = {k: batch[k][:, :n] for k in ("intrinsics", "post_rots", "post_trans")}
        geometry["bda"] = batch["bda"]
        return frames, geometry

    def forward_logits(self, batch: Mapping[str, torch.Tensor],
                       indices: BevPoolIndices | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if indices is not None:
            raise ValueError("temporal models compute pooling indices per frame (the previous frame moves with the "
                             "ego vehicle); call without indices")
        frames, geometry = self.split_frames(batch)
        encoded: dict[int, FrameFeatures] = {}

        def frame(i: int, full: bool) -> FrameFeatures:
            f = frames[i]
            for j, done in encoded.items():  # a fallback frame is the same tensors: encode once
                if frames[j]["img"] is f["img"]:
                    return done
            if full:
                feats, stereo = self.encode_frame(f["img"])
            else:
                feats, stereo = None, self.stereo_reference(f["img"])
            encoded[i] = FrameFeatures(feats, stereo, f["sensor2ego"], f["ego2global"])
            return encoded[i]

        # Official order (§9): t-2 (stereo only) and t-1 without gradients, then t. With the
        # fallback, the current frame is encoded first so that every copy reuses it.
        if frames[1]["img"] is frames[0]["img"] or frames[2]["img"] is frames[0]["img"]:
            curr = frame(0, True)
            with torch.no_grad():
                ref, prev = frame(2, False), frame(1, True)
        else:
            with torch.no_grad():
                ref, prev = frame(2, False), frame(1, True)
            curr = frame(0, True)
        return self.fuse(curr, _detached(prev), _detached(ref), geometry)


def _detached(f: FrameFeatures) -> FrameFeatures:
    return FrameFeatures(None if f.feats is None else f.feats.detach(), f.stereo.detach(), f.sensor2ego, f.ego2global)


class StereoStream:
    """Streaming inference over ordered frames: one backbone pass per frame.

    ``step(batch)`` takes the current frame only (B, N, ...) — or a temporal batch, of which only
    the current frame is read — and returns logits equal to the batch forward on [t, t-1, t-2]
    with the dataset's fallbacks: at a scene start t-1 = t-2 = t; on its second frame t-2 = t.
    A scene starts on the first call, where ``scene_start`` (bool or (B,) bool) says so, or where
    ``batch["scene_names"]`` (from ``collate_batch``) changes. Call ``model.eval()`` first.
    """

    def __init__(self, model: FlashOccStereo4D) -> None:
        self.model = model
        self.reset()

    def reset(self) -> None:
        self._history: list[FrameFeatures] = []  # most recent first, at most 2
        self._frames_in_scene: torch.Tensor | None = None  # (B,) frames of this scene already cached
        self._scenes: list[str] | None = None

    def _scene_starts(self, batch: Mapping, b: int, scene_start: bool | torch.Tensor | Sequence[bool] | None,
                      device: torch.device) -> torch.Tensor:
        starts = torch.zeros(b, dtype=torch.bool, device=device)
        if scene_start is not None:
            starts |= torch.as_tensor(scene_start, dtype=torch.bool, device=device).expand(b)
        names = batch.get("scene_names")
        if names is not None:
            names = list(names)
            if self._scenes is not None and len(self._scenes) == len(names):
                starts |= torch.tensor([a != c for a, c in zip(names, self._scenes)], device=device)
            self._scenes = names
        if self._frames_in_scene is None:
            starts[:] = True
        elif self._frames_in_scene.shape[0] != b:
            raise ValueError(f"StereoStream got a batch of {b} after batches of {self._frames_in_scene.shape[0]}; "
                             "call reset() before changing the batch size")
        return starts

    @torch.no_grad()
    def step(self, batch: Mapping[str, torch.Tensor],
             scene_start: bool | torch.Tensor | Sequence[bool] | None = None) -> torch.Tensor:
        model = self.model
        if model.training:
            raise RuntimeError("StereoStream is for inference: call model.eval() first")
        frames, geometry = model.split_frames(batch)
        b = frames[0]["img"].shape[0]
        device = frames[0]["img"].device
        starts = self._scene_starts(batch, b, scene_start, device)
        seen = self._frames_in_scene
        seen = torch.zeros(b, dtype=torch.long, device=device) if seen is None else torch.where(starts, 0, seen)
        feats, stereo = model.encode_frame(frames[0]["img"])
        curr = FrameFeatures(feats, stereo, frames[0]["sensor2ego"], frames[0]["ego2global"])
        prev = self._history[0].select(seen < 1, curr) if len(self._history) > 0 else curr
        ref = self._history[1].select(seen < 2, curr) if len(self._history) > 1 else curr
        logits, _ = model.fuse(curr, prev, ref, geometry)
        self._history = [curr] + self._history[:1]
        self._frames_in_scene = seen + 1
        return logits


def build_stereo4d(cfg) -> FlashOccStereo4D:
    """Build a ``FlashOccStereo4D`` from a ``ModelConfig`` with ``temporal=True`` (see presets.py)."""
    from flashocc.grid import OCC3D_CLASS_FREQUENCIES
    from flashocc.models.bev_encoder import CustomResNet
    from flashocc.models.heads import BEVOCCHead2D
    from flashocc.models.losses import class_balance_weights
    from flashocc.models.necks import FPN_LSS, CustomFPN
    from flashocc.models.swin import SWIN_LAYOUTS, ImageFPN_LSS, SwinTransformer

    if cfg.head_3d:
        raise ValueError(f"preset {cfg.name}: temporal=True supports the 2D channel-to-height head only "
                         "(head_3d=False)")
    if cfg.semantic_loss_weight > 0 or cfg.depth_target != "lidar":
        raise ValueError(f"preset {cfg.name}: the occupancy ray targets (semantic_loss_weight, "
                         "depth_target='occupancy') are implemented for single-frame models only")
    if cfg.affinity_loss_weight > 0:
        raise ValueError(f"preset {cfg.name}: affinity_loss_weight is implemented for single-frame models only")
    grid = cfg.grid
    dx, dy, dz = grid.shape
    if cfg.backbone == "resnet":
        if cfg.backbone_out_indices[0] != 0:
            raise ValueError(f"preset {cfg.name}: a stereo ResNet needs backbone_out_indices starting with 0 "
                             f"(layer1 is the stride-4 stereo feature), found {cfg.backbone_out_indices}")
        backbone: nn.Module = ResNet(cfg.backbone_depth, cfg.backbone_out_indices, with_cp=cfg.with_cp)
        neck_in = backbone.out_channels[1:]
    elif cfg.backbone in SWIN_LAYOUTS:
        backbone = SwinTransformer(cfg.backbone, cfg.backbone_out_indices, drop_path_rate=cfg.drop_path_rate,
                                   return_stereo_feat=True, with_cp=cfg.with_cp)
        neck_in = backbone.out_channels
    else:
        raise ValueError(f"preset {cfg.name}: unknown backbone '{cfg.backbone}'; expected 'resnet' or one of "
                         f"{sorted(SWIN_LAYOUTS)}")
    if cfg.img_neck == "custom_fpn":
        img_neck: nn.Module = CustomFPN(neck_in, cfg.img_neck_channels)
    elif cfg.img_neck == "fpn_lss":
        img_neck = ImageFPN_LSS(sum(neck_in), cfg.img_neck_channels)
    else:
        raise ValueError(f"preset {cfg.name}: unknown img_neck '{cfg.img_neck}'; expected 'custom_fpn' or 'fpn_lss'")
    view = StereoViewTransformer(cfg.img_neck_channels, cfg.bev_channels, cfg.input_size, cfg.downsample,
                                 cfg.depth_bins, grid.lower, (grid.voxel_size[0], grid.voxel_size[1],
                                                              grid.upper[2] - grid.lower[2]), (dx, dy, 1),
                                 sid=cfg.sid, aspp_mid_channels=cfg.aspp_channels)
    c = cfg.bev_channels
    pre_process = CustomResNet(c, (c,), (1,), (1,))
    encoder = CustomResNet(2 * c, cfg.encoder_channels, cfg.encoder_layers, cfg.encoder_strides)
    bev_neck = FPN_LSS(cfg.encoder_channels[0] + cfg.encoder_channels[2], cfg.bev_neck_channels)
    head = BEVOCCHead2D(cfg.bev_neck_channels, cfg.head_channels, dz, grid.num_classes)
    weights = None
    if getattr(cfg, "class_weights", ()):  # explicit weights override class_balance, as in build_model
        if len(cfg.class_weights) != grid.num_classes:
            raise ValueError(f"class_weights has {len(cfg.class_weights)} values; the grid has {grid.num_classes} "
                             "classes")
        weights = torch.tensor(cfg.class_weights, dtype=torch.float32)
    elif cfg.class_balance:
        weights = class_balance_weights(OCC3D_CLASS_FREQUENCIES)
    model = FlashOccStereo4D(backbone, img_neck, view, pre_process, encoder, bev_neck, head, use_mask=cfg.use_mask,
                             class_weights=weights, depth_loss_weight=cfg.depth_loss_weight,
                             ignore_label=grid.ignore_label)
    model.config = cfg
    return model


def count_gflops_stereo4d(cfg) -> float:
    """Forward GFLOPs of the batch forward for one sample (2 FLOPs per multiply-add): image encoder for
    t and t-1, the stride-4 stem for t-2, two depth nets, two cost volumes, two poolings, two
    pre-process nets, the BEV encoder and the head. (Streaming saves one image encoder per frame.)

    Dense stages run on the meta device; cost-volume matching (3 FLOPs per depth, pixel and channel:
    subtract, abs, accumulate; bilinear sampling not counted) and pooling are added analytically.
    """
    from torch.utils.flop_counter import FlopCounterMode

    from flashocc.models.presets import example_batch

    with torch.device("meta"):
        model = build_stereo4d(cfg).eval()
        batch = example_batch(cfg, device="meta")
    dx, dy, _ = cfg.grid.shape
    vt = model.img_view_transformer
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.stereo_reference(batch["img"])
        for _ in range(2):
            feats, stereo = model.encode_frame(batch["img"])
            b, n, c, fh, fw = feats.shape
            cost = torch.zeros(b * n, vt.num_depth, *stereo.shape[-2:], device="meta")
            vt.depth_net(feats.reshape(b * n, c, fh, fw), torch.zeros(b, n, 27, device="meta"), cost)
            model.pre_process_net(torch.zeros(b, cfg.bev_channels, dy, dx, device="meta"))
        model.occ_head(model.bev_encoder(torch.zeros(b, 2 * cfg.bev_channels, dy, dx, device="meta")))
    matching = 2 * 3 * n * vt.num_depth * stereo.shape[-2] * stereo.shape[-1] * stereo.shape[2]
    pooling = 2 * 2 * n * vt.num_depth * fh * fw * cfg.bev_channels
    return (counter.get_total_flops() + matching + pooling) / 1e9


def example_sequence(cfg, num_frames: int = 3, batch_size: int = 1, step_m: float = 1.5, yaw_step_deg: float = 2.0,
                     seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Single-frame batches of one synthetic drive (random images, consistent ego poses): the ego
    moves ``step_m`` forward and turns ``yaw_step_deg`` per frame. For tests and benchmarks."""
    import math

    from flashocc.models.presets import example_batch

    g = torch.Generator().manual_seed(seed)
    base = example_batch(cfg, batch_size)
    frames, pose, yaw = [], torch.eye(4), 0.0
    for _ in range(num_frames):
        frame = {k: v.clone() for k, v in base.items()}
        frame["img"] = torch.randn(base["img"].shape, generator=g)
        frame["ego2global"] = pose.expand_as(base["ego2global"]).clone()
        frames.append(frame)
        yaw += math.radians(yaw_step_deg)
        step = torch.eye(4)
        step[:2, :2] = torch.tensor([[math.cos(yaw), -math.sin(yaw)], [math.sin(yaw), math.cos(yaw)]])
        step[:2, 3] = torch.tensor([pose[0, 3] + step_m * math.cos(yaw), pose[1, 3] + step_m * math.sin(yaw)])
        pose = step
    return frames


def example_model_batch(cfg, batch_size: int = 1) -> dict[str, torch.Tensor]:
    """A random input batch in the layout ``cfg``'s model takes: frames [t, t-1, t-2] of a synthetic
    drive for temporal presets, ``example_batch`` otherwise (for export, calibration and benchmarks)."""
    from flashocc.models.presets import example_batch

    if getattr(cfg, "temporal", False):
        return temporal_batch(example_sequence(cfg, batch_size=batch_size), NUM_FRAMES - 1)
    return example_batch(cfg, batch_size)


def temporal_batch(frames: Sequence[Mapping[str, torch.Tensor]], index: int, scene_start: int = 0) -> dict:
    """The batch ``OccDataset(num_adjacent=2)`` builds for ``frames[index]``: views [t, t-1, t-2],
    each earlier frame replaced by the current one when it lies before ``scene_start`` (§4.2);
    intrinsics and post matrices of the current frame copied to every frame (§4.3)."""
    current = frames[index]
    picked = [frames[j] if j >= scene_start else current for j in (index, index - 1, index - 2)]
    out = {k: torch.cat([f[k] for f in picked], dim=1) for k in ("img", "sensor2ego", "ego2global")}
    out.update({k: torch.cat([current[k]] * NUM_FRAMES, dim=1) for k in ("intrinsics", "post_rots", "post_trans")})
    out["bda"] = current["bda"]
    return out
