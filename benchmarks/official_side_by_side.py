"""The official FlashOCC code against ours on the CPU, in one process: same weights, same input, stage by stage.

For each preset (flashocc-r50-m0, flashocc-r50-m1) it builds our model (``torch.manual_seed(0)``, BatchNorm
statistics from one example batch: ``calibrate_random_model``), builds the official ``BEVDetOCC`` from the
official config and loads our ``state_dict()`` into it with ``strict=True``. Both get our
``example_model_batch``; the official model takes it as its ``img_inputs`` tuple (imgs, sensor2egos,
ego2globals, intrins, post_rots, post_trans, bda), which has the same conventions as our batch keys
(Yzichen/FlashOCC@845a6a8 projects/mmdet3d_plugin/models/detectors/bevdet.py, BEVDet.prepare_inputs and
extract_img_feat). It prints the agreement of the occupancy logits (before argmax), then times three variants,
rounds interleaved so a load change hits all alike, medians over ``--rounds``:
  official  the official modules, eager, called as BEVDet.extract_img_feat and BEVDetOCC.simple_test_occ call them;
  eager     ours (``torch_stage_times``);
  fused     ours after ``flashocc.models.fuse.fuse_for_inference`` (BatchNorm folded, channels-last, cached indices);
  compiled  (``--compile``) the fused copy with ``torch.compile`` (inductor) on each part, compiled before timing.
Stages: image_encoder (backbone + neck), view_transform (depth net, geometry, BEV pooling), bev_encoder, head;
total = their sum. The official view transform runs with the config's ``accelerate=False``: it rebuilds the
pooling indices every frame, as ours does eagerly. GFLOP/s use our eager model's FLOPs (``stage_gflop``), the
same network; the fp32 peak (``gemm_peak_gflops``) is timed every round.

CPU patches (applied in ``install_cpu_patches``, nothing in the official files is edited):
  * ``projects/.../ops/bev_pool_v2/bev_pool_v2_ext`` (CUDA) -> ``bev_pool_v2_forward_cpu`` below, an index_add
    over the official ranks with the kernel's semantics; the official Python wrapper (QuickCumsumCuda, bev_pool_v2)
    runs unchanged. Backward is not replaced (inference only).
  * ``mmcv._ext`` (mmcv-full's compiled ops, absent from the pure-Python mmcv) -> a module whose functions raise:
    no compiled mmcv op is on the M0/M1 path, and if one were called the run would fail, not silently differ.
  * Plugin modules off the M0/M1 path are stubbed so that the plugin's package ``__init__`` files (datasets,
    hooks, metrics, every detector) need not import: ops.bev_pool, ops.nearest_assign (CUDA ops),
    models.model_utils (DepthNet), models.losses.{semkitti_loss, lovasz_softmax}, detectors.{bevdepth,
    bevdepth4d, bevstereo4d}. The modules that are imported for real: detectors/bevdet.py, bevdet_occ.py,
    necks/view_transformer.py, fpn.py, lss_fpn.py, backbones/resnet.py, dense_heads/bev_occ_head.py,
    ops/__init__.py, ops/bev_pool_v2/*.py; the image backbone is mmdet's ResNet.
  * ``torchvision`` -> a stub if it does not import (PyPI's wheel links CUDA torch): mmcv only reads it for
    'torchvision://' checkpoints, which are never loaded here. ``lyft_dataset_sdk`` (mmdet3d's Lyft metric) -> a stub.
  * mmdet3d 1.0.0rc6 asserts mmcv <= 1.7.0 at import; that import sees mmcv.__version__ '1.7.0' (a version
    check only; mmcv 1.7.2, the release that runs, has the fixes for torch 2).

Setting up the official environment (what was used; pure Python, CPU torch, outside the repository):
  python3 -m venv /tmp/offvenv && . /tmp/offvenv/bin/activate
  pip install torch==2.13.0 numpy pyyaml tqdm numba addict yapf packaging Pillow opencv-python-headless \
      scipy terminaltables six matplotlib pycocotools shapely prettytable trimesh
  pip install --no-deps mmdet==2.28.2 mmsegmentation==0.30.0
  pip install -e /work/main --no-deps
  # mmcv and mmdet3d as extracted sdists (mmcv's setup.py needs pkg_resources: download with old setuptools)
  python3 -m venv /tmp/dlvenv && /tmp/dlvenv/bin/pip install "setuptools<70" wheel
  mkdir -p /tmp/offdl /tmp/offsrc && cd /tmp/offdl
  /tmp/dlvenv/bin/pip download --no-deps --no-binary :all: --no-build-isolation mmcv==1.7.2 -d .
  pip download --no-deps --no-binary :all: --no-build-isolation mmdet3d==1.0.0rc6 -d .
  tar xzf mmcv-1.7.2.tar.gz -C /tmp/offsrc && tar xzf mmdet3d-1.0.0rc6.tar.gz -C /tmp/offsrc
  printf '/tmp/offsrc/mmcv-1.7.2\n/tmp/offsrc/mmdet3d-1.0.0rc6\n' \
      > "$(python -c 'import site; print(site.getsitepackages()[0])')/offsrc.pth"
  # the FlashOCC checkout at --official-root: github.com/Yzichen/FlashOCC, or just the files imported for real
  # (above) plus configs/flashocc/flashocc-r50.py, all at 845a6a8, and configs/flashocc/flashocc-r50-M0.py at
  # cfbdcc0 (its occ_head passes class_wise=False, which 845a6a8's BEVOCCHead2D accepts; fbf63ad's
  # class_balance=False is rejected). The configs' _base_ files are never read (only their model dict).

Run (in that environment):
  python benchmarks/official_side_by_side.py --official-root /tmp/official/FlashOCC --rounds 5 --threads 2 \
      --out official_side_by_side.json
"""
from __future__ import annotations

import argparse
import datetime
import importlib
import json
import platform
import runpy
import statistics
import subprocess
import sys
import time
import types
import warnings
from pathlib import Path

import torch

from flashocc.deploy.bench import STAGES, calibrate_random_model, gemm_peak_gflops, stage_gflop, torch_stage_times
from flashocc.models.examples import example_model_batch
from flashocc.models.fuse import fuse_for_inference
from flashocc.models.presets import build_model

PLUGIN = "projects.mmdet3d_plugin"
CONFIGS = {"flashocc-r50-m0": "flashocc-r50-M0.py", "flashocc-r50-m1": "flashocc-r50.py"}
PATCHES = ["projects.mmdet3d_plugin.ops.bev_pool_v2.bev_pool_v2_ext.bev_pool_v2_forward -> bev_pool_v2_forward_cpu",
           "mmcv._ext -> raising stub", "torchvision, lyft_dataset_sdk -> stubs (if torchvision does not import)",
           "plugin package __init__ files bypassed; ops.bev_pool, ops.nearest_assign, models.model_utils, "
           "models.losses.{semkitti_loss,lovasz_softmax}, detectors.{bevdepth,bevdepth4d,bevstereo4d} -> stubs",
           "mmdet3d import sees mmcv.__version__ == '1.7.0'"]
# Deprecation notices the official code triggers on every call (torch.range) or at build time: noise, not news.
for message in ("torch.range is deprecated", "DeprecationWarning: pretrained is deprecated", "Default ``avg_non_ignore``",
                "On January 1, 2023, MMCV will release", "torch.meshgrid: in an upcoming release"):
    warnings.filterwarnings("ignore", message=message)


def _raiser(name: str):
    def missing(*args, **kwargs):
        raise RuntimeError(f"{name} is a compiled (CUDA) op stubbed by the CPU harness; it is not on the M0/M1 path")
    return missing


class _RaisingModule(types.ModuleType):
    """Any attribute is a function that raises: stands in for a compiled extension."""
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _raiser(f"{self.__name__}.{name}")


def _stub(name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    sys.modules[name] = module
    return module


def bev_pool_v2_forward_cpu(depth, feat, out, ranks_depth, ranks_feat, ranks_bev, interval_lengths, interval_starts):
    """CPU stand-in for the CUDA ``bev_pool_v2_forward`` (Yzichen/FlashOCC@845a6a8
    projects/mmdet3d_plugin/ops/bev_pool_v2/src/bev_pool_cuda.cu, bev_pool_v2_kernel): for every pillar
    (interval of the sorted ranks) out[ranks_bev[start], c] = sum_i depth[ranks_depth[i]] * feat[ranks_feat[i], c].
    ``out`` is the caller's zeroed (B, Dz, Dy, Dx, C) tensor and every bev rank belongs to one interval, so an
    index_add over all points is the same sum; only the order of float additions within a cell may differ."""
    c = feat.shape[-1]
    values = depth.reshape(-1)[ranks_depth.long()].unsqueeze(1) * feat.reshape(-1, c)[ranks_feat.long()]
    out.view(-1, c).index_add_(0, ranks_bev.long(), values)


def install_cpu_patches(root: Path) -> None:
    """Make the official M0/M1 inference path importable on a CPU-only, pure-Python mmcv (module docstring)."""
    sys.path.insert(0, str(root))
    sys.modules["mmcv._ext"] = _RaisingModule("mmcv._ext")
    try:
        import torchvision  # noqa: F401
    except Exception:  # noqa: BLE001  (an OSError/RuntimeError from a CUDA-linked wheel, or not installed)
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
        _stub("torchvision", __version__="0.0.0+stub")
    lyft = ["lyft_dataset_sdk", "lyft_dataset_sdk.eval", "lyft_dataset_sdk.eval.detection",
            "lyft_dataset_sdk.eval.detection.mAP_evaluation", "lyft_dataset_sdk.lyftdataset",
            "lyft_dataset_sdk.utils", "lyft_dataset_sdk.utils.data_classes"]
    for name in lyft:
        sys.modules.setdefault(name, _RaisingModule(name))
    import mmcv

    real_version, mmcv.__version__ = mmcv.__version__, "1.7.0"  # mmdet3d 1.0.0rc6's upper bound, see docstring
    try:
        import mmdet3d.models  # noqa: F401  (registries, CenterPoint)
    finally:
        mmcv.__version__ = real_version
    # Package shells: their __init__ files would import the whole plugin (datasets, hooks, every detector).
    # ops/ and ops/bev_pool_v2/ keep their own __init__ (they import only the ops, stubbed below).
    _stub("projects", __path__=[str(root / "projects")])
    for sub in ("", "models", "models.detectors", "models.necks", "models.backbones", "models.dense_heads",
                "models.losses"):
        folder = root.joinpath("projects", "mmdet3d_plugin", *filter(None, sub.split(".")))
        _stub(f"{PLUGIN}.{sub}".rstrip("."), __path__=[str(folder)])
    # The CPU kernel, and stand-ins for what the M0/M1 path imports but never calls.
    _stub(f"{PLUGIN}.ops.bev_pool_v2.bev_pool_v2_ext", bev_pool_v2_forward=bev_pool_v2_forward_cpu,
          bev_pool_v2_backward=_raiser("bev_pool_v2_backward"))
    _stub(f"{PLUGIN}.ops.bev_pool", bev_pool=_raiser("bev_pool"))
    _stub(f"{PLUGIN}.ops.nearest_assign", nearest_assign=_raiser("nearest_assign"))
    _stub(f"{PLUGIN}.models.model_utils", DepthNet=_raiser("DepthNet"))
    _stub(f"{PLUGIN}.models.losses.semkitti_loss", sem_scal_loss=_raiser("sem_scal_loss"),
          geo_scal_loss=_raiser("geo_scal_loss"))
    _stub(f"{PLUGIN}.models.losses.lovasz_softmax", lovasz_softmax=_raiser("lovasz_softmax"))
    for name, cls in (("bevdepth", "BEVDepth"), ("bevdepth4d", "BEVDepth4D"), ("bevstereo4d", "BEVStereo4D")):
        _stub(f"{PLUGIN}.models.detectors.{name}", **{cls: type(cls, (torch.nn.Module,), {})})
    for name in ("models.backbones.resnet", "models.necks.fpn", "models.necks.lss_fpn", "models.necks.view_transformer",
                 "models.dense_heads.bev_occ_head", "models.detectors.bevdet", "models.detectors.bevdet_occ"):
        importlib.import_module(f"{PLUGIN}.{name}")


def build_official(root: Path, preset: str) -> torch.nn.Module:
    """BEVDetOCC from the official config's ``model`` dict (the config's ``_base_`` holds only datasets/runtime)."""
    from mmcv import ConfigDict
    from mmdet3d.models import build_model

    cfg = runpy.run_path(str(root / "projects" / "configs" / "flashocc" / CONFIGS[preset]))["model"]
    return build_model(ConfigDict(cfg))


def official_img_inputs(batch: dict) -> list:
    """Our batch as the official ``img_inputs`` (same frames, same matrices: see docs/official-behaviour.md)."""
    keys = ("img", "sensor2ego", "ego2global", "intrinsics", "post_rots", "post_trans", "bda")
    return [batch[k] for k in keys]


def official_stage_round(model, img_inputs: list) -> tuple[dict, torch.Tensor]:
    """One forward of the official model, its stages called as BEVDet.extract_img_feat and
    BEVDetOCC.simple_test_occ call them (Yzichen/FlashOCC@845a6a8 .../detectors/bevdet_occ.py), in ms."""
    with torch.no_grad():
        marks = [time.perf_counter()]
        x, _ = model.image_encoder(img_inputs[0])
        marks.append(time.perf_counter())
        inputs = model.prepare_inputs(img_inputs)  # sensor -> key ego (float64), part of the geometry
        bev, _ = model.img_view_transformer([x] + inputs[1:7])
        marks.append(time.perf_counter())
        feat = model.bev_encoder(bev)
        marks.append(time.perf_counter())
        logits = model.occ_head(feat)  # (B, Dx, Dy, Dz, 18): our layout
        marks.append(time.perf_counter())
    return {s: (b - a) * 1e3 for s, a, b in zip(STAGES, marks, marks[1:])}, logits


def _agreement(logits: torch.Tensor, reference: torch.Tensor) -> dict:
    return {"max_abs_logit_diff": float((logits - reference).abs().max()),
            "argmax_agreement": float((logits.argmax(-1) == reference.argmax(-1)).double().mean())}


def measure(root: Path, preset: str, rounds: int, compiled: bool) -> dict:
    torch.manual_seed(0)
    ours = build_model(preset)
    calibrate_random_model(ours, [example_model_batch(ours.config)])
    official = build_official(root, preset)
    official.load_state_dict(ours.state_dict(), strict=True)
    official.eval()
    batch = example_model_batch(ours.config)
    img_inputs = official_img_inputs(batch)
    ours_variants = {"eager": ours.eval(), "fused": fuse_for_inference(ours)}
    if compiled:
        ours_variants["compiled"] = fuse_for_inference(ours, compile=True)
    with torch.no_grad():
        ref = ours(batch)
        _, off = official_stage_round(official, img_inputs)
        # The official test entry point (softmax + argmax per sample) must give the labels of the stage calls.
        occ = official.forward_test(points=None, img_inputs=[img_inputs], img_metas=[[{}] * len(img_inputs[0])])
    official_labels = torch.as_tensor(occ[0]).long()
    agreement = {
        "official_vs_eager": _agreement(off, ref),
        **{f"{k}_vs_official": _agreement(m(batch), off) for k, m in ours_variants.items() if k != "eager"},
        "official_forward_test_vs_stages": float((official_labels == off[0].argmax(-1)).double().mean()),
        "logit_abs_max": float(ref.abs().max()),
    }
    device = torch.device("cpu")
    run = {"official": lambda: official_stage_round(official, img_inputs)[0]}
    run.update({k: (lambda m=m: torch_stage_times(m, batch, 1, 0, device)) for k, m in ours_variants.items()})
    for fn in run.values():  # warm-up: first-call allocations, oneDNN primitive caches, the fused index cache
        fn()
    times = {k: {s: [] for s in (*STAGES, "total")} for k in run}
    peaks = []
    for _ in range(rounds):
        peaks.append(gemm_peak_gflops(device))
        for k in run:
            stages = run[k]()
            for s, ms in stages.items():
                times[k][s].append(ms)
            times[k]["total"].append(sum(stages.values()))
    gflop = stage_gflop(ours.config)
    gflop["total"] = sum(gflop.values())
    return {"preset": preset, "official_config": CONFIGS[preset], "rounds": rounds, "agreement": agreement,
            "gflop": gflop, "peak_gflops_per_s": statistics.median(peaks), "peaks": peaks,
            "median_ms": {k: {s: statistics.median(v) for s, v in d.items()} for k, d in times.items()},
            "all_ms": times}


def table(results: list[dict]) -> str:
    cols = (*STAGES, "total")
    lines = ["| preset | variant | " + " | ".join(f"{s} ms (GFLOP/s, % peak)" for s in cols) + " |",
             "|" + "---|" * (2 + len(cols))]
    for r in results:
        med = r["median_ms"]
        for k in med:
            rate = {s: r["gflop"][s] / (med[k][s] / 1e3) for s in cols}
            cells = [f"{med[k][s]:.0f} ({rate[s]:.1f}, {100 * rate[s] / r['peak_gflops_per_s']:.0f} %)" for s in cols]
            lines.append(f"| {r['preset']} | {k} | " + " | ".join(cells) + " |")
        for k in [v for v in med if v != "official"]:
            ratio = " | ".join(f"{med['official'][s] / med[k][s]:.2f}x" for s in cols)
            lines.append(f"| {r['preset']} | official / {k} | {ratio} |")
    return "\n".join(lines)


def _git_head(root: Path) -> str | None:
    try:
        return subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None  # not a git checkout (e.g. files copied from the repository)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official-root", required=True, type=Path, help="the Yzichen/FlashOCC checkout")
    parser.add_argument("--presets", default="flashocc-r50-m0,flashocc-r50-m1")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="also time the fused copy under torch.compile")
    parser.add_argument("--out", default=None, help="write all figures here (JSON)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = args.official_root.resolve()
    install_cpu_patches(root)
    import mmcv
    import mmdet
    import mmdet3d

    results = []
    for preset in args.presets.split(","):
        results.append(measure(root, preset, args.rounds, args.compile))
        a = results[-1]["agreement"]
        pairs = "; ".join(f"{name.replace('_', ' ')}: max |logit diff| {v['max_abs_logit_diff']:.3g}, argmax "
                          f"agreement {100 * v['argmax_agreement']:.4f} %"
                          for name, v in a.items() if isinstance(v, dict))
        print(f"{preset}: {pairs} (logits up to {a['logit_abs_max']:.3g}); official forward_test labels = stage "
              f"argmax: {100 * a['official_forward_test_vs_stages']:.4f} %", flush=True)
    meta = {"date_utc": f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M}",
            "cpu": platform.processor() or platform.machine(), "threads": args.threads, "torch": torch.__version__,
            "mmcv": mmcv.__version__, "mmdet": mmdet.__version__, "mmdet3d": mmdet3d.__version__,
            "official_root": str(root), "official_git_head": _git_head(root), "cpu_patches": PATCHES}
    print(f"{meta['date_utc']} UTC, {meta['cpu']}, torch {meta['torch']}, mmcv {meta['mmcv']}, mmdet {meta['mmdet']}, "
          f"mmdet3d {meta['mmdet3d']}, {args.threads} threads; fp32 peak per round "
          f"{[round(p, 1) for p in results[0]['peaks']]} GFLOP/s")
    print(table(results))
    if args.out:
        Path(args.out).write_text(json.dumps({"meta": meta, "results": results}, indent=2))


if __name__ == "__main__":
    main()
