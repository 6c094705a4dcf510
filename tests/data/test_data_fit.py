"""Data that does not fit is a DataError naming the file, never used silently (issue #14 items 5 and 6)."""
from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flashocc.atomic import atomic_write, clean_orphan_temps, current_umask
from flashocc.data import transforms as T
from flashocc.data.dataset import DataConfig, OccDataset
from flashocc.data.infos import load_infos
from flashocc.data.synth import SynthConfig, generate_synthetic_set, nuscenes_rig
from flashocc.errors import ConfigError, DataError
from flashocc.geometry import NUSCENES_CAMERAS

TOKEN = "ca9a282c9e77460f8360f564131a8af5"
TINY = SynthConfig(scenes=1, frames_per_scene=2, seed=5, image_size=(96, 54), val_scenes=0, lidar_azimuth_steps=90)


def _with_image(root: Path, sample, name: str, img: Image.Image, file_name: str):
    """``sample`` with camera ``name`` pointing at ``img`` saved under ``root``."""
    rel = f"samples/{name}/{file_name}"
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    img.save(root / rel)
    cams = dict(sample.cams)
    cams[name] = dataclasses.replace(cams[name], image_path=rel)
    return dataclasses.replace(sample, cams=cams)


# ---- images whose size does not fit their intrinsics ----------------------------------------------

def test_every_real_camera_and_the_synthetic_rig_fit(nuscenes_sample_dir: Path, fixture_sample):
    for name, cam in fixture_sample.cams.items():
        path = nuscenes_sample_dir / Path(cam.image_path).name
        with Image.open(path) as img:
            T.check_image_fits_intrinsics(img.size, cam.intrinsics, path, fixture_sample.token)
            off = max(abs(cam.intrinsics[0, 2] / img.size[0] - 0.5), abs(cam.intrinsics[1, 2] / img.size[1] - 0.5))
            assert off < T.PRINCIPAL_POINT_TOLERANCE / 2, name  # real calibrations sit well inside the band
    for size in [(704, 396), (176, 99), (96, 54), (1600, 900)]:
        for cam in nuscenes_rig(size).cameras:
            T.check_image_fits_intrinsics(size, cam.intrinsics, Path("x.jpg"), "t")


def test_an_image_resized_away_from_its_intrinsics_is_refused(data_root):
    root, sample = data_root
    with Image.open(root / sample.cams["CAM_FRONT"].image_path) as img:
        small = img.convert("RGB").resize((704, 396))
    bad = _with_image(root, sample, "CAM_FRONT", small, "resized.jpg")
    with pytest.raises(DataError, match=rf"sample {TOKEN}: .*resized\.jpg is 704x396 pixels.*principal point at "
                                        r"\(816\.3, 491\.5\).*about 1633x983"):
        OccDataset(root, [bad], DataConfig(load_occ=False))[0]
    OccDataset(root, [sample], DataConfig(load_occ=False))[0]  # the untouched sample still loads


def test_intrinsics_of_a_smaller_image_are_refused_too():
    k_small = nuscenes_rig((704, 396)).cameras[1].intrinsics   # CAM_FRONT at the synthetic size
    with pytest.raises(DataError, match=r"sample tok: cam\.jpg is 1600x900 pixels"):
        T.check_image_fits_intrinsics((1600, 900), k_small, Path("cam.jpg"), "tok")


def test_one_camera_of_another_size_within_a_sample_is_refused(data_root):
    root, sample = data_root
    with Image.open(root / sample.cams["CAM_BACK"].image_path) as img:
        shrunk = img.convert("RGB").resize((1440, 810))  # 10 % smaller: each image alone still passes
    T.check_image_fits_intrinsics((1440, 810), sample.cams["CAM_BACK"].intrinsics, Path("x"), "t")
    bad = _with_image(root, sample, "CAM_BACK", shrunk, "shrunk.jpg")
    with pytest.raises(DataError, match=rf"sample {TOKEN}: .*is 1600x900 but CAM_BACK image .*shrunk\.jpg is "
                                        r"1440x810, although their intrinsics are for the same image size"):
        OccDataset(root, [bad], DataConfig(load_occ=False))[0]


def test_a_set_that_mixes_two_image_sizes_is_refused(tmp_path: Path):
    """Old info files with some frames rewritten at a close size (an interrupted in-place regeneration):
    every image alone fits its intrinsics, so only the one-size-per-calibration check sees it."""
    old = generate_synthetic_set(tmp_path / "old", TINY)
    new = generate_synthetic_set(tmp_path / "new", dataclasses.replace(TINY, image_size=(88, 50)))
    second = load_infos(old / "infos_train.pkl")[1]
    for cam in second.cams.values():  # the same file names: they depend on seed, scene and time only
        shutil.copyfile(new / cam.image_path, old / cam.image_path)
    ds = OccDataset(old, old / "infos_train.pkl", DataConfig(load_occ=False))
    ds[0]
    with pytest.raises(DataError, match=rf"sample {second.token}: CAM_FRONT_LEFT image .* is 88x50, but sample "
                                        r"\w+ has the same CAM_FRONT_LEFT intrinsics with a 96x54 image"):
        ds[1]


# ---- corrupt images and LiDAR sweeps -------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_a_truncated_image_is_a_data_error(tmp_path: Path, nuscenes_sample_dir: Path, fixture_sample, fmt: str):
    with Image.open(nuscenes_sample_dir / Path(fixture_sample.cams["CAM_FRONT"].image_path).name) as img:
        img.convert("RGB").resize((320, 180)).save(tmp_path / "full", fmt)
    data = (tmp_path / "full").read_bytes()
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=rf"sample tok: cannot decode image {path}.*truncated.*expected a complete"):
        T.load_image(path, "tok")


def test_lidar_file_of_a_partial_point_is_refused(tmp_path: Path):
    path = tmp_path / "sweep.pcd.bin"
    path.write_bytes(np.ones((10, 5), np.float32).tobytes() + b"\x00" * 8)  # 10 points + 8 stray bytes
    with pytest.raises(DataError, match=r"sample tok: LiDAR file .*sweep\.pcd\.bin is 208 bytes, expected a "
                                        r"multiple of 20"):
        T.load_points(path, "tok")


def test_lidar_file_with_non_finite_points_is_refused(data_root, tmp_path: Path):
    root, sample = data_root
    points = np.fromfile(root / sample.lidar_path, np.float32).reshape(-1, 5)
    points[123, 2] = np.nan
    points[200, 0] = np.inf
    rel = "samples/LIDAR_TOP/nan.pcd.bin"
    points.tofile(root / rel)
    ds = OccDataset(root, [dataclasses.replace(sample, lidar_path=rel)], DataConfig(load_occ=False, load_depth=True))
    with pytest.raises(DataError, match=rf"sample {TOKEN}: LiDAR file .*nan\.pcd\.bin holds 2 point\(s\) with NaN or "
                                        r"infinite values \(first at point 123"):
        ds[0]


# ---- DataConfig ranges ---------------------------------------------------------------------------

@pytest.mark.parametrize("field, value, expected", [
    ("cameras", (), "at least one camera"),
    ("cameras", ("CAM_FRONT", "CAM_TOP"), "names from"),
    ("cameras", ("CAM_FRONT", "CAM_BACK", "CAM_FRONT"), "each camera at most once"),
    ("input_size", (256.0, 704), "two integers > 0"),
    ("input_size", (256,), "two integers > 0"),
    ("src_size", (900, -1600), "two integers > 0"),
    ("resize", (0.1, -0.1), "a \\(low, high\\) range"),
    ("resize", (-0.5, 0.1), "low > -0.440"),
    ("resize", (float("nan"), 0.1), "a \\(low, high\\) range"),
    ("resize_test", -0.44, "a number > -0.440"),
    ("rot", (-5.4, 270.0), "inside \\[-180, 180\\]"),
    ("crop_h", (0.0, 1.0), "inside \\[0, 1\\)"),
    ("flip", 1, "true or false"),
    ("flip_dx_ratio", -0.1, "a probability in \\[0, 1\\]"),
    ("flip_dy_ratio", 1.5, "a probability in \\[0, 1\\]"),
    ("load_depth", "yes", "true or false"),
    ("depth_range", (0.0, 45.0), "0 < near < far"),
    ("depth_range", (45.0, 1.0), "0 < near < far"),
    ("num_adjacent", -1, "an integer >= 0"),
    ("num_adjacent", None, "an integer >= 0"),
])
def test_data_config_names_the_field_and_the_range(field: str, value, expected: str):
    with pytest.raises(ConfigError, match=rf"^data\.{field}: expected .*{expected}.*, found "):
        DataConfig(**{field: value})


def test_data_config_accepts_the_presets_and_the_demo_settings():
    DataConfig()
    DataConfig(cameras=("CAM_FRONT",), input_size=(128, 352), resize=(0.0, 0.0), rot=(0.0, 0.0), flip=False,
               flip_dx_ratio=0.0, flip_dy_ratio=0.0, num_adjacent=2, resize_test=0.04)
    DataConfig(cameras=tuple(reversed(NUSCENES_CAMERAS)), src_size=(396, 704), resize=(-0.5, -0.2))


def test_an_override_reaches_the_range_check():
    from flashocc.config import load_run_config

    with pytest.raises(ConfigError, match=r"data\.num_adjacent: expected an integer >= 0, found -2"):
        load_run_config("flashocc-tiny", ["data.num_adjacent=-2"])


# ---- atomic_write: permissions and orphan temp files -----------------------------------------------

@pytest.fixture()
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def test_atomic_write_uses_the_umask_like_open(tmp_path: Path, umask_027):
    assert current_umask() == 0o027
    with atomic_write(tmp_path / "new.json", "w") as f:
        f.write("{}")
    with open(tmp_path / "plain.json", "w") as f:
        f.write("{}")
    assert stat.S_IMODE((tmp_path / "new.json").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "new.json").stat().st_mode) == stat.S_IMODE((tmp_path / "plain.json").stat().st_mode)
    # replacing a file keeps its mode, as reopening it for writing would
    (tmp_path / "new.json").chmod(0o604)
    with atomic_write(tmp_path / "new.json", "w") as f:
        f.write("[]")
    assert stat.S_IMODE((tmp_path / "new.json").stat().st_mode) == 0o604 and (tmp_path / "new.json").read_text() == "[]"


def _touch(path: Path, age_s: float) -> Path:
    path.write_bytes(b"partial")
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path


def test_clean_orphan_temps_removes_only_old_flashocc_temps(tmp_path: Path):
    orphan = _touch(tmp_path / ".last.pt.k3j_9x2a.tmp", 600)
    young = _touch(tmp_path / ".metrics.json.ab12cd34.tmp", 5)              # maybe being written right now
    other = _touch(tmp_path / ".notes.txt.ab12cd34.tmp", 600)               # not a file flashocc writes
    odd = _touch(tmp_path / ".last.pt.tmp", 600)                            # not the mkstemp pattern
    upper = _touch(tmp_path / ".last.pt.ABCD1234.tmp", 600)                 # mkstemp uses lower case only
    keep = _touch(tmp_path / "last.pt", 600)
    (tmp_path / ".dir.pt.abcdefgh.tmp").mkdir()
    link_target = _touch(tmp_path / "target.bin", 600)
    (tmp_path / ".link.pt.abcdefgh.tmp").symlink_to(link_target)
    nested = tmp_path / "sub"
    nested.mkdir()
    deep = _touch(nested / ".labels.npz.abcdefgh.tmp", 600)
    assert clean_orphan_temps(tmp_path) == [orphan]
    assert not orphan.exists()
    for path in (young, other, odd, upper, keep, link_target, tmp_path / ".dir.pt.abcdefgh.tmp", deep):
        assert path.exists(), path
    assert clean_orphan_temps(tmp_path, recursive=True) == [deep]
    assert clean_orphan_temps(tmp_path / "absent") == []


def test_clean_orphan_temps_after_kill_9(tmp_path: Path):
    target = tmp_path / "last.pt"
    script = ("import os, signal, sys\nfrom flashocc.atomic import atomic_write\n"
              "with atomic_write(sys.argv[1]) as f:\n    f.write(b'half a checkpoint'); f.flush()\n"
              "    os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", script, str(target)], timeout=60)
    assert proc.returncode == -signal.SIGKILL
    leftovers = list(tmp_path.iterdir())
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".last.pt.") and not target.exists()
    assert clean_orphan_temps(tmp_path) == []                     # too young: it might still be written
    assert clean_orphan_temps(tmp_path, min_age_s=0) == leftovers
    assert list(tmp_path.iterdir()) == []
