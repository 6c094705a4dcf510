import numpy as np
import pytest
from PIL import Image

from flashocc.viz import save_sequence_gif, save_sequence_mp4
from flashocc.viz.video import mp4_available


def frames(count: int) -> list[Image.Image]:
    out = []
    for i in range(count):
        a = np.full((60, 80, 3), 255, dtype=np.uint8)
        a[10:20, 5 + 10 * i:15 + 10 * i] = (255, 158, 0)  # a car moving right
        out.append(Image.fromarray(a))
    return out


def test_gif_has_every_frame(tmp_path):
    path = save_sequence_gif(frames(5), tmp_path / "seq.gif", fps=4)
    with Image.open(path) as gif:
        assert gif.n_frames == 5
        assert gif.size == (80, 60)
        assert gif.info["duration"] == 250
        gif.seek(2)
        assert gif.convert("RGB").getpixel((30, 15)) == (255, 158, 0)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left behind


def test_gif_rejects_empty_sequence(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        save_sequence_gif([], tmp_path / "x.gif")


def test_mp4_when_available(tmp_path):
    if not mp4_available():
        pytest.skip("imageio-ffmpeg not installed (optional)")
    path = save_sequence_mp4(frames(4), tmp_path / "seq.mp4")
    assert path.stat().st_size > 0
