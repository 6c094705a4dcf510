"""Read info pickles from anywhere without running their code.

A pickle is a program: each global it names is imported and may be called with arguments the file
chooses. ``pickle.Unpickler.find_class`` resolves dotted names (``numpy`` + ``lib.npyio.DataSource``)
under protocol >= 4, and whole modules such as ``numpy.dtypes`` reach loaders that write and import
files, so a check on the module name alone is walked around easily.

Here nothing is imported by name. ``_GLOBALS`` maps the exact (module, name) pairs that numpy 1.x and
2.x and the standard pickler write for arrays, dtypes, scalars and plain containers (protocols 2 to
5) to small functions of our own that check their arguments and build the value from scratch
(``np.frombuffer`` / ``np.empty`` of a dtype made from a plain type code). numpy's own
``_reconstruct``, ``dtype.__setstate__`` and ``ndarray.__setstate__`` never see the file's data, so
the guarantee does not depend on how numpy validates it. Anything else is refused before it exists.

Arrays and dtypes come in two steps (a call, then ``BUILD`` with the state), and the unpickler keeps
(and memoizes) the object the call returned; so the calls return placeholders (``_ArrayRecipe``,
``_DTypeRecipe``) that check and build the value on ``BUILD``, and ``_finish`` swaps them for their
values in the loaded tree. Arrays come back writable and in native byte order; datetime, structured
and ``StringDType`` arrays (which no info file holds) are refused. Opcodes that need a class, a
persistent-id callback, the copyreg extension registry or out-of-band buffers are refused too.
"""
from __future__ import annotations

import gc
import io
import math
import pickle
import re
import sys

import numpy as np


class RefusedPickle(pickle.UnpicklingError):
    """The stream asks for a global, or for arguments to an allowed one, that plain data never needs."""


class _Sealed:
    """Objects the stream can reach but never change: ``BUILD`` on them is refused (and they have no ``__dict__``)."""

    __slots__ = ()

    def __setstate__(self, state) -> None:
        raise RefusedPickle(f"BUILD on {self!r}: it takes no state")


class _Allowed(_Sealed):
    """What ``find_class`` hands out for an allowed global: our checking function, under the global's name."""

    __slots__ = ("name", "fn")

    def __init__(self, name: str, fn):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "fn", fn)

    def __setattr__(self, key, value):
        raise RefusedPickle(f"setting {key!r} on {self.name}")

    def __call__(self, *args):
        return self.fn(*args)

    def __repr__(self) -> str:
        return self.name


class _NdarrayToken(_Sealed):
    """Stands for ``numpy.ndarray``: only ``_reconstruct`` accepts it, and it cannot be called."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "numpy.ndarray"


_NDARRAY = _NdarrayToken()


class _Recipe(_Sealed):
    """A numpy value under construction; ``_finish`` puts ``value`` in its place. Plain recipes take no BUILD
    (a real ndarray or scalar on the stack would hand BUILD to numpy's own ``__setstate__``)."""

    __slots__ = ("value",)

    def __init__(self, value=None):
        self.value = value

    def __repr__(self) -> str:
        return f"numpy {type(self.value).__name__}"


# Type codes numpy writes in dtype pickles (``dtype('f8').__reduce__()`` -> ('f8', False, True)),
# numeric and bool; ``S<n>``/``U<n>`` text and ``O8`` objects are handled beside them.
_NUMERIC_CODES = frozenset({"b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16"})
_TEXT_CODE = re.compile(r"([SU])(\d{1,9})")
_ENDIANS = frozenset({"<", ">", "|", "="})
_FOREIGN = ">" if sys.byteorder == "little" else "<"


class _DTypeRecipe(_Recipe):
    """A dtype from its type code; ``BUILD`` may only set the byte order (the rest of the state must be plain)."""

    __slots__ = ("code", "built")

    def __init__(self, code: str):
        super().__init__(np.dtype("O" if code.startswith("O") else code))
        self.code, self.built = code, False

    def __setstate__(self, state) -> None:
        # (3, endian, subarray, names, fields, elsize, alignment, flags) as numpy 1.x and 2.x write it.
        if self.built:
            raise RefusedPickle("numpy.dtype: a second BUILD on one dtype")
        if not (type(state) is tuple and len(state) == 8 and state[0] == 3 and state[1] in _ENDIANS
                and state[2:5] == (None, None, None) and all(type(v) is int for v in state[5:])):
            raise RefusedPickle(f"numpy.dtype({self.code!r}) with state {_short(state)}: only the plain state of a "
                                "numeric, text or object dtype (no fields, sub-arrays or metadata) is accepted")
        if _TEXT_CODE.fullmatch(self.code) and state[5] != self.value.itemsize:
            raise RefusedPickle(f"numpy.dtype({self.code!r}) with item size {state[5]}, expected {self.value.itemsize}")
        self.built = True
        if state[1] == _FOREIGN and self.value.itemsize > 1 and self.code[0] not in "OS":
            self.value = self.value.newbyteorder(state[1])


class _ArrayRecipe(_Recipe):
    """An array from ``_reconstruct`` + ``BUILD (1, shape, dtype, is_fortran, data)``; built on BUILD."""

    __slots__ = ()

    def __setstate__(self, state) -> None:
        if self.value is not None:
            raise RefusedPickle("numpy.ndarray: a second BUILD on one array")
        if not (type(state) is tuple and len(state) == 5 and state[0] == 1 and type(state[3]) is bool):
            raise RefusedPickle(f"numpy.ndarray state {_short(state)}: expected (1, shape, dtype, is_fortran, data)")
        _, shape, dtype, fortran, data = state
        self.value = _array(_shape(shape), _dtype(dtype), data, "F" if fortran else "C")


def _short(value, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _shape(shape) -> tuple[int, ...]:
    if type(shape) is tuple and len(shape) <= 32:
        for n in shape:
            if type(n) is not int or n < 0:
                break
        else:
            return shape
    raise RefusedPickle(f"array shape {_short(shape)}: expected a tuple of at most 32 non-negative ints")


def _dtype(dtype) -> np.dtype:
    if type(dtype) is not _DTypeRecipe:
        raise RefusedPickle(f"array dtype {_short(dtype)}: expected a numpy.dtype from the same file")
    return dtype.value


def _array(shape: tuple[int, ...], dtype: np.dtype, data, order: str) -> np.ndarray:
    """The array of ``shape`` whose elements (in ``order``) are ``data``: raw bytes, or a list for objects."""
    count = math.prod(shape)
    if dtype.hasobject:
        if type(data) is not list or len(data) != count:
            raise RefusedPickle(f"object array of shape {shape}: expected a list of {count} items, found "
                                f"{type(data).__name__}")
        flat = np.empty(count, dtype)
        for i, item in enumerate(data):  # item by item: a list item must stay one element
            flat[i] = item
        return flat.reshape(shape, order=order)
    if type(data) not in (bytes, bytearray) or len(data) != count * dtype.itemsize:
        raise RefusedPickle(f"{dtype} array of shape {shape}: expected {count * dtype.itemsize} bytes of data, "
                            f"found {type(data).__name__} of length {len(data) if hasattr(data, '__len__') else '?'}")
    if count == 0 or dtype.itemsize == 0:
        return np.zeros(shape, dtype, order=order)
    out = np.frombuffer(data, dtype, count=count).reshape(shape, order=order)
    if not dtype.isnative:  # as numpy's own protocol-2 loads do; torch takes only native byte order
        return out.astype(dtype.newbyteorder("="), order="K")
    return out if type(data) is bytearray else out.copy(order="K")  # bytes are read-only; numpy's copy is writable


# ---- the allowed callables: each checks its arguments, then builds the value itself -----------------
def _reconstruct(*args) -> _ArrayRecipe:
    # numpy writes _reconstruct(ndarray, (0,), b'b') and then BUILD with the real shape and data.
    if len(args) != 3 or args[0] is not _NDARRAY or args[1] != (0,) or args[2] not in (b"b", "b"):
        raise RefusedPickle(f"numpy _reconstruct{_short(args)}: only _reconstruct(numpy.ndarray, (0,), b'b') "
                            "is accepted")
    return _ArrayRecipe()


def _frombuffer(*args) -> _Recipe:
    # Protocol 5: _frombuffer(buffer, dtype, shape, order), the buffer in-band as bytes or bytearray.
    if len(args) != 4 or args[3] not in ("C", "F"):
        raise RefusedPickle(f"numpy _frombuffer{_short(args)}: expected (buffer, dtype, shape, 'C' or 'F')")
    dtype = _dtype(args[1])
    if dtype.hasobject:
        raise RefusedPickle("numpy _frombuffer with an object dtype")
    return _Recipe(_array(_shape(args[2]), dtype, args[0], args[3]))


def _scalar(*args) -> _Recipe:
    # scalar(dtype, raw bytes of one item): np.float64, np.int64, np.bool_, np.str_ ...
    if len(args) != 2:
        raise RefusedPickle(f"numpy scalar{_short(args)}: expected (dtype, bytes)")
    dtype = _dtype(args[0])
    if dtype.hasobject:
        raise RefusedPickle("numpy scalar with an object dtype")
    return _Recipe(_array((), dtype, args[1], "C")[()])


def _make_dtype(*args) -> _DTypeRecipe:
    # dtype(code, align=False, copy=True), as dtype.__reduce__ writes it.
    code = args[0] if args else None
    plain = type(code) is str and (code in _NUMERIC_CODES or code in ("O8", "O4") or _TEXT_CODE.fullmatch(code))
    if not (len(args) == 3 and plain and args[1] is False and args[2] is True):
        raise RefusedPickle(f"numpy.dtype{_short(args)}: only a plain type code (e.g. 'f8', 'i8', 'b1', 'U10', "
                            "'O8') with (False, True) is accepted")
    return _DTypeRecipe(code)


def _encode(*args) -> bytes:
    # Protocol 2 stores bytes as _codecs.encode(text, 'latin1').
    if len(args) != 2 or type(args[0]) is not str or args[1] not in ("latin1", "latin-1"):
        raise RefusedPickle(f"_codecs.encode{_short(args)}: only encode(str, 'latin1') is accepted")
    return args[0].encode("latin-1")


def _empty_bytes(*args) -> bytes:
    if args:  # protocol 2 rebuilds only b'' through bytes(); data goes through _codecs.encode
        raise RefusedPickle(f"bytes{_short(args)}: only bytes() is accepted")
    return b""


def _container(kind: type):
    def make(*args):
        if len(args) > 1 or (args and type(args[0]) is not list):
            raise RefusedPickle(f"{kind.__name__}{_short(args)}: expected no argument or one list")
        return kind(args[0]) if args else kind()
    return make


def _ordered_dict(*args) -> dict:
    # OrderedDict pickles as OrderedDict() + SETITEMS; a plain dict keeps the order and takes no BUILD.
    if args:
        raise RefusedPickle(f"collections.OrderedDict{_short(args)}: expected no argument")
    return {}


_CHECKED = {
    ("numpy", "dtype"): _make_dtype,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,    # numpy 1.x
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,   # numpy 2.x
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("numpy._core.multiarray", "scalar"): _scalar,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("_codecs", "encode"): _encode,
    ("builtins", "bytes"): _empty_bytes, ("__builtin__", "bytes"): _empty_bytes,  # __builtin__: protocol 2
    ("builtins", "set"): _container(set), ("__builtin__", "set"): _container(set),
    ("builtins", "frozenset"): _container(frozenset), ("__builtin__", "frozenset"): _container(frozenset),
    ("collections", "OrderedDict"): _ordered_dict,
}
_GLOBALS: dict[tuple[str, str], _Sealed] = {
    ("numpy", "ndarray"): _NDARRAY, **{key: _Allowed(".".join(key), fn) for key, fn in _CHECKED.items()}}

# Values that hold nothing to swap: the walk in _finish skips them without a call.
_LEAVES = frozenset({str, bytes, bytearray, int, float, bool, type(None)}
                    | {t for t in np.sctypeDict.values() if t not in (np.object_, np.void)})


class _Unpickler(pickle._Unpickler):
    # The pure-Python unpickler (about 2.5x slower than the C one): the C unpickler keeps its memo in an
    # array sized by the largest index seen, so one flipped byte in a LONG_BINPUT index makes it allocate
    # and zero up to 32 GB before failing; the Python one keeps a dict.
    def find_class(self, module: str, name: str):
        found = _GLOBALS.get((module, name))
        if found is None:
            raise RefusedPickle(f"refusing to load {module}.{name}: info files may only hold numpy arrays and "
                                "plain containers")
        return found

    dispatch = dict(pickle._Unpickler.dispatch)


def _refuse(opcode: str):
    def load(self) -> None:
        raise RefusedPickle(f"refusing the {opcode} opcode: info files never need it")
    return load


# Opcodes that need a class (nothing find_class hands out is one), a callback or a buffer we never give.
for _opcode in ("NEWOBJ", "NEWOBJ_EX", "PERSID", "BINPERSID", "EXT1", "EXT2", "EXT4", "NEXT_BUFFER", "READONLY_BUFFER"):
    _Unpickler.dispatch[getattr(pickle, _opcode)[0]] = _refuse(_opcode)


def _finish(obj):
    """Swap every placeholder in the loaded tree for the array or dtype it built (sharing is kept)."""
    done: dict[int, tuple[object, object]] = {}  # id -> (original, replacement); holding the original keeps ids unique

    def walk(x):
        kind = type(x)
        if kind in _LEAVES:
            return x
        hit = done.get(id(x))
        if hit is not None:
            return hit[1]
        if kind is list:
            done[id(x)] = (x, x)
            for i, item in enumerate(x):
                if type(item) not in _LEAVES:
                    new = walk(item)
                    if new is not item:
                        x[i] = new
            return x
        if kind is dict:
            done[id(x)] = (x, x)
            rekey = False
            for key, value in x.items():  # replacing values keeps the size, so iterating stays valid
                if type(value) not in _LEAVES:
                    new = walk(value)
                    if new is not value:
                        x[key] = new
                rekey = rekey or (type(key) not in _LEAVES and walk(key) is not key)
            if rekey:
                items = [(walk(k), v) for k, v in x.items()]
                x.clear()
                x.update(items)
            return x
        if kind in (tuple, set, frozenset):
            if kind is set:
                done[id(x)] = (x, x)
            items = [item if type(item) in _LEAVES else walk(item) for item in x]
            if all(a is b for a, b in zip(items, x)):
                out = x
            elif kind is set:
                x.clear()
                x.update(items)
                out = x
            else:
                out = kind(items)
            done[id(x)] = (x, out)
            return out
        if kind in _RECIPES:
            if x.value is None:
                raise RefusedPickle("a numpy array without its data (no BUILD after _reconstruct)")
            done[id(x)] = (x, x.value)
            return walk(x.value)
        if kind is np.ndarray:
            done[id(x)] = (x, x)
            if x.dtype.hasobject:
                flat = x.reshape(-1, order="A")  # a view: the arrays built here are contiguous
                for i, item in enumerate(flat):
                    if type(item) not in _LEAVES:
                        new = walk(item)
                        if new is not item:
                            flat[i] = new
            return x
        if isinstance(x, (np.generic, np.dtype)):
            return x
        raise RefusedPickle(f"a {kind.__name__} object ({_short(x, 60)}) where info files hold only data")

    return walk(obj)


_RECIPES = frozenset({_Recipe, _ArrayRecipe, _DTypeRecipe})


def restricted_loads(data: bytes):
    """Unpickle ``data`` allowing only numpy arrays, dtypes, scalars and plain containers.

    Raises ``RefusedPickle`` for anything else, before it is built; other errors are those of a corrupt
    stream (``UnpicklingError``, ``EOFError``, ``ValueError``, ...).
    """
    enabled = gc.isenabled()
    gc.disable()  # the load and the walk make millions of objects; each collection would rescan them all
    try:
        return _finish(_Unpickler(io.BytesIO(data)).load())
    finally:
        if enabled:
            gc.enable()
