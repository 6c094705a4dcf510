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
