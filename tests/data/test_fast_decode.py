"""Reduced JPEG decode (flashocc.data.jpeg, DataConfig.fast_decode): exact geometry, close pixels, the
official path untouched where it is off, PNG fallback, and the real fixture images."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flashocc.config import load_run_config
from flashocc.data import jpeg as J
from flashocc.data import transforms as T
from flashocc.data.dataset import DataConfig, OccDataset
from flashocc.errors import ConfigError, DataError, MissingFileError

MARK = 24  # side of the bright square drawn into the synthetic images, in original pixels, at 704 wide


def _marked_image(size: tuple[int, int], centre: tuple[int, int], mark: int = MARK) -> Image.Image:
    """A mid-grey image with a gentle gradient (so the JPEG has content) and one white square."""
    width, height = size
    x = np.linspace(60, 120, width, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 30, height, dtype=np.float32)[:, None, None]
    rgb = np.broadcast_to(x + y, (height, width, 3)).astype(np.uint8).copy()
    cx, cy = centre
    rgb[cy - mark // 2:cy + mark // 2, cx - mark // 2:cx + mark // 2] = 255
    return Image.fromarray(rgb)


def _save(img: Image.Image, path: Path) -> Path:
    img.save(path, quality=95) if path.suffix == ".jpg" else img.save(path)
    return path


def _centroid(img: Image.Image) -> np.ndarray:
    """(x, y) centre of the bright mark in continuous pixel coordinates (pixel i spans [i, i + 1))."""
    gray = np.asarray(img.convert("L"), dtype=np.float64)
    weight = np.clip(gray - 180.0, 0.0, None)
    assert weight.sum() > 0, "the mark is not in the augmented image"
    ys, xs = np.indices(gray.shape)
    return np.array([(weight * (xs + 0.5)).sum(), (weight * (ys + 0.5)).sum()]) / weight.sum()


def _both_paths(path: Path, aug: T.ImageAug) -> tuple[Image.Image, Image.Image, J.ReducedImage]:
    full = T.augment_image(T.load_image(path, "tok"), aug)
    reduced = J.load_reduced(path, "tok", aug.resize_dims)
    return full, J.augment_reduced(reduced, aug), reduced


def test_the_largest_reduction_that_never_upsamples_is_chosen():
    assert J.reduction_for((1600, 900), (704, 396)) == 2      # the 256x704 test-time resize (0.44)
    assert J.reduction_for((1600, 900), (880, 495)) == 1      # train resize 0.55: 1600 / 2 < 880
    assert J.reduction_for((1600, 900), (400, 225)) == 4
    assert J.reduction_for((1600, 900), (176, 99)) == 8
    assert J.reduction_for((1600, 900), (20, 10)) == 8        # 8 is libjpeg's largest
    assert J.reduction_for((704, 396), (737, 415)) == 1       # an upsampling resize decodes in full
    rng = np.random.default_rng(0)
    for _ in range(200):
        full = (int(rng.integers(50, 2000)), int(rng.integers(50, 2000)))
        need = (int(rng.integers(1, full[0] + 1)), int(rng.integers(1, full[1] + 1)))
        s = J.reduction_for(full, need)
        assert full[0] / s >= need[0] and full[1] / s >= need[1]
        assert s == 8 or full[0] / (2 * s) < need[0] or full[1] / (2 * s) < need[1], (full, need, s)


@pytest.mark.parametrize("input_size,reductions", [((256, 704), {1, 2}), ((128, 352), {2, 4}), ((64, 176), {4, 8})])
@pytest.mark.parametrize("image_size", [(1600, 900), (1597, 899)])  # 1597x899: not a multiple of any reduction
def test_a_mark_lands_on_the_same_output_pixel_as_with_the_full_decode(tmp_path, input_size, reductions, image_size):
    cfg = DataConfig(input_size=input_size, src_size=(image_size[1], image_size[0]))
    rng = np.random.default_rng(1)
    seen = set()
    out_h, out_w = input_size
    for i in range(4):
        aug = T.sample_image_aug(cfg, image_size, rng, train=True)
        rot, tran = aug.matrices()
        # A mark of a few output pixels at any input size (smaller ones vanish in the antialiased resize), at
        # an image point that the augmentation keeps well inside the output (the crop keeps only part of the
        # image, and a small resize leaves zero fill).
        margin = MARK * 704 // out_w
        candidates = [(x, y) for x in range(margin, image_size[0] - margin, 37)
                      for y in range(margin, image_size[1] - margin, 29)]
        inside = [c for c in candidates if margin / 4 < (rot @ [*c, 1.0] + tran)[0] < out_w - margin / 4
                  and margin / 4 < (rot @ [*c, 1.0] + tran)[1] < out_h - margin / 4]
        centre = inside[int(rng.integers(len(inside)))]
        path = _save(_marked_image(image_size, centre, margin), tmp_path / f"mark{i}.jpg")
        full, fast, reduced = _both_paths(path, aug)
        s = J.reduction_for(image_size, aug.resize_dims)
        seen.add(s)
        assert reduced.scale == (1 / s, 1 / s)
        assert reduced.box[2] >= aug.resize_dims[0] and reduced.box[3] >= aug.resize_dims[1]  # no upsampling
        assert fast.size == full.size == (out_w, out_h)
        got, want = _centroid(fast), _centroid(full)
        assert np.abs(got - want).max() < 1.0, (aug, got, want)
        # Both agree with the matrices the pipeline hands to the model (original -> augmented pixels).
        predicted = (rot @ np.array([*centre, 1.0]) + tran)[:2]
        assert np.abs(got - predicted).max() < 1.5, (aug, got, predicted)
    assert seen <= reductions and max(seen) > 1   # a reduced decode was exercised


def test_the_reduced_box_is_the_full_image_in_reduced_pixels(tmp_path):
    path = _save(_marked_image((1597, 899), (800, 450)), tmp_path / "odd.jpg")
    reduced = J.load_reduced(path, "tok", (176, 99))
    assert reduced.full_size == (1597, 899)
    assert reduced.image.size == (200, 113)                   # ceil(1597 / 8), ceil(899 / 8)
    assert reduced.box == (0.0, 0.0, 1597 / 8, 899 / 8)
    assert reduced.scale == (0.125, 0.125)


def test_fused_resize_and_crop_matches_resize_then_crop_on_a_full_image(tmp_path):
    # With no reduction the only change is computing just the cropped part: within one grey level.
    path = _save(_marked_image((1600, 900), (800, 640)), tmp_path / "m.jpg")
    full = T.load_image(path, "tok")
    as_reduced = J.ReducedImage(full, full.size, (0.0, 0.0, 1600.0, 900.0))
    for resize, crop in [(0.55, (50, 240, 754, 496)), (0.38, (0, 86, 704, 342)), (0.38, (-10, -5, 694, 251))]:
        aug = T.ImageAug(resize, (int(1600 * resize), int(900 * resize)), crop, True, 3.0)
        a = np.asarray(T.augment_image(full, aug), dtype=np.int16)
        b = np.asarray(J.augment_reduced(as_reduced, aug), dtype=np.int16)
        assert a.shape == b.shape and np.abs(a - b).max() <= 1, (resize, crop)
        if crop[2] > aug.resize_dims[0] or crop[0] < 0:                # zero fill outside the resized image
            assert (b[:, :5] == 0).all() or (b[:, -5:] == 0).all()


def test_png_falls_back_to_the_full_decode(tmp_path):
    path = _save(_marked_image((1600, 900), (800, 640)), tmp_path / "m.png")
    reduced = J.load_reduced(path, "tok", (176, 99))
    assert reduced.scale == (1.0, 1.0) and reduced.image.size == (1600, 900)
    assert np.array_equal(np.asarray(reduced.image), np.asarray(T.load_image(path, "tok")))
    aug = T.sample_image_aug(DataConfig(), (1600, 900), np.random.default_rng(3), train=True)
    full, fast, _ = _both_paths(path, aug)
    assert np.abs(np.asarray(full, np.int16) - np.asarray(fast, np.int16)).max() <= 1


def test_missing_and_truncated_files_are_named(tmp_path):
    with pytest.raises(MissingFileError, match="sample tok: image not found"):
        J.load_reduced(tmp_path / "none.jpg", "tok", (704, 396))
    path = _save(_marked_image((1600, 900), (800, 640)), tmp_path / "m.jpg")
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(DataError, match=r"sample tok: cannot decode image .*cut\.jpg"):
        J.load_reduced(truncated, "tok", (704, 396))
    (tmp_path / "junk.jpg").write_bytes(b"not an image")
    with pytest.raises(DataError, match="junk.jpg"):
        J.image_size(tmp_path / "junk.jpg", "tok")


def test_the_config_field_is_validated_with_its_name():
    assert DataConfig().fast_decode == "train"
    with pytest.raises(ConfigError, match="data.fast_decode: expected one of off, train, always, found 'fast'"):
        DataConfig(fast_decode="fast")
    assert load_run_config("flashocc-tiny", ["data.fast_decode=always"]).data.fast_decode == "always"
    with pytest.raises(ConfigError, match="fast_decode"):
        load_run_config("flashocc-tiny", ["data.fast_decode=yes"])


# --- the real fixture images through OccDataset (skipped without ../shared/fixtures) ---

def _dataset(root: Path, sample, mode: str, train: bool) -> OccDataset:
    return OccDataset(root, [sample], DataConfig(load_occ=False, fast_decode=mode), train=train, aug_seed=0)


@pytest.fixture()
def decode_spy(monkeypatch):
    calls = []
    real = J.load_reduced
    monkeypatch.setattr(J, "load_reduced", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    return calls


@pytest.mark.parametrize("mode,train,fast", [("off", True, False), ("off", False, False), ("train", True, True),
                                             ("train", False, False), ("always", True, True),
                                             ("always", False, True)])
def test_the_mode_decides_which_sets_decode_reduced(nuscenes_sample_dir, fixture_sample, decode_spy, mode, train,
                                                    fast):
    _dataset(nuscenes_sample_dir, fixture_sample, mode, train)[0]
    assert len(decode_spy) == (6 if fast else 0)


@pytest.mark.parametrize("train", [True, False])
def test_off_and_evaluation_are_bit_identical_to_the_pil_path(nuscenes_sample_dir, fixture_sample, train):
    item = _dataset(nuscenes_sample_dir, fixture_sample, "off" if train else "train", train)[0]
    rng = np.random.default_rng([0, 0, 0]) if train else None   # OccDataset._rng(0) at epoch 0
    for i, name in enumerate(DataConfig().cameras):
        img = T.load_image(nuscenes_sample_dir / Path(fixture_sample.cams[name].image_path).name, "tok")
        aug = T.sample_image_aug(DataConfig(), img.size, rng, train)
        expected = T.normalize_image(T.augment_image(img, aug))
        assert item["img"][i].equal(expected), name
        rot, tran = aug.matrices()
        assert np.array_equal(item["post_rots"][i].numpy(), rot) and np.array_equal(item["post_trans"][i].numpy(), tran)


def test_real_fixture_images_keep_the_geometry_and_pixels_close(nuscenes_sample_dir, fixture_sample):
    for epoch in range(2):
        off, fast = (_dataset(nuscenes_sample_dir, fixture_sample, mode, True) for mode in ("off", "train"))
        off.set_epoch(epoch)
        fast.set_epoch(epoch)
        a, b = off[0], fast[0]
        for key in ("post_rots", "post_trans", "intrinsics", "sensor2ego", "bda"):
            assert a[key].equal(b[key]), key                     # same draws, same matrices
        assert a["img"].shape == b["img"].shape == (6, 3, 256, 704)
        # Output channel k is normalised with IMAGE_STD[k] (the BGR quirk), so this undoes it exactly.
        grey_levels = (a["img"] - b["img"]).abs().numpy() * np.array(T.IMAGE_STD, np.float32)[:, None, None]
        mean_abs = float(grey_levels.mean())
        print(f"epoch {epoch}: mean |fast - full| = {mean_abs:.3f} grey levels (0..255), "
              f"99th percentile {np.percentile(grey_levels, 99):.1f}")
        assert mean_abs < 1.5, mean_abs                          # measured ~0.6 on the fixture
        assert np.percentile(grey_levels, 99) < 8


def test_fixture_header_size_matches_the_decoded_size(nuscenes_sample_dir, fixture_sample):
    for cam in fixture_sample.cams.values():
        path = nuscenes_sample_dir / Path(cam.image_path).name
        assert J.image_size(path, "tok") == T.load_image(path, "tok").size == (1600, 900)



def test_an_upsampling_resize_decodes_in_full(tmp_path):
    # The synthetic world's 704x396 images at a train scale above 1: no reduction, same pixels.
    path = _save(_marked_image((704, 396), (350, 300), 8), tmp_path / "synth.jpg")
    aug = T.ImageAug(1.05, (739, 415), (20, 159, 724, 415), False, 2.0)
    full, fast, reduced = _both_paths(path, aug)
    assert reduced.scale == (1.0, 1.0)
    assert np.array_equal(np.asarray(full), np.asarray(fast))
