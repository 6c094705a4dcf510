import pytest
import torch

from flashocc import build_model, load_checkpoint
from flashocc.engine.checkpoint import atomic_torch_save, save_checkpoint


@pytest.fixture(scope="module")
def reference():
    torch.manual_seed(0)
    return build_model("flashocc-tiny")


def _fresh():
    torch.manual_seed(1)
    return build_model("flashocc-tiny")


def _assert_same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_official_mmcv_layout_with_module_prefix_loads_strictly(reference, tmp_path):
    state = {f"module.{k}": v for k, v in reference.state_dict().items()}
    path = tmp_path / "official.pth"
    torch.save({"meta": {"mmcv_version": "1.5.3", "config": "model = dict(...)", "epoch": 24},
                "state_dict": state, "optimizer": {"state": {}, "param_groups": []}}, path)
    model = _fresh()
    report = load_checkpoint(model, path)
    assert report.ok and len(report.loaded) == len(state)
    _assert_same(model, reference)


def test_ema_file_layout_loads(reference, tmp_path):
    path = tmp_path / "epoch_24_ema.pth"
    torch.save({"epoch": 24, "state_dict": reference.state_dict(), "updates": 52776}, path)
    model = _fresh()
    load_checkpoint(model, path)
    _assert_same(model, reference)


def test_our_checkpoint_roundtrip_is_atomic(reference, tmp_path):
    path = save_checkpoint(reference, tmp_path / "ckpt.pt", step=7)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]  # no temp file left behind
    payload = torch.load(path, weights_only=True)
    assert payload["step"] == 7 and payload["model_config"]["name"] == "flashocc-tiny"
    model = _fresh()
    load_checkpoint(model, path)
    _assert_same(model, reference)


def test_mismatch_is_listed_readably_and_nothing_loads(reference, tmp_path):
    state = dict(reference.state_dict())
    own = tuple(state["img_view_transformer.depth_net.weight"].shape)
    state["img_view_transformer.depth_net.weight"] = torch.zeros(59 + 32, 128, 1, 1)
    state["pts_bbox_head.shared_conv.conv.weight"] = torch.zeros(1)
    del state["occ_head.predicter.2.bias"]
    path = tmp_path / "bevdet_pretrain.pth"
    torch.save({"state_dict": state}, path)
    model = _fresh()
    before = model.occ_head.predicter[0].weight.clone()
    with pytest.raises(KeyError) as err:
        load_checkpoint(model, path)
    text = str(err.value)
    assert "occ_head.predicter.2.bias" in text and "pts_bbox_head" in text
    assert f"img_view_transformer.depth_net.weight: checkpoint (91, 128, 1, 1) vs model {own}" in text
    assert torch.equal(model.occ_head.predicter[0].weight, before)

    report = load_checkpoint(model, path, strict=False)
    assert "img_view_transformer.depth_net.weight" not in report.loaded
    assert report.unexpected == ["pts_bbox_head.shared_conv.conv.weight"]
    assert torch.equal(model.occ_head.predicter[0].weight, reference.occ_head.predicter[0].weight)


def test_bad_files_give_clear_errors(tmp_path):
    model = _fresh()
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(model, tmp_path / "nope.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="garbage.pth"):
        load_checkpoint(model, garbage)
    atomic_torch_save({"optimizer": {}}, tmp_path / "opt_only.pth")
    with pytest.raises(ValueError, match="no state dict"):
        load_checkpoint(model, tmp_path / "opt_only.pth")
