"""The ground-truth ray cache: identical scores, only the prediction cast on a hit, misses on any
change of the inputs, and unreadable or unwritable cache files never change a score or crash."""
import logging
import os

import numpy as np
import pytest

from flashocc.metrics import RayIoU
from flashocc.metrics.ray_cache import GTRayCache, default_cache_dir, ray_set_fingerprint
from flashocc.metrics.raycast import lidar_ray_directions

from _metrics_helpers import EIGHT_ORIGINS, shifted

ORIGINS = EIGHT_ORIGINS[:3]


def _score(gt, pred, origins=ORIGINS, cache=None):
    metric = RayIoU(cache=cache)
    metric.update(pred, gt, origins)
    return metric


def _same(a: RayIoU, b: RayIoU) -> None:
    for key, value in a.state().items():
        assert (b.state()[key] == value).all(), key
    np.testing.assert_equal(a.compute(), b.compute())


class _CastSpy:
    """Records how many volumes and rays each cast of a RayIoU walks."""

    def __init__(self, metric: RayIoU) -> None:
        self.calls: list[tuple[int, int]] = []
        cast = metric.caster.cast_voxels          # every cast of RayIoU goes through it

        def spy(volumes, origins, rays=None):
            self.calls.append((len(volumes), len(origins) * 14040 if rays is None else len(rays)))
            return cast(volumes, origins, rays)

        metric.caster.cast_voxels = spy


def test_second_checkpoint_casts_only_the_prediction_on_scored_rays(occ3d, tmp_path):
    gt = occ3d["semantics"]
    cache = GTRayCache(tmp_path)
    plain = _score(gt, shifted(gt, 0))
    first = _score(gt, shifted(gt, 0), cache=cache)
    assert (cache.hits, cache.misses) == (0, 1)
    _same(plain, first)
    assert len(list(tmp_path.rglob("*.gtrays"))) == 1
    assert not list(tmp_path.rglob("*.tmp"))                  # written atomically, no temp left

    metric = RayIoU(cache=cache)
    spy = _CastSpy(metric)
    metric.update(shifted(gt, 2), gt, ORIGINS)                # "another checkpoint"
    assert cache.hits == 1
    scored = int(metric.state()["gt_count"].sum())
    assert spy.calls == [(1, scored)]                         # the prediction alone, along the scored rays
    assert scored < 3 * 14040
    _same(_score(gt, shifted(gt, 2)), metric)


def test_any_change_of_the_inputs_is_a_miss(occ3d, tmp_path):
    gt = occ3d["semantics"]
    pred = shifted(gt, 0)
    cache = GTRayCache(tmp_path)
    _score(gt, pred, cache=cache)
    other_gt = gt.copy()
    other_gt[100, 100, 3] = 4 if gt[100, 100, 3] != 4 else 5
    moved = ORIGINS.copy()
    moved[1, 0] += 1e-9
    for g, o in ((other_gt, ORIGINS), (gt, moved), (gt, ORIGINS[:2]), (gt.astype(np.int64), ORIGINS)):
        _same(_score(g, pred, o), _score(g, pred, o, cache=cache))
    assert cache.hits == 0 and cache.misses == 5
    _score(gt, pred, cache=cache)
    assert cache.hits == 1


def test_the_ray_set_fingerprint_covers_rays_grid_and_step_limit():
    dirs = lidar_ray_directions()
    base = dict(grid_shape=(200, 200, 16), lower=(-40, -40, -1), voxel_size=(0.4,) * 3, free_label=17, max_step=1000)
    ref = ray_set_fingerprint(dirs, **base)
    assert ray_set_fingerprint(dirs.copy(), **base) == ref
    assert ray_set_fingerprint(dirs[:-1], **base) != ref
    for field, value in (("grid_shape", (200, 200, 17)), ("lower", (-40, -40, -1.2)), ("voxel_size", (0.5,) * 3),
                         ("free_label", 0), ("max_step", 999)):
        assert ray_set_fingerprint(dirs, **{**base, field: value}) != ref, field


def _corruptions(data: bytes) -> dict[str, bytes]:
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x10
    return {"empty": b"", "truncated": data[:-100], "flipped": bytes(flipped), "garbage": os.urandom(len(data)),
            "longer": data + b"\0", "other format": b"FOCCGTR0" + data[8:]}


@pytest.mark.parametrize("kind", ["empty", "truncated", "flipped", "garbage", "longer", "other format"])
def test_a_corrupt_entry_is_a_miss_and_is_replaced(occ3d, tmp_path, kind):
    gt = occ3d["semantics"]
    pred = shifted(gt, 1)
    cache = GTRayCache(tmp_path)
    _score(gt, pred, cache=cache)
    (entry,) = tmp_path.rglob("*.gtrays")
    good = entry.read_bytes()
    entry.write_bytes(_corruptions(good)[kind])
    again = GTRayCache(tmp_path)
    _same(_score(gt, pred), _score(gt, pred, cache=again))
    assert (again.hits, again.misses, again.rejected) == (0, 1, 1)
    assert entry.read_bytes() == good                         # rewritten whole
    _score(gt, pred, cache=again)
    assert again.hits == 1


def test_an_entry_of_another_key_is_not_used(occ3d, tmp_path):
    """A file copied or renamed to another key's name is refused (the key is stored inside)."""
    gt = occ3d["semantics"]
    cache = GTRayCache(tmp_path)
    _score(gt, gt, cache=cache)
    (entry,) = tmp_path.rglob("*.gtrays")
    other = gt.copy()
    other[0, 0, 0] = 3
    key = GTRayCache.key(other, ORIGINS, RayIoU()._ray_set)
    cache.path(key).parent.mkdir(parents=True, exist_ok=True)
    cache.path(key).write_bytes(entry.read_bytes())
    fresh = GTRayCache(tmp_path)
    _same(_score(other, gt), _score(other, gt, cache=fresh))
    assert fresh.rejected == 1


def test_an_unwritable_cache_only_turns_itself_off(occ3d, tmp_path, caplog):
    gt = occ3d["semantics"]
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would go")
    cache = GTRayCache(blocker / "cache")
    with caplog.at_level(logging.WARNING, logger="flashocc.metrics.ray_cache"):
        metric = _score(gt, shifted(gt, 0), cache=cache)
        metric.update(shifted(gt, 2), gt, ORIGINS)
    assert sum("cannot be written" in r.message for r in caplog.records) == 1
    reference = _score(gt, shifted(gt, 0))
    reference.update(shifted(gt, 2), gt, ORIGINS)
    _same(reference, metric)


def test_size_bound_drops_the_least_recently_used(occ3d, tmp_path):
    gt = occ3d["semantics"]
    one = len(_encoded_entry(gt, tmp_path / "probe"))
    cache = GTRayCache(tmp_path / "c", max_bytes=int(2.5 * one))
    origins = [ORIGINS + [0.1 * i, 0.0, 0.0] for i in range(4)]
    for o in origins[:2]:
        _score(gt, gt, o, cache=cache)
    os.utime(cache.path(GTRayCache.key(gt, origins[0], RayIoU()._ray_set)), (1, 1))   # used long ago
    _score(gt, gt, origins[1], cache=cache)                                         # a hit: now recent
    _score(gt, gt, origins[2], cache=cache)                                         # third entry: over
    files = list((tmp_path / "c").rglob("*.gtrays"))
    assert sum(f.stat().st_size for f in files) <= 2.5 * one
    kept = {f.name.split(".")[0] for f in files}
    ray_set = RayIoU()._ray_set
    assert GTRayCache.key(gt, origins[0], ray_set) not in kept
    assert {GTRayCache.key(gt, o, ray_set) for o in origins[1:3]} <= kept


def _encoded_entry(gt, root) -> bytes:
    cache = GTRayCache(root)
    _score(gt, gt, cache=cache)
    (entry,) = root.rglob("*.gtrays")
    return entry.read_bytes()


def test_default_folder_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "flashocc" / "rayiou-gt"
    assert GTRayCache().root == tmp_path / "flashocc" / "rayiou-gt"
    with pytest.raises(ValueError, match="max_bytes"):
        GTRayCache(tmp_path, max_bytes=0)


def _tree(root, gt, preds: dict[str, np.ndarray]):
    """gts/ and pred/ trees of one scene (one sample per token, the same GT) and its info file."""
    from flashocc.data.infos import CameraInfo, SampleInfo, save_infos
    from flashocc.geometry import NUSCENES_CAMERAS

    lidar2ego = np.eye(4)
    lidar2ego[:3, 3] = (0.94, 0.0, 1.84)
    cams = {name: CameraInfo(image_path=f"{name}.jpg", intrinsics=np.diag([1000.0, 1000.0, 1.0]),
                             sensor2ego=np.eye(4), ego2global=np.eye(4)) for name in NUSCENES_CAMERAS}
    infos = []
    for i, (token, pred) in enumerate(preds.items()):
        for sub, arrays in (("gts", dict(semantics=gt, mask_lidar=gt < 17, mask_camera=gt < 17)),
                            ("pred", dict(semantics=pred))):
            (root / sub / "scene-1" / token).mkdir(parents=True)
            np.savez_compressed(root / sub / "scene-1" / token / "labels.npz", **arrays)
        pose = np.eye(4)
        pose[0, 3] = 6.0 * i
        infos.append(SampleInfo(token=token, scene_name="scene-1", scene_token="s1", timestamp=i, lidar_path="",
                                lidar2ego=lidar2ego, ego2global=pose, cams=cams))
    return save_infos(infos, root / "infos.pkl")


def test_flashocc_evaluate_cache_flag(occ3d, tmp_path, capsys):
    from flashocc.cli import main

    gt = occ3d["semantics"]
    infos = _tree(tmp_path, gt, {"a" * 32: shifted(gt, 0), "b" * 32: shifted(gt, 1)})
    base = ["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gts"), "--infos", str(infos),
            "--workers", "0"]
    results = []
    for extra in ([], ["--cache", str(tmp_path / "cache")], ["--cache", str(tmp_path / "cache")]):
        out = tmp_path / f"r{len(results)}.json"
        assert main(base + extra + ["--json", str(out)]) == 0
        results.append((out.read_text(), capsys.readouterr().out))
    assert results[0][0] == results[1][0] == results[2][0]        # identical JSON, to the last digit
    assert "0 samples reused, 2 cast" in results[1][1]
    assert "2 samples reused, 0 cast" in results[2][1]
    assert len(list((tmp_path / "cache").rglob("*.gtrays"))) == 2


def test_cache_size_flag_is_checked(tmp_path, capsys):
    from flashocc.cli import main

    code = main(["evaluate", "--pred", str(tmp_path), "--gt", str(tmp_path), "--cache", str(tmp_path / "c"),
                 "--cache-max-gb", "0"])
    assert code != 0 and "--cache-max-gb: expected a size in GB > 0, found 0.0" in capsys.readouterr().err
