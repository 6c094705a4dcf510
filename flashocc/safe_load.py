"""Reading torch.save files without running code: the one loader behind checkpoints and bundled weights.

It sits at the top of the package because both ``flashocc.engine.checkpoint`` (training checkpoints) and
``flashocc.models.pretrained`` (bundled weights) read through it, and models may not import engine.
"""
from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import torch

from flashocc.errors import CheckpointError, MissingFileError

# What torch's weights-only unpickler says when the file asks for more than tensors and containers
# (torch/_weights_only_unpickler.py, Unpickler.load): a global off its allowlist, or a call, NEWOBJ or
# BUILD on one. Every other error of that unpickler ("Unsupported operand", "String is too long", ...)
# is about a broken stream.
_REFUSED = re.compile(r"Unsupported global: GLOBAL (\S+)|unsupported GLOBAL (\S+)|"
                      r"(reduce for unrecognized function .*?)\n|(Can only (?:create new object|build) .*?)\n")


def torch_load(path: str | os.PathLike, map_location: str | torch.device = "cpu", trusted: bool = False,
               what: str = "checkpoint") -> object:
    """``torch.load`` with ``weights_only=True`` unless ``trusted``; errors name the file.

    Raises ``MissingFileError`` for a missing file and ``CheckpointError`` otherwise: for a file that asks
    for a global weights-only loading refuses (the message names it and says how to load a file you
    trust), or for a corrupt, truncated or non-torch file. ``what`` names the file's kind in messages.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=not trusted)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ... on bad files
        refused = None if trusted else refused_global(exc)
        if refused is not None:
            raise CheckpointError(
                f"{path}: refused to load: the file asks for {refused}, and weights-only loading takes only tensors "
                "and plain containers (nothing in the file was run). If you trust this file, retry with "
                "trusted=True (full unpickling, which can run code).") from exc
        raise CheckpointError(f"{path}: not a readable {what} (corrupt, truncated or not a torch.save file; "
                              f"{type(exc).__name__}: {first_line(exc)})") from exc


def refused_global(exc: BaseException) -> str | None:
    """What the file asked for, when ``exc`` is torch refusing it; None for any other failure."""
    if not isinstance(exc, pickle.UnpicklingError):
        return None
    found = _REFUSED.search(f"{exc}\n")
    if found is None:
        return None
    name = found.group(1) or found.group(2)
    return f"the global {name}" if name else f"more than data ({(found.group(3) or found.group(4)).strip()})"


def first_line(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip()
    if "WeightsUnpickler error:" in text:  # torch wraps the real reason in a page of advice
        text = text.split("WeightsUnpickler error:", 1)[1].strip()
    text = text.splitlines()[0] if text else ""
    return text if len(text) <= limit else text[:limit] + "..."


__all__ = ["torch_load", "refused_global", "first_line"]
