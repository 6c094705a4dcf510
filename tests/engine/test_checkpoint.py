import os
import pickle
import re

import pytest
import torch

from flashocc import build_model, load_checkpoint
from flashocc.config import default_run_config
from flashocc.engine.checkpoint import (atomic_torch_save, extract_state_dict, read_checkpoint, read_state_dict,
                                        save_checkpoint)
from flashocc.engine.evaluate import load_model_for_inference
from flashocc.errors import CheckpointError, CheckpointMismatchError, MissingFileError


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


# ---- refused globals vs corrupt files, readable mismatches (issue #14) ------------------------------------
class _Touch:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_refused_global_is_named_with_the_trusted_hint_and_never_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "hook": _Touch(marker)}, path)
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(path)
    text = str(err.value)
    assert text.startswith(f"{path}: refused to load") and f"{os.system.__module__}.system" in text
    assert "trusted=True" in text and "\n" not in text
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's note on the protocol-4 non-checkpoint
@pytest.mark.parametrize("case", ["truncated", "garbage", "empty", "plain_pickle", "flipped_zip_header"])
def test_a_corrupt_checkpoint_is_a_checkpoint_error_without_the_trusted_hint(reference, tmp_path, case):
    good = tmp_path / "good.pth"
    torch.save({"state_dict": reference.state_dict()}, good)
    data = good.read_bytes()
    path = tmp_path / f"{case}.pth"
    path.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"definitely not a checkpoint", "empty": b"",
                      "plain_pickle": pickle.dumps([1, 2, 3], protocol=4),
                      "flipped_zip_header": b"PK\x03\x04" + bytes(b ^ 0x5A for b in data[4:64]) + data[64:]}[case])
    with pytest.raises(CheckpointError, match=rf"^{re.escape(str(path))}: not a readable checkpoint") as err:
        read_state_dict(path)
    assert "trusted" not in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(CheckpointError, match=re.escape(str(path))):
        read_checkpoint(path, trusted=True)  # corrupt either way; no hint to trust it


def test_missing_checkpoint_is_a_missing_file_error(tmp_path):
    with pytest.raises(MissingFileError, match=r"checkpoint not found: .*nope\.pth"):
        read_checkpoint(tmp_path / "nope.pth")


@pytest.mark.parametrize("payload, found", [([torch.zeros(1)], "list"), ({1: torch.zeros(1)}, "mapping"),
                                             ({"w": "not a tensor"}, "mapping"), ({}, "mapping"), (3, "int")])
def test_payloads_without_a_state_dict_are_checkpoint_errors(tmp_path, payload, found):
    path = tmp_path / "odd.pth"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(path))}: no state dict found.*found (a )?{found}"):
        read_state_dict(path)
    with pytest.raises(CheckpointError, match="no state dict"):
        extract_state_dict(payload, source="memory")


def test_mismatch_error_is_readable_lines_and_still_a_key_error(reference, tmp_path):
    state = dict(reference.state_dict())
    del state["occ_head.predicter.2.bias"]
    path = tmp_path / "partial.pth"
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointMismatchError) as err:
        load_checkpoint(_fresh(), path)
    assert isinstance(err.value, KeyError)
    text = str(err.value)
    assert text.startswith(f"{path} does not match the model:\n") and "\\n" not in text and not text.startswith("'")
    assert "  occ_head.predicter.2.bias" in text.splitlines()


def test_inference_loader_raises_the_mismatch_error(reference, tmp_path):
    state = dict(reference.state_dict())
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "extra.pth"
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointMismatchError) as err:
        load_model_for_inference(default_run_config("flashocc-tiny"), path, torch.device("cpu"))
    assert "extra.weight" in str(err.value) and "\\n" not in str(err.value)
