"""Image loading for feature extraction: any Pillow-readable file in, 8-bit RGB out.

Errors name the file (:class:`ImageLoadError`). Conversion rules (:func:`to_rgb`):
EXIF orientation applied; alpha composited over white; 16/32-bit grayscale
scaled from 0..65535; float images min-max scaled; everything else via Pillow.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

_EXIF_ORIENTATION = 0x0112
# Errors Pillow raises on unreadable, truncated or oversized images.
_LOAD_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    Image.DecompressionBombError,
)


class ImageLoadError(ValueError):
    """An image could not be opened or decoded; ``path`` names it."""

    def __init__(self, path: Path, cause: BaseException) -> None:
        super().__init__(f"cannot read image {str(path)!r}: {type(cause).__name__}: {cause}")
        self.path = path


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow image to 8-bit ``RGB``.

    EXIF orientation is applied; alpha (RGBA, LA, palette with transparency) is
    composited over white rather than dropped; 16-bit and 32-bit integer
    grayscale is scaled from 0..65535; float images are min-max scaled.
    """
    if img.getexif().get(_EXIF_ORIENTATION, 1) != 1:
        img = ImageOps.exif_transpose(img) or img
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
    if mode in ("I", "F") or mode.startswith("I;16"):
        arr = np.asarray(img, dtype=np.float64)
        if mode == "F":
            lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
            arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        elif mode != "I" or arr.max(initial=0.0) > 255.0:
            arr = arr / 257.0
        gray = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def load_image(path: Path | str, *, max_side: int | None = None) -> Image.Image:
    """Open, fully decode and convert one image to RGB; raise :class:`ImageLoadError`.

    With ``max_side``, images larger than that are shrunk (aspect kept) so that
    neither side exceeds it; JPEGs are then decoded at reduced scale (much
    faster). Choose it above the model's input size, e.g. twice.
    """
    p = Path(path)
    try:
        with Image.open(p) as img:
            if max_side is not None:
                img.draft(None, (max_side, max_side))
            img.load()
            rgb = to_rgb(img)
            if max_side is not None and max(rgb.size) > max_side:
                rgb = rgb.copy() if rgb is img else rgb
                rgb.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
            return rgb.copy() if rgb is img else rgb
    except _LOAD_ERRORS as exc:
        raise ImageLoadError(p, exc) from exc
