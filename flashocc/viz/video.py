"""Animated GIFs (Pillow) and MP4s (imageio-ffmpeg, optional) over a sequence of frames."""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from flashocc.viz.common import replace_atomically, temp_beside

logger = logging.getLogger(__name__)


def _same_size(frames: Sequence[Image.Image]) -> list[Image.Image]:
    if not frames:
        raise ValueError("no frames to write: the sequence is empty")
    size = frames[0].size
    # Frames of a sequence can differ by a few pixels (e.g. legend strips); pad/crop to the first.
    out = []
    for im in frames:
        im = im.convert("RGB")
        if im.size != size:
            canvas = Image.new("RGB", size, (255, 255, 255))
            canvas.paste(im, (0, 0))
            im = canvas
        out.append(im)
    return out


def save_sequence_gif(frames: Sequence[Image.Image], path: str | os.PathLike, fps: float = 2.0,
                      loop: int = 0) -> Path:
    """Write ``frames`` (PIL images, first frame's size) as an animated GIF, atomically.

    ``fps`` frames per second; ``loop=0`` repeats forever. Pillow merges consecutive identical
    frames into one longer frame, so a GIF of repeated pictures has fewer frames than given.
    """
    if fps <= 0:
        raise ValueError(f"save_sequence_gif: fps must be positive, found {fps}")
    frames = _same_size(frames)
    path = Path(path)
    tmp = temp_beside(path)
    try:
        # One adaptive palette per frame keeps the class colours close to their RGB values.
        paletted = [im.quantize(colors=255, method=Image.Quantize.MEDIANCUT) for im in frames]
        paletted[0].save(tmp, format="GIF", save_all=True, append_images=paletted[1:],
                         duration=int(round(1000 / fps)), loop=loop, disposal=1)
        replace_atomically(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def mp4_available() -> bool:
    """Whether imageio with its ffmpeg plugin can be imported (``pip install imageio imageio-ffmpeg``)."""
    try:
        import imageio  # noqa: F401
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        return False
    return True


def save_sequence_mp4(frames: Sequence[Image.Image], path: str | os.PathLike, fps: float = 2.0) -> Path:
    """Write ``frames`` as an H.264 MP4 through imageio-ffmpeg (imported lazily), atomically."""
    try:
        import imageio.v2 as imageio
    except ImportError as exc:
        raise ImportError('MP4 output needs imageio and imageio-ffmpeg: pip install "flashocc[viz]" '
                          "imageio-ffmpeg (or use the GIF writer, which only needs Pillow)") from exc
    frames = _same_size(frames)
    path = Path(path)
    tmp = temp_beside(path, suffix=".mp4")  # ffmpeg picks the container from the suffix
    try:
        # H.264 players expect sides that are multiples of 16; pad with white rather than let imageio
        # resample (and warn about) every frame.
        width, height = (-(-side // 16) * 16 for side in frames[0].size)
        with imageio.get_writer(tmp, format="FFMPEG", fps=fps, codec="libx264", macro_block_size=16) as writer:
            for im in frames:
                canvas = Image.new("RGB", (width, height), (255, 255, 255))
                canvas.paste(im, (0, 0))
                writer.append_data(np.asarray(canvas))
        replace_atomically(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    logger.info("wrote %d frames to %s", len(frames), path)
    return path
