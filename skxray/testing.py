"""Helpers for skxray's tests and benchmarks: not part of the public API.

Like scikit-learn's ``sklearn.utils._testing``, this module lives in the
package so that ``tests/`` and ``benchmarks/`` build their inputs the same
way without importing each other. It imports nothing else from skxray.
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
    pydicom.dataset.Dataset
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
