"""Pack training checkpoints into the bundled weights of flashocc/weights/ and verify them.

    python -m flashocc.engine.bundle pack --preset flashocc-tiny-demo --checkpoint runs/x/last.pt --ema \\
        --scores runs/x/report.json --command "flashocc train ..."
    python -m flashocc.engine.bundle verify --load

``pack`` checks the tensors load strictly into the preset, stores them as an fp16 state dict named
``<preset>-<sha8>.pt``, updates ``manifest.json`` (both written atomically) and then removes the preset's
older file. The manifest is package data: everything in it is portable text, never a machine's paths.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import sys
from pathlib import Path

import torch

from flashocc.atomic import atomic_write
from flashocc.engine.checkpoint import convert_official_layout, extract_state_dict, match_state_dict, read_checkpoint
from flashocc.errors import CheckpointError, CheckpointMismatchError, ConfigError, FlashOccError
from flashocc.models import pretrained
from flashocc.models.presets import PRESETS, build_model

DEFAULT_TRAINED_ON = "synthetic world only (flashocc data synth); not for real nuScenes images"
# An absolute path of two or more parts (/home/u/x, C:\runs\x, ~/x): machine-specific, so refused.
_ABSOLUTE = re.compile(r"(?<![\w.:/])(?:/[\w.+-]+/[\w.+/-]*|[A-Za-z]:\\[^\s]+|~/[^\s]*)")


def portable(text: str, field: str) -> str:
    """``text`` unchanged when it names no absolute path; a ``ConfigError`` naming ``field`` otherwise."""
    found = _ABSOLUTE.search(text)
    if found:
        raise ConfigError(f"{field}: '{found.group(0)}' is an absolute path of this machine; the manifest ships "
                          "with the package, so give paths relative to the repository (e.g. runs/demo/last.pt)")
    return text


def scores_from_report(path: Path, eval_set: str | None = None) -> dict:
    """mIoU, RayIoU and the evaluation set of a demo/eval ``report.json``."""
    try:
        report = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable report.json ({exc})") from None
    if not isinstance(report, dict):
        raise ConfigError(f"{path}: expected a JSON object, got {type(report).__name__}")
    scores = {}
    for key in ("mIoU", "RayIoU"):
        value = report.get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigError(f"{path}: field '{key}' must be a number, got {value!r}")
        scores[key] = round(float(value), 4)
    if eval_set is None:
        eval_set = report.get("eval_set")
    if not isinstance(eval_set, str) or not eval_set:
        synth = report.get("synthetic_set") if isinstance(report.get("synthetic_set"), dict) else {}
        frames = report.get("val_samples")
        seed = f", seed {synth['seed']}" if "seed" in synth else ""
        eval_set = f"held-out synthetic{seed}" + (f", {frames} frames" if isinstance(frames, int) else "")
    scores["eval_set"] = portable(eval_set, f"{path}: eval_set")
    return scores


def checkpoint_tensors(path: Path, preset: str, ema: bool) -> tuple[dict[str, torch.Tensor], str]:
    """The model tensors of a training checkpoint (its EMA weights with ``ema`` when it has them) and
    a note on which were taken."""
    payload = read_checkpoint(path)
    saved_preset = payload.get("preset") if isinstance(payload, dict) else None
    if isinstance(saved_preset, str) and saved_preset != preset:
        raise ConfigError(f"{path} was trained as preset '{saved_preset}', not '{preset}'; pass --preset {saved_preset}")
    held = payload.get("ema") if isinstance(payload, dict) else None
    if ema and isinstance(held, dict) and isinstance(held.get("state_dict"), dict) and held["state_dict"]:
        return extract_state_dict(held["state_dict"], source=f"{path} (EMA)"), f"EMA weights ({held.get('updates')} updates)"
    note = "model weights (the checkpoint has no EMA weights)" if ema else "model weights"
    return extract_state_dict(payload, source=str(path)), note


def fp16_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """``state`` checked strictly against ``model``, floating tensors as fp16, in the model's key order."""
    state = dict(convert_official_layout(model, state))
    report = match_state_dict(model, state)
    if not report.ok:
        raise CheckpointMismatchError(f"{source} does not match the model:\n{report.summary()}")
    out = {}
    for key in model.state_dict():
        value = state[key].detach().cpu()
        if value.is_floating_point():
            value = value.to(torch.float16)
            if not bool(torch.isfinite(value).all()):
                raise CheckpointError(f"{source}: tensor '{key}' is not finite in fp16 (|x| > 65504 or NaN); "
                                      "it cannot be bundled as float16")
        out[key] = value.contiguous().clone()  # own storage: a view would save its whole base tensor
    return out


def pack(preset: str, checkpoint: str | Path, ema: bool = False, scores: str | Path | None = None,
         trained_on: str = DEFAULT_TRAINED_ON, command: str | None = None, eval_set: str | None = None) -> pretrained.BundledWeights:
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset '{preset}'; available: {', '.join(PRESETS)}")
    existing = pretrained.bundled_weights()  # a malformed manifest stops here, before anything is written
    checkpoint = Path(checkpoint)
    tensors, note = checkpoint_tensors(checkpoint, preset, ema)
    state = fp16_state_dict(build_model(preset), tensors, str(checkpoint))
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    sha = hashlib.sha256(data).hexdigest()
    entry = pretrained.BundledWeights(
        preset=preset, file=pretrained.weight_file_name(preset, sha), sha256=sha, bytes=len(data), dtype="float16",
        trained_on=portable(trained_on, "--trained-on"),
        scores=scores_from_report(Path(scores), eval_set) if scores else {},
        command=portable(command or f"not recorded (packed from {checkpoint.name}, {note})", "--command"))
    with atomic_write(entry.path) as f:
        f.write(data)
    _write_manifest({**existing, preset: entry})
    old = existing.get(preset)
    if old is not None and old.file != entry.file:
        old.path.unlink(missing_ok=True)
    print(f"packed {preset}: {entry.path.name} ({len(data) / 1e6:.2f} MB, {note}); manifest {pretrained.manifest_path()}")
    return entry


def _write_manifest(entries: dict[str, pretrained.BundledWeights]) -> None:
    weights = {p: {k: getattr(e, k) for k in ("file", "sha256", "bytes", "dtype", "trained_on", "scores", "command")}
               for p, e in sorted(entries.items())}
    with atomic_write(pretrained.manifest_path(), "w") as f:
        f.write(json.dumps({"format": pretrained.MANIFEST_FORMAT, "weights": weights}, indent=2) + "\n")


def verify(load: bool = False) -> list[str]:
    """Problems with the bundled weights (empty when all is well): a malformed manifest, a missing,
    resized or changed file, an unknown preset, a weight file the manifest does not list, and with
    ``load`` a file that does not load strictly into its preset."""
    try:
        entries = pretrained.bundled_weights()
    except FlashOccError as exc:
        return [str(exc)]
    problems = []
    for preset, entry in sorted(entries.items()):
        try:
            if preset not in PRESETS:
                raise ConfigError(f"{pretrained.manifest_path()}: weights.{preset}: not a known preset")
            pretrained.check_bundled_file(entry)
            if load:
                build_model(preset, pretrained=True)
        except (FlashOccError, OSError) as exc:
            problems.append(f"{preset}: {exc}")
        else:
            print(f"ok  {preset}: {entry.file} sha256 {entry.sha256[:12]}...{' (loads strictly)' if load else ''}")
    listed = {e.file for e in entries.values()}
    folder = Path(pretrained.WEIGHTS_DIR)
    for stray in sorted(folder.glob("*.pt")) if folder.is_dir() else []:
        if stray.name not in listed:
            problems.append(f"{stray}: a weight file that {pretrained.manifest_path().name} does not list "
                            "(it would ship in the package); remove it or pack it")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flashocc.engine.bundle", description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights-dir", help="the folder of manifest.json and the weight files "
                        "(default: flashocc/weights/ of the installed package)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="bundle a training checkpoint as a preset's fp16 weights")
    p.add_argument("--preset", required=True)
    p.add_argument("--checkpoint", required=True, help="a flashocc training checkpoint (e.g. runs/demo/train/last.pt)")
    p.add_argument("--ema", action="store_true", help="take the checkpoint's EMA weights when it has them")
    p.add_argument("--scores", help="a demo/eval report.json: its mIoU, RayIoU and evaluation set go in the manifest")
    p.add_argument("--eval-set", help="describe the evaluation set (default: from the report)")
    p.add_argument("--trained-on", default=DEFAULT_TRAINED_ON, help="what the weights were trained on, in plain words")
    p.add_argument("--command", dest="train_command", help="the exact commands that trained the weights")
    v = sub.add_parser("verify", help="check every manifest entry's size and SHA-256")
    v.add_argument("--load", action="store_true", help="also build each preset and load its weights strictly")
    args = parser.parse_args(argv)
    if args.weights_dir:
        pretrained.WEIGHTS_DIR = Path(args.weights_dir)
    try:
        if args.command == "pack":
            pack(args.preset, args.checkpoint, ema=args.ema, scores=args.scores, trained_on=args.trained_on,
                 command=args.train_command, eval_set=args.eval_set)
            return 0
        problems = verify(load=args.load)
    except FlashOccError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for problem in problems:
        print(f"FAIL {problem}", file=sys.stderr)
    if not problems:
        count = len(pretrained.bundled_weights())
        print(f"bundled weights verified: {count} {'entry' if count == 1 else 'entries'} in {pretrained.WEIGHTS_DIR}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
