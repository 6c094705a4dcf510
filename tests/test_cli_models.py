import json

from flashocc.cli import main


def test_models_json_lists_presets_with_exact_params(capsys):
    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["flashocc-r50-m1"]["params"] == 44_744_312
    assert rows["flashocc-r50-m0"]["params"] == 39_938_892
    assert rows["bevdetocc-r50"]["params"] == 29_021_482
    assert "flashocc-tiny" in rows and rows["flashocc-tiny"]["input_size"] == [96, 256]
    assert rows["sparseocc-r50"]["params"] == 80_349_899
    # Every preset has a count, or says why not (SparseOcc's sparse decoders depend on the data).
    assert all((r["gflops"] or 0) > 0 or r["gflops_note"] for r in rows.values())
    assert rows["flashocc-r50-m1"]["gflops_note"] is None and "top-k" in rows["sparseocc-r50"]["gflops_note"]


def test_models_table(capsys):
    assert main(["models", "--no-flops"]) == 0
    out = capsys.readouterr().out
    assert "flashocc-r50-m1" in out and "44,744,312" in out


def test_models_marks_the_presets_with_bundled_weights(tmp_path, monkeypatch, capsys):
    import hashlib

    from flashocc.models import pretrained

    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", tmp_path)
    sha = hashlib.sha256(b"w").hexdigest()
    entry = {"file": f"effocc-lidar-tiny-{sha[:8]}.pt", "sha256": sha, "bytes": 1, "dtype": "float16",
             "trained_on": "synthetic world only", "scores": {}, "command": "flashocc train effocc-lidar-tiny"}
    (tmp_path / "manifest.json").write_text(json.dumps({"format": 1, "weights": {"effocc-lidar-tiny": entry}}))
    assert main(["models", "--json", "--no-flops"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["effocc-lidar-tiny"]["bundled"] is True
    assert not any(r["bundled"] for name, r in rows.items() if name != "effocc-lidar-tiny")
    assert main(["models", "--no-flops"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["name", "weights"]
    marked = [line.split()[0] for line in lines[2:] if len(line.split()) > 1 and line.split()[1] == "bundled"]
    assert marked == ["effocc-lidar-tiny"]
