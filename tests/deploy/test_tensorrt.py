"""TensorRT engines: built and compared with PyTorch where a GPU and tensorrt are present, else a
clean skip that says why."""
from __future__ import annotations

import pytest
import torch

from flashocc.deploy import tensorrt as trt_deploy

REASON = trt_deploy.tensorrt_unavailable_reason()


def test_unavailable_reason_is_actionable():
    if REASON is None:
        pytest.skip("tensorrt is available here")
    assert "tensorrt" in REASON.lower() or "gpu" in REASON.lower()
    with pytest.raises(ImportError, match="tensorrt|GPU"):
        trt_deploy.build_engine("missing.onnx", "missing.engine")


@pytest.mark.skipif(REASON is not None, reason=REASON or "")
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_engine_matches_pytorch(tiny_model, synthetic_batch, reference, tmp_path, precision):
    from flashocc.deploy import export_onnx
    from flashocc.deploy.quantize import calibration_batches

    onnx_path = export_onnx(tiny_model, tmp_path / "tiny_trt.onnx", mode="precomputed", accumulate=torch.float32)
    calib = calibration_batches("flashocc-tiny", 4) if precision == "int8" else None
    engine = trt_deploy.build_engine(onnx_path, tmp_path / f"tiny_{precision}.engine", precision, calib)
    logits = trt_deploy.TensorRTOccModel(engine, onnx_path)(synthetic_batch)
    agree = (logits.argmax(-1) == reference["synthetic"].argmax(-1)).mean()
    assert agree >= (0.99 if precision == "fp16" else 0.95)
