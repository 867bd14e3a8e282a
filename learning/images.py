"""One image decoder for ingest, training and embedding: any supported source in, upright 8-bit RGB out.

:func:`decode_rgb` reads a path, bytes, an open binary file or a PIL image and returns
a new ``RGB`` image. The rules, the same everywhere (thumbnails, training, embedding):

- EXIF orientation is applied (the image comes out as people see it);
- transparency (``RGBA``, ``LA``, ``PA``, palette with a transparent index) is
  composited onto white; palette, ``1``, ``L``, ``CMYK`` and ``YCbCr`` convert as Pillow does;
- 16-bit, 32-bit and float grey (``I;16*``, ``I``, ``F``) is stretched linearly from the
  image's own finite min..max onto 0..255 (so 12-bit scans in a 16-bit file stay
  visible; a constant image becomes black); 16-bit RGB is reduced by Pillow's reader;
- DICOM (magic ``DICM`` at byte 128) is read through pydicom when it is installed:
  first frame, modality LUT, VOI window when the file has one, min..max stretch,
  ``MONOCHROME1`` inverted;
- with ``max_side`` the image is decoded only as large as needed: JPEG's DCT scaling
  (``Image.draft``, 1/2, 1/4 or 1/8) never below ``max_side`` on either side, then a
  resize (``fit="cover"``: shorter side ``max_side``, for model inputs;
  ``fit="contain"``: longer side ``max_side``, for thumbnails).

Content that does not decode raises :class:`ImageDecodeError` (a ``ValueError``) with a
``reason`` from ingest's vocabulary (``corrupt``, ``too_many_pixels``,
``unsupported_type``); a file that cannot be opened raises :class:`OSError` as
``open`` does. Pillow's decompression-bomb guard (``Image.MAX_IMAGE_PIXELS``, left at
Pillow's default) becomes ``too_many_pixels``.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, Literal, TypeAlias

import numpy as np
from PIL import Image, ImageOps

ImageSource: TypeAlias = str | Path | bytes | BinaryIO | Image.Image
#: ``check_size(width, height)``: called from the header before any pixel is decoded; raise to refuse.
SizeCheck: TypeAlias = Callable[[int, int], None]

__all__ = [
    "BACKGROUND",
    "DECODE_ERRORS",
    "ImageDecodeError",
    "ImageSource",
    "decode_rgb",
    "dicom_header",
    "is_dicom",
    "read_dicom",
    "stretch_to_uint8",
    "to_rgb",
]

#: Colour that transparent pixels are composited onto.
BACKGROUND = (255, 255, 255)

#: Exceptions that Pillow's decoders raise on malformed input. Anything else is a bug
#: worth seeing, so it is not swallowed.
DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # includes UnidentifiedImageError and "image file is truncated"
    SyntaxError,  # Pillow's "not a PNG file", bad chunk, broken TIFF tags
    ValueError,
    EOFError,
    struct.error,
    zlib.error,
    IndexError,
    KeyError,
    TypeError,
    ZeroDivisionError,
)

# pydicom's pixel handlers raise these on truncated or inconsistent pixel data.
_PIXEL_ERRORS: tuple[type[BaseException], ...] = (AttributeError, *DECODE_ERRORS)
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_HIGH_DEPTH_PREFIXES = ("I", "F")  # I, I;16, I;16B, I;16L, I;16N, F
_DICOM_MAGIC_AT = 128


class ImageDecodeError(ValueError):
    """Content that is not a decodable image.

    ``reason`` is ``"corrupt"``, ``"too_many_pixels"`` or ``"unsupported_type"``;
    ``message`` is one sentence for people; ``path`` names the file (``None`` for bytes).
    """

    def __init__(self, reason: str, message: str, *, path: Path | None = None) -> None:
        super().__init__(f"{path}: {message}" if path is not None else message)
        self.reason = reason
        self.message = message
        self.path = path


def stretch_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Map an array linearly from its own finite min..max onto 0..255 (``uint8``).

    A constant (or all-NaN) array becomes all zeros. The shape is unchanged.
    """
    values = np.asarray(arr, dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(values.shape, dtype=np.uint8)
    lo, hi = float(values[finite].min()), float(values[finite].max())
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = (np.where(finite, values, lo) - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _flatten_alpha(im: Image.Image) -> Image.Image:
    rgba = im.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def to_rgb(im: Image.Image) -> Image.Image:
    """Return a new upright ``RGB`` image for a decoded PIL image of any mode (rules above)."""
    upright = ImageOps.exif_transpose(im)
    mode = upright.mode
    if mode == "RGB":
        return upright
    if mode in _ALPHA_MODES or (mode == "P" and "transparency" in upright.info):
        return _flatten_alpha(upright)
    if mode.startswith(_HIGH_DEPTH_PREFIXES):
        return Image.fromarray(stretch_to_uint8(np.asarray(upright))).convert("RGB")
    try:
        return upright.convert("RGB")
    except ValueError:
        # A mode Pillow cannot convert directly (e.g. LAB): show its first band as grey.
        return Image.fromarray(stretch_to_uint8(np.asarray(upright.getchannel(0)))).convert("RGB")


def is_dicom(head: bytes) -> bool:
    """Whether ``head`` (a file's first 132 bytes or more) starts a DICOM Part 10 file."""
    return head[_DICOM_MAGIC_AT : _DICOM_MAGIC_AT + 4] == b"DICM"


def _shrink(
    image: Image.Image, max_side: int | None, fit: str, resample: Image.Resampling
) -> Image.Image:
    if max_side is None:
        return image
    if fit == "contain":
        if max(image.size) > max_side:
            image.thumbnail((max_side, max_side), resample)  # in place; ``image`` is ours
        return image
    if min(image.size) > max_side:
        scale = max_side / min(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, resample, reducing_gap=2.0)
    return image


def _decode_pillow(
    fh: BinaryIO, name: Path | None, max_side: int | None, check_size: SizeCheck | None
) -> Image.Image:
    try:
        with Image.open(fh) as opened:
            if check_size is not None:
                check_size(opened.width, opened.height)
            if max_side is not None and opened.format == "JPEG":
                opened.draft("RGB", (max_side, max_side))
            opened.load()
            return to_rgb(opened)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # The warning only arrives as an exception where warnings are made errors.
        raise ImageDecodeError(
            "too_many_pixels", f"The image is larger than the decoder's safety cap ({exc}).", path=name
        ) from exc
    except ImageDecodeError:
        raise
    except DECODE_ERRORS as exc:
        raise ImageDecodeError("corrupt", f"The image cannot be decoded ({exc}).", path=name) from exc


def decode_rgb(
    source: ImageSource,
    *,
    max_side: int | None = None,
    fit: Literal["cover", "contain"] = "cover",
    resample: Image.Resampling = Image.Resampling.BICUBIC,
    check_size: SizeCheck | None = None,
) -> Image.Image:
    """Decode ``source`` into a new upright 8-bit ``RGB`` image (rules in the module docstring).

    ``max_side``: decode only as large as needed, then shrink (never enlarge) so that
    the shorter side (``fit="cover"``) or the longer side (``fit="contain"``) is at most
    ``max_side``, with ``resample``. ``check_size(width, height)`` runs on the header
    before any pixel is decoded. Raises :class:`ImageDecodeError` for bad content and
    :class:`OSError` when a path cannot be opened.
    """
    if max_side is not None and max_side < 1:
        raise ValueError(f"max_side must be >= 1, got {max_side}")
    if isinstance(source, Image.Image):
        return _shrink(to_rgb(source), max_side, fit, resample)
    name = Path(source) if isinstance(source, str | Path) else None
    fh: BinaryIO
    if isinstance(source, bytes | bytearray | memoryview):
        fh = io.BytesIO(bytes(source))
    elif isinstance(source, str | Path):
        fh = open(source, "rb")  # closed below; OSError propagates as from open()
    elif not source.seekable() or source.tell() != 0:
        fh = io.BytesIO(source.read())  # Pillow reads an image from offset 0 of its file
    else:
        fh = source
    try:
        head = fh.read(_DICOM_MAGIC_AT + 4)
        fh.seek(0)
        if is_dicom(head):
            image = read_dicom(fh, check_size=check_size, path=name)
        else:
            image = _decode_pillow(fh, name, max_side, check_size)
    finally:
        if name is not None:
            fh.close()
    return _shrink(image, max_side, fit, resample)


# --------------------------------------------------------------------------- DICOM


def _pydicom() -> Any:
    try:
        import pydicom
    except ImportError as exc:
        raise ImageDecodeError(
            "unsupported_type", "DICOM files need the optional package pydicom, not installed."
        ) from exc
    return pydicom


def _dcmread(data: bytes, *, stop_before_pixels: bool, path: Path | None) -> Any:
    pydicom = _pydicom()
    from pydicom.errors import InvalidDicomError

    errors: tuple[type[BaseException], ...] = (InvalidDicomError, *DECODE_ERRORS)
    try:
        return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=stop_before_pixels)
    except errors as exc:
        raise ImageDecodeError("corrupt", f"The DICOM file cannot be parsed ({exc}).", path=path) from exc


def dicom_header(data: bytes, *, path: Path | None = None) -> tuple[int, int, int]:
    """``(width, height, frames)`` from a DICOM file's header, without reading its pixels."""
    header = _dcmread(data, stop_before_pixels=True, path=path)
    rows, cols = header.get("Rows"), header.get("Columns")
    if rows is None or cols is None:
        raise ImageDecodeError("unsupported_type", "The DICOM file holds no image (no Rows/Columns).", path=path)
    return int(cols), int(rows), int(header.get("NumberOfFrames", 1) or 1)


def _pixels(ds: Any, path: Path | None) -> np.ndarray:
    """Decode the pixel data: ``[rows, cols]``, ``[rows, cols, 3]`` or with a frame axis first."""
    if "PixelData" not in ds:
        raise ImageDecodeError("unsupported_type", "The DICOM file holds no image pixel data.", path=path)
    try:
        return np.asarray(ds.pixel_array)
    except (NotImplementedError, RuntimeError, ImportError) as exc:
        # pydicom raises these when no installed plugin decodes the transfer syntax.
        raise ImageDecodeError(
            "unsupported_type",
            f"The DICOM transfer syntax {ds.file_meta.get('TransferSyntaxUID', '?')} "
            f"cannot be decoded here ({exc}).",
            path=path,
        ) from exc
    except _PIXEL_ERRORS as exc:
        raise ImageDecodeError(
            "corrupt", f"The DICOM pixel data is truncated or damaged ({exc}).", path=path
        ) from exc


def _lut_functions() -> tuple[Any, Any, Any]:
    """``apply_modality_lut``, ``apply_voi_lut``, ``apply_color_lut`` for pydicom 2 or 3."""
    luts: Any
    try:
        from pydicom import pixels as luts
    except ImportError:  # pydicom 2.x
        from pydicom.pixel_data_handlers import util as luts
    return luts.apply_modality_lut, luts.apply_voi_lut, luts.apply_color_lut


def read_dicom(
    source: bytes | str | Path | BinaryIO,
    *,
    check_size: SizeCheck | None = None,
    path: Path | None = None,
) -> Image.Image:
    """First frame of a DICOM file as an 8-bit ``RGB`` image (rules in the module docstring).

    ``check_size(width, height)`` runs on the header before the pixels are read;
    colour frames of more than 8 bits are scaled by ``BitsStored``.
    """
    if isinstance(source, str | Path):
        path = Path(source)
        data = path.read_bytes()
    else:
        data = bytes(source) if isinstance(source, bytes | bytearray | memoryview) else source.read()
    if check_size is not None:
        width, height, _ = dicom_header(data, path=path)
        check_size(width, height)
    ds = _dcmread(data, stop_before_pixels=False, path=path)
    arr = _pixels(ds, path)
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        arr = arr[0]
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    modality_lut, voi_lut, color_lut = _lut_functions()
    if arr.ndim == 2 and photometric == "PALETTE COLOR":
        arr = np.asarray(color_lut(arr, ds))
    if arr.ndim == 3 and arr.shape[-1] >= 3:
        rgb = arr[..., :3]
        if rgb.dtype != np.uint8:
            bits = 16 if photometric == "PALETTE COLOR" else int(ds.get("BitsStored", 16) or 16)
            rgb = np.rint(np.clip(rgb.astype(np.float64) * (255.0 / (2**bits - 1)), 0, 255))
            rgb = rgb.astype(np.uint8)
        return Image.fromarray(np.ascontiguousarray(rgb))
    if arr.ndim != 2:
        raise ImageDecodeError(
            "unsupported_type", f"DICOM pixel array of shape {arr.shape} is not shown.", path=path
        )
    grey = np.asarray(modality_lut(arr, ds))
    if "WindowCenter" in ds or "VOILUTSequence" in ds:
        grey = np.asarray(voi_lut(grey, ds))
    grey8 = stretch_to_uint8(grey)
    if photometric == "MONOCHROME1":
        grey8 = 255 - grey8
    return Image.fromarray(grey8).convert("RGB")
