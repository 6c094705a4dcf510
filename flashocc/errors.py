"""Errors a user can act on. Each message names the file or config field and what was expected;
``flashocc`` commands print them as one readable message, without a traceback.

The classes also derive from the built-in type older code and users already catch (``ValueError``,
``KeyError``, ``FileNotFoundError``), so ``except ValueError`` keeps working.
"""
from __future__ import annotations


class FlashOccError(Exception):
    """Base of every error that is about the user's input rather than a bug in flashocc."""


class ConfigError(FlashOccError, ValueError):
    """A config file, preset or ``key=value`` override that cannot be used as given."""


class UnknownConfigKeyError(ConfigError, KeyError):
    """A config key that no section has (the message suggests the closest valid key)."""

    def __str__(self) -> str:  # KeyError would print the repr, with quotes
        return str(self.args[0]) if self.args else ""


class DataError(FlashOccError, ValueError):
    """A data file (info pickle, image, LiDAR ``.bin``, ``labels.npz``) that is corrupt or does not fit."""


class UnsafeFileError(DataError):
    """A file that asks to run code or to build objects that plain data never needs (refused, never run)."""


class CheckpointError(FlashOccError, ValueError):
    """A checkpoint that cannot be read."""


class CheckpointMismatchError(FlashOccError, KeyError):
    """A checkpoint whose tensors do not match the model (missing, unexpected or mis-shaped keys)."""

    def __str__(self) -> str:  # KeyError would print the repr, with literal "\n" and quotes
        return str(self.args[0]) if self.args else ""


class RunFolderError(FlashOccError):
    """An output folder that holds a finished or unrelated run, or cannot be written."""


class OutputPathError(FlashOccError, OSError):
    """An output that cannot be written: the path is a folder, the disk is full, the folder is read-only."""


class MissingFileError(FlashOccError, FileNotFoundError):
    """An input file or folder that is not where the command was told to look."""


class TrainingDivergedError(FlashOccError):
    """Training produced non-finite losses or gradients; the last good checkpoint was kept."""


__all__ = ["FlashOccError", "ConfigError", "UnknownConfigKeyError", "DataError", "UnsafeFileError", "CheckpointError",
           "CheckpointMismatchError", "RunFolderError", "OutputPathError", "MissingFileError", "TrainingDivergedError"]
