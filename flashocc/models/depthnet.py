"""Camera-aware depth net (BEVDepth style) and the stereo LSS view transformer of BEVStereo4D.

``DepthNet`` (FlashOCC@4084861 projects/mmdet3d_plugin/models/model_utils/depthnet.py, DepthNet): a
27-d camera vector (intrinsics, image augmentation, BEV augmentation, extrinsics) modulates the image
features through squeeze-excitation gates, one for depth and one for context; the depth branch adds
the stereo cost volume, three BasicBlocks and an ASPP. Child names follow the official module so
``img_view_transformer.depth_net.*`` keys load. Like the plain depth net it is a
``view_transformer.DepthContextNet``: the depth/context split and the pooling are shared code.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from flashocc.geometry import create_frustum, depth_bin_values, frustum_to_ego
from flashocc.models.resnet import BasicBlock
from flashocc.models.stereo import cost_volume_grid, stereo_cost_volume
from flashocc.models.view_transformer import DepthContextNet, Lifted, LiftSplat
from flashocc.ops.bev_pool import bev_pool, prepare_bev_pool

MLP_INPUT_DIM = 27


def camera_mlp_input(sensor2keyego: torch.Tensor, intrinsics: torch.Tensor, post_rots: torch.Tensor,
                     post_trans: torch.Tensor, bda: torch.Tensor) -> torch.Tensor:
    """(B, N, 27): fx, fy, cx, cy, post_rot[0,0], [0,1], post_tran[0], post_rot[1,0], [1,1],
    post_tran[1], bda[0,0], [0,1], [1,0], [1,1], [2,2], then sensor2keyego[:3, :4] row-major
    (FlashOCC@4084861 projects/mmdet3d_plugin/models/necks/view_transformer.py,
    LSSViewTransformerBEVDepth.get_mlp_input)."""
    b, n = sensor2keyego.shape[:2]
    bda = bda.view(b, 1, 3, 3).expand(b, n, 3, 3)
    scalars = torch.stack([
        intrinsics[..., 0, 0], intrinsics[..., 1, 1], intrinsics[..., 0, 2], intrinsics[..., 1, 2],
        post_rots[..., 0, 0], post_rots[..., 0, 1], post_trans[..., 0],
        post_rots[..., 1, 0], post_rots[..., 1, 1], post_trans[..., 1],
        bda[..., 0, 0], bda[..., 0, 1], bda[..., 1, 0], bda[..., 1, 1], bda[..., 2, 2],
    ], dim=-1)
    return torch.cat([scalars, sensor2keyego[..., :3, :].reshape(b, n, 12)], dim=-1).float()


class Mlp(nn.Sequential):
    """fc1 -> ReLU -> fc2 (the official dropouts are 0 and have no parameters)."""

    def __init__(self, in_features: int, hidden: int, out_features: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(hidden, out_features)


class SELayer(nn.Module):
    """x · sigmoid(expand(ReLU(reduce(se)))) with 1x1 convs (bias); ``se`` is (B·N, C, 1, 1)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv_reduce = nn.Conv2d(channels, channels, 1)
        self.conv_expand = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor, se: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.conv_expand(F.relu(self.conv_reduce(se))))


class _ASPPBranch(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, dilation: int) -> None:
        super().__init__()
        self.atrous_conv = nn.Conv2d(cin, cout, kernel, padding=0 if kernel == 1 else dilation, dilation=dilation,
                                     bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.atrous_conv(x)))


class ASPP(nn.Module):
    """Atrous spatial pyramid (dilations 1/6/12/18) plus an image-pooling branch, fused by a 1x1 conv."""

    def __init__(self, channels: int, mid_channels: int) -> None:
        super().__init__()
        self.aspp1 = _ASPPBranch(channels, mid_channels, 1, 1)
        self.aspp2 = _ASPPBranch(channels, mid_channels, 3, 6)
        self.aspp3 = _ASPPBranch(channels, mid_channels, 3, 12)
        self.aspp4 = _ASPPBranch(channels, mid_channels, 3, 18)
        self.global_avg_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, mid_channels, 1, bias=False),
                                             nn.BatchNorm2d(mid_channels), nn.ReLU())
        self.conv1 = nn.Conv2d(mid_channels * 5, channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.dropout = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.interpolate(self.global_avg_pool(x), size=x.shape[-2:], mode="bilinear", align_corners=True)
        x = torch.cat([self.aspp1(x), self.aspp2(x), self.aspp3(x), self.aspp4(x), pooled], dim=1)
        return self.dropout(F.relu(self.bn1(self.conv1(x))))


class DepthNet(DepthContextNet):
    """Image features (B·N, C_in, fH, fW) + camera vector -> (depth probabilities (D), context (C)).

    ``features`` gives cat[depth logits (D), context (C)]. With ``stereo``, the stride-4 cost volume
    (B·N, D, 4fH, 4fW) is reduced by ``cost_volumn_net`` (two stride-2 conv+BN, official spelling) and
    concatenated to the depth branch.
    """

    def __init__(self, in_channels: int, mid_channels: int, context_channels: int, depth_channels: int,
                 aspp_mid_channels: int = 96, stereo: bool = True) -> None:
        super().__init__(depth_channels, context_channels)
        self.depth_channels, self.stereo = depth_channels, stereo
        self.reduce_conv = nn.Sequential(nn.Conv2d(in_channels, mid_channels, 3, padding=1),
                                         nn.BatchNorm2d(mid_channels), nn.ReLU(inplace=True))
        self.context_conv = nn.Conv2d(mid_channels, context_channels, 1)
        self.bn = nn.BatchNorm1d(MLP_INPUT_DIM)
        self.depth_mlp = Mlp(MLP_INPUT_DIM, mid_channels, mid_channels)
        self.depth_se = SELayer(mid_channels)
        self.context_mlp = Mlp(MLP_INPUT_DIM, mid_channels, mid_channels)
        self.context_se = SELayer(mid_channels)
        depth_in, downsample = mid_channels, None
        if stereo:
            depth_in += depth_channels
            downsample = nn.Conv2d(depth_in, mid_channels, 1)
            self.cost_volumn_net = nn.Sequential(
                nn.Conv2d(depth_channels, depth_channels, 3, stride=2, padding=1), nn.BatchNorm2d(depth_channels),
                nn.Conv2d(depth_channels, depth_channels, 3, stride=2, padding=1), nn.BatchNorm2d(depth_channels))
        self.depth_conv = nn.Sequential(
            BasicBlock(depth_in, mid_channels, downsample=downsample), BasicBlock(mid_channels, mid_channels),
            BasicBlock(mid_channels, mid_channels), ASPP(mid_channels, aspp_mid_channels),
            nn.Conv2d(mid_channels, depth_channels, 1))

    def features(self, x: torch.Tensor, mlp_input: torch.Tensor, cost_volume: torch.Tensor | None = None
                 ) -> torch.Tensor:
        """x (B·N, C_in, fH, fW); mlp_input (B, N, 27); cost_volume (B·N, D, 4fH, 4fW) or None.

        Without a cost volume (no previous frame) the stereo branch sees zeros, as officially.
        """
        cam = self.bn(mlp_input.reshape(-1, MLP_INPUT_DIM))  # (B·N, 27)
        x = self.reduce_conv(x)
        context = self.context_conv(self.context_se(x, self.context_mlp(cam)[..., None, None]))
        depth = self.depth_se(x, self.depth_mlp(cam)[..., None, None])
        if self.stereo:
            if cost_volume is None:
                bn, _, fh, fw = x.shape
                cost_volume = x.new_zeros(bn, self.depth_channels, fh * 4, fw * 4)
            depth = torch.cat([depth, self.cost_volumn_net(cost_volume)], dim=1)
        return torch.cat([self.depth_conv(depth), context], dim=1)


class StereoViewTransformer(LiftSplat):
    """Lift-splat with the camera-aware ``DepthNet`` and a stereo cost volume (official
    ``LSSViewTransformerBEVStereo``, FlashOCC@4084861 projects/mmdet3d_plugin/models/necks/view_transformer.py).

    ``cv_frustum`` is the stride-4 frustum of the cost volume; neither frustum is in the state dict
    (official plain attributes).
    """

    def __init__(self, in_channels: int, out_channels: int, input_size: tuple[int, int], downsample: int,
                 depth_bins: tuple[float, float, float], lower: tuple[float, float, float],
                 interval: tuple[float, float, float], grid_size: tuple[int, int, int], sid: bool = True,
                 aspp_mid_channels: int = 96, cost_volume_bias: float = 5.0, stereo_downsample: int = 4) -> None:
        super().__init__(out_channels, input_size, downsample, depth_bins, lower, interval, grid_size,
                         collapse_z=True, sid=sid)
        self.cost_volume_bias = cost_volume_bias
        self.stereo_downsample = stereo_downsample
        # Official detail (DepthNet.calculate_cost_volumn): the cost volume uses the same (SID) bins at stride 4.
        depths = depth_bin_values(*depth_bins, sid=sid)
        self.register_buffer("cv_frustum", create_frustum(depths, self.input_size, stereo_downsample), persistent=False)
        self.depth_net = DepthNet(in_channels, in_channels, out_channels, self.num_depth, aspp_mid_channels)

    def cost_volume(self, prev_stereo: torch.Tensor, curr_stereo: torch.Tensor, curr2adj: torch.Tensor,
                    intrinsics: torch.Tensor, post_rots: torch.Tensor, post_trans: torch.Tensor,
                    inverse_3x3: Callable[[torch.Tensor], torch.Tensor] = torch.linalg.inv) -> torch.Tensor:
        """(B·N, D, H/4, W/4) matching probabilities of ``curr_stereo`` against ``prev_stereo``
        (``inverse_3x3``: the ONNX graph passes an adjugate inverse)."""
        fh, fw = curr_stereo.shape[-2:]
        # Official quirk (DepthNet.calculate_cost_volumn): the image size is taken as 4x the stereo feature size.
        image_size = (fh * self.stereo_downsample, fw * self.stereo_downsample)
        with torch.no_grad():
            grid = cost_volume_grid(self.cv_frustum, curr2adj.float(), intrinsics.float(), post_rots.float(),
                                    post_trans.float(), image_size, inverse_3x3=inverse_3x3)
            return stereo_cost_volume(prev_stereo, curr_stereo, grid, self.num_depth, self.cost_volume_bias)

    def forward(self, feats: torch.Tensor, mlp_input: torch.Tensor, cost_volume: torch.Tensor | None,
                sensor2keyego: torch.Tensor, intrinsics: torch.Tensor, post_rots: torch.Tensor,
                post_trans: torch.Tensor, bda: torch.Tensor) -> Lifted:
        """feats (B, N, C, fH, fW) of one frame -> ``Lifted`` (bev (B, C'·Dz, Dy, Dx), depth and context
        (B·N, ·, fH, fW)).

        ``sensor2keyego`` places this frame's cameras in the current key-ego frame, so an earlier
        frame is lifted straight into the current frame (official align_after_view_transfromation=False:
        FlashOCC@4084861 projects/mmdet3d_plugin/models/detectors/bevstereo4d.py, BEVStereo4D.extract_img_feat).
        """
        depth, context = self.lift(feats, mlp_input, cost_volume)
        coords = frustum_to_ego(self.frustum, sensor2keyego, intrinsics.float(), post_rots.float(),
                                post_trans.float(), bda.float())
        indices = prepare_bev_pool(coords, self.lower, self.interval, self.grid_size)
        bev = self.splat(depth, context, feats.shape[:2], lambda d, c: bev_pool(d, c, indices))
        return Lifted(bev, depth, context)
