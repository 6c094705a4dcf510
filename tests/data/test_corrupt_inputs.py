"""Info records with impossible cameras, and corrupt ``labels.npz`` archives: every loader answers with a
``DataError`` that names the file (and the sample token and field where it knows them)."""
from __future__ import annotations

import copy
import pickle
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest

from flashocc.data.infos import load_infos, safe_load_pickle, save_infos
from flashocc.data.occ3d import load_labels, read_npz
from flashocc.errors import DataError, MissingFileError
from flashocc.metrics.evaluate import load_ground_truth, load_prediction

TOKEN = "ca9a282c9e77460f8360f564131a8af5"  # the fixture's sample


# ---- camera matrices ----------------------------------------------------------------------------------
def _with_cam2img(fixture_pkl: Path, tmp_path: Path, k) -> Path:
    payload = copy.deepcopy(safe_load_pickle(fixture_pkl))
    payload["data_list"][0]["images"]["CAM_FRONT"]["cam2img"] = k
    path = tmp_path / "bad_k.pkl"
    path.write_bytes(pickle.dumps(payload, protocol=2))
    return path


def _fixture_k(fixture_pkl: Path) -> np.ndarray:
    return np.array(safe_load_pickle(fixture_pkl)["data_list"][0]["images"]["CAM_FRONT"]["cam2img"], dtype=float)


@pytest.mark.parametrize("case, pattern", [
    ("k22_zero", r"the last row must be \[0, 0, 1\], found \[0\.0, 0\.0, 0\.0\]"),
    ("k22_two", r"the last row must be \[0, 0, 1\]"),
    ("k20_skewed", r"the last row must be \[0, 0, 1\]"),
    ("negative_fx", r"positive focal lengths"),
    ("zero_fy", r"positive focal lengths"),
    ("nan", r"must be a finite 3x3 camera matrix"),
    ("inf", r"must be a finite 3x3 camera matrix"),
    ("shape", r"must have shape \(3, 3\)"),
    ("text", r"must be a \(3, 3\) array of numbers, found str"),
])
def test_intrinsics_must_be_a_camera_matrix(fixture_pkl: Path, tmp_path: Path, case: str, pattern: str):
    k = _fixture_k(fixture_pkl)
    if case == "k22_zero":
        k[2, 2] = 0.0
    elif case == "k22_two":
        k[2, 2] = 2.0
    elif case == "k20_skewed":
        k[2, 0] = 0.01
    elif case == "negative_fx":
        k[0, 0] = -k[0, 0]
    elif case == "zero_fy":
        k[1, 1] = 0.0
    elif case == "nan":
        k[0, 2] = np.nan
    elif case == "inf":
        k[1, 2] = np.inf
    elif case == "shape":
        k = k[:2]
    else:
        k = "focal 1266"
    path = _with_cam2img(fixture_pkl, tmp_path, k)
    field = "images.CAM_FRONT.cam2img" if case in ("shape", "text") else "cams.CAM_FRONT.intrinsics"
    with pytest.raises(DataError, match=rf"bad_k\.pkl: sample {TOKEN}: .*{re.escape(field)}.*{pattern}"):
        load_infos(path)


def test_the_fixture_cameras_pass_and_our_format_checks_them_too(fixture_sample, tmp_path: Path):
    sample = copy.deepcopy(fixture_sample)
    path = save_infos([sample], tmp_path / "ours.pkl")
    assert load_infos(path)[0].token == TOKEN
    sample.cams["CAM_BACK"].intrinsics = np.diag([1000.0, 1000.0, 0.0])
    path = save_infos([sample], tmp_path / "ours_bad.pkl")
    with pytest.raises(DataError, match=rf"ours_bad\.pkl: sample {TOKEN}: field 'cams\.CAM_BACK\.intrinsics': "
                                        r"the last row must be \[0, 0, 1\]"):
        load_infos(path)


@pytest.mark.parametrize("field, value, pattern", [
    ("timestamp", "soon", r"field 'timestamp' must be an integer"),
    ("lidar_path", 5, r"field 'lidar_path' must be text"),
    ("occ_path", ["gts"], r"field 'occ_path' must be text or None"),
    ("token", "", r"empty or non-text token"),
])
def test_our_format_refuses_fields_of_the_wrong_type(fixture_sample, tmp_path: Path, field, value, pattern):
    sample = copy.deepcopy(fixture_sample)
    setattr(sample, field, value)
    path = save_infos([sample], tmp_path / "typed.pkl")
    with pytest.raises(DataError, match=rf"typed\.pkl: .*{pattern}"):
        load_infos(path)


# ---- corrupt archives -----------------------------------------------------------------------------------
SHAPE = (200, 200, 16)


def _labels() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"semantics": rng.integers(0, 18, SHAPE, dtype=np.uint8),
            "mask_lidar": np.ones(SHAPE, np.uint8), "mask_camera": (rng.random(SHAPE) < 0.5).astype(np.uint8)}


def _set_method(data: bytes, method: int) -> bytes:
    """Write ``method`` into every local and central zip header (a stored archive: no signature in the data)."""
    out = bytearray(data)
    for signature, field in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        starts = [m.start() for m in re.finditer(re.escape(signature), data)]
        assert len(starts) == 3, signature
        for start in starts:
            out[start + field:start + field + 2] = method.to_bytes(2, "little")
    return bytes(out)


def _corrupt(kind: str, path: Path) -> None:
    arrays = _labels()
    if kind == "stored_then_unknown_compression":
        np.savez(path, **arrays)
        path.write_bytes(_set_method(path.read_bytes(), 99))  # zipfile: NotImplementedError
        return
    if kind == "object_array":
        np.savez(path, **{**arrays, "semantics": np.array([{"x": 1}], dtype=object)})  # allow_pickle=False: refused
        return
    if kind == "single_npy":
        with path.open("wb") as f:
            np.save(f, arrays["semantics"])
        return
    if kind == "raw_member":
        with zipfile.ZipFile(path, "w") as zf:
            for key in arrays:
                zf.writestr(key, b"not a .npy")  # NpzFile hands back bytes for members without .npy
        return
    if kind == "short_member":
        with zipfile.ZipFile(path, "w") as zf:
            for key, value in arrays.items():
                data = np.lib.format.header_data_from_array_1_0(value)
                with zf.open(f"{key}.npy", "w") as f:
                    np.lib.format.write_array_header_1_0(f, data)
                    f.write(value.tobytes()[:1000])  # the header promises 640000 bytes
        return
    if kind == "bad_header":
        with zipfile.ZipFile(path, "w") as zf:
            for key in arrays:
                zf.writestr(f"{key}.npy", b"\x93NUMPY\x01\x00\x10\x00{'descr': \xff\xfe     \n")
        return
    np.savez_compressed(path, **arrays)
    data = bytearray(path.read_bytes())
    if kind == "truncated":
        data = data[: len(data) // 2]
    elif kind == "deflate_flip":
        start = data.index(b"semantics.npy") + len("semantics.npy") + 200
        for i in range(start, start + 64):
            data[i] ^= 0xA5
    elif kind == "crc_flip":  # of semantics, the member every loader reads
        info = zipfile.ZipFile(path).getinfo("semantics.npy")
        data[info.header_offset + 14] ^= 0xFF  # the CRC-32 in the local header
        data[data.rindex(b"semantics.npy") - 46 + 16] ^= 0xFF  # and in the central directory
    elif kind == "central_directory_flip":
        at = data.rindex(b"semantics.npy") - 46
        data[at + 20:at + 24] = (100).to_bytes(4, "little")  # its compressed size: the stream ends early
    elif kind == "empty":
        data = bytearray()
    path.write_bytes(bytes(data))


KINDS = ["truncated", "deflate_flip", "crc_flip", "central_directory_flip", "empty", "stored_then_unknown_compression",
         "object_array", "single_npy", "raw_member", "short_member", "bad_header"]


@pytest.mark.parametrize("kind", KINDS)
def test_corrupt_labels_archives_are_data_errors_in_every_loader(tmp_path: Path, kind: str):
    path = tmp_path / "gts" / "scene-0001" / "tok7" / "labels.npz"
    path.parent.mkdir(parents=True)
    _corrupt(kind, path)
    name = re.escape(str(path))
    with pytest.raises(DataError, match=rf"^sample tok7: {name}: "):
        load_labels(path.parent, "tok7")
    with pytest.raises(DataError, match=rf"^sample tok7: {name}"):
        load_ground_truth(path, token="tok7")
    with pytest.raises(DataError, match=rf"^{name}"):
        load_prediction(path)


def test_read_npz_reads_what_is_there(tmp_path: Path, occ3d_labels_path: Path):
    arrays, present = read_npz(occ3d_labels_path, ("semantics", "nope"))
    assert list(arrays) == ["semantics"] and arrays["semantics"].shape == SHAPE
    assert sorted(present) == ["mask_camera", "mask_lidar", "semantics"]
    with pytest.raises(MissingFileError, match=r"absent\.npz: file not found"):
        read_npz(tmp_path / "absent.npz", ("semantics",))


def test_loaders_never_unpickle(tmp_path: Path, monkeypatch):
    calls = []
    real = np.lib.format.read_array

    def spy(*args, **kwargs):
        calls.append(kwargs.get("allow_pickle", True))  # read_array's own default is True
        return real(*args, **kwargs)

    monkeypatch.setattr(np.lib.format, "read_array", spy)
    monkeypatch.setattr(np, "load", None)  # not used at all
    path = tmp_path / "labels.npz"
    np.savez_compressed(path, **_labels())
    load_labels(path, "t")
    load_ground_truth(path)
    load_prediction(path)
    assert len(calls) == 7 and not any(calls)


def test_a_flipped_byte_in_a_stored_member_fails_its_crc(tmp_path: Path):
    path = tmp_path / "labels.npz"
    np.savez(path, **_labels())  # stored: np.load alone would hand back the flipped value
    data = bytearray(path.read_bytes())
    data[data.index(b"mask_lidar.npy") + 600] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=rf"sample t: {re.escape(str(path))}: corrupt labels archive "
                                        r"\(zipfile\.BadZipFile: Bad CRC-32"):
        load_labels(path, "t")
