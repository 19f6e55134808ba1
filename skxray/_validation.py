"""Input checks shared by the transformers and estimators.

One place decides what an "image array" is, so every public entry point
rejects the same bad inputs with the same messages.
"""

import os

import numpy as np

__all__ = ["as_images_or_paths", "check_image_array", "is_path_array", "to_nchw"]


def is_path_array(X):
    """Return True when ``X`` is a 1-D sequence of file paths.

    Parameters
    ----------
    X : object
        Candidate input: a list, tuple, ndarray or pandas Series.

    Returns
    -------
    bool
        True for a non-empty 1-D sequence whose items are all ``str`` or
        ``os.PathLike``.
    """
    if hasattr(X, "to_numpy"):  # pandas Series / Index
        X = X.to_numpy()
    if isinstance(X, np.ndarray):
        if X.ndim != 1 or X.size == 0 or X.dtype.kind not in "USO":
            return False
    elif not isinstance(X, (list, tuple)) or len(X) == 0:
        return False
    return all(isinstance(item, (str, os.PathLike)) for item in X)


def as_images_or_paths(X, name="X"):
    """``(X, is_paths)``: an object array of paths, or a numeric ndarray of images.

    Parameters
    ----------
    X : array-like of images or 1-D sequence of file paths
        Images of shape (n_samples, height, width) or (n_samples, channels,
        height, width), or paths.
    name : str, default="X"
        Parameter name used in the error message.

    Returns
    -------
    X : ndarray
        The paths as ``str`` in an object array, or the images.
    is_paths : bool
        Whether ``X`` holds paths.

    Raises
    ------
    ValueError
        If ``X`` is neither paths nor a non-empty 3-D or 4-D array.
    """
    if is_path_array(X):
        return np.asarray([str(p) for p in X], dtype=object), True
    arr = np.asarray(X)
    if arr.ndim not in (3, 4) or arr.shape[0] == 0:
        raise ValueError(
            f"{name} must be images of shape (n_samples, height, width) or "
            f"(n_samples, channels, height, width), or a 1-D sequence of file paths; "
            f"got an array of shape {arr.shape}."
        )
    return arr, False


def check_image_array(X, *, name="X", allow_2d=False, dtype=np.float32):
    """Validate an array of images and return it as a finite float array.

    Parameters
    ----------
    X : array-like
        Images of shape (n_samples, height, width) or
        (n_samples, channels, height, width). With ``allow_2d=True`` a
        (n_samples, n_features) array is accepted as well.
    name : str, default="X"
        Name used in error messages.
    allow_2d : bool, default=False
        Whether 2-D (tabular) input is accepted.
    dtype : numpy dtype, default=np.float32
        Output dtype.

    Returns
    -------
    X : ndarray
        The images as a C-contiguous array of ``dtype``, same shape as given.

    Raises
    ------
    ValueError
        If ``X`` is empty, has the wrong number of dimensions, a non-numeric
        dtype, or contains NaN or infinite values.
    """
    if hasattr(X, "toarray") or hasattr(X, "tocsr"):
        raise TypeError(f"{name} is a sparse matrix; skxray needs dense image arrays.")
    try:
        arr = np.asarray(X)
    except Exception as exc:  # ragged lists and the like
        raise ValueError(f"{name} could not be converted to an array: {exc}") from exc
    if arr.dtype.kind == "c":
        raise ValueError(f"{name} has a complex dtype ({arr.dtype}); images must be real-valued.")
    if arr.dtype.kind not in "biuf":
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"{name} has dtype {arr.dtype} that cannot be read as numbers; "
                "pass numeric image arrays (or a 1-D array of file paths where supported)."
            ) from exc
    allowed = (2, 3, 4) if allow_2d else (3, 4)
    if arr.ndim not in allowed:
        shapes = " or ".join(
            s
            for s, nd in (
                ("(n_samples, n_features)", 2),
                ("(n_samples, height, width)", 3),
                ("(n_samples, channels, height, width)", 4),
            )
            if nd in allowed
        )
        raise ValueError(f"{name} must have shape {shapes}; got an array with shape {arr.shape}.")
    if arr.shape[0] == 0 or arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape}); at least one image is required.")
    arr = np.ascontiguousarray(arr, dtype=dtype)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values.")
    if not arr.flags.writeable:
        arr = arr.copy()
    return arr


def to_nchw(X):
    """Add a channel axis to (N, H, W) images; (N, C, H, W) passes through.

    Parameters
    ----------
    X : ndarray of shape (n_samples, height, width) or (n_samples, channels, height, width)
        Images.

    Returns
    -------
    ndarray of shape (n_samples, channels, height, width)
        A view of ``X`` with a channel axis.
    """
    return X[:, None] if X.ndim == 3 else X
