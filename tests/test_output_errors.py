"""Outputs that cannot be written (a full disk, a folder in the way) say so, name the file and keep the old one."""
import errno

import pytest

from flashocc.atomic import atomic_write
from flashocc.errors import FlashOccError, OutputPathError


class _FullDisk:
    def __init__(self, f):
        self._f = f

    def write(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name):
        return getattr(self._f, name)


def test_a_full_disk_names_the_file_and_keeps_the_previous_one(tmp_path):
    target = tmp_path / "last.pt"
    target.write_bytes(b"previous checkpoint")
    with pytest.raises(OutputPathError, match=r"last\.pt: No space left on device; the previous file is unchanged"):
        with atomic_write(target) as f:
            _FullDisk(f).write(b"new")
    assert target.read_bytes() == b"previous checkpoint"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temp file left behind


def test_an_output_path_that_is_a_folder_is_refused(tmp_path):
    with pytest.raises(OutputPathError, match="it is a folder"):
        with atomic_write(tmp_path):
            pass
    assert isinstance(OutputPathError("x"), (FlashOccError, OSError))


def test_cli_reports_an_unwritable_output_in_one_line(tmp_path, capsys):
    import numpy as np

    from flashocc.cli import main

    gt = tmp_path / "gts" / "scene-0" / "tok"
    gt.mkdir(parents=True)
    sem = np.full((200, 200, 16), 17, np.uint8)
    ones = np.ones_like(sem)
    np.savez_compressed(gt / "labels.npz", semantics=sem, mask_lidar=ones, mask_camera=ones)
    pred = tmp_path / "pred" / "scene-0" / "tok"
    pred.mkdir(parents=True)
    np.savez_compressed(pred / "labels.npz", semantics=sem)
    code = main(["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gts"), "--json", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1 and "it is a folder" in err and "Traceback" not in err
