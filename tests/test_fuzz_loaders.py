"""Fuzzing every file loader with mutated inputs (fixed seeds, so a failure reproduces).

Info pickles, ``labels.npz`` archives, checkpoints and YAML run configs are truncated, bit-flipped,
given fields of the wrong type, replaced by hand-assembled opcode streams or by valid files of the
wrong structure. For every case the loader must either load, or raise a ``FlashOccError`` whose
message holds the file's path: never another exception type, and never a side effect (no file
appears anywhere in the folder besides the inputs).
"""
from __future__ import annotations

import copy
import os
import pickle
import random
import struct
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from flashocc.config import load_run_config
from flashocc.data.infos import load_infos, safe_load_pickle, save_infos
from flashocc.data.occ3d import load_labels
from flashocc.engine.checkpoint import load_checkpoint, read_state_dict
from flashocc.errors import FlashOccError
from flashocc.grid import OccGrid
from flashocc.metrics.evaluate import load_ground_truth, load_prediction

sys.path.insert(0, str(Path(__file__).parent / "data"))
import _numpy_pickles  # noqa: E402  (numpy 1.x info pickles)

SMALL = OccGrid(lower=(-1.6, -1.6, -1.0), upper=(1.6, 1.6, 0.6), voxel_size=(0.4, 0.4, 0.4))  # (8, 8, 4): fast
Case = tuple[str, bytes]


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _run(root: Path, cases: list[Case], suffix: str, load: Callable[[Path], object]) -> list[str]:
    """Feed every case to ``load``; return a line per case that broke the contract (empty: all good)."""
    marker = root / "pwned"
    inputs = root / "inputs"
    inputs.mkdir(exist_ok=True)
    bad = []
    for i, (name, data) in enumerate(cases):
        path = inputs / f"{i:04d}_{name}{suffix}"
        path.write_bytes(data)
        before = _files(root)
        try:
            load(path)
        except FlashOccError as exc:
            if str(path) not in str(exc):
                bad.append(f"{path.name}: {type(exc).__name__} without the path: {str(exc)[:200]}")
        except Exception as exc:  # a library's exception reached the user: the contract is broken
            bad.append(f"{path.name}: {type(exc).__module__}.{type(exc).__name__}: {str(exc)[:200]}")
        if _files(root) != before or marker.exists():
            bad.append(f"{path.name}: side effect {sorted(_files(root) - before)}")
        path.unlink()
    return bad


def _truncations(rng: random.Random, name: str, data: bytes, count: int) -> Iterator[Case]:
    cuts = {0, 1, 2, len(data) // 2, len(data) - 1} | set(rng.sample(range(len(data)), min(count, len(data))))
    for cut in sorted(cuts):
        yield f"{name}_cut{cut}", data[:cut]


def _bit_flips(rng: random.Random, name: str, data: bytes, count: int, lo: int = 0, hi: int | None = None
               ) -> Iterator[Case]:
    hi = len(data) if hi is None else hi
    for k in range(count):
        out = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            out[rng.randrange(lo, hi)] ^= 1 << rng.randrange(8)
        yield f"{name}_flip{k}", bytes(out)


# ---- info files -------------------------------------------------------------------------------------
WRONG_VALUES = [None, 7, -1.5, float("nan"), float("inf"), 10 ** 30, True, "text", b"bytes", [], {}, [1, 2],
                np.array(["a", "b"]), np.full((4, 4), np.nan), np.zeros((4, 4)), np.zeros((3, 3)),
                np.zeros(3, dtype=object), np.eye(4, dtype=np.complex128), "<delete>"]


def _field_paths(obj, prefix=(), depth: int = 0) -> Iterator[tuple]:
    """Paths to the values of a record (into dicts, and the first item of lists), to be replaced."""
    if depth > 4:
        return
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield prefix + (key,)
            yield from _field_paths(value, prefix + (key,), depth + 1)
    elif isinstance(obj, list) and obj:
        yield prefix + (0,)
        yield from _field_paths(obj[0], prefix + (0,), depth + 1)


def _replace(payload, path: tuple, value):
    out = copy.deepcopy(payload)
    node = out
    for key in path[:-1]:
        node = node[key]
    if isinstance(value, str) and value == "<delete>":
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return out


def _wrong_types(rng: random.Random, name: str, payload: dict, records_key: str, fields: int, per_field: int
                 ) -> Iterator[Case]:
    paths = list(_field_paths(payload[records_key][0]))
    for path in rng.sample(paths, min(fields, len(paths))):
        for value in rng.sample(WRONG_VALUES, per_field):
            label = "-".join(map(str, path))[:40].replace("/", "_")
            data = pickle.dumps(_replace(payload, (records_key, 0) + path, value), protocol=rng.choice([2, 4, 5]))
            yield f"{name}_{label}", data


def _u(text: str) -> bytes:
    raw = text.encode()
    return pickle.SHORT_BINUNICODE + bytes([len(raw)]) + raw


GLOBALS = [("numpy", "dtype"), ("numpy", "ndarray"), ("numpy._core.multiarray", "_reconstruct"),
           ("numpy.core.multiarray", "scalar"), ("numpy._core.numeric", "_frombuffer"), ("_codecs", "encode"),
           ("builtins", "set"), ("collections", "OrderedDict"), ("__builtin__", "bytes"),
           ("os", "system"), ("builtins", "eval"), ("numpy", "lib.npyio.DataSource"), ("numpy.dtypes", "StringDType")]


def _random_stream(rng: random.Random, marker: Path) -> bytes:
    """A random program over pickle's opcodes, its globals drawn from the allowed ones and a few evil ones."""
    texts = ["f8", "O8", "U3", "b", "latin1", "C", "F", f"touch {marker}", f"open({str(marker)!r}, 'w')", "x"]
    simple = [pickle.MARK, pickle.POP, pickle.DUP, pickle.EMPTY_LIST, pickle.EMPTY_DICT, pickle.EMPTY_TUPLE,
              pickle.APPEND, pickle.APPENDS, pickle.SETITEM, pickle.SETITEMS, pickle.TUPLE, pickle.TUPLE1,
              pickle.TUPLE2, pickle.TUPLE3, pickle.NONE, pickle.NEWTRUE, pickle.NEWFALSE, pickle.BUILD,
              pickle.REDUCE, pickle.NEWOBJ, pickle.OBJ, pickle.MEMOIZE, pickle.EMPTY_SET, pickle.ADDITEMS,
              pickle.FROZENSET, pickle.LIST, pickle.DICT, pickle.STOP]
    out = bytearray(pickle.PROTO + bytes([rng.choice([2, 4, 5])]))
    for _ in range(rng.randint(3, 40)):
        roll = rng.random()
        if roll < 0.25:
            module, name = rng.choice(GLOBALS)
            out += _u(module) + _u(name) + pickle.STACK_GLOBAL
        elif roll < 0.4:
            out += _u(rng.choice(texts))
        elif roll < 0.5:
            out += pickle.BININT1 + bytes([rng.randrange(256)])
        elif roll < 0.55:
            out += pickle.BININT + struct.pack("<i", rng.randint(-2 ** 31, 2 ** 31 - 1))
        elif roll < 0.62:
            raw = bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 8, 16])))
            out += pickle.SHORT_BINBYTES + bytes([len(raw)]) + raw
        elif roll < 0.66:
            out += pickle.BINGET + bytes([rng.randrange(4)])
        else:
            out += rng.choice(simple)
    return bytes(out + pickle.STOP)


def _wrong_structures() -> Iterator[Case]:
    # 100000 lists, each appended to the one before: nesting deeper than pickle.dumps (or a recursive walk) goes
    yield "deep_nesting", pickle.PROTO + b"\x04" + pickle.EMPTY_LIST * 100_000 + pickle.APPEND * 99_999 + pickle.STOP
    yield "deep_nesting_in_infos", (pickle.PROTO + b"\x04" + pickle.EMPTY_DICT + _u("infos") + pickle.EMPTY_LIST * 5000
                                    + pickle.APPEND * 4999 + pickle.SETITEM + pickle.STOP)
    loop: list = []
    loop.append(loop)
    ours = {"format": "flashocc-infos", "version": 1}
    for k, value in enumerate([
        [], {}, "infos", 3, None, {"infos": None}, {"infos": [1]}, {"infos": [[]]}, {"infos": {"a": 1}},
        {"data_list": {}}, {"data_list": [None]}, {"metainfo": {}, "data_list": [{"token": "t"}]},
        {**ours, "samples": [{"token": "x"}]}, {**ours, "samples": None}, {**ours, "version": "1", "samples": []},
        {**ours, "samples": [{"token": "x", "cams": []}]}, {"infos": [{"token": ["list"], "cams": {}}]},
        {"infos": [{"token": "t", "cams": {"CAM_FRONT": []}}]}, loop, {"infos": loop},
        {frozenset({1}): {1, 2}}, {"infos": [{"timestamp": 2 ** 80}]}, np.zeros(3), {"data_list": np.zeros(2)},
    ]):
        yield f"structure{k}", pickle.dumps(value, protocol=4 if k % 2 else 2)


@pytest.fixture(scope="module")
def info_bases(nuscenes_sample_dir: Path, tmp_path_factory) -> dict[str, tuple[bytes, dict, str]]:
    """name -> (file bytes, trusted payload, key of the record list)."""
    fixture_pkl = nuscenes_sample_dir / "n015-2018-07-24-11-22-45+0800.pkl"
    ours_path = save_infos(load_infos(fixture_pkl), tmp_path_factory.mktemp("ours") / "ours.pkl")
    bevdet1 = _numpy_pickles.load("bevdet_p2")
    bevdet = _numpy_pickles.bevdet_infos()
    return {
        "mmdet3d": (fixture_pkl.read_bytes(), safe_load_pickle(fixture_pkl), "data_list"),
        "ours": (ours_path.read_bytes(), safe_load_pickle(ours_path), "samples"),
        "bevdet_np1": (bevdet1, bevdet, "infos"),
        "bevdet_p5": (pickle.dumps(bevdet, protocol=5), bevdet, "infos"),
    }


def test_fuzz_info_files(tmp_path: Path, info_bases):
    rng = random.Random(1401)
    cases: list[Case] = []
    for name, (data, payload, key) in info_bases.items():
        big = name == "mmdet3d"  # 59 kB and ~190 fields: sample fewer of its cases, it is the slowest to load
        cases += _truncations(rng, name, data, 20 if big else 30)
        cases += _bit_flips(rng, name, data, 30 if big else 50)
        cases += _wrong_types(rng, name, payload, key, fields=50 if big else 120, per_field=1 if big else 2)
    cases += [(f"opcodes{k}", _random_stream(rng, tmp_path / "pwned")) for k in range(400)]
    cases += _wrong_structures()
    assert len(cases) > 900
    bad = _run(tmp_path, cases, ".pkl", load_infos)
    assert not bad, f"{len(bad)} of {len(cases)} cases broke the contract:\n" + "\n".join(bad[:40])


# ---- labels.npz ---------------------------------------------------------------------------------------
def _npz(compressed: bool = True, **arrays) -> bytes:
    import io

    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return buf.getvalue()


def _labels(rng: np.random.Generator) -> dict[str, np.ndarray]:
    shape = SMALL.shape
    return {"semantics": rng.integers(0, 18, shape, dtype=np.uint8), "mask_lidar": np.ones(shape, np.uint8),
            "mask_camera": (rng.random(shape) < 0.5).astype(np.uint8)}


def _label_cases(rng: random.Random) -> Iterator[Case]:
    nrng = np.random.default_rng(7)
    good = _labels(nrng)
    for compressed in (True, False):
        data = _npz(compressed, **good)
        name = "deflate" if compressed else "stored"
        central = data.rindex(b"PK\x01\x02")
        first_member = data.index(b".npy") + 4
        yield f"{name}_good", data
        yield from _truncations(rng, name, data, 20)
        yield from _bit_flips(rng, f"{name}_header", data, 20, 0, first_member + 80)  # local header + .npy header
        yield from _bit_flips(rng, f"{name}_data", data, 30, first_member + 80, central)  # the (deflate) stream
        yield from _bit_flips(rng, f"{name}_central", data, 20, central)  # central directory
    for dtype in (np.int64, np.float32, np.bool_, np.int8, np.uint16, np.float64):
        for key in good:
            yield f"dtype_{key}_{np.dtype(dtype).name}", _npz(**{**good, key: good[key].astype(dtype)})
    for shape in [(8, 8), (8, 8, 2), (0,), (1, 8, 8, 4), (4, 8, 8), ()]:
        yield f"shape{len(shape)}_{shape[0] if shape else 0}", _npz(**{**good, "semantics": np.zeros(shape, np.uint8)})
    for key in good:
        yield f"missing_{key}", _npz(**{k: v for k, v in good.items() if k != key})
        yield f"object_{key}", _npz(**{**good, key: np.array([{"a": 1}, None], dtype=object)})
    yield "no_keys", _npz(other=np.zeros(3))
    yield "extra_member", _npz(**good, junk=np.array([{"b": 2}], dtype=object))
    yield "label_18", _npz(**{**good, "semantics": np.full(SMALL.shape, 18, np.uint8)})
    yield "mask_2", _npz(**{**good, "mask_camera": np.full(SMALL.shape, 2, np.uint8)})
    yield "pred_only", _npz(pred=good["semantics"])
    yield "not_a_zip", b"\x93NUMPY\x01\x00" + bytes(40)
    yield "pickle", pickle.dumps(good)
    yield "empty", b""


@pytest.mark.parametrize("loader", ["load_labels", "load_prediction", "load_ground_truth"])
def test_fuzz_labels_npz(tmp_path: Path, loader: str):
    load = {"load_labels": lambda p: load_labels(p, "tok", SMALL),
            "load_prediction": lambda p: load_prediction(p, SMALL),
            "load_ground_truth": lambda p: load_ground_truth(p, SMALL)}[loader]
    cases = list(_label_cases(random.Random(2024)))
    assert len(cases) > 200
    bad = _run(tmp_path, cases, ".npz", load)
    assert not bad, f"{len(bad)} of {len(cases)} cases broke the contract:\n" + "\n".join(bad[:40])


# ---- checkpoints ------------------------------------------------------------------------------------
class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 4)
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))


class _Touch:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _torch_bytes(obj, legacy: bool = False) -> bytes:
    import io

    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


def _checkpoint_cases(rng: random.Random, marker: Path) -> Iterator[Case]:
    torch.manual_seed(0)
    state = _Tiny().state_dict()
    for legacy in (False, True):
        name = "legacy" if legacy else "zip"
        data = _torch_bytes({"state_dict": state, "meta": {"epoch": 3}}, legacy)
        yield f"{name}_good", data
        yield from _truncations(rng, name, data, 30)
        yield from _bit_flips(rng, name, data, 60)
        yield f"{name}_refused_global", _torch_bytes({"state_dict": state, "hook": _Touch(marker)}, legacy)
    payloads = [[1, 2], 3, "text", torch.zeros(2), {"optimizer": {}}, {"state_dict": [torch.zeros(1)]},
                {1: torch.zeros(1)}, {"a.weight": "x"}, {"state_dict": {"a.weight": torch.zeros(4, 3)}},
                {"state_dict": {**state, "a.weight": torch.zeros(2, 2)}}, {"model": {**state, "extra": torch.ones(1)}},
                {}, None]
    for k, payload in enumerate(payloads):
        yield f"payload{k}", _torch_bytes(payload)
    yield "plain_pickle", pickle.dumps({"state_dict": {}}, protocol=2)
    yield "garbage", bytes(rng.randrange(256) for _ in range(300))


@pytest.mark.filterwarnings("ignore::UserWarning")  # torch notes pickle protocols it did not write
def test_fuzz_checkpoints(tmp_path: Path):
    cases = list(_checkpoint_cases(random.Random(77), tmp_path / "pwned"))
    assert len(cases) > 200

    def load(path: Path) -> None:
        read_state_dict(path)
        load_checkpoint(_Tiny(), path)

    bad = _run(tmp_path, cases, ".pth", load)
    assert not bad, f"{len(bad)} of {len(cases)} cases broke the contract:\n" + "\n".join(bad[:40])


# ---- YAML run configs ----------------------------------------------------------------------------------
def _yaml_cases(rng: random.Random, marker: Path) -> Iterator[Case]:
    texts = {
        "valid": "preset: flashocc-tiny\n",
        "valid_override": "preset: flashocc-tiny\ntrain:\n  lr: 0.0002\n",
        "empty": "",
        "syntax_bracket": "preset: flashocc-tiny\ntrain: [1, 2\n",
        "syntax_colons": "preset: : :\n",
        "syntax_tab": "preset: flashocc-tiny\ntrain:\n\t lr: 1\n",
        "syntax_quote": "preset: 'flashocc-tiny\n",
        "duplicate_anchor": "a: *missing\n",
        "non_mapping_list": "- preset\n- flashocc-tiny\n",
        "non_mapping_text": "just some text\n",
        "non_mapping_number": "42\n",
        "preset_number": "preset: 5\n",
        "preset_list": "preset: [flashocc-tiny]\n",
        "preset_unknown": "preset: no-such-model\n",
        "no_preset": "train:\n  lr: 0.1\n",
        "section_scalar": "preset: flashocc-tiny\ntrain: 5\n",
        "lr_text": "preset: flashocc-tiny\ntrain:\n  lr: fast\n",
        "lr_negative": "preset: flashocc-tiny\ntrain:\n  lr: -1.0\n",
        "epochs_list": "preset: flashocc-tiny\ntrain:\n  max_epochs: [1]\n",
        "epochs_float": "preset: flashocc-tiny\ntrain:\n  max_epochs: 2.5\n",
        "unknown_key": "preset: flashocc-tiny\nbogus: 1\n",
        "unknown_nested": "preset: flashocc-tiny\ntrain:\n  bogus: 1\n",
        "model_scalar": "model: 5\n",
        "int_key": "preset: flashocc-tiny\n1: 2\n",
        "null_section": "preset: flashocc-tiny\ntrain: null\n",
        "tag_apply": f"!!python/object/apply:os.system ['touch {marker}']\n",
        "tag_in_value": f"preset: !!python/object/apply:os.system ['touch {marker}']\n",
        "tag_object": "preset: flashocc-tiny\ntrain: !!python/object:collections.OrderedDict {}\n",
        "tag_name": "preset: !!python/name:os.system\n",
        "tag_unknown": "preset: !mytag flashocc-tiny\n",
        "aliases": "a: &x [1, 2]\nb: *x\npreset: flashocc-tiny\n",
        "deep": "preset: flashocc-tiny\ntrain: " + "[" * 500 + "]" * 500 + "\n",
    }
    for name, text in texts.items():
        yield name, text.encode()
    yield "bom_utf16", "preset: flashocc-tiny\n".encode("utf-16")
    yield "latin1", "preset: flashocc-tiny # caf\xe9\n".encode("latin-1")
    for k in range(15):
        yield f"garbage{k}", bytes(rng.randrange(256) for _ in range(rng.randint(1, 200)))
    base = texts["valid_override"].encode()
    yield from _bit_flips(rng, "flipped", base, 20)


def test_fuzz_yaml_run_configs(tmp_path: Path):
    cases = list(_yaml_cases(random.Random(5), tmp_path / "pwned"))
    bad = _run(tmp_path, cases, ".yaml", lambda p: load_run_config(str(p)))
    assert not bad, f"{len(bad)} of {len(cases)} cases broke the contract:\n" + "\n".join(bad[:40])
