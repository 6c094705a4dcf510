"""``flashocc demo``: the one-command first contact on a fresh machine with no data.

Default: generate only a small held-out synthetic set (a seed no training set uses), run a preset's
bundled weights on it (flashocc/models/pretrained.py), score mIoU and RayIoU, draw pictures and write
``report.json``: a few minutes on 2 CPU cores. ``--train`` (implied by ``--minutes`` or config
overrides) trains the preset from scratch on a larger synthetic set first (engine/demo_train.py).
"""
from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

from flashocc.config import RunConfig, load_run_config
from flashocc.data.synth import SynthConfig, generate_synthetic_set, synthetic_set_problem
from flashocc.data.synth.marker import config_record, generator_files, written_config
from flashocc.engine.demo_pictures import score_and_draw
from flashocc.engine.demo_train import DEFAULT_MINUTES, balanced_class_weights, train_demo
from flashocc.engine.distributed import setup_distributed
from flashocc.errors import RunFolderError
from flashocc.metrics.evaluate import write_json

log = logging.getLogger(__name__)

__all__ = ["DEMO_PRESET", "DEMO_SYNTH", "EVAL_SEED", "balanced_class_weights", "ensure_synthetic_set",
           "eval_synth_config", "run_demo", "train_synth_config"]

# The --train demo's synthetic set: small images (the model sees 96x256) keep generation and decoding
# cheap. The camera demo reads no LiDAR sweeps; without them the set is 0.27 GB instead of 1.9 GB.
DEMO_SYNTH = SynthConfig(scenes=12, frames_per_scene=24, seed=0, image_size=(704, 396), workers=2, lidar_sweeps=0)

# What the demo runs by default: the preset flashocc-tiny-demo carries its training aids
# (models/presets.py) and its short-budget recipe (flashocc.config.RECIPES), so `flashocc train
# flashocc-tiny-demo` trains the same outside the demo.
DEMO_PRESET = "flashocc-tiny-demo"

# The default demo's held-out set: a seed no training set uses (the --train set and the bundled
# weights' training sets use others), every scene in infos_val.pkl.
EVAL_SEED = 1018
EVAL_SCENES, EVAL_FRAMES = 2, 12


def eval_synth_config(cfg: RunConfig, scenes: int = EVAL_SCENES, frames: int = EVAL_FRAMES) -> SynthConfig:
    """The held-out set for ``cfg``'s model: rendered at the width the model reads (16:9 like the
    704x396 training sets, so the resize-and-bottom-crop gives the same view), with the LiDAR sweeps
    a points model reads at test time and none otherwise."""
    width = int(cfg.model.input_size[1])
    sweeps = int(cfg.data.sweeps_used) if cfg.data.load_points or cfg.data.load_lidar_depth else 0
    return SynthConfig(scenes=scenes, frames_per_scene=frames, seed=EVAL_SEED,
                       image_size=(width, int(round(width * 396 / 704))), val_scenes=scenes, workers=2,
                       lidar_sweeps=sweeps)


def train_synth_config(preset: str) -> SynthConfig:
    """The --train set for ``preset``: DEMO_SYNTH, with the 10 LiDAR sweeps per keyframe a points
    model reads (the set the EFFOcc 15-minute comparison in docs/benchmarks.md used)."""
    data = load_run_config(preset).data
    return replace(DEMO_SYNTH, lidar_sweeps=10) if data.load_points or data.load_lidar_depth else DEMO_SYNTH


def ensure_synthetic_set(root: Path, config: SynthConfig = DEMO_SYNTH, require_config: bool = True) -> Path:
    """Reuse ``root`` when it holds a complete synthetic set (of ``config`` unless ``require_config`` is
    False: a set the user chose with ``--data`` is kept whatever its settings), else (re)generate it.

    Regenerating deletes only files the generator wrote; a folder holding anything else (a real
    dataset) is refused with a RunFolderError before anything is touched.
    """
    problem = synthetic_set_problem(root, config if require_config else None)
    if problem is None:
        written = written_config(root) or {}
        same = written == config_record(config)
        log.info("reusing the complete synthetic set at %s%s", root, "" if same else
                 f" (generated with scenes={written.get('scenes')}, frames_per_scene={written.get('frames_per_scene')}, "
                 f"seed={written.get('seed')}, image_size={written.get('image_size')}; not the demo's own settings)")
        return root
    try:
        old_files = generator_files(root)  # refuse before saying anything about regenerating
    except RunFolderError as exc:
        raise RunFolderError(f"flashocc demo --data: {exc}. The demo runs on synthetic sets it generates; "
                             f"on real data use 'flashocc eval' or 'flashocc train'") from None
    if old_files:
        log.warning("not reusing %s: %s; regenerating it", root, problem)
    log.info("generating a synthetic set at %s: %d scenes x %d frames", root, config.scenes, config.frames_per_scene)
    from tqdm import tqdm

    with tqdm(total=config.scenes * config.frames_per_scene, unit="frame", desc="synthetic data") as bar:
        generate_synthetic_set(root, config, progress=lambda done, total: bar.update(done - bar.n))
    return root


def run_demo(out: str | Path = "runs/demo", minutes: float | None = None, data: str | Path | None = None,
             preset: str = DEMO_PRESET, device: str = "auto", overrides: list[str] | tuple[str, ...] = (),
             overwrite: bool = False, train: bool | None = None, eval_scenes: int = EVAL_SCENES,
             eval_frames: int = EVAL_FRAMES) -> dict:
    """The demo into ``out``: bundled weights on a small held-out set, or (``train``, implied by
    ``minutes`` or ``overrides``) training from scratch first; returns the report it writes."""
    out = Path(out)
    earlier = [name for name in ("report.json", "train") if (out / name).exists()]
    if earlier and not overwrite:
        raise RunFolderError(f"{out} already holds a demo run ({', '.join(earlier)}); pass --overwrite to replace it "
                             f"(the synthetic data in it is kept and reused) or choose a new --out")
    train = bool(train or minutes is not None or overrides)
    if not train:
        from flashocc.models.pretrained import require_bundled_weights

        require_bundled_weights(preset)  # a preset without weights fails before any data is made
    out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    started = time.perf_counter()
    if train:
        data_root = ensure_synthetic_set(Path(data) if data else out / "data", train_synth_config(preset),
                                         require_config=data is None)
        minutes = DEFAULT_MINUTES if minutes is None else minutes
        return train_demo(out, data_root, preset, minutes, device, overrides, overwrite,
                          timing={"data": time.perf_counter() - started})
    cfg = load_run_config(preset)
    data_root = ensure_synthetic_set(Path(data) if data else out / "eval_data",
                                     eval_synth_config(cfg, eval_scenes, eval_frames), require_config=data is None)
    return bundled_demo(out, cfg, data_root, device, timing={"data": time.perf_counter() - started})


def bundled_demo(out: Path, cfg: RunConfig, data_root: Path, device: str = "auto",
                 timing: dict[str, float] | None = None) -> dict:
    """Score ``cfg``'s preset with its bundled weights on ``data_root``'s infos_val, draw the pictures and
    write ``out/report.json`` (measured scores beside the ones the manifest documents)."""
    from flashocc.models.presets import build_model
    from flashocc.models.pretrained import load_bundled_weights, require_bundled_weights

    timing = dict(timing or {})
    preset = cfg.model.name
    entry = require_bundled_weights(preset)
    started = time.perf_counter()
    info = setup_distributed(device)
    model = load_bundled_weights(build_model(cfg.model), preset).to(info.device)
    loading = time.perf_counter() - started
    result, pictures, seconds = score_and_draw(model, cfg, data_root, info.device, out)
    timing.update(seconds, inference_scoring=loading + seconds["inference_scoring"])
    documented = {k: v for k, v in entry.scores.items() if k in ("mIoU", "RayIoU")}
    report = {
        "mode": "bundled", "preset": preset, "mIoU": result["mIoU"], "RayIoU": result["RayIoU"],
        **{k: v for k, v in result.items() if k.startswith("RayIoU@")},
        "val_samples": result["num_samples"], "mIoU_per_class": result["mIoU_per_class"],
        "bundled_weights": {"file": entry.file, "sha256": entry.sha256, "trained_on": entry.trained_on,
                            "command": entry.command, "documented_scores": entry.scores},
        "measured_vs_documented": {k: {"measured": result[k], "documented": v} for k, v in documented.items()},
        "pictures": pictures, "data": str(data_root), "eval_set": written_config(data_root),
        "timing_s": {k: round(v, 2) for k, v in timing.items()},
        "total_minutes": sum(timing.values()) / 60,
    }
    against = (f" (documented {documented['mIoU']:.2f} on {entry.scores.get('eval_set', 'its eval set')})"
               if "mIoU" in documented else "")
    report["summary"] = (
        f"flashocc demo: {preset} with its bundled weights ({entry.trained_on}) on {result['num_samples']} "
        f"held-out synthetic frames: mIoU {result['mIoU']:.2f}{against}, RayIoU {result['RayIoU']:.3f}, in "
        f"{sum(timing.values()):.0f} s. Report: {out / 'report.json'}; pictures: "
        f"{', '.join(Path(p).name for p in pictures)}. Train your own: flashocc demo --train"
    )
    write_json(report, out / "report.json")
    return report
