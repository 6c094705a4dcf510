import json

from flashocc.cli import main


def test_models_json_lists_presets_with_exact_params(capsys):
    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["flashocc-r50-m1"]["params"] == 44_744_312
    assert rows["flashocc-r50-m0"]["params"] == 39_938_892
    assert rows["bevdetocc-r50"]["params"] == 29_021_482
    assert "flashocc-tiny" in rows and rows["flashocc-tiny"]["input_size"] == [96, 256]
    assert all(r["gflops"] > 0 for r in rows.values())


def test_models_table(capsys):
    assert main(["models", "--no-flops"]) == 0
    out = capsys.readouterr().out
    assert "flashocc-r50-m1" in out and "44,744,312" in out
