"""A disk cache of ground-truth ray casts, so that scoring another checkpoint on the same split casts
only the predictions (``RayIoU(cache=...)``, ``flashocc evaluate --cache``).

A ground-truth cast depends on the GT label volume, the sample's ray origins and the ray set (the
LiDAR directions, the grid, the traversal's step limit), never on the prediction. An entry is keyed
by the SHA-256 of all of these, so a changed label file, other origins (another info file) or another
grid is a different key, never a stale hit. It holds, for the K x R rays of the sample, which rays
hit an occupied GT voxel (only those are scored) and, for those, the hit's class and its distance
exactly as ``RayIoU`` computes it (float32 metres), so a hit gives bit-identical scores.

Files: ``<root>/<key[:2]>/<key>.gtrays``, about 0.42 MB per sample with 8 origins (Occ3D val, 6,019
samples: about 2.5 GB). They are written atomically (``flashocc.atomic.atomic_write``) and carry a
CRC-32, so a torn, truncated, foreign or corrupted file is a miss (cast again and rewritten), never a
wrong score or a crash. The cache stays under ``max_bytes`` (default 4 GB) by deleting the entries
used longest ago. A cache folder that cannot be written only turns the cache off, with a warning.
"""
from __future__ import annotations

import hashlib
import logging
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flashocc.atomic import atomic_write
from flashocc.errors import OutputPathError

logger = logging.getLogger(__name__)

FORMAT = b"FOCCGTR1"                 # bump when the entry layout or what a cast computes changes
SUFFIX = ".gtrays"
DEFAULT_MAX_BYTES = 4_000_000_000     # 4 GB; the Occ3D val split with 8 origins needs about 2.5 GB
_HEADER = struct.Struct("<8s32sQQ")  # format, key, rays, scored rays
_CRC = struct.Struct("<I")


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/flashocc/rayiou-gt``, else ``~/.cache/flashocc/rayiou-gt``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "flashocc" / "rayiou-gt"


@dataclass(frozen=True)
class GroundTruthRays:
    """The ground-truth side of one sample's rays: ``hit`` (K * R,) bool marks the rays that hit an
    occupied voxel (the scored rays, origin-major); ``label`` (M,) uint8 and ``dist`` (M,) float32
    metres are their hit class and distance, M = ``hit.sum()``."""

    hit: np.ndarray
    label: np.ndarray
    dist: np.ndarray


class GTRayCache:
    """Ground-truth casts on disk under ``root``; see the module docstring.

    ``key(...)`` names an entry, ``get(key, rays)`` returns it (None on a miss or an unreadable
    entry), ``put(key, entry)`` stores it. ``hits`` / ``misses`` / ``rejected`` count the lookups
    (rejected: a file was there but unreadable, and was treated as a miss).
    """

    def __init__(self, root: str | os.PathLike | None = None, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        if max_bytes <= 0:
            raise ValueError(f"max_bytes: expected a positive size in bytes, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self.hits = self.misses = self.rejected = 0
        self._writable = True
        self._size: int | None = None          # bytes under root, scanned on the first write

    @staticmethod
    def key(gt: np.ndarray, origins: np.ndarray, ray_set: bytes) -> str:
        """Hex key of one sample: the GT volume (values, dtype, shape), the origins (float64) and the
        ray set fingerprint (``ray_set_fingerprint``)."""
        gt = np.ascontiguousarray(gt)
        origins = np.ascontiguousarray(origins, dtype=np.float64)
        h = hashlib.sha256(FORMAT)
        h.update(ray_set)
        h.update(f"{gt.dtype.str}{gt.shape}{origins.shape}".encode())
        h.update(memoryview(gt).cast("B"))
        h.update(memoryview(origins).cast("B"))
        return h.hexdigest()

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}{SUFFIX}"

    def get(self, key: str, rays: int, free_label: int) -> GroundTruthRays | None:
        """The entry of ``key`` for a sample of ``rays`` rays, or None (missing or unreadable). Hit
        classes must be below ``free_label`` (a scored ray hits an occupied voxel)."""
        path = self.path(key)
        largest = _HEADER.size + (rays + 7) // 8 + 5 * rays + _CRC.size
        try:
            with open(path, "rb") as f:
                data = f.read(largest + 1)      # a larger file is not an entry: never read it whole
        except OSError:
            self.misses += 1
            return None
        entry = _decode(data, bytes.fromhex(key), rays, free_label)
        if entry is None:
            logger.info("ignoring unreadable ray cache entry %s (cast again)", path)
            self.rejected += 1
            self.misses += 1
            return None
        try:
            os.utime(path)                      # marks it recently used for the size bound
        except OSError:
            pass
        self.hits += 1
        return entry

    def put(self, key: str, entry: GroundTruthRays) -> None:
        """Store ``entry`` atomically; a write failure disables further writes (with one warning)."""
        if not self._writable:
            return
        data = _encode(bytes.fromhex(key), entry)
        path = self.path(key)
        try:
            if self._size is None:
                self._size = self._scan_size()
            old = path.stat().st_size if path.exists() else 0
            with atomic_write(path, "wb") as f:
                f.write(data)
        except (OSError, OutputPathError) as exc:
            self._writable = False
            logger.warning("the ray cache %s cannot be written (%s); continuing without caching", self.root, exc)
            return
        self._size += len(data) - old
        if self._size > self.max_bytes:
            self._prune(keep=path)

    def _entries(self) -> list[os.DirEntry]:
        out: list[os.DirEntry] = []
        if not self.root.is_dir():
            return out
        for sub in os.scandir(self.root):
            if sub.is_dir(follow_symlinks=False) and len(sub.name) == 2:
                out.extend(e for e in os.scandir(sub.path) if e.name.endswith(SUFFIX) and e.is_file())
        return out

    def _scan_size(self) -> int:
        total = 0
        for e in self._entries():
            try:
                total += e.stat().st_size
            except OSError:
                pass
        return total

    def _prune(self, keep: Path) -> None:
        """Delete the least recently used entries until the cache holds at most 90 % of ``max_bytes``."""
        stats = []
        for e in self._entries():
            try:
                st = e.stat()
            except OSError:
                continue
            stats.append((st.st_mtime, st.st_size, e.path))
        stats.sort()
        total = sum(s for _, s, _ in stats)
        target = int(0.9 * self.max_bytes)
        for _, size, p in stats:
            if total <= target:
                break
            if Path(p) == keep:
                continue
            try:
                os.unlink(p)
                total -= size
            except OSError:
                pass
        self._size = total


def ray_set_fingerprint(directions: np.ndarray, grid_shape, lower, voxel_size, free_label: int,
                        max_step: int) -> bytes:
    """Bytes that change whenever a GT cast of the same volume and origins could change."""
    h = hashlib.sha256(np.ascontiguousarray(directions, dtype=np.float32).tobytes())
    h.update(repr((tuple(int(s) for s in grid_shape), tuple(float(x) for x in lower),
                   tuple(float(x) for x in voxel_size), int(free_label), int(max_step))).encode())
    return h.digest()


def _encode(key: bytes, entry: GroundTruthRays) -> bytes:
    hit = np.ascontiguousarray(entry.hit, dtype=bool)
    label = np.ascontiguousarray(entry.label, dtype=np.uint8)
    dist = np.ascontiguousarray(entry.dist, dtype="<f4")
    body = (_HEADER.pack(FORMAT, key, hit.size, label.size) + np.packbits(hit).tobytes() + label.tobytes()
            + dist.tobytes())
    return body + _CRC.pack(zlib.crc32(body))


def _decode(data: bytes, key: bytes, rays: int, free_label: int) -> GroundTruthRays | None:
    """The entry in ``data``, or None unless it is complete, intact and for this key and ray count."""
    if len(data) < _HEADER.size + _CRC.size:
        return None
    fmt, stored_key, n, m = _HEADER.unpack_from(data)
    if fmt != FORMAT or stored_key != key or n != rays or m > n:
        return None
    nbits = (n + 7) // 8
    if len(data) != _HEADER.size + nbits + 5 * m + _CRC.size:
        return None
    (crc,) = _CRC.unpack_from(data, len(data) - _CRC.size)
    if zlib.crc32(memoryview(data)[:-_CRC.size]) != crc:
        return None
    at = _HEADER.size
    hit = np.unpackbits(np.frombuffer(data, np.uint8, nbits, at), count=n).astype(bool)
    if int(hit.sum()) != m:
        return None
    label = np.frombuffer(data, np.uint8, m, at + nbits)
    if m and int(label.max()) >= free_label:
        return None
    dist = np.frombuffer(data, "<f4", m, at + nbits + m).astype(np.float32)
    return GroundTruthRays(hit, label, dist)
