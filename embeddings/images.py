"""Image loading for feature extraction, over the one decoder :func:`learning.images.decode_rgb`.

Errors name the file (:class:`ImageLoadError`); conversion rules are
:func:`learning.images.to_rgb`'s (the same for ingest, training and embedding).
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from learning.images import ImageDecodeError, decode_rgb, to_rgb

__all__ = ["ImageLoadError", "load_image", "to_rgb"]


class ImageLoadError(ValueError):
    """An image could not be opened or decoded; ``path`` names it."""

    def __init__(self, path: Path, cause: BaseException) -> None:
        message = cause.message if isinstance(cause, ImageDecodeError) else str(cause)
        super().__init__(f"cannot read image {str(path)!r}: {type(cause).__name__}: {message}")
        self.path = path


def load_image(path: Path | str, *, max_side: int | None = None) -> Image.Image:
    """Open, fully decode and convert one image to RGB; raise :class:`ImageLoadError`.

    With ``max_side``, images larger than that are shrunk (aspect kept, bilinear) so
    that neither side exceeds it; JPEGs are then decoded at reduced scale (much
    faster). Choose it above the model's input size, e.g. twice.
    """
    p = Path(path)
    try:
        return decode_rgb(p, max_side=max_side, fit="contain", resample=Image.Resampling.BILINEAR)
    except (ImageDecodeError, OSError) as exc:
        raise ImageLoadError(p, exc) from exc
