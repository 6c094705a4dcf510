"""Runs are never lost or silently replaced: existing run folders, failed resumes, diverging training,
range-checked configs, YAML errors, orphan temp files and the metrics log after a resume."""
import hashlib
import json
import os
import time

import pytest
import torch

from flashocc.cli import main
from flashocc.config import TrainConfig, load_run_config
from flashocc.errors import CheckpointError, ConfigError, RunFolderError, TrainingDivergedError

from test_train import MICRO


def _train(synth_root, out, *overrides, **kwargs):
    from flashocc.engine.train import train

    cfg = load_run_config("flashocc-tiny", [*MICRO, "train.ema=False", *overrides])
    return train(cfg, synth_root, out, progress=False, **kwargs)


def _snapshot(folder):
    """Every file's bytes and mode, so a test can assert that nothing in a folder changed."""
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mode)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(synth_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "done"
    _train(synth_root, out, "train.max_iters=2")
    return out


def test_existing_run_is_refused_without_resume_or_overwrite(synth_root, finished_run, capsys):
    before = _snapshot(finished_run)
    with pytest.raises(RunFolderError, match="already holds a run.*--resume.*--overwrite"):
        _train(synth_root, finished_run, "train.max_iters=3")
    assert _snapshot(finished_run) == before
    code = main(["train", "flashocc-tiny", *MICRO, "train.max_iters=3", "--data", str(synth_root),
                 "--out", str(finished_run)])
    err = capsys.readouterr().err
    assert code == 1 and str(finished_run) in err and "--overwrite" in err and "Traceback" not in err
    assert _snapshot(finished_run) == before


def test_overwrite_replaces_the_old_run(synth_root, tmp_path):
    out = tmp_path / "run"
    _train(synth_root, out, "train.max_iters=2")
    (out / "metrics.jsonl").write_text('{"step": 99}\n')
    _train(synth_root, out, "train.max_iters=1", overwrite=True)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1]
    assert torch.load(out / "last.pt", weights_only=True)["train_state"]["step"] == 1


def test_out_that_is_a_file_is_refused(synth_root, tmp_path):
    target = tmp_path / "a_file"
    target.write_text("not a folder")
    with pytest.raises(RunFolderError, match="is a file"):
        _train(synth_root, target, "train.max_iters=1")
    assert target.read_text() == "not a folder"


def test_failed_resume_leaves_the_run_folder_as_it_was(synth_root, finished_run, tmp_path):
    import shutil

    from flashocc.engine.train import train

    before = _snapshot(finished_run)
    other = load_run_config("bevdetocc-tiny", ["train.max_iters=3"])  # another preset
    with pytest.raises(RunFolderError, match="preset 'flashocc-tiny'"):
        train(other, synth_root, finished_run, resume=True, progress=False)
    assert _snapshot(finished_run) == before

    corrupt = tmp_path / "corrupt"
    shutil.copytree(finished_run, corrupt)
    data = (corrupt / "last.pt").read_bytes()
    (corrupt / "last.pt").write_bytes(data[: len(data) // 2])
    before = _snapshot(corrupt)
    with pytest.raises(CheckpointError, match="last.pt") as err:
        _train(synth_root, corrupt, "train.max_iters=3", resume=True)
    assert "trusted" not in str(err.value)  # the hint is only for a refused global, never a torn file
    assert _snapshot(corrupt) == before


def test_huge_learning_rate_fails_and_never_saves_non_finite_weights(synth_root, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(TrainingDivergedError, match="diverged.*last.pt was not replaced"):
        _train(synth_root, out, "train.max_iters=40", "train.lr=1e30", "train.warmup_iters=0", "train.grad_clip=0",
               "train.max_bad_steps=4", "train.checkpoint_every_iters=1")
    state = torch.load(out / "last.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["skipped"] and state["train_state"]["step"] < rows[-1]["step"]


def test_non_finite_weights_never_replace_the_last_checkpoint(synth_root, tmp_path, monkeypatch):
    out = tmp_path / "run"
    _train(synth_root, out, "train.max_iters=2")
    good = (out / "last.pt").read_bytes()
    real_step = torch.optim.AdamW.step

    def poisoning_step(self, *args, **kwargs):  # as if the update itself overflowed
        result = real_step(self, *args, **kwargs)
        with torch.no_grad():
            self.param_groups[0]["params"][0].fill_(float("inf"))
        return result

    monkeypatch.setattr(torch.optim.AdamW, "step", poisoning_step)
    with pytest.raises(TrainingDivergedError, match="diverged.*last.pt was not replaced"):
        _train(synth_root, out, "train.max_iters=6", "train.checkpoint_every_iters=1", resume=True)
    assert (out / "last.pt").read_bytes() == good


def _nan_on_steps(monkeypatch, bad_calls):
    """Make the model's losses NaN on the given forward calls (1-based)."""
    from flashocc.models.flashocc import FlashOcc

    real_forward, calls = FlashOcc.forward, [0]

    def forward(self, batch):
        out = real_forward(self, batch)
        if isinstance(out, dict):
            calls[0] += 1
            if calls[0] in bad_calls or "all" in bad_calls:
                return {k: v * float("nan") for k, v in out.items()}
        return out

    monkeypatch.setattr(FlashOcc, "forward", forward)


def test_a_non_finite_step_is_skipped_and_logged(synth_root, tmp_path, monkeypatch):
    _nan_on_steps(monkeypatch, {2})
    out = tmp_path / "run"
    _train(synth_root, out, "train.max_iters=3")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert rows[1]["skipped"] is True and rows[1]["loss"] is None and "skipped" not in rows[0]
    state = torch.load(out / "last.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_too_many_non_finite_steps_stop_the_run(synth_root, tmp_path, monkeypatch):
    _nan_on_steps(monkeypatch, {"all"})
    with pytest.raises(TrainingDivergedError, match="3 step.*in a row"):
        _train(synth_root, tmp_path / "run", "train.max_iters=10", "train.max_bad_steps=3")
    assert not (tmp_path / "run" / "last.pt").exists()


def test_stop_policy_ends_at_the_first_non_finite_step(synth_root, tmp_path, monkeypatch):
    _nan_on_steps(monkeypatch, {"all"})
    with pytest.raises(TrainingDivergedError, match="step 1.*on_nonfinite=stop"):
        _train(synth_root, tmp_path / "run", "train.max_iters=5", "train.on_nonfinite=stop")
    assert not (tmp_path / "run" / "last.pt").exists()


@pytest.mark.parametrize("override, field", [
    ("train.batch_size=-2", "train.batch_size"), ("train.batch_size=0", "train.batch_size"),
    ("train.max_iters=-5", "train.max_iters"), ("train.ema_decay=1.5", "train.ema_decay"),
    ("train.warmup_iters=-10", "train.warmup_iters"), ("train.lr=0", "train.lr"), ("train.lr=1e999", "train.lr"),
    ("train.grad_accum_steps=0", "train.grad_accum_steps"), ("train.workers=-1", "train.workers"),
    ("train.betas=(0.9,1.5)", "train.betas"), ("train.lr_steps=(8,4)", "train.lr_steps"),
    ("train.log_every=0", "train.log_every"), ("train.max_minutes=-1", "train.max_minutes"),
    ("model.name=foo", "model.name"),
])
def test_out_of_range_values_are_refused_when_the_config_is_resolved(override, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_run_config("flashocc-tiny", [override])


def test_out_of_range_values_fail_in_the_cli_with_one_line(synth_root, tmp_path, capsys):
    code = main(["train", "flashocc-tiny", "train.batch_size=-2", "--data", str(synth_root), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 1 and "train.batch_size" in err and ">= 1" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()  # refused before anything was written
    with pytest.raises(ConfigError):
        TrainConfig(batch_size=0)


@pytest.mark.parametrize("content, message", [
    (b"train: {lr: [1, 2\n", "YAML syntax error at line"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", "not a text YAML file"),
    (b"- just\n- a list\n", "mapping at the top level"),
    (b"preset: flashocc-tiny\ntrain: {lr: fast}\n", "train.lr"),
    (b"preset: flashocc-tiny\ntrain: {lrr: 1}\n", "did you mean 'train.lr'"),
    (b"preset: flashocc-tiny\ntrain: !!python/object/apply:os.system [echo hi]\n", "tag.*refused"),
    (b"model: [1, 2]\n", "name the model"),
    (b"preset: no-such-model\n", "unknown preset"),
])
def test_yaml_errors_are_one_message_naming_the_file(tmp_path, capsys, content, message):
    path = tmp_path / "config.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message) as err:
        load_run_config(str(path))
    assert str(path) in str(err.value)
    code = main(["train", str(path), "--print-config"])
    err_text = capsys.readouterr().err
    assert code == 1 and str(path) in err_text and "Traceback" not in err_text


def test_resume_keeps_one_metrics_row_per_step_and_cleans_orphan_temps(synth_root, tmp_path):
    out = tmp_path / "run"
    _train(synth_root, out, "train.max_iters=2")
    # What a kill -9 after step 3 (before its checkpoint) leaves: a logged row and a torn temp file.
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 3, "loss": 1.0}) + "\n" + '{"step": 4, "lo')
    orphan = out / ".last.pt.abc12345.tmp"
    orphan.write_bytes(b"torn")
    old = time.time() - 3600
    os.utime(orphan, (old, old))
    _train(synth_root, out, "train.max_iters=4", resume=True)
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    assert not orphan.exists()


def test_run_files_follow_the_umask(synth_root, tmp_path):
    old = os.umask(0o022)
    try:
        _train(synth_root, tmp_path / "run", "train.max_iters=1")
    finally:
        os.umask(old)
    for name in ("last.pt", "config.yaml"):
        assert (tmp_path / "run" / name).stat().st_mode & 0o777 == 0o644, name


def test_a_second_demo_is_refused_without_overwrite(tmp_path):
    from flashocc.engine.demo import run_demo

    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "report.json").write_text("{}")
    with pytest.raises(RunFolderError, match="already holds a demo run.*--overwrite"):
        run_demo(tmp_path / "demo", minutes=0.01, data=tmp_path / "no-data")
    assert not (tmp_path / "no-data").exists()  # refused before generating anything
