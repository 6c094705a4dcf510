"""The trainer's device decisions reach its log: ``train.amp`` on the CPU is reported, not silently dropped."""
from flashocc.config import load_run_config
from flashocc.engine.train import train

from test_train import MICRO


def test_amp_on_cpu_is_logged_as_not_applied(synth_root, tmp_path):
    cfg = load_run_config("flashocc-tiny", [*MICRO, "train.max_iters=1", "train.amp=bf16", "train.ema=False"])
    train(cfg, synth_root, tmp_path / "run", device="cpu", progress=False)
    log = (tmp_path / "run" / "train.log").read_text()
    assert "WARNING train.amp=bf16 is not applied on the CPU: training runs in fp32" in log
    assert "device cpu" in log
