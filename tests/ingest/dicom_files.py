"""Minimal DICOM files made in memory for the tests (pydicom needed; skips without it)."""

from __future__ import annotations

import io

import numpy as np
import pytest


def make_dicom(arr: np.ndarray, *, photometric: str = "MONOCHROME2", **extra) -> bytes:
    """A minimal Secondary Capture file holding ``arr`` ([rows, cols] uint16 or [r, c, 3] uint8)."""
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    ds.Rows, ds.Columns = arr.shape[:2]
    ds.PhotometricInterpretation = photometric
    ds.PixelRepresentation = 0
    if arr.ndim == 3:
        ds.SamplesPerPixel, ds.PlanarConfiguration = 3, 0
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit = 7
    else:
        ds.SamplesPerPixel = 1
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    for key, value in extra.items():
        setattr(ds, key, value)
    ds.PixelData = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes()
    buf = io.BytesIO()
    if int(pydicom.__version__.split(".")[0]) >= 3:
        ds.save_as(buf, enforce_file_format=True)
    else:  # pragma: no cover - pydicom 2.x
        ds.is_little_endian, ds.is_implicit_VR = True, False
        pydicom.dcmwrite(buf, ds, write_like_original=False)
    return buf.getvalue()


def ramp(rows=20, cols=30) -> np.ndarray:
    return (np.arange(rows * cols, dtype=np.uint16).reshape(rows, cols) * 6) % 4096
