import torch

from flashocc.models.heads import BEVOCCHead2D, BEVOCCHead3D


def test_channel_to_height_order_is_height_major():
    head = BEVOCCHead2D(in_dim=4, out_dim=4, num_z=16, num_classes=18)
    last = head.predicter[2]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.arange(288, dtype=torch.float32))  # output channel j carries value j
    logits = head(torch.randn(2, 4, 5, 6))
    assert logits.shape == (2, 6, 5, 16, 18)
    z = torch.arange(16).view(16, 1)
    k = torch.arange(18).view(1, 18)
    expected = (z * 18 + k).float()  # channel = z·18 + class (official BEVOCCHead2D.forward)
    torch.testing.assert_close(logits[1, 3, 2], expected)


def test_bev_rows_are_y_and_columns_are_x():
    head = BEVOCCHead2D(in_dim=1, out_dim=2, num_z=1, num_classes=2)
    with torch.no_grad():
        conv = head.final_conv.conv
        conv.weight.zero_()
        conv.weight[0, 0, 1, 1] = 1.0
        conv.bias.zero_()
        head.predicter[0].weight.copy_(torch.tensor([[1.0, 0.0]] * 4))
        head.predicter[0].bias.zero_()
        head.predicter[2].weight.fill_(1.0)
        head.predicter[2].bias.zero_()
    bev = torch.zeros(1, 1, 4, 6)  # (B, C, Dy=4, Dx=6)
    bev[0, 0, 1, 5] = 10.0  # y = 1, x = 5
    logits = head(bev)
    assert logits.shape == (1, 6, 4, 1, 2)  # [x, y, z, class]
    flat = logits[0, ..., 0, 0]
    peak = divmod(int(flat.argmax()), 4)
    assert peak == (5, 1)


def test_head3d_layout():
    head = BEVOCCHead3D(in_dim=8, out_dim=8, num_classes=18)
    out = head(torch.randn(1, 8, 3, 4, 5))  # (B, C, Dz, Dy, Dx)
    assert out.shape == (1, 5, 4, 3, 18)
