"""Stereo cost volume and the camera-aware DepthNet (official DepthNet.calculate_cost_volumn and forward,
FlashOCC@4084861 projects/mmdet3d_plugin/models/model_utils/depthnet.py)."""
import math

import pytest
import torch

from flashocc.geometry import create_frustum, depth_bin_values
from flashocc.models.depthnet import DepthNet, camera_mlp_input
from flashocc.models.stereo import cost_volume_grid, current_to_adjacent_sensor, stereo_cost_volume


pytestmark = pytest.mark.usefixtures("one_thread")


def _rig(b=1, n=1, f=100.0, cx=87.5, cy=31.5):
    k = torch.tensor([[f, 0, cx], [0, f, cy], [0, 0, 1.0]]).expand(b, n, 3, 3)
    return k, torch.eye(3).expand(b, n, 3, 3), torch.zeros(b, n, 3)


def test_cost_volume_finds_the_true_depth_of_a_fronto_parallel_scene():
    # Adjacent camera b metres to the right: a point at depth d moves by f·b/d pixels to the left.
    # With the frustum's linspace pixel grid, a shift of s feature cells is s·(W-1)/(fW-1) pixels.
    img_h, img_w, fh, fw = 64, 176, 16, 44
    depths = depth_bin_values(1.0, 45.0, 1.0, sid=True)
    frustum = create_frustum(depths, (img_h, img_w), 4)
    true_bin, shift = 20, 3
    disparity = shift * (img_w - 1) / (fw - 1)
    f = 100.0
    baseline = disparity * float(depths[true_bin]) / f
    curr2adj = torch.eye(4).view(1, 1, 4, 4).clone()
    curr2adj[0, 0, 0, 3] = -baseline  # p_adj = p_curr - (b, 0, 0)
    k, post_rot, post_tran = _rig(f=f)
    grid = cost_volume_grid(frustum, curr2adj, k, post_rot, post_tran, (img_h, img_w))
    assert grid.shape == (1, len(depths) * fh, fw, 2)
    g = torch.Generator().manual_seed(0)
    curr = torch.rand(1, 16, fh, fw, generator=g)
    prev = torch.roll(curr, shifts=-shift, dims=-1)  # prev(x) = curr(x + shift)
    probs = stereo_cost_volume(prev, curr, grid, len(depths), bias=5.0)
    assert probs.shape == (1, len(depths), fh, fw)
    torch.testing.assert_close(probs.sum(1), torch.ones(1, fh, fw))
    best = probs.argmax(1)[0, :, shift + 2:fw - shift - 2]  # away from the wrapped border
    assert (best == true_bin).float().mean() > 0.95


def test_points_behind_the_adjacent_camera_are_invalid_and_biased():
    depths = torch.tensor([2.0, 40.0])
    frustum = create_frustum(depths, (16, 32), 4)
    curr2adj = torch.eye(4).view(1, 1, 4, 4).clone()
    curr2adj[0, 0, 2, 3] = -3.0  # adjacent camera 3 m ahead: depth 2 is behind it, depth 40 is not
    k, post_rot, post_tran = _rig(f=10.0, cx=15.5, cy=7.5)
    grid = cost_volume_grid(frustum, curr2adj, k, post_rot, post_tran, (16, 32)).view(2, 4, 8, 2)
    assert torch.all(grid[0] == -2)
    inside = (grid[1].abs() <= 1).all(-1)  # the magnification 40/37 pushes the border out
    assert inside.sum() >= 12
    feat = torch.ones(1, 4, 4, 8)
    probs = stereo_cost_volume(feat, feat, grid.view(1, 8, 8, 2), 2, bias=5.0)
    # Depth 2 samples zeros: cost 4 channels x |1 - 0| + bias 5 = 9; depth 40 matches perfectly.
    expected = 1 / (1 + math.exp(-9.0))
    torch.testing.assert_close(probs[0, 1][inside], torch.full_like(probs[0, 1][inside], expected))


def test_current_to_adjacent_sensor_composes_poses():
    s2e = torch.eye(4).view(1, 1, 4, 4).clone()
    s2e[..., :3, 3] = torch.tensor([1.0, 0.0, 1.5])
    e2g_curr, e2g_prev = torch.eye(4).view(1, 1, 4, 4).clone(), torch.eye(4).view(1, 1, 4, 4).clone()
    e2g_curr[..., 0, 3] = 2.0  # the ego moved 2 m forward
    c2a = current_to_adjacent_sensor(s2e, e2g_curr, s2e, e2g_prev)
    torch.testing.assert_close(c2a[0, 0, :3, 3], torch.tensor([2.0, 0.0, 0.0]))
    assert c2a.dtype == torch.float32


def test_depthnet_without_cost_volume_sees_zeros():
    torch.manual_seed(0)
    net = DepthNet(32, 32, 8, 12, aspp_mid_channels=8).eval()
    x = torch.randn(2, 32, 4, 11)
    mlp = torch.randn(1, 2, 27)
    with torch.no_grad():
        none = net.features(x, mlp, None)
        zeros = net.features(x, mlp, torch.zeros(2, 12, 16, 44))
        other = net.features(x, mlp, torch.rand(2, 12, 16, 44))
        depth, context = net(x, mlp, None)  # the shared split: softmax over the first 12, then the context
    torch.testing.assert_close(depth, none[:, :12].softmax(1), rtol=0, atol=0)
    torch.testing.assert_close(context, none[:, 12:], rtol=0, atol=0)
    assert none.shape == (2, 12 + 8, 4, 11)
    torch.testing.assert_close(none, zeros, rtol=0, atol=0)
    assert (other[:, :12] - none[:, :12]).abs().max() > 1e-4  # the cost volume feeds the depth branch
    torch.testing.assert_close(other[:, 12:], none[:, 12:])  # ...and not the context branch


def test_camera_mlp_input_layout():
    s2k = torch.arange(16.0).view(1, 1, 4, 4)
    k = torch.tensor([[500.0, 0, 320], [0, 510.0, 240], [0, 0, 1]]).view(1, 1, 3, 3)
    post_rot = torch.tensor([[0.44, 0.01, 0], [0.02, 0.45, 0], [0, 0, 1]]).view(1, 1, 3, 3)
    post_tran = torch.tensor([[[3.0, -140.0, 0.0]]])
    bda = torch.tensor([[[-1.0, 0.1, 0], [0.2, 1.0, 0], [0, 0, 0.9]]])
    v = camera_mlp_input(s2k, k, post_rot, post_tran, bda)[0, 0]
    assert v.shape == (27,)
    torch.testing.assert_close(v[:15], torch.tensor([500.0, 510, 320, 240, 0.44, 0.01, 3, 0.02, 0.45, -140,
                                                    -1, 0.1, 0.2, 1, 0.9]))
    torch.testing.assert_close(v[15:], torch.arange(12.0))
