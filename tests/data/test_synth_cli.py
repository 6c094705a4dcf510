"""`flashocc data synth` writes a readable set and refuses a bad image size."""
from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from flashocc.cli import main
from flashocc.data.infos import load_infos


def test_cli_writes_a_set(tmp_path: Path, capsys):
    out = tmp_path / "synth"
    rc = main(["data", "synth", "--out", str(out), "--scenes", "2", "--frames-per-scene", "1", "--seed", "7",
               "--image-size", "80x45", "--workers", "1", "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["frames"] == 2 and summary["val_scenes"] == 1
    train, val = load_infos(out / "infos_train.pkl"), load_infos(out / "infos_val.pkl")
    assert len(train) == len(val) == 1
    with Image.open(out / train[0].cams["CAM_BACK"].image_path) as im:
        assert im.size == (80, 45)


def test_cli_rejects_a_bad_image_size(tmp_path: Path, capsys):
    assert main(["data", "synth", "--out", str(tmp_path), "--image-size", "80by45"]) == 1
    assert "--image-size expects WxH" in capsys.readouterr().err
    assert main(["data", "synth", "--out", str(tmp_path), "--scenes", "0"]) == 1
    assert "SynthConfig.scenes" in capsys.readouterr().err
