"""SparseOcc's multi-view multi-scale sampling against a loop over views with 2-D grid_sample (values and
gradients), the first-valid-camera choice, the align-corners addressing and the level-weight order."""
import torch
import torch.nn.functional as F

from flashocc.ops.msmv_sampling import msmv_sampling, sampling_4d, split_groups, stack_views


def loop_over_views(feats, locations, weights):
    """Reference: per view, 2-D align-corners grid_sample of every level, masked by the point's view."""
    n = feats[0].shape[2]
    view = torch.round(locations[..., 2] * (n - 1)).long()
    grid = locations[..., :2] * 2 - 1  # (R, Q, P, 2)
    out = 0
    for v in range(n):
        mask = (view == v).to(locations.dtype).unsqueeze(1)  # (R, 1, Q, P)
        for level, feat in enumerate(feats):
            s = F.grid_sample(feat[:, :, v], grid, mode="bilinear", padding_mode="zeros", align_corners=True)
            out = out + s * mask * weights[..., level].unsqueeze(1)
    return out.permute(0, 2, 1, 3)


def _inputs(seed=0, r=3, c=5, n=6, q=7, p=4, sizes=((8, 12), (4, 6), (3, 5), (1, 2))):
    g = torch.Generator().manual_seed(seed)
    feats = [torch.randn(r, c, n, h, w, generator=g, dtype=torch.float64) for h, w in sizes]
    uv = torch.rand(r, q, p, 2, generator=g, dtype=torch.float64) * 1.4 - 0.2  # some outside the image
    view = torch.randint(0, n, (r, q, p, 1), generator=g).double() / (n - 1)
    loc = torch.cat([uv, view], dim=-1)
    w = torch.softmax(torch.randn(r, q, p, len(sizes), generator=g, dtype=torch.float64), dim=-1)
    return feats, loc, w


def test_matches_loop_over_views_values_and_gradients():
    feats, loc, w = _inputs()
    feats = [f.requires_grad_() for f in feats]
    uv = loc[..., :2].clone().requires_grad_()
    w = w.requires_grad_()
    loc_full = torch.cat([uv, loc[..., 2:]], dim=-1)
    ours = msmv_sampling([stack_views(f) for f in feats], loc_full, w, 6)
    ref = loop_over_views(feats, loc_full, w)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
    g_out = torch.randn_like(ours)
    grads = torch.autograd.grad((ours * g_out).sum(), [*feats, uv, w])
    grads_ref = torch.autograd.grad((ref * g_out).sum(), [*feats, uv, w])
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_no_leak_across_views_and_align_corners_addressing():
    # View 1 holds a huge value, the others zeros: a point in views 0 or 2 must read exactly 0, even at
    # the bottom / top edge rows where the stacked layout meets the next view.
    f = torch.zeros(1, 1, 3, 4, 5)
    f[:, :, 1] = 1e6
    loc = torch.tensor([[[[0.5, 0.999, 0.0], [0.5, 0.001, 1.0], [0.3, 1.2, 0.0]]]])  # views 0, 2, 0
    out = msmv_sampling([stack_views(f)], loc, torch.ones(1, 1, 3, 1), 3)
    assert torch.all(out == 0)
    # Align corners: u = 1 is the last column's centre, u = 0.5 of a 5-wide map is column 2 exactly.
    f = torch.arange(20.0).reshape(1, 1, 1, 4, 5)
    loc = torch.tensor([[[[1.0, 0.0, 0.0], [0.5, 1.0, 0.0], [0.125, 0.0, 0.0]]]])
    out = msmv_sampling([stack_views(f)], loc, torch.ones(1, 1, 3, 1), 1)[0, 0, 0]
    torch.testing.assert_close(out, torch.tensor([4.0, 17.0, 0.5]))
    # Half a pixel outside the last column blends with zero padding (kernel: -1 < x < W).
    loc = torch.tensor([[[[1.125, 0.0, 0.0]]]])  # x = 4.5
    out = msmv_sampling([stack_views(f)], loc, torch.ones(1, 1, 1, 1), 1)
    torch.testing.assert_close(out[0, 0, 0], torch.tensor([2.0]))


def _rig(b=1, t=2, n=3):
    """Cameras looking along +x, +y, -x (pinhole 20 px, image 64x96: ±67°), the same for every frame."""
    k = torch.tensor([[20.0, 0, 48, 0], [0, 20.0, 32, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    mats = []
    for yaw in (0.0, torch.pi / 2, torch.pi):
        c, s = torch.cos(torch.tensor(yaw)), torch.sin(torch.tensor(yaw))
        # ego -> camera: camera z = forward (c, s, 0), x = right (s, -c, 0), y = down.
        r = torch.tensor([[s, -c, 0.0], [0.0, 0.0, -1.0], [c, s, 0.0]])
        e2c = torch.eye(4)
        e2c[:3, :3] = r
        mats.append(k @ e2c)
    return torch.stack(mats).repeat(t, 1, 1)[None].expand(b, -1, -1, -1)


def test_sampling_4d_first_valid_camera_and_level_weight_order():
    b, t, n, g, p, c = 1, 2, 3, 4, 1, 2
    h, w = 4, 6
    # Level-0 features: value = 100·view + 10·group + frame, constant over the map; channel 1 = 1.
    base = torch.zeros(b, t, n, g, c, h, w)
    for ti in range(t):
        for ni in range(n):
            for gi in range(g):
                base[:, ti, ni, gi, 0] = 100 * ni + 10 * gi + ti
                base[:, ti, ni, gi, 1] = 1
    level0 = base.reshape(b, t * n, g * c, h, w)
    level1 = torch.zeros_like(level0)
    feats = [split_groups(level0, t, n, g), split_groups(level1, t, n, g)]
    # Point 0 straight ahead (+x, only camera 0), point 1 at +x+y (cameras 0 and 1 both see it:
    # the first wins), point 2 behind-left (+y only: camera 1), point 3 straight up (none: camera 0).
    pts = torch.tensor([[10.0, 0, 0], [10.0, 8.0, 0], [-1.0, 10.0, 0], [0.0, 0.0, 50.0]])
    q = len(pts)
    points = pts[None, :, None, None, None, :].expand(b, q, t, g, p, 3)
    # Level weights per group: group gi puts 0.1·gi + 0.5 on level 0.
    lw = torch.zeros(b, q, g, t, p, 2)
    for gi in range(g):
        lw[:, :, gi, :, :, 0] = 0.1 * gi + 0.5
        lw[:, :, gi, :, :, 1] = 0.5 - 0.1 * gi
    out = sampling_4d(points, feats, lw, _rig(b, t, n), (h * 16, w * 16), n)  # (B, Q, G, T·P, C)
    assert out.shape == (b, q, g, t * p, c)
    view = torch.tensor([0, 0, 1, 0])
    for qi in range(q):
        for gi in range(g):
            for ti in range(t):
                # Official quirk: row (t, g) reads the weights of group (t·G + g) // T.
                wq = 0.1 * ((ti * g + gi) // t) + 0.5
                value = out[0, qi, gi, ti, 0]
                if qi == 3:  # nothing valid: camera 0 at a point behind it reads zeros (outside the map)
                    assert value == 0
                    continue
                expected = wq * (100 * view[qi] + 10 * gi + ti)
                torch.testing.assert_close(value, (expected * torch.ones(())).to(value.dtype))
