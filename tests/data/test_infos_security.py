"""Info pickles cannot run code: hand-assembled opcode streams, hostile arguments and BUILDs, and the
stealth form (a payload in front of a real info file) are refused before anything runs; real info
files of numpy 1.x and 2.x under protocols 2-5 still load exactly."""
from __future__ import annotations

import math
import os
import pickle
import re
import struct
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from flashocc.cli import main as cli_main
from flashocc.data import safe_pickle
from flashocc.data.infos import load_infos, safe_load_pickle
from flashocc.errors import DataError, UnsafeFileError

sys.path.insert(0, str(Path(__file__).parent))
import _numpy_pickles  # noqa: E402  (numpy 1.x blobs; a plain module beside this file)


# ---- writing pickle programs by hand ------------------------------------------------------------------
def _u(text: str) -> bytes:
    raw = text.encode()
    assert len(raw) < 256
    return pickle.SHORT_BINUNICODE + bytes([len(raw)]) + raw


def _b(data: bytes) -> bytes:
    if len(data) < 256:
        return pickle.SHORT_BINBYTES + bytes([len(data)]) + data
    return pickle.BINBYTES + struct.pack("<I", len(data)) + data


def _i(n: int) -> bytes:
    return pickle.BININT1 + bytes([n]) if 0 <= n < 256 else pickle.BININT + struct.pack("<i", n)


def _stack_global(module: str, name: str) -> bytes:
    return _u(module) + _u(name) + pickle.STACK_GLOBAL


def _global(module: str, name: str) -> bytes:  # protocol 0-3: "c<module>\n<name>\n"
    return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def _proto4(body: bytes, stop: bool = True) -> bytes:
    body += pickle.STOP if stop else b""
    return pickle.PROTO + b"\x04" + pickle.FRAME + struct.pack("<Q", len(body)) + body


def _proto2(body: bytes) -> bytes:
    return pickle.PROTO + b"\x02" + body + pickle.STOP


def _call(func: bytes, *args: bytes) -> bytes:
    return func + pickle.MARK + b"".join(args) + pickle.TUPLE + pickle.REDUCE


T, F, NONE = pickle.NEWTRUE, pickle.NEWFALSE, pickle.NONE
RECONSTRUCT = _stack_global("numpy._core.multiarray", "_reconstruct")
NDARRAY = _stack_global("numpy", "ndarray")


def _dtype(code: str, state: bytes | None = None) -> bytes:
    """numpy.dtype(code, False, True) + BUILD, as numpy writes a dtype."""
    state = state if state is not None else (pickle.MARK + _i(3) + _u("<") + NONE * 3 + _i(-1) + _i(-1) + _i(0)
                                             + pickle.TUPLE)
    return _call(_stack_global("numpy", "dtype"), _u(code), F, T) + state + pickle.BUILD


def _array_state(shape: tuple[int, ...], dtype: bytes, data: bytes) -> bytes:
    shape_ops = pickle.MARK + b"".join(_i(n) for n in shape) + pickle.TUPLE
    return pickle.MARK + _i(1) + shape_ops + dtype + F + data + pickle.TUPLE


def _empty_array() -> bytes:
    return _call(RECONSTRUCT, NDARRAY, _i(0) + pickle.TUPLE1, _b(b"b"))


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture()
def sandbox(tmp_path: Path):
    """(marker a payload would create, a function asserting nothing was written) in a fresh folder."""
    marker = tmp_path / "pwned"
    inner = tmp_path / "inner.npy"  # a pickle that np.load(..., allow_pickle=True) would run
    inner.write_bytes(_proto2(_call(_global("os", "system"), _u(f"touch {marker}"))))
    before = _files(tmp_path)

    def untouched() -> None:
        assert not marker.exists()
        assert _files(tmp_path) - {"evil.pkl"} == before - {"evil.pkl"}

    return marker, untouched


def _write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "evil.pkl"
    path.write_bytes(data)
    return path


# ---- globals that are never allowed -------------------------------------------------------------------
def _refused_globals(marker: Path, tmp_path: Path) -> dict[str, tuple[bytes, str]]:
    touch = _u(f"touch {marker}")
    create = _u(f"open({str(marker)!r}, 'w').close()")
    return {
        "stack_global os.system": (_proto4(_call(_stack_global("os", "system"), touch)), "os.system"),
        "stack_global posix.system": (_proto4(_call(_stack_global("posix", "system"), touch)), "posix.system"),
        "stack_global builtins.eval": (_proto4(_call(_stack_global("builtins", "eval"), create)), "builtins.eval"),
        "stack_global builtins.exec": (_proto4(_call(_stack_global("builtins", "exec"), create)), "builtins.exec"),
        "dotted numpy lib.npyio.DataSource": (
            _proto4(_call(_stack_global("numpy", "lib.npyio.DataSource"), _u(str(tmp_path / "ds")))),
            "numpy.lib.npyio.DataSource"),
        "dotted numpy.dtypes StringDType.__init__": (
            _proto4(_call(_stack_global("numpy.dtypes", "StringDType.__init__"))), "numpy.dtypes.StringDType.__init__"),
        "module-wide numpy.dtypes": (_proto4(_call(_stack_global("numpy.dtypes", "StringDType"))),
                                     "numpy.dtypes.StringDType"),
        "dotted numpy dtypes.Float64DType": (_proto4(_call(_stack_global("numpy", "dtypes.Float64DType"))),
                                             "numpy.dtypes.Float64DType"),
        "numpy.load of a pickle": (
            _proto4(_call(_stack_global("numpy", "load"), _u(str(tmp_path / "inner.npy")), NONE, T)), "numpy.load"),
        "numpy.save": (_proto4(_call(_stack_global("numpy", "save"), _u(str(marker)), _i(1))), "numpy.save"),
        "builtins.__import__": (_proto4(_call(_stack_global("builtins", "__import__"), _u("os"))),
                                         "builtins.__import__"),
        "GLOBAL os system": (_proto2(_call(_global("os", "system"), touch)), "os.system"),
        "GLOBAL __builtin__ eval": (_proto2(_call(_global("__builtin__", "eval"), create)), "__builtin__.eval"),
        "GLOBAL dotted numpy DataSource": (
            _proto2(_call(_global("numpy", "lib.npyio.DataSource"), _u(str(tmp_path / "ds")))),
            "numpy.lib.npyio.DataSource"),
        "GLOBAL copyreg _reconstructor": (_proto2(_call(_global("copyreg", "_reconstructor"))),
                                          "copyreg._reconstructor"),
        "INST os system": (pickle.PROTO + b"\x02" + pickle.MARK + touch + pickle.INST + b"os\nsystem\n" + pickle.STOP,
                           "os.system"),
        "OBJ builtins eval": (_proto4(pickle.MARK + _stack_global("builtins", "eval") + create + pickle.OBJ),
                              "builtins.eval"),
        "pickled object via __reduce__": (pickle.dumps({"infos": [_Evil(marker)]}, protocol=2), "os.system"),
    }


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


CASES_GLOBALS = list(_refused_globals(Path("m"), Path("t")))


@pytest.mark.parametrize("case", CASES_GLOBALS)
def test_a_global_off_the_list_is_refused_before_it_runs(tmp_path: Path, sandbox, case: str):
    marker, untouched = sandbox
    data, name = _refused_globals(marker, tmp_path)[case]
    path = _write(tmp_path, data)
    if case == "pickled object via __reduce__":
        name = f"{os.system.__module__}.system"  # posix.system on Linux
    with pytest.raises(UnsafeFileError, match=rf"{re.escape(str(path))}: not a readable info pickle: refusing to "
                                              rf"load {re.escape(name)}"):
        load_infos(path)
    untouched()


# ---- allowed callables with hostile arguments, and BUILD on allowed objects --------------------------------
def _f8() -> bytes:
    return _dtype("f8")


HOSTILE = {
    # (stream, what the refusal names)
    "_reconstruct with a dtype as subtype": (
        _proto4(_call(RECONSTRUCT, _stack_global("numpy", "dtype"), _i(0) + pickle.TUPLE1, _b(b"b"))), "_reconstruct"),
    "_reconstruct with a huge shape": (
        _proto4(_call(RECONSTRUCT, NDARRAY, _i(1 << 30) + pickle.TUPLE1, _b(b"b"))), "_reconstruct"),
    "numpy.dtype from a dict spec": (
        _proto4(_call(_stack_global("numpy", "dtype"), pickle.EMPTY_DICT, F, T)), "numpy.dtype"),
    "numpy.dtype with a structured code": (_proto4(_call(_stack_global("numpy", "dtype"), _u("V8"), F, T)),
                                           "numpy.dtype"),
    "numpy.dtype with a bad code": (_proto4(_call(_stack_global("numpy", "dtype"), _u("f8; import os"), F, T)),
                                    "numpy.dtype"),
    "numpy.dtype BUILD with fields": (
        _proto4(_dtype("f8", pickle.MARK + _i(3) + _u("|") + NONE + _u("a") + pickle.TUPLE1 + pickle.EMPTY_DICT
                       + _i(8) + _i(1) + _i(63) + pickle.TUPLE)), "numpy.dtype"),
    "numpy.dtype BUILD twice": (
        _proto4(_dtype("f8") + pickle.MARK + _i(3) + _u("<") + NONE * 3 + _i(-1) + _i(-1) + _i(0) + pickle.TUPLE
                + pickle.BUILD), "second BUILD"),
    "object scalar": (_proto4(_call(_stack_global("numpy._core.multiarray", "scalar"), _dtype("O8"), _u("x"))),
                      "object dtype"),
    "scalar with short data": (_proto4(_call(_stack_global("numpy.core.multiarray", "scalar"), _f8(), _b(b"\x00"))),
                               "bytes of data"),
    "_frombuffer size mismatch": (
        _proto4(_call(_stack_global("numpy._core.numeric", "_frombuffer"), _b(bytes(8)), _f8(),
                      _i(1000) + pickle.TUPLE1, _u("C"))), "bytes of data"),
    "_frombuffer with objects": (
        _proto4(_call(_stack_global("numpy.core.numeric", "_frombuffer"), _b(bytes(8)), _dtype("O8"),
                      _i(1) + pickle.TUPLE1, _u("C"))), "object dtype"),
    "object array from raw bytes (a forged pointer)": (
        _proto4(_empty_array() + _array_state((1,), _dtype("O8"), _b(b"\x41" * 8)) + pickle.BUILD), "list of 1 items"),
    "array BUILD twice": (
        _proto4(_empty_array() + _array_state((1,), _f8(), _b(bytes(8))) + pickle.BUILD
                + _array_state((1,), _f8(), _b(bytes(8))) + pickle.BUILD), "second BUILD"),
    "array without BUILD": (_proto4(_empty_array()), "without its data"),
    "array state with a foreign dtype": (
        _proto4(_empty_array() + _array_state((1,), _u("f8"), _b(bytes(8))) + pickle.BUILD), "array dtype"),
    "BUILD on an allowed global": (
        _proto4(_stack_global("numpy", "dtype") + pickle.EMPTY_DICT + _u("fn") + _u("x") + pickle.SETITEM
                + pickle.BUILD), "BUILD on numpy.dtype"),
    "BUILD slot state on an allowed global": (
        _proto4(_stack_global("_codecs", "encode") + NONE + pickle.EMPTY_DICT + _u("fn")
                + _stack_global("numpy", "dtype") + pickle.SETITEM + pickle.TUPLE2 + pickle.BUILD),
        "BUILD on _codecs.encode"),
    "BUILD on numpy.ndarray": (_proto4(NDARRAY + pickle.EMPTY_DICT + pickle.BUILD), "BUILD on numpy.ndarray"),
    "BUILD on a protocol-5 array": (
        _proto4(_call(_stack_global("numpy._core.numeric", "_frombuffer"), _b(bytes(8)), _f8(),
                      _i(1) + pickle.TUPLE1, _u("C")) + _array_state((1,), _f8(), _b(bytes(8))) + pickle.BUILD),
        "BUILD on numpy ndarray"),
    "BUILD on a numpy scalar": (
        _proto4(_call(_stack_global("numpy._core.multiarray", "scalar"), _f8(), _b(bytes(8))) + pickle.EMPTY_TUPLE
                + pickle.BUILD), "BUILD on numpy float64"),
    "_codecs.encode rot13": (_proto4(_call(_stack_global("_codecs", "encode"), _u("x"), _u("rot13"))),
                             "_codecs.encode"),
    "_codecs.encode of bytes with zlib": (_proto4(_call(_stack_global("_codecs", "encode"), _b(b"x"), _u("zlib"))),
                                          "_codecs.encode"),
    "set of a string": (_proto4(_call(_stack_global("builtins", "set"), _u("abc"))), "set"),
    "bytes of a size": (_proto4(_call(_stack_global("builtins", "bytes"), _i(200))), "bytes"),
    "OrderedDict with items": (_proto4(_call(_stack_global("collections", "OrderedDict"), pickle.EMPTY_LIST)),
                               "collections.OrderedDict"),
    "INST numpy dtype hostile": (pickle.PROTO + b"\x02" + pickle.MARK + _u("f8") + T + T + pickle.INST
                                 + b"numpy\ndtype\n" + pickle.STOP, "numpy.dtype"),
    "INST _codecs encode hostile": (pickle.PROTO + b"\x02" + pickle.MARK + _u("x") + _u("rot13") + pickle.INST
                                    + b"_codecs\nencode\n" + pickle.STOP, "_codecs.encode"),
    "OBJ _reconstruct hostile": (_proto4(pickle.MARK + RECONSTRUCT + NDARRAY + _u("x") + _b(b"b") + pickle.OBJ),
                                 "_reconstruct"),
    "numpy.ndarray in the data": (_proto4(pickle.EMPTY_LIST + NDARRAY + pickle.APPEND), "_NdarrayToken"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_allowed_callables_check_their_arguments_and_state(tmp_path: Path, sandbox, case: str):
    _, untouched = sandbox
    data, what = HOSTILE[case]
    path = _write(tmp_path, data)
    pattern = rf"{re.escape(str(path))}: not a readable info pickle: .*{re.escape(what)}"
    with pytest.raises(UnsafeFileError, match=pattern):
        safe_load_pickle(path)
    untouched()


REFUSED_OPCODES = {
    # Opcodes that need a class (nothing find_class hands out is one), a callback or a buffer.
    "NEWOBJ on an allowed global": (_proto4(_stack_global("numpy", "dtype") + _u("f8") + pickle.TUPLE1 + pickle.NEWOBJ),
                                    "refusing the NEWOBJ opcode"),
    "NEWOBJ on numpy.ndarray": (_proto4(NDARRAY + pickle.EMPTY_TUPLE + pickle.NEWOBJ), "refusing the NEWOBJ opcode"),
    "NEWOBJ_EX on set": (_proto4(_stack_global("builtins", "set") + pickle.EMPTY_TUPLE + pickle.EMPTY_DICT
                                 + pickle.NEWOBJ_EX), "refusing the NEWOBJ_EX opcode"),
    "out-of-band buffer": (pickle.PROTO + b"\x05" + pickle.NEXT_BUFFER + pickle.STOP,
                           "refusing the NEXT_BUFFER opcode"),
    "readonly buffer": (_proto4(pickle.EMPTY_LIST + pickle.READONLY_BUFFER), "refusing the READONLY_BUFFER opcode"),
    "persistent id": (_proto4(_u("x") + pickle.BINPERSID), "refusing the BINPERSID opcode"),
    "persistent id, protocol 0": (pickle.PERSID + b"x\n" + pickle.STOP, "refusing the PERSID opcode"),
    "extension code": (_proto4(pickle.EXT1 + b"\x01"), "refusing the EXT1 opcode"),
}


@pytest.mark.parametrize("case", list(REFUSED_OPCODES))
def test_opcodes_info_files_never_need_are_refused(tmp_path: Path, sandbox, case: str):
    _, untouched = sandbox
    data, what = REFUSED_OPCODES[case]
    path = _write(tmp_path, data)
    with pytest.raises(UnsafeFileError, match=rf"{re.escape(str(path))}: not a readable info pickle: {what}"):
        safe_load_pickle(path)
    untouched()


STREAM_ERRORS = {
    "BUILD on an OrderedDict": (
        _proto4(_call(_stack_global("collections", "OrderedDict")) + pickle.EMPTY_DICT + _u("x") + _i(1)
                + pickle.SETITEM + pickle.BUILD), "__dict__"),
    "truncated frame": (_proto4(pickle.EMPTY_LIST)[:-1], "EOFError: the file ends before the pickle does"),
    "memo index out of range": (_proto4(pickle.BINGET + b"\x07"), "Memo value not found"),
    "huge memo index": (pickle.PROTO + b"\x02" + pickle.NONE + pickle.LONG_BINPUT + b"\xff\xff\xff\x7f" + pickle.STOP,
                        None),
}


@pytest.mark.parametrize("case", list(STREAM_ERRORS))
def test_broken_streams_fail_cleanly(tmp_path: Path, sandbox, case: str):
    _, untouched = sandbox
    data, what = STREAM_ERRORS[case]
    path = _write(tmp_path, data)
    if what is None:  # a memo index of 2**31 is fine in a dict (the C unpickler would size an array by it)
        assert safe_load_pickle(path) is None
    else:
        with pytest.raises(DataError, match=rf"{re.escape(str(path))}: not a readable info pickle .*{re.escape(what)}"):
            safe_load_pickle(path)
    untouched()


def test_the_allowed_globals_are_sealed_and_none_is_a_type():
    for key, value in safe_pickle._GLOBALS.items():
        assert not isinstance(value, type), key
        with pytest.raises(pickle.UnpicklingError):
            value.__setstate__({"fn": print})
        assert not hasattr(value, "__dict__"), key
    assert not callable(safe_pickle._GLOBALS[("numpy", "ndarray")])
    with pytest.raises(pickle.UnpicklingError):
        safe_pickle._GLOBALS[("numpy", "dtype")].fn = print


# ---- the stealth form: a payload in front of a real info file ------------------------------------------
def test_a_payload_prepended_to_a_real_info_file_is_refused(tmp_path: Path, sandbox, fixture_pkl: Path):
    marker, untouched = sandbox
    real = fixture_pkl.read_bytes()
    # The payload runs, its result is popped, and the real file follows: a plain pickle.load would run
    # the command and then return the real info dict, which loads and scores normally.
    payload = _proto4(_call(_stack_global("os", "system"), _u(f"touch {marker}")) + pickle.POP, stop=False)
    path = _write(tmp_path, payload + real)
    with pytest.raises(UnsafeFileError, match=rf"{re.escape(str(path))}: .*refusing to load os\.system"):
        load_infos(path)
    untouched()
    # The same splice with an allowed call loads as the real file: the refusal above is the global's.
    harmless = _proto4(_call(_stack_global("_codecs", "encode"), _u("x"), _u("latin1")) + pickle.POP, stop=False)
    spliced = tmp_path / "spliced.pkl"
    spliced.write_bytes(harmless + real)
    assert [s.token for s in load_infos(spliced)] == [s.token for s in load_infos(fixture_pkl)]


# ---- through the command line ---------------------------------------------------------------------------
def test_cli_evaluate_with_an_evil_info_file_fails_without_running_it(tmp_path: Path, sandbox, capsys):
    marker, _ = sandbox
    path = _write(tmp_path, _proto4(_call(_stack_global("os", "system"), _u(f"touch {marker}"))))
    (tmp_path / "pred").mkdir()
    (tmp_path / "gt").mkdir()
    before = _files(tmp_path)
    code = cli_main(["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "--infos", str(path)])
    err = capsys.readouterr().err
    assert code != 0
    assert str(path) in err and "refusing to load os.system" in err and "Traceback" not in err
    assert not marker.exists() and _files(tmp_path) == before


def test_cli_viz_with_evil_images_fails_without_running_it(tmp_path: Path, sandbox, occ3d_labels_path: Path, capsys):
    marker, _ = sandbox
    labels = tmp_path / "labels.npz"
    labels.write_bytes(occ3d_labels_path.read_bytes())
    path = _write(tmp_path, _proto2(_call(_global("builtins", "eval"), _u(f"open({str(marker)!r}, 'w').close()"))))
    before = _files(tmp_path)
    code = cli_main(["viz", str(labels), "--images", str(path), "--out", str(tmp_path / "viz")])
    err = capsys.readouterr().err
    assert code != 0
    assert str(path) in err and "refusing to load builtins.eval" in err and "Traceback" not in err
    assert not marker.exists() and not (tmp_path / "viz").exists() and _files(tmp_path) == before


# ---- real files still load exactly ----------------------------------------------------------------------
def _assert_same(got, want, where: str = "root") -> None:
    if isinstance(want, OrderedDict):
        want = dict(want)  # loaded as a plain dict (same order)
    if isinstance(want, np.ndarray):
        assert type(got) is np.ndarray, where
        assert got.shape == want.shape and got.dtype.newbyteorder("=") == want.dtype.newbyteorder("="), where
        assert got.dtype.isnative and got.flags.writeable, where
        if want.dtype.hasobject:
            for i, (a, b) in enumerate(zip(got.ravel(order="K"), want.ravel(order="K"))):
                _assert_same(a, b, f"{where}[{i}]")
        else:
            np.testing.assert_array_equal(got, want, err_msg=where)
        return
    assert type(got) is type(want), f"{where}: {type(got)} vs {type(want)}"
    if isinstance(want, dict):
        assert list(got) == list(want), where
        for key in want:
            _assert_same(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want), where
        for i, (a, b) in enumerate(zip(got, want)):
            _assert_same(a, b, f"{where}[{i}]")
    elif isinstance(want, float):
        assert got == want or (math.isnan(got) and math.isnan(want)), where
        assert math.copysign(1, got) == math.copysign(1, want), where
    else:
        assert got == want, where
        if isinstance(want, np.generic):
            assert got.dtype == want.dtype, where


def _check_payload(out: dict) -> None:
    _assert_same(out, _numpy_pickles.payload())
    assert out["fortran"].flags.f_contiguous
    assert out["shared"][0] is out["shared"][1]  # one array pickled twice stays one array
    assert isinstance(out["obj_nested"][0], np.ndarray)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_numpy2_pickles_of_every_info_dtype_load_exactly(protocol: int):
    _check_payload(safe_pickle.restricted_loads(pickle.dumps(_numpy_pickles.payload(), protocol=protocol)))


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_numpy1_pickles_of_every_info_dtype_load_exactly(protocol: int):
    _check_payload(safe_pickle.restricted_loads(_numpy_pickles.load(f"payload_p{protocol}")))


def test_numpy1_bevdet_info_file_loads(tmp_path: Path):
    path = tmp_path / "bevdetv2-nuscenes_infos_val.pkl"
    path.write_bytes(_numpy_pickles.load("bevdet_p2"))
    raw = safe_load_pickle(path)
    _assert_same(raw, _numpy_pickles.bevdet_infos())
    [sample] = load_infos(path)
    assert sample.token == "bevdet0token" and sorted(sample.cams) == sorted(_numpy_pickles.CAMERAS)
    np.testing.assert_array_equal(sample.cams["CAM_FRONT"].intrinsics,
                                  _numpy_pickles.bevdet_infos()["infos"][0]["cams"]["CAM_FRONT"]["cam_intrinsic"])
    assert sample.occ_path == "gts/scene-0003/bevdet0token"


def test_the_mmdet3d_fixture_loads_as_plain_pickle_does(fixture_pkl: Path):
    data = fixture_pkl.read_bytes()
    _assert_same(safe_load_pickle(fixture_pkl), pickle.loads(data))  # the fixture is trusted: plain load as reference
