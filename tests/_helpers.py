"""Inputs and checks shared by several test files (imported as ``_helpers``)."""

import numpy as np

#: The first bytes of each image format skxray reads: random bytes after a
#: real signature reach deeper into a decoder than pure noise.
FILE_SIGNATURES = [
    b"",
    b"\x89PNG\r\n\x1a\n",
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
    b"\xff\xd8\xff",
    b"\xff\xd8\xff\xe0",
    b"BM",
    b"II*\x00",
    b"MM\x00*",
    b"\x00" * 128 + b"DICM",
]


def check_unit_image(img, shape=None):
    """What every image skxray returns must be: finite float32 in [0, 1]."""
    assert img.dtype == np.float32
    assert np.isfinite(img).all() and img.min() >= 0.0 and img.max() <= 1.0
    if shape is not None:
        assert img.shape == shape
