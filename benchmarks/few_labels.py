"""EFFOcc's label-efficiency table in miniature, on a synthetic driving set (docs/few-labels.md).

Five runs through the CLI, the same camera student (``flashocc-tiny-distill``, the demo's recipe and
class weights) for the same number of optimiser steps, scored on the held-out scenes:

* ``teacher40``: ``effocc-fusion-tiny`` on the nested 40 % of the training scenes;
* ``s100``: the student on 100 % of the labels, no teacher;
* ``s40``: the student on the 40 % scenes only, no teacher;
* ``s40d``: the student on every scene, labels of the 40 % only, distilled from ``teacher40``;
* ``s100d``: the student on 100 % of the labels, distilled from a teacher trained on 100 % (``--teacher100``, a
  run folder; without it one is trained for ``--teacher-steps``).

Each run is ``flashocc train`` + ``flashocc eval --json`` (mIoU on the camera mask, RayIoU); the commands are
written next to the runs (``OUT/<run>.cmd``). The table gives each score as a share of ``s100``'s.

    python benchmarks/few_labels.py --data runs/synth_lidar --out runs/few_labels --steps 500 --teacher-steps 400

``--parallel`` runs two trainings at a time (one intra-op thread each); ``--reuse`` scores runs already there.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

STUDENT, TEACHER = "flashocc-tiny-distill", "effocc-fusion-tiny"
# The demo's class weights (engine/demo.py balanced_class_weights on the synthetic training labels).
CLASS_WEIGHTS = ("[4.1771,1.8031,2.0776,1.5448,0.6955,2.8907,2.2078,1.9365,3.2329,1.1052,0.9201,0.3036,"
                 "0.4388,0.5229,0.2987,0.3022,0.4462,0.05]")


def train_cmd(out: Path, data: str, name: str, preset: str, steps: int, extra: list[str]) -> list[str]:
    return ["flashocc", "train", preset, "--data", data, "--out", str(out / name), f"model.class_weights={CLASS_WEIGHTS}",
            "train.max_minutes=0", f"train.max_iters={steps}", *extra]


def run(out: Path, data: str, name: str, cmd: list[str], reuse: bool) -> dict:
    run_dir, result = out / name, out / f"{name}.eval.json"
    if not (reuse and (run_dir / "last.pt").exists()):
        (out / f"{name}.cmd").write_text(" ".join(cmd) + "\n")
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        with open(out / f"{name}.log", "w") as log:
            subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, env=env)
    if not (reuse and result.exists()):
        subprocess.run(["flashocc", "eval", str(run_dir / "config.yaml"), "--checkpoint", str(run_dir / "last.pt"),
                        "--data", data, "--metrics", "miou,rayiou", "--json", str(result)], check=True,
                       stdout=subprocess.DEVNULL)
    return json.loads(result.read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="a synthetic set with LiDAR sweeps (flashocc data synth --sweeps 10)")
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=500, help="optimiser steps of every student")
    p.add_argument("--teacher-steps", type=int, default=400)
    p.add_argument("--fraction", type=float, default=0.4)
    p.add_argument("--teacher100", default="", help="a trained 100 %% effocc-fusion-tiny run folder (else trained)")
    p.add_argument("--parallel", action="store_true")
    p.add_argument("--reuse", action="store_true")
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    frac = f"data.labeled_fraction={a.fraction}"

    def teacher_flags(run_dir: Path) -> list[str]:
        return ["--teacher", str(run_dir / "config.yaml"), "--teacher-checkpoint", str(run_dir / "last.pt")]

    def job(name: str, preset: str, steps: int, extra: list[str]) -> dict:
        return run(out, a.data, name, train_cmd(out, a.data, name, preset, steps, extra), a.reuse)

    teacher100 = Path(a.teacher100) if a.teacher100 else out / "teacher100"
    with ThreadPoolExecutor(2 if a.parallel else 1) as pool:
        first = {"teacher40": pool.submit(job, "teacher40", TEACHER, a.teacher_steps, [frac]),
                 "s100": pool.submit(job, "s100", STUDENT, a.steps, [])}
        if not a.teacher100:
            first["teacher100"] = pool.submit(job, "teacher100", TEACHER, a.teacher_steps, [])
        results = {k: f.result() for k, f in first.items()}
        second = {"s40": pool.submit(job, "s40", STUDENT, a.steps, [frac]),
                  "s40d": pool.submit(job, "s40d", STUDENT, a.steps, [frac, *teacher_flags(out / "teacher40")]),
                  "s100d": pool.submit(job, "s100d", STUDENT, a.steps, teacher_flags(teacher100))}
        results.update({k: f.result() for k, f in second.items()})

    base = results["s100"]
    print("| run | labels | teacher | mIoU | RayIoU | mIoU / 100 % | RayIoU / 100 % |\n|---|---|---|---|---|---|---|")
    rows = [("s100", "100 %", "-"), ("s40", f"{a.fraction:.0%}", "-"), ("s40d", f"{a.fraction:.0%}", "teacher40"),
            ("s100d", "100 %", "teacher100"), ("teacher40", f"{a.fraction:.0%}", "(fusion)")]
    for name, labels, teacher in rows:
        r = results[name]
        print(f"| {name} | {labels} | {teacher} | {r['mIoU']:.2f} | {r['RayIoU']:.3f} | "
              f"{r['mIoU'] / base['mIoU']:.1%} | {r['RayIoU'] / base['RayIoU']:.1%} |")
    (out / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    sys.exit(main())
