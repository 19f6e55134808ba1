"""Geometric priors of a frontal chest radiograph, shared by preprocessing and explanation."""

import numbers

import numpy as np

__all__ = ["central_lung_mask"]

# Two ellipses in coordinates running from -1 (left/top edge) to 1 (right/bottom
# edge), as in skxray.datasets.make_phantom_cxr: centres at x = +-0.38,
# slightly above mid-height; together they span about the middle 65% of the
# width and 66% of the height.
_LUNG_CX, _LUNG_CY, _LUNG_RX, _LUNG_RY = 0.38, -0.04, 0.27, 0.66


def central_lung_mask(height, width):
    """Boolean mask of where the lung fields of a frontal chest X-ray usually lie.

    A fixed geometric prior, not a segmentation: two upright ellipses, one
    per lung, side by side around the vertical midline. Together they cover
    about the middle 65% of the width and 66% of the height; the mediastinum
    between them (a gap of about 10% of the width), the image borders and
    corners (where markers, labels and burnt-in text sit), the shoulders and
    the area below the diaphragm are outside. It matches the layout of
    :func:`skxray.datasets.make_phantom_cxr` and of roughly centred
    posteroanterior radiographs; used with :func:`heatmap_mass_in_region` to
    measure how much of a model's evidence lies in the lungs rather than on
    shortcuts.

    Parameters
    ----------
    height : int
        Number of rows of the images, >= 1.
    width : int
        Number of columns of the images, >= 1.

    Returns
    -------
    mask : ndarray of shape (height, width)
        Boolean; True inside the lung fields.

    Raises
    ------
    ValueError
        If ``height`` or ``width`` is not a positive int.

    See Also
    --------
    heatmap_mass_in_region : Share of a heatmap inside this mask.

    Examples
    --------
    >>> from skxray.explain import central_lung_mask
    >>> mask = central_lung_mask(12, 12)
    >>> mask.astype(int)
    array([[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
           [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
           [0, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 0],
           [0, 0, 1, 1, 1, 0, 0, 1, 1, 1, 0, 0],
           [0, 0, 1, 1, 1, 0, 0, 1, 1, 1, 0, 0],
           [0, 0, 1, 1, 1, 0, 0, 1, 1, 1, 0, 0],
           [0, 0, 1, 1, 1, 0, 0, 1, 1, 1, 0, 0],
           [0, 0, 1, 1, 1, 0, 0, 1, 1, 1, 0, 0],
           [0, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 0],
           [0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0],
           [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
           [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]])
    """
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name} must be an int >= 1; got {value!r}.")
    # Pixel centres, so the mask is symmetric and does not shift with size.
    x = (np.arange(width) + 0.5) / width * 2.0 - 1.0
    yy = ((np.arange(height) + 0.5) / height * 2.0 - 1.0)[:, None]
    mask = np.zeros((height, width), dtype=bool)
    for side in (-1.0, 1.0):
        mask |= ((x[None, :] - side * _LUNG_CX) / _LUNG_RX) ** 2 + (
            (yy - _LUNG_CY) / _LUNG_RY
        ) ** 2 <= 1.0
    return mask
