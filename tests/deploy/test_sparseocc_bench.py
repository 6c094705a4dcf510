"""``flashocc bench sparseocc-*``: SparseOcc's stages beside a FlashOcc preset on the same images."""
import json

import pytest
import torch

from flashocc.deploy import sparseocc_bench as SB
from flashocc.errors import ConfigError


@pytest.fixture(scope="module")
def report():
    cfg = SB.SparseOccBenchConfig("sparseocc-tiny", repeats=1, warmup=0, isolate=False, threads=1)
    return SB.run_sparseocc_bench(cfg)


def test_report_has_every_stage_and_ratios(report, tmp_path):
    s, f = report.sparseocc, report.flashocc
    assert list(s.stages_ms) == ["backbone_fpn", "voxel_l0", "voxel_l1", "voxel_l2", "mask_decoder", "merge",
                                 "backbone_1frame"]
    assert list(f.stages_ms) == list(SB.FLASHOCC_STAGES) and f.preset == "flashocc-tiny"
    assert all(v > 0 for v in (*s.stages_ms.values(), *f.stages_ms.values()))
    # One forward = the stages in order (backbone_1frame is the online extra, not part of it).
    assert s.total_ms == pytest.approx(sum(v for k, v in s.stages_ms.items() if k != "backbone_1frame"))
    assert s.online_ms == pytest.approx(s.total_ms - s.stages_ms["backbone_fpn"] + s.stages_ms["backbone_1frame"])
    assert (s.images, f.images) == (48, 6)
    assert report.ratios["total"] == pytest.approx(s.total_ms / f.total_ms)
    assert s.peak_mem_mib is not None and s.peak_mem_mib >= 0
    text = SB.format_sparseocc_report(report)
    assert "voxel_l2" in text and "sparseocc-tiny / flashocc-tiny: total x" in text
    back = json.loads(report.save(tmp_path / "b.json").read_text())
    assert back["sparseocc"]["preset"] == "sparseocc-tiny" and back["ratios"]["params"] > 0


def test_flashocc_gets_the_current_frame_images_normalised_as_its_pipeline_does():
    from flashocc.models.presets import get_config

    sparse_cfg, flash_cfg = get_config("sparseocc-r50"), get_config("flashocc-r50-m1")
    batch = {"img": torch.full((1, 48, 3, *sparse_cfg.input_size), 255.0)}
    batch["img"][:, 6:] = 0  # past frames must not reach FlashOcc
    out = SB.flashocc_input(flash_cfg, batch, 6)
    assert out["img"].shape == (1, 6, 3, 256, 704)
    expected = (255 - torch.tensor(SB._MEAN)) / torch.tensor(SB._STD)
    assert torch.allclose(out["img"][0, :, :, 0, 0], expected.expand(6, 3))


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError, match="repeats"):
        SB.run_sparseocc_bench(SB.SparseOccBenchConfig("sparseocc-tiny", repeats=0))
    with pytest.raises(ConfigError, match="camera-lss"):
        SB.run_sparseocc_bench(SB.SparseOccBenchConfig("sparseocc-tiny", compare="effocc-lidar-tiny"))
    with pytest.raises(ConfigError, match="not a SparseOcc preset"):
        SB.run_sparseocc_bench(SB.SparseOccBenchConfig("flashocc-tiny"))


def test_the_cli_dispatches_sparseocc_presets(report, tmp_path, capsys, monkeypatch):
    from flashocc.cli import main

    seen = {}

    def fake(cfg):
        seen["cfg"] = cfg
        return report

    monkeypatch.setattr(SB, "run_sparseocc_bench", fake)
    out = tmp_path / "r.json"
    assert main(["bench", "sparseocc-tiny", "--repeats", "2", "--warmup", "0", "--threads", "2", "--compare",
                 "flashocc-tiny", "--json", str(out)]) == 0
    cfg = seen["cfg"]
    assert (cfg.preset, cfg.compare, cfg.repeats, cfg.warmup, cfg.threads) == ("sparseocc-tiny", "flashocc-tiny", 2, 0, 2)
    assert "voxel_l0" in capsys.readouterr().out and json.loads(out.read_text())["flashocc"]["preset"] == "flashocc-tiny"


def test_the_generic_bench_points_sparseocc_to_its_own():
    from flashocc.deploy.bench import BenchConfig, run_bench

    with pytest.raises(ConfigError, match="run_sparseocc_bench"):
        run_bench(BenchConfig("sparseocc-tiny"))


def test_fused_variants_are_timed_beside_eager_and_unread_flags_are_refused(tmp_path, capsys, monkeypatch):
    from flashocc.cli import main

    rep = SB.run_sparseocc_bench(SB.SparseOccBenchConfig("sparseocc-tiny", repeats=1, warmup=0, isolate=False,
                                                         threads=1, fused=True))
    assert rep.sparseocc_fused is not None and rep.flashocc_fused is not None
    assert list(rep.sparseocc_fused.stages_ms) == list(rep.sparseocc.stages_ms)
    assert rep.fused_ratios["total"] == pytest.approx(rep.sparseocc_fused.total_ms / rep.flashocc_fused.total_ms)
    assert "both fused" in SB.format_sparseocc_report(rep)
    seen = {}
    monkeypatch.setattr(SB, "run_sparseocc_bench", lambda cfg: seen.setdefault("cfg", cfg) and rep)
    assert main(["bench", "sparseocc-tiny", "--backend", "torch,torch-fused"]) == 0 and seen["cfg"].fused
    for flags, name in ((["--backend", "torch,onnxruntime"], "--backend onnxruntime"),
                        (["--precision", "int8"], "--precision int8"), (["--batch", "2"], "--batch 2")):
        assert main(["bench", "sparseocc-tiny", *flags]) != 0
        assert f"{name} is not read for SparseOcc presets" in capsys.readouterr().err
