"""Fast image decode for training: JPEG DCT scaling, with the geometry kept exact.

The train pipeline decodes 1600x900 JPEGs and then shrinks them to about 0.44x (704 wide). libjpeg can
decode at 1/2, 1/4 or 1/8 scale inside the inverse DCT (PIL ``Image.draft``), which skips most of the
decode work. ``load_reduced`` picks the largest reduction whose image is still at least the size the
augmentation resizes to (a reduced decode is never upsampled), and returns the exact part of the reduced
image that the full image covers. ``augment_reduced`` resizes that float box straight into the crop, so
every output pixel samples the same point of the original image as ``transforms.augment_image`` on the
full decode: the intrinsics and ``post_rot``/``post_tran`` computed from ``ImageAug`` stay exact. Only
the pixel values differ slightly (the DCT reduction pre-filters differently from PIL's bicubic).

PNG and other formats have no reduced decode: ``draft`` leaves them alone and they decode in full.
Evaluation keeps the exact PIL path unless ``DataConfig.fast_decode = "always"`` (the official
preprocessing: docs/official-behaviour.md#image-augmentation).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from flashocc.data import transforms as T
from flashocc.errors import DataError, MissingFileError

# libjpeg's DCT scalings that PIL's draft uses (JpegImagePlugin.JpegImageFile.draft), largest first.
REDUCTIONS = (8, 4, 2, 1)
_DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError)


@dataclass(frozen=True)
class ReducedImage:
    """A decoded RGB image and where the original image lies in it.

    ``box`` = (0, 0, W / s, H / s) in the reduced image's pixels for a reduction s: reduced pixel i
    covers original pixels [i s, (i + 1) s), so an image whose size is not a multiple of s ends inside
    its last reduced pixel (900 / 8 = 112.5 of 113 rows). ``box`` is (0, 0, W, H) for a full decode.
    """

    image: Image.Image
    full_size: tuple[int, int]                  # (W, H) of the file
    box: tuple[float, float, float, float]

    @property
    def scale(self) -> tuple[float, float]:
        """Reduced pixels per original pixel along x and y (1 / s; 1.0 for a full decode)."""
        return self.box[2] / self.full_size[0], self.box[3] / self.full_size[1]


def reduction_for(full_size: tuple[int, int], needed_size: tuple[int, int]) -> int:
    """The largest DCT reduction s with W / s >= needed W and H / s >= needed H (1 when none fits)."""
    (width, height), (need_w, need_h) = full_size, needed_size
    # An upsampling resize (the synthetic 704x396 images at train scales > 1) decodes in full.
    return next((s for s in REDUCTIONS if width >= s * need_w and height >= s * need_h), 1)


def _open(path: Path, token: str) -> Image.Image:
    if not path.is_file():
        raise MissingFileError(f"sample {token}: image not found: {path}")
    try:
        return Image.open(path)
    except _DECODE_ERRORS as exc:
        raise _decode_error(path, token, exc) from exc


def _decode_error(path: Path, token: str, exc: Exception) -> DataError:
    return DataError(f"sample {token}: cannot decode image {path} ({type(exc).__name__}: {exc}); expected a "
                     f"complete JPEG or PNG file")


def image_size(path: str | Path, token: str) -> tuple[int, int]:
    """(W, H) from the file header, without decoding the pixels."""
    path = Path(path)
    with _open(path, token) as img:
        return img.size


def load_reduced(path: str | Path, token: str, needed_size: tuple[int, int]) -> ReducedImage:
    """Decode ``path`` as RGB, reduced in the DCT as far as ``needed_size`` = (W, H) allows.

    A truncated file is a DataError (as ``transforms.load_image``): PIL raises unless
    ``ImageFile.LOAD_TRUNCATED_IMAGES`` is set, which flashocc never does.
    """
    path = Path(path)
    with _open(path, token) as img:
        full_size = img.size
        wanted = reduction_for(full_size, needed_size)
        try:
            drafted = img.draft("RGB", needed_size) if wanted > 1 else None
            rgb = img.convert("RGB")  # convert() forces the decode inside the try
        except _DECODE_ERRORS as exc:
            raise _decode_error(path, token, exc) from exc
    if drafted is None:  # not a JPEG, or one libjpeg cannot scale (several tiles): the full decode
        return ReducedImage(rgb, full_size, (0.0, 0.0, float(full_size[0]), float(full_size[1])))
    box = tuple(float(v) for v in drafted[1])
    reduced = ReducedImage(rgb, full_size, box)
    if box[2] < needed_size[0] or box[3] < needed_size[1] or rgb.size[0] < box[2] or rgb.size[1] < box[3]:
        raise AssertionError(f"{path}: PIL's draft gave {rgb.size} with box {box} for a {full_size} image and a "
                             f"needed size {needed_size}; expected a reduction by {wanted}")
    return reduced


def augment_reduced(reduced: ReducedImage, aug: T.ImageAug) -> Image.Image:
    """``transforms.augment_image`` on a reduced decode: resize -> crop -> flip -> rotate.

    When downsampling, resize and crop are one step: only the part of the resized image that the crop
    keeps is computed (about 35 % of the rows are cropped away at 704x256), with PIL's resize ``box``
    mapping those resized pixels back into the reduced image. PIL's filter still reads source pixels
    outside the box, so the result matches resizing everything and cropping within one grey level
    (tests/data/test_fast_decode.py), and crop areas outside the resized image stay zero as in ``Image.crop``.
    """
    new_w, new_h = aug.resize_dims
    bx0, by0, bx1, by1 = reduced.box
    if new_w > bx1 - bx0 or new_h > by1 - by0:
        # Upsampling (only ever from a full decode: reduction_for): PIL's boxed resize differs from resizing
        # everything by up to 7 grey levels at sharp edges there, so take the official path.
        return T.augment_image(reduced.image, aug)
    left, top, right, bottom = aug.crop
    # The part of the crop inside the resized image, in resized pixels.
    x0, y0, x1, y1 = max(left, 0), max(top, 0), min(right, new_w), min(bottom, new_h)
    out = Image.new("RGB", (right - left, bottom - top))
    if x1 > x0 and y1 > y0:
        sx, sy = (bx1 - bx0) / new_w, (by1 - by0) / new_h   # reduced pixels per resized pixel
        width, height = reduced.image.size  # float rounding must not push the box past the image (PIL refuses)
        source = (bx0 + x0 * sx, by0 + y0 * sy, min(bx0 + x1 * sx, width), min(by0 + y1 * sy, height))
        part = reduced.image.resize((x1 - x0, y1 - y0), Image.Resampling.BICUBIC, box=source)
        if (x0, y0, x1, y1) == (left, top, right, bottom):
            out = part
        else:
            out.paste(part, (x0 - left, y0 - top))
    return T.flip_rotate(out, aug)
