"""Image preprocessing transformers for chest X-ray arrays.

Every transformer here follows the scikit-learn transformer API and can be
chained in a :class:`~sklearn.pipeline.Pipeline`. Images are NumPy arrays of
shape ``(n_samples, height, width)`` (grayscale) or
``(n_samples, channels, height, width)``; outputs are ``float32`` and keep the
input layout unless the transformer's job is to change the channels
(:class:`ToGrayscale`, :class:`ToRGB`). :class:`ImageLoader` is the entry
point for file paths.

All transformers are stateless: ``fit`` validates its input and parameters
and returns ``self``, and ``transform`` may be called without ``fit``.

scikit-learn compatibility
--------------------------
The transformers declare what they accept through estimator tags:
``input_tags.two_d_array = False`` and ``input_tags.three_d_array = True``
(image arrays are 3-D or 4-D; a tabular ``(n_samples, n_features)`` matrix is
rejected with a ``ValueError``), ``requires_fit = False`` (stateless) and
``transformer_tags.preserves_dtype = ["float32"]``. :class:`ImageLoader`
takes file paths and sets ``input_tags.string = True`` instead of
``three_d_array``. None of them sets ``n_features_in_``: images have no fixed
feature count, and the transformers accept any image size.

Because of the ``two_d_array = False`` tag, scikit-learn's common checks
(``check_estimator`` / ``parametrize_with_checks``) skip these estimators
entirely. The test suite therefore runs the checks on test-only subclasses
whose tags claim 2-D support; for the array transformers the subclass reads
each row of a 2-D table as a one-pixel-high image, so the checks exercise the
real validation and transform code. The checks that cannot apply are listed,
each with its reason, as expected failures under ``xfail_strict=True``:

- for the array transformers, ``check_n_features_in`` and
  ``check_n_features_in_after_fitting`` (no ``n_features_in_``), and four
  checks that expect scikit-learn's exact error wording or exception type for
  complex, object, empty and 1-D input (skxray raises a ``ValueError`` with
  its own message);
- for :class:`ImageLoader`, every check that feeds numeric or sparse arrays.
"""

import os
from numbers import Integral, Real

import numpy as np
import torch
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator, TransformerMixin

from skxray._geometry import central_lung_mask
from skxray._param_validation import (
    KEEP_ASPECT,
    Interval,
    Pair,
    StrOptions,
    check_keep_aspect,
    check_param,
    validate_params,
)
from skxray._validation import check_image_array, is_path_array, to_nchw
from skxray.segmentation import REGIONS, segment_lungs

__all__ = [
    "BorderMask",
    "CenterCrop",
    "HistogramEqualization",
    "ImageLoader",
    "LungCrop",
    "LungFieldMask",
    "Normalize",
    "Rescale",
    "Resize",
    "ToGrayscale",
    "ToRGB",
    "XRayNormalize",
    "resize_image",
    "resize_images",
]

# ITU-R BT.601 luma weights, the same convention as PIL's "L" mode.
_LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)


# What ``size``/``image_size`` accepts, for the transformers'
# ``_parameter_constraints`` and the resize functions alike.
_SIZE = [
    Interval(Integral, 1, None, closed="left"),
    Pair(Integral, 1, None, closed="left", ordered=False, what="(height, width) pair"),
]


def _size_pair(size):
    """A valid ``size`` as a ``(height, width)`` tuple of ints."""
    if isinstance(size, Integral):
        return int(size), int(size)
    return int(size[0]), int(size[1])


def _check_size(size, owner, param="size"):
    """Return ``size`` as a ``(height, width)`` tuple of positive ints."""
    return _size_pair(check_param(param, size, _SIZE, owner))


def _n_channels(X):
    return 1 if X.ndim == 3 else X.shape[1]


def _interpolate(x, size):
    if tuple(x.shape[-2:]) == tuple(size):
        return x.clone()
    out = torch.nn.functional.interpolate(
        x, size=size, mode="bilinear", antialias=True, align_corners=False
    )
    # The filter is a convex combination, so each output lies within its
    # image's input range; clamping only undoes float rounding (1.0000001),
    # which would otherwise break the [0, 1] promise of ImageLoader.
    low = x.amin(dim=(1, 2, 3), keepdim=True)
    high = x.amax(dim=(1, 2, 3), keepdim=True)
    return torch.clamp(out, low, high)


def _resize_nchw(x, size, keep_aspect):
    """Resize a float32 ``(N, C, H, W)`` tensor to ``size``."""
    target_h, target_w = size
    h, w = x.shape[-2:]
    if not keep_aspect:
        return _interpolate(x, (target_h, target_w))
    if keep_aspect == "crop":
        # The largest centred region with the target's aspect ratio.
        crop_h = min(h, max(1, round(w * target_h / target_w)))
        crop_w = min(w, max(1, round(h * target_w / target_h)))
        top, left = (h - crop_h) // 2, (w - crop_w) // 2
        return _interpolate(x[..., top : top + crop_h, left : left + crop_w], (target_h, target_w))
    scale = min(target_h / h, target_w / w)
    new_h = min(target_h, max(1, round(h * scale)))
    new_w = min(target_w, max(1, round(w * scale)))
    x = _interpolate(x, (new_h, new_w))
    out = x.new_zeros((*x.shape[:2], target_h, target_w))
    top = (target_h - new_h) // 2
    left = (target_w - new_w) // 2
    out[..., top : top + new_h, left : left + new_w] = x
    return out


def resize_images(X, size, keep_aspect=False):
    """Resize a batch of images with bilinear, antialiased interpolation.

    Parameters
    ----------
    X : array-like of shape (n_samples, height, width) or \
(n_samples, channels, height, width)
        Images to resize, one size or several.
    size : int or tuple of (int, int)
        Output size: an int gives a square ``size x size`` output, a pair
        gives ``(height, width)``.
    keep_aspect : {False, True, "pad", "crop"}, default=False
        If False, stretch each image to ``size``. If True or "pad", scale it
        so that it fits inside ``size`` without distortion and pad the rest
        with zeros, centred (letterbox), so that the outputs still stack. If "crop", cut the largest
        centred region with the aspect ratio of ``size`` and resize that: no
        distortion and no padding, at the cost of the edges of the longer
        side. A stretch distorts images of one shape only, which a network
        can learn as a shortcut when the shape depends on the source.

    Returns
    -------
    ndarray of shape (n_samples, out_height, out_width) or \
(n_samples, channels, out_height, out_width)
        The resized images as ``float32``, in the input's layout.

    Raises
    ------
    ValueError
        If ``size`` is not a positive int or pair of positive ints, or ``X``
        is not a valid image array.

    See Also
    --------
    resize_image : Resize a single image.
    Resize : The same operation as a transformer.

    Examples
    --------
    >>> import numpy as np
    >>> from skxray.preprocessing import resize_images
    >>> X = np.ones((2, 20, 10), dtype=np.float32)
    >>> resize_images(X, 16).shape
    (2, 16, 16)
    >>> resize_images(X, 8, keep_aspect=True)[0, 0]
    array([0., 0., 1., 1., 1., 1., 0., 0.], dtype=float32)
    >>> tall = np.arange(40, dtype=np.float32).reshape(1, 8, 5) / 40
    >>> resize_images(tall, 5, keep_aspect="crop")[0, 0]  # rows 1-5 of 8 kept
    array([0.125, 0.15 , 0.175, 0.2  , 0.225], dtype=float32)
    """
    size = _check_size(size, "resize_images")
    keep_aspect = check_keep_aspect(keep_aspect, "resize_images")
    X = check_image_array(X, name="X")
    out = _resize_nchw(torch.from_numpy(to_nchw(X)), size, keep_aspect).numpy()
    return out[:, 0] if X.ndim == 3 else out


def resize_image(img, size, *, keep_aspect=False):
    """Resize one image with bilinear, antialiased interpolation.

    Parameters
    ----------
    img : array-like of shape (height, width) or (channels, height, width)
        The image.
    size : int or tuple of (int, int)
        Output size, as in :func:`resize_images`.
    keep_aspect : {False, True, "pad", "crop"}, default=False
        Stretch, pad or crop, as in :func:`resize_images`.

    Returns
    -------
    ndarray of shape (out_height, out_width) or (channels, out_height, out_width)
        The resized image as ``float32``, in the input's layout.

    Raises
    ------
    ValueError
        If ``size`` is invalid, or ``img`` is not 2-D or 3-D, is empty or
        contains NaN or infinite values.

    See Also
    --------
    resize_images : The same for a batch of images of one size.

    Examples
    --------
    >>> import numpy as np
    >>> from skxray.preprocessing import resize_image
    >>> img = np.zeros((3, 100, 50))  # any real dtype; float32 out
    >>> resize_image(img, 32).shape
    (3, 32, 32)
    >>> resize_image(img[0], (20, 40)).shape
    (20, 40)
    """
    size = _check_size(size, "resize_image")
    arr = np.asarray(img)
    if arr.ndim not in (2, 3):
        raise ValueError(
            "resize_image: img must have shape (height, width) or (channels, height, width); "
            f"got an array with shape {arr.shape}"
        )
    return resize_images(arr[None], size, keep_aspect=keep_aspect)[0]


class _StatelessTransformer(TransformerMixin, BaseEstimator):
    """What every transformer here shares: nothing to fit, float32 out.

    Subclasses name the input tag of what they take in ``_input_tag``.
    """

    _input_tag = "three_d_array"  # image arrays; "string" for file paths

    def __sklearn_is_fitted__(self):
        return True

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = False
        tags.input_tags.two_d_array = False
        setattr(tags.input_tags, self._input_tag, True)
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags


class _ImageTransformer(_StatelessTransformer):
    """Shared plumbing of the stateless array-to-array transformers.

    Subclasses declare their parameters in ``_parameter_constraints``
    (checked by ``fit`` and ``transform``), optionally implement
    ``_check_params`` for rules the declarations cannot state, ``_check_X`` (input constraints beyond
    :func:`check_image_array`) and ``_transform`` (validated float32 array in,
    new float32 array out; never modify the input in place, since
    ``check_image_array`` may return the caller's own array).
    """

    _parameter_constraints: dict = {}

    def _check_params(self):
        pass

    def _check_X(self, X):
        pass

    def fit(self, X, y=None):
        """Validate the parameters and ``X``; nothing is learned.

        Parameters
        ----------
        X : array-like of shape (n_samples, height, width) or \
(n_samples, channels, height, width)
            Images.
        y : None
            Ignored; present for API consistency.

        Returns
        -------
        self : object
            The transformer itself.
        """
        self._validate(X)
        return self

    def transform(self, X):
        """Apply the transformation to each image.

        Parameters
        ----------
        X : array-like of shape (n_samples, height, width) or \
(n_samples, channels, height, width)
            Images.

        Returns
        -------
        X_out : ndarray of float32
            Transformed images; see the class description for the shape.
        """
        return self._transform(self._validate(X))

    def _validate(self, X):
        validate_params(self)
        self._check_params()
        X = check_image_array(X, name="X")
        self._check_X(X)
        return X


class ImageLoader(_StatelessTransformer):
    """Read image files into an array, optionally resizing on load.

    Parameters
    ----------
    image_size : int, tuple of (int, int) or None, default=None
        Size every image is resized to while loading (an int gives square
        images, a pair gives ``(height, width)``). With None, images are kept
        at their stored size, which requires all of them to have the same
        size.
    as_gray : bool, default=True
        If True, return grayscale images of shape (n_samples, height, width);
        otherwise RGB images of shape (n_samples, 3, height, width).
    keep_aspect : {"crop", "pad", True, False}, default="crop"
        How files whose aspect ratio differs from ``image_size`` are resized:
        centre-cropped to the target aspect ratio first ("crop"), letterboxed
        with zero padding (True or "pad"), or stretched (False). The crop is
        the default because the image shape often differs between sources
        (in the DarkCovidNet set every NIH file is square and almost every
        Covid-19 file is not): a stretch distorts one source only and hands
        the model a shortcut, a letterbox turns it into black bars.
    n_jobs : int or None, default=None
        Number of images decoded in parallel (threads; decoding releases the
        GIL). None means 1, -1 means all processors.

    See Also
    --------
    skxray.io.read_image : Reads one file; used by this transformer.
    Resize : Resize images that are already in memory.

    Notes
    -----
    The transformer is stateless and holds no data, so it pickles cheaply;
    ``fit`` only checks the input. Files are read with
    :func:`skxray.io.read_image`, and its
    :class:`~skxray.io.ImageReadError` (which names the file) propagates
    unchanged.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from PIL import Image
    >>> from skxray.preprocessing import ImageLoader
    >>> tmp = tempfile.TemporaryDirectory()
    >>> paths = [os.path.join(tmp.name, f"{i}.png") for i in range(2)]
    >>> for i, path in enumerate(paths):
    ...     Image.fromarray(np.full((40, 30 + i), 255, dtype=np.uint8)).save(path)
    >>> X = ImageLoader(image_size=16).fit_transform(paths)
    >>> X.shape, X.dtype, float(X.max())
    ((2, 16, 16), dtype('float32'), 1.0)
    >>> tmp.cleanup()
    """

    _input_tag = "string"
    _parameter_constraints: dict = {
        "image_size": [None, *_SIZE],
        "as_gray": ["boolean"],
        "keep_aspect": KEEP_ASPECT,
        # joblib's n_jobs: any int but 0.
        "n_jobs": [
            None,
            Interval(Integral, None, -1, closed="right"),
            Interval(Integral, 1, None, closed="left"),
        ],
    }

    def __init__(self, image_size=None, as_gray=True, keep_aspect="crop", n_jobs=None):
        self.image_size = image_size
        self.as_gray = as_gray
        self.keep_aspect = keep_aspect
        self.n_jobs = n_jobs

    @staticmethod
    def _check_paths(X):
        if not is_path_array(X):
            if isinstance(X, (str, os.PathLike)):
                detail = "a single path; wrap it in a list"
            else:
                shape = getattr(X, "shape", None)
                detail = f"{type(X).__name__}" + (f" of shape {shape}" if shape else "")
            raise ValueError(
                "ImageLoader expects a non-empty 1-D array-like of file paths "
                f"(str or os.PathLike), got {detail}. Pass arrays of pixels "
                "directly to the other transformers instead."
            )
        return list(X.to_numpy() if hasattr(X, "to_numpy") else X)

    def _validated_size(self):
        """Check the parameters; return the size to load to, None for as stored."""
        validate_params(self)
        return None if self.image_size is None else _size_pair(self.image_size)

    def fit(self, X, y=None):
        """Check the parameters and that ``X`` holds file paths.

        Parameters
        ----------
        X : array-like of str or os.PathLike of shape (n_samples,)
            Image file paths.
        y : None
            Ignored; present for API consistency.

        Returns
        -------
        self : ImageLoader
            The loader, unchanged: nothing is learned.
        """
        self._validated_size()
        self._check_paths(X)
        return self

    def _load_one(self, path, size):
        from skxray.io import read_image

        img = np.asarray(read_image(path, as_gray=self.as_gray), dtype=np.float32)
        if img.ndim == 3:
            img = np.moveaxis(img, -1, 0)
        elif not self.as_gray:
            img = np.broadcast_to(img, (3, *img.shape))
        if size is not None:
            img = resize_image(img, size, keep_aspect=self.keep_aspect)
        return img

    def transform(self, X):
        """Read the images, in the order of ``X``.

        Parameters
        ----------
        X : array-like of str or os.PathLike of shape (n_samples,)
            Image file paths: a list, tuple, 1-D ndarray or pandas Series.

        Returns
        -------
        images : ndarray of shape (n_samples, height, width) or \
(n_samples, 3, height, width)
            ``float32`` images with values in [0, 1]; grayscale when
            ``as_gray=True``, RGB otherwise.

        Raises
        ------
        ValueError
            If ``X`` is not a 1-D array-like of paths, or ``image_size`` is
            None and the images differ in size.
        skxray.io.ImageReadError
            If a file cannot be read; the message names the file.
        """
        size = self._validated_size()
        paths = self._check_paths(X)
        images = Parallel(n_jobs=self.n_jobs, prefer="threads")(
            delayed(self._load_one)(path, size) for path in paths
        )
        first = images[0].shape
        for path, img in zip(paths, images):
            if img.shape != first:
                raise ValueError(
                    f"ImageLoader: images differ in size ({os.fspath(paths[0])!r} is "
                    f"{first[-2]}x{first[-1]}, {os.fspath(path)!r} is "
                    f"{img.shape[-2]}x{img.shape[-1]}); set image_size to resize them on load."
                )
        return np.stack(images).astype(np.float32, copy=False)


class Resize(_ImageTransformer):
    """Resize images with bilinear, antialiased interpolation.

    Parameters
    ----------
    size : int or tuple of (int, int), default=224
        Output size: an int gives square ``size x size`` images, a pair gives
        ``(height, width)``.
    keep_aspect : bool, default=False
        If False, stretch each image to ``size``. If True or "pad", scale it
        to fit inside ``size`` without distortion and pad the rest with zeros,
        centred (letterbox). If "crop", resize the largest centred region
        with the aspect ratio of ``size`` (no distortion, no padding).

    See Also
    --------
    resize_images : The function behind this transformer.
    CenterCrop : Crop instead of resizing.

    Examples
    --------
    >>> import numpy as np
    >>> from skxray.preprocessing import Resize
    >>> X = np.random.default_rng(0).random((4, 3, 64, 48))
    >>> Resize(size=32).fit_transform(X).shape
    (4, 3, 32, 32)
    """

    _parameter_constraints: dict = {"size": _SIZE, "keep_aspect": KEEP_ASPECT}

    def __init__(self, size=224, keep_aspect=False):
        self.size = size
        self.keep_aspect = keep_aspect

    def _transform(self, X):
        return resize_images(X, self.size, keep_aspect=self.keep_aspect)


class CenterCrop(_ImageTransformer):
    """Crop the central region of each image.

    Parameters
    ----------
    size : int or tuple of (int, int), default=224
        Crop size: an int gives a central ``size x size`` square, a pair gives
        ``(height, width)``.

    See Also
    --------
    Resize : Resize instead of cropping; use it first for small images.

    Notes
    -----
    Images smaller than ``size`` raise a ``ValueError`` rather than being
    padded, because silently padding would feed the model borders that the
    training images never had. When an odd number of pixels is removed, the
    extra one comes from the bottom/right.

    Examples
    --------
    >>> import numpy as np
    >>> from skxray.preprocessing import CenterCrop
    >>> X = np.arange(2 * 6 * 6).reshape(2, 6, 6)
    >>> CenterCrop(size=2).fit_transform(X)[0]
    array([[14., 15.],
           [20., 21.]], dtype=float32)
    """

    _parameter_constraints: dict = {"size": _SIZE}

    def __init__(self, size=224):
        self.size = size

    def _check_X(self, X):
        crop_h, crop_w = _size_pair(self.size)
        h, w = X.shape[-2:]
        if crop_h > h or crop_w > w:
            raise ValueError(
                f"CenterCrop: size {self.size!r} is larger than the images "
                f"(X has shape {X.shape}); resize the images first or lower size."
            )

    def _transform(self, X):
        crop_h, crop_w = _size_pair(self.size)
        h, w = X.shape[-2:]
        top = (h - crop_h) // 2
        left = (w - crop_w) // 2
        return X[..., top : top + crop_h, left : left + crop_w].copy()


class _ChannelConversion(_ImageTransformer):
    """Takes grayscale or RGB images only: 1 or 3 channels."""

    def _check_X(self, X):
        if X.ndim == 4 and X.shape[1] not in (1, 3):
            raise ValueError(
                f"{type(self).__name__}: expected 1 or 3 channels, got {X.shape[1]} channels "
                f"(X has shape {X.shape})."
            )


class ToGrayscale(_ChannelConversion):
    """Convert images to single-channel grayscale.

    RGB images of shape (n_samples, 3, height, width) become their luminance
    ``0.299 R + 0.587 G + 0.114 B``; (n_samples, 1, height, width) images lose
    the channel axis; (n_samples, height, width) images pass through. The
    output has shape (n_samples, height, width).

    See Also
    --------
    ToRGB : Back to three (identical) channels.

    Examples
    --------
    >>> import numpy as np
    >>> from skxray.preprocessing import ToGrayscale
    >>> X = np.ones((2, 3, 4, 4))
    >>> Xg = ToGrayscale().fit_transform(X)
    >>> Xg.shape, bool(np.allclose(Xg, 1.0))
    ((2, 4, 4), True)
    """

    def _transform(self, X):
        if X.ndim == 3:
            return X.copy()
        if X.shape[1] == 1:
            return X[:, 0].copy()
        return np.tensordot(_LUMA_WEIGHTS, X, axes=([0], [1])).astype(np.float32, copy=False)


class ToRGB(_ChannelConversion):
    """Replicate grayscale images into three identical channels.

    Useful for networks pretrained on ImageNet, which expect RGB input.
    (n_samples, height, width) and (n_samples, 1, height, width) images become
    (n_samples, 3, height, width); RGB images pass through.

    See Also
    --------
    ToGrayscale : The opposite conversion.

    Examples
    --------
    >>> import numpy as np
    >>> from skxray.preprocessing import ToRGB
    >>> ToRGB().fit_transform(np.zeros((2, 8, 8))).shape
    (2, 3, 8, 8)
    """

    def _transform(self, X):
        X = to_nchw(X)
        return np.repeat(X, 3 // X.shape[1], axis=1)


class Rescale(_ImageTransformer):
    """Min-max scale each image independently to [0, 1].

    Each image (all its channels together, which keeps the colour balance) is
    mapped so that its smallest value becomes 0 and its largest 1. Constant
    images become all zeros.

    See Also
    --------
    Normalize : Fixed mean/std standardisation.
    HistogramEqualization : Per-image contrast equalisation.

    Notes
    -----
    The scaling is per image, not learned from the training set: it removes
    differences in overall exposure between images (and between sources),
    but also any information the absolute intensities carried.

    Examples
    --------
    >>> import numpy as np
    >>> from skxray.preprocessing import Rescale
    >>> X = np.array([[[0, 50], [100, 200]], [[3, 3], [3, 3]]])
    >>> Rescale().fit_transform(X)
    array([[[0.  , 0.25],
            [0.5 , 1.  ]],
    <BLANKLINE>
           [[0.  , 0.  ],
            [0.  , 0.  ]]], dtype=float32)
    """

    def _transform(self, X):
        # float64: max - min of float32 data can overflow to inf.
        flat = X.reshape(len(X), -1).astype(np.float64)
        low = flat.min(axis=1, keepdims=True)
        span = flat.max(axis=1, keepdims=True) - low
        out = np.divide(flat - low, span, out=np.zeros_like(flat), where=span > 0)
        return out.reshape(X.shape).astype(np.float32)


class Normalize(_ImageTransformer):
    """Standardise images with a fixed mean and standard deviation.

    Computes ``(X - mean) / std``, per channel when sequences are given.

    Parameters
    ----------
    mean : float or sequence of float, default=0.5
        Value subtracted: one number for all channels, or one per channel.
    std : float or sequence of float, default=0.25
        Positive divisor: one number for all channels, or one per channel.

    See Also
    --------
    XRayNormalize : The torchxrayvision intensity convention.
    Rescale : Per-image min-max scaling.

    Examples
    --------
    >>> import numpy as np
    >>> from skxray.preprocessing import Normalize
    >>> X = np.full((1, 3, 2, 2), 0.5)
    >>> norm = Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    >>> norm.fit_transform(X)[0, :, 0, 0].round(3)
    array([0.066, 0.196, 0.418], dtype=float32)
    """

    # A number or one per channel; each value's finiteness (and the std's
    # sign) is checked by hand in _stats, as the declarations see only the
    # whole sequence.
    _parameter_constraints: dict = {
        "mean": [Interval(Real, None, None, closed="neither"), "array-like"],
        "std": [Interval(Real, 0, None, closed="neither"), "array-like"],
    }

    def __init__(self, mean=0.5, std=0.25):
        self.mean = mean
        self.std = std

    def _stats(self):
        stats = {}
        for name in ("mean", "std"):
            value = getattr(self, name)
            try:
                arr = np.asarray(value, dtype=np.float64)
            except (TypeError, ValueError):
                arr = None
            if arr is None or arr.ndim > 1 or arr.size == 0 or not np.isfinite(arr).all():
                raise ValueError(
                    f"Normalize: {name} must be a finite number or a non-empty sequence "
                    f"of finite numbers (one per channel), got {value!r}"
                )
            stats[name] = arr.reshape(-1)
        if (stats["std"] <= 0).any():
            raise ValueError(f"Normalize: std must be positive, got {self.std!r}")
        return stats["mean"], stats["std"]

    def _check_params(self):
        self._stats()

    def _check_X(self, X):
        n_channels = _n_channels(X)
        for name, arr in zip(("mean", "std"), self._stats()):
            if arr.size not in (1, n_channels):
                raise ValueError(
                    f"Normalize: {name} has {arr.size} values but X has {n_channels} "
                    f"channel(s) (shape {X.shape}); give one value or one per channel."
                )

    def _transform(self, X):
        mean, std = self._stats()
        out = (to_nchw(X) - mean[:, None, None]) / std[:, None, None]
        out = out.astype(np.float32)
        return out[:, 0] if X.ndim == 3 else out


class XRayNormalize(_ImageTransformer):
    """Map intensities from [0, max_value] to [-1024, 1024].

    Computes ``(2 * X / max_value - 1) * 1024``, the convention of the
    torchxrayvision pretrained models.

    Parameters
    ----------
    max_value : float, default=1.0
        The largest intensity the images can take: 1.0 for images in [0, 1]
        (as read by :class:`ImageLoader`), 255 for 8-bit images.

    See Also
    --------
    Normalize : Mean/std standardisation.

    Notes
    -----
    Values above ``max_value`` or below 0 raise a ``ValueError`` instead of
    being clipped: like in torchxrayvision, they mean ``max_value`` does not
    match the data (typically 8-bit images with ``max_value=1``), and the
    output would silently leave the range the models were trained on.

    Examples
    --------
    >>> import numpy as np
    >>> from skxray.preprocessing import XRayNormalize
    >>> X = np.array([[[0, 127.5, 255]]])
    >>> XRayNormalize(max_value=255).fit_transform(X)
    array([[[-1024.,     0.,  1024.]]], dtype=float32)
    """

    _parameter_constraints: dict = {"max_value": [Interval(Real, 0, np.inf, closed="neither")]}

    def __init__(self, max_value=1.0):
        self.max_value = max_value

    def _check_X(self, X):
        high, low = float(X.max()), float(X.min())
        if high > self.max_value:
            raise ValueError(
                f"XRayNormalize: X has values up to {high:g}, above max_value={self.max_value!r}; "
                "set max_value to the largest possible intensity (e.g. 255 for 8-bit images)."
            )
        if low < 0:
            raise ValueError(
                f"XRayNormalize: Negative values in data (down to {low:g}); X must hold "
                "intensities in [0, max_value], so apply it before any other normalisation."
            )

    def _transform(self, X):
        out = (2.0 * X.astype(np.float64) / self.max_value - 1.0) * 1024.0
        return out.astype(np.float32)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.positive_only = True
        return tags


class HistogramEqualization(_ImageTransformer):
    """Equalise the intensity histogram of each image.

    Each image (all channels together) is mapped through its own cumulative
    histogram, so that intensities spread evenly over [0, 1]. The histogram
    spans the image's own value range, so any intensity range is accepted;
    the darkest pixels map to 0, the brightest to 1, constant images to 0.

    Parameters
    ----------
    n_bins : int, default=256
        Number of histogram bins (at least 2).

    See Also
    --------
    Rescale : Linear per-image scaling.

    Notes
    -----
    Equalisation removes much of the global brightness and contrast
    signature of a scanner or hospital, a common shortcut that models pick up
    instead of the pathology.

    Examples
    --------
    >>> import numpy as np
    >>> from skxray.preprocessing import HistogramEqualization
    >>> X = np.array([[[0.0, 0.1], [0.2, 1.0]]])
    >>> HistogramEqualization().fit_transform(X).round(3)
    array([[[0.   , 0.333],
            [0.667, 1.   ]]], dtype=float32)
    """

    _parameter_constraints: dict = {"n_bins": [Interval(Integral, 2, None, closed="left")]}

    def __init__(self, n_bins=256):
        self.n_bins = n_bins

    def _transform(self, X):
        n_bins = int(self.n_bins)
        out = np.zeros(X.shape, dtype=np.float32)
        for i, img in enumerate(X):
            flat = img.reshape(-1).astype(np.float64)
            low, high = flat.min(), flat.max()
            if high <= low:
                continue
            bins = np.minimum(((flat - low) / (high - low) * n_bins).astype(np.intp), n_bins - 1)
            cdf = np.cumsum(np.bincount(bins, minlength=n_bins))
            # The darkest bin is subtracted so that the output starts at 0,
            # whatever fraction of the pixels it holds.
            out[i] = ((cdf[bins] - cdf[0]) / (cdf[-1] - cdf[0])).reshape(img.shape)
        return out


class BorderMask(_ImageTransformer):
    """Set a band along every border of each image to 0.

    Parameters
    ----------
    fraction : float, default=0.1
        Width of the band as a fraction of the image's height (top and bottom
        bands) and width (left and right bands), rounded down to whole
        pixels; in [0, 0.5).

    See Also
    --------
    skxray.augmentation.RandomBorderMask : Random band widths at train time.

    Notes
    -----
    Corner text, rulers and laterality markers differ between hospitals and
    let a model recognise the source instead of the disease; masking the
    border hides most of them.

    Examples
    --------
    >>> import numpy as np
    >>> from skxray.preprocessing import BorderMask
    >>> BorderMask(fraction=0.25).fit_transform(np.ones((1, 4, 4)))[0]
    array([[0., 0., 0., 0.],
           [0., 1., 1., 0.],
           [0., 1., 1., 0.],
           [0., 0., 0., 0.]], dtype=float32)
    """

    # Two bands of half the side would hide the whole image.
    _parameter_constraints: dict = {"fraction": [Interval(Real, 0, 0.5, closed="left")]}

    def __init__(self, fraction=0.1):
        self.fraction = fraction

    def _transform(self, X):
        h, w = X.shape[-2:]
        band_h, band_w = int(self.fraction * h), int(self.fraction * w)
        out = np.zeros_like(X)
        out[..., band_h : h - band_h, band_w : w - band_w] = X[
            ..., band_h : h - band_h, band_w : w - band_w
        ]
        return out


def _lungs_of(X, region):
    """(N, H, W) lung masks of ``X``: the segmenter's or the ellipse prior for all."""
    if region == "ellipse":
        mask = central_lung_mask(*X.shape[-2:])
        return np.broadcast_to(mask, (X.shape[0], *mask.shape))
    return segment_lungs(X)


class LungFieldMask(_ImageTransformer):
    """Keep the lung fields of each image and set the rest to ``fill`` (or return the masks).

    By default the lungs of each image are found by skxray's lung segmenter
    (:func:`skxray.segmentation.segment_lungs`, a small network shipped with
    the package); ``region="ellipse"`` keeps the former fixed geometric prior
    instead, two upright ellipses where the lungs of a roughly centred frontal
    radiograph lie (:func:`skxray.explain.central_lung_mask`), the same for
    every image.

    Parameters
    ----------
    fill : float, default=0.0
        Value given to every pixel outside the lung fields.
    region : {"segmenter", "ellipse"}, default="segmenter"
        Where the lungs are: each image's own, found by the segmenter, or the
        fixed ellipse prior (the fallback).
    output : {"masked", "mask"}, default="masked"
        ``"masked"``: the images, in their layout, with every pixel outside
        the lungs set to ``fill``; ``"mask"``: the lung masks themselves,
        float32 of shape ``(n_samples, height, width)``, 1 on lung.

    See Also
    --------
    LungCrop : Crop each image to its lungs.
    BorderMask : Hide only a band along the borders.
    skxray.segmentation.segment_lungs : The segmenter's masks.
    skxray.explain.central_lung_mask : The ellipse prior.

    Notes
    -----
    Everything outside the lungs (borders, corner text, shoulders, the
    abdomen, the mediastinum) is hidden from the model, so it cannot
    learn a shortcut there. That does not prove the model learned the disease
    rather than source differences *inside* the lungs (texture, contrast,
    noise). The ellipse prior covers about 59 % of the true lung area of
    real radiographs; the segmenter's accuracy, and what it was not checked
    on, are on the docs page "Lung segmentation".

    Examples
    --------
    >>> import numpy as np
    >>> from skxray.preprocessing import LungFieldMask
    >>> LungFieldMask(region="ellipse").fit_transform(np.ones((1, 4, 4)))[0]
    array([[0., 0., 0., 0.],
           [0., 1., 1., 0.],
           [0., 1., 1., 0.],
           [0., 0., 0., 0.]], dtype=float32)
    """

    _parameter_constraints: dict = {
        "fill": [Interval(Real, None, None, closed="neither")],
        "region": [StrOptions(set(REGIONS))],
        "output": [StrOptions({"masked", "mask"})],
    }

    def __init__(self, fill=0.0, region="segmenter", output="masked"):
        self.fill = fill
        self.region = region
        self.output = output

    def _transform(self, X):
        mask = _lungs_of(X, self.region)
        if self.output == "mask":
            return np.ascontiguousarray(mask, dtype=np.float32)
        mask = mask if X.ndim == 3 else mask[:, None]
        return np.where(mask, X, np.float32(self.fill)).astype(np.float32, copy=False)


class LungCrop(_ImageTransformer):
    """Crop each image to the box around its lungs and resize it back to its size.

    Parameters
    ----------
    region : {"segmenter", "ellipse"}, default="segmenter"
        Where the lungs are: each image's own, found by skxray's lung
        segmenter (:func:`skxray.segmentation.segment_lungs`), or the fixed
        ellipse prior (:func:`skxray.explain.central_lung_mask`; the same
        central box for every image).
    margin : float, default=0.05
        Added to each side of the box, as a fraction of the image's height
        (top, bottom) and width (left, right), in [0, 0.5].

    See Also
    --------
    LungFieldMask : Hide everything but the lungs.
    CenterCrop : A fixed central crop.

    Notes
    -----
    The output keeps the input's shape: the crop is stretched back to it
    (bilinear, antialiased). An image where no lung is found is returned
    unchanged. Borders, corner text and most of the abdomen leave the image,
    and the lungs fill it, at a higher resolution than in the whole image.

    Examples
    --------
    >>> import numpy as np
    >>> from skxray.preprocessing import LungCrop
    >>> LungCrop(region="ellipse").fit_transform(np.ones((2, 32, 32))).shape
    (2, 32, 32)
    """

    _parameter_constraints: dict = {
        "region": [StrOptions(set(REGIONS))],
        "margin": [Interval(Real, 0, 0.5, closed="both")],
    }

    def __init__(self, region="segmenter", margin=0.05):
        self.region = region
        self.margin = margin

    def _transform(self, X):
        masks = _lungs_of(X, self.region)
        x = torch.from_numpy(np.ascontiguousarray(to_nchw(X)))
        h, w = X.shape[-2:]
        out = np.empty_like(to_nchw(X))
        for i, mask in enumerate(masks):
            rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
            if rows.size == 0:
                out[i] = x[i].numpy()
                continue
            dh, dw = int(round(self.margin * h)), int(round(self.margin * w))
            top, bottom = max(0, rows[0] - dh), min(h, rows[-1] + 1 + dh)
            left, right = max(0, cols[0] - dw), min(w, cols[-1] + 1 + dw)
            crop = x[i : i + 1, :, top:bottom, left:right]
            out[i] = _resize_nchw(crop, (h, w), False)[0].numpy()
        return out[:, 0] if X.ndim == 3 else out
