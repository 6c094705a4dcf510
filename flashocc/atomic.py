"""Atomic file output: every file flashocc writes goes through a temp file in the same folder and a
rename, so a crash or ``kill -9`` never leaves a torn checkpoint, label file or report behind.

A ``kill -9`` can still leave the temp file itself (``.<name>.<8 random chars>.tmp``);
``clean_orphan_temps`` removes those once they are old enough to belong to no live writer.
"""
from __future__ import annotations

import errno
import os
import re
import stat
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from flashocc.errors import OutputPathError

# Endings of the files flashocc writes through atomic_write (checkpoints, configs, reports, labels, info
# files, synthetic images and LiDAR sweeps, pictures, exported graphs).
WRITTEN_SUFFIXES: tuple[str, ...] = (".pt", ".yaml", ".json", ".jsonl", ".npz", ".pkl", ".jpg", ".png", ".bin",
                                     ".onnx", ".engine")

# tempfile.mkstemp(prefix=".<name>.", suffix=".tmp") inserts 8 characters of tempfile._RandomNameSequence.
_TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp$")


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temp file beside ``path``; it replaces ``path`` when the block succeeds and is removed
    when it raises. Parent folders are created.

    The file gets the permissions a plain ``open(path, "w")`` would give: those of the file it replaces,
    else 0666 minus the umask (``mkstemp`` alone would leave every output private, 0600).
    """
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(f"cannot write {path}: it is a folder; give a file path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise OutputPathError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        try:
            mode_bits = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            mode_bits = 0o666 & ~current_umask()
        os.fchmod(fd, mode_bits)
        with os.fdopen(fd, mode) as f:
            yield f
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EIO):
            kept = "the previous file is unchanged" if path.exists() else "nothing was written"
            raise OutputPathError(f"cannot write {path}: {exc.strerror or exc}; {kept}") from None
        raise


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux /proc).

    ``os.umask`` can only be read by setting it; another thread creating a file in between would get a
    wrong mode, so that is the fallback only.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def clean_orphan_temps(folder: str | os.PathLike, min_age_s: float = 60.0, recursive: bool = False,
                       suffixes: tuple[str, ...] = WRITTEN_SUFFIXES) -> list[Path]:
    """Remove temp files that an interrupted ``atomic_write`` left in ``folder``; return the removed paths.

    Only plain files named exactly ``.<target>.<8 chars>.tmp`` whose target ends in one of ``suffixes``
    are touched, and only when unmodified for ``min_age_s`` seconds: a younger one may belong to another
    process that is writing right now (a checkpoint write takes seconds, not a minute).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    now = time.time()
    removed = []
    for path in folder.rglob(".*.tmp") if recursive else folder.glob(".*.tmp"):
        match = _TEMP_NAME.match(path.name)
        if match is None or not match["target"].endswith(suffixes):
            continue
        try:
            info = path.lstat()
        except FileNotFoundError:  # its writer just renamed it
            continue
        if not stat.S_ISREG(info.st_mode) or now - info.st_mtime < min_age_s:
            continue
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        removed.append(path)
    return removed
