"""Helpers for writing tests of X-ray pipelines: test inputs built in code.

Like :mod:`numpy.testing`, it lives in the package so that skxray's own
``tests/`` and ``benchmarks/`` (the fuzzing corpus) build their inputs the
same way without importing each other, and so that a user can test their
own DICOM handling the same way. It imports nothing else from skxray.
Synthetic chest X-rays are :func:`skxray.datasets.make_phantom_cxr`.
"""

__all__ = ["dicom_dataset"]


def dicom_dataset(*, uid=None):
    """A pydicom ``Dataset`` with a valid file meta header and no image yet.

    A Secondary Capture object of modality DX, stored as explicit VR little
    endian; callers add the pixel elements (or leave them out, or make them
    lie) and call ``save_as(..., enforce_file_format=True)``.

    Parameters
    ----------
    uid : str or None, default=None
        SOP instance UID. A fixed one keeps a written file byte-for-byte
        reproducible (the fuzz corpus); None generates a new one.

    Returns
    -------
    dataset : pydicom.dataset.Dataset
        Needs pydicom (``pip install pydicom``).

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> import numpy as np
    >>> from skxray.io import read_image
    >>> from skxray.testing import dicom_dataset
    >>> ds = dicom_dataset(uid="1.2.3")
    >>> pixels = np.arange(64, dtype=np.uint16).reshape(8, 8)
    >>> ds.set_pixel_data(pixels, "MONOCHROME2", 16, generate_instance_uid=False)
    >>> path = Path(tempfile.mkdtemp()) / "xray.dcm"
    >>> ds.save_as(path, enforce_file_format=True)
    >>> read_image(path).shape
    (8, 8)
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = uid or generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    return ds
