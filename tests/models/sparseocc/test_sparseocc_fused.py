"""SparseOcc inference paths: the frame-by-frame encoder into the sampling layout (what ``forward`` runs under
``no_grad``) and the fused copy (``model.fuse()``: BatchNorm folded, channels-last), against the batch path."""
import pytest
import torch

from flashocc.engine.evaluate import inference_model
from flashocc.errors import ConfigError
from flashocc.models.presets import build_model
from flashocc.models.sparseocc import build_sparseocc
from flashocc.models.sparseocc.examples import example_batch
from flashocc.models.sparseocc.model import padded_hw
from test_sparseocc_stream_aug import small_cfg  # the same 3-frame, 2-camera model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = build_sparseocc(small_cfg())
    # Non-trivial BatchNorm statistics, so folding has something to fold.
    with torch.no_grad():
        for bn in m.img_backbone.modules():
            if isinstance(bn, torch.nn.BatchNorm2d):
                bn.running_mean.uniform_(-0.2, 0.2)
                bn.running_var.uniform_(0.5, 2.0)
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.uniform_(-0.2, 0.2)
    return m.eval()


def test_frame_by_frame_encoding_gives_the_batch_features_in_the_sampling_layout(model, one_thread):
    batch = example_batch(model.cfg, 2, seed=3)  # two samples: rows of sample 1 follow all of sample 0's
    with torch.no_grad():
        ref = model.group_features(model.image_encoder(batch["img"]))
        got = model.encode_grouped(batch["img"])
    assert [g.shape for g in got] == [r.shape for r in ref]
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-5)


def test_inference_forward_equals_the_batch_path(model, one_thread):
    batch = example_batch(model.cfg, 1, seed=4)
    with torch.no_grad():
        out = model(batch, return_intermediates=True)
        ref = model.outputs(model.forward_features(model.image_encoder(batch["img"]), batch, padded_hw(batch["img"])),
                            return_intermediates=True)
    torch.testing.assert_close(out["mask_preds"][-1], ref["mask_preds"][-1], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out["class_preds"][-1], ref["class_preds"][-1], rtol=1e-4, atol=1e-4)
    assert torch.equal(out["occ_loc"], ref["occ_loc"])


def test_fused_copy_has_the_same_outputs_and_refuses_training(model, one_thread):
    fused = model.fuse()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.img_backbone.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.img_backbone.modules())  # original untouched
    assert fused.criterion is None and not any(p.requires_grad for p in fused.parameters())
    batch = example_batch(model.cfg, 1, seed=5)
    with torch.no_grad():
        ref = model(batch, return_intermediates=True)
        out = fused(batch, return_intermediates=True)
        ref_feats = model.encode_grouped(batch["img"])
        out_feats = fused.encode_grouped(batch["img"])
    for a, b in zip(out_feats, ref_feats):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert torch.equal(out["occ_loc"], ref["occ_loc"])
    torch.testing.assert_close(out["mask_preds"][-1], ref["mask_preds"][-1], rtol=1e-3, atol=1e-3)
    agreement = (out["semantics"] == ref["semantics"]).float().mean().item()
    assert agreement > 0.999
    with pytest.raises(RuntimeError, match="inference only"):
        fused.train()


def test_eval_inference_modes_dispatch_and_refuse_models_without_a_fused_mode(model):
    assert inference_model(model, "fused").inference_only
    with pytest.raises(ConfigError, match="effocc-fusion-tiny has no fused inference mode"):
        inference_model(build_model("effocc-fusion-tiny"), "fused")
