"""Train-time image augmentation for the skxray estimators.

An augmentation is a callable applied to one training image at a time: a
``float32`` :class:`torch.Tensor` of shape ``(channels, height, width)`` in,
a tensor of the same shape and dtype out. All randomness is drawn from
torch's global random number generator, which the estimators seed inside
``fit``, so training runs are reproducible; nothing here uses NumPy's or
Python's ``random`` generators.

The classes are scikit-learn estimators (:class:`~sklearn.base.BaseEstimator`
subclasses): they can be cloned, pickled and tuned, e.g.
``GridSearchCV(pipe, {"clf__augment__degrees": [5, 10]})``. Their parameters
are declared in ``_parameter_constraints`` (scikit-learn's format) and
validated on each call; an invalid one raises a ``ValueError`` naming the
class, the parameter and the value. They are built on :mod:`torchvision.transforms.v2`.

:func:`xray_augmentation` returns ready-made presets.
"""

import math
from numbers import Real

import torch
import torchvision.transforms.v2 as T
import torchvision.transforms.v2.functional as TF
from sklearn.base import BaseEstimator

from skxray._param_validation import Interval, Pair, validate_params

__all__ = [
    "Compose",
    "RandomBorderMask",
    "RandomBrightnessContrast",
    "RandomErasing",
    "RandomFlip",
    "RandomGamma",
    "RandomResizedCrop",
    "RandomRotation",
    "xray_augmentation",
]


def _check_image(owner, img):
    if not isinstance(img, torch.Tensor) or img.ndim != 3 or not img.is_floating_point():
        description = (
            f"a {img.dtype} tensor of shape {tuple(img.shape)}"
            if isinstance(img, torch.Tensor)
            else type(img).__name__
        )
        raise ValueError(
            f"{owner}: expects one image as a floating-point tensor of shape "
            f"(channels, height, width), got {description}"
        )


def _uniform(low, high):
    return low + (high - low) * torch.rand(()).item()


class _Augmentation(BaseEstimator):
    """Shared ``__call__``: validate, skip with probability ``1 - p``, apply.

    Subclasses declare their parameters in ``_parameter_constraints`` (merged
    with this one's ``p``) and implement ``_apply(img)``, or override
    ``_augment(img)`` to handle ``p`` themselves.
    """

    _parameter_constraints: dict = {"p": [Interval(Real, 0, 1, closed="both")]}

    def __call__(self, img):
        """Augment one image.

        Parameters
        ----------
        img : torch.Tensor of shape (channels, height, width)
            A floating-point image.

        Returns
        -------
        torch.Tensor of shape (channels, height, width)
            The augmented image, same shape and dtype (``img`` itself when
            the augmentation is skipped).
        """
        validate_params(self)
        _check_image(type(self).__name__, img)
        return self._augment(img)

    def _augment(self, img):
        # p == 1 draws nothing, so adding an always-on step does not shift
        # the random stream of the steps after it.
        if self.p < 1 and (self.p == 0 or torch.rand(()).item() >= self.p):
            return img
        return self._apply(img)


class RandomFlip(_Augmentation):
    """Randomly mirror the image.

    Parameters
    ----------
    p : float, default=0.5
        Probability of flipping along each enabled axis (independently).
    horizontal : bool, default=True
        Whether to flip left-right.
    vertical : bool, default=False
        Whether to flip top-bottom.

    See Also
    --------
    RandomRotation : Small rotations.

    Notes
    -----
    A horizontal flip moves the heart to the right side of the image. On
    chest X-rays it is a mild augmentation, widely used, but not anatomically
    neutral (and the laterality marker is mirrored too); vertical flips are
    rarely sensible for chest X-rays.

    Examples
    --------
    >>> import torch
    >>> from skxray.augmentation import RandomFlip
    >>> img = torch.arange(4.0).reshape(1, 2, 2)
    >>> RandomFlip(p=1.0)(img)
    tensor([[[1., 0.],
             [3., 2.]]])
    """

    def __init__(self, p=0.5, horizontal=True, vertical=False):
        self.p = p
        self.horizontal = horizontal
        self.vertical = vertical

    _parameter_constraints: dict = {
        **_Augmentation._parameter_constraints,
        "horizontal": ["boolean"],
        "vertical": ["boolean"],
    }

    def _augment(self, img):
        # Each axis has its own draw, so the shared "skip with 1 - p" logic
        # of the base class does not apply.
        for enabled, flip in (
            (self.horizontal, TF.horizontal_flip),
            (self.vertical, TF.vertical_flip),
        ):
            if enabled and self.p > 0 and (self.p == 1 or torch.rand(()).item() < self.p):
                img = flip(img)
        return img


class RandomRotation(_Augmentation):
    """Rotate the image by a random angle, filling the corners with 0.

    Parameters
    ----------
    degrees : float or tuple of (float, float), default=10.0
        Maximum absolute angle in degrees (the angle is drawn uniformly from
        ``[-degrees, degrees]``), or a ``(min, max)`` range.
    p : float, default=1.0
        Probability of rotating.

    See Also
    --------
    RandomResizedCrop : Random zoom and shift.

    Examples
    --------
    >>> import torch
    >>> from skxray.augmentation import RandomRotation
    >>> _ = torch.manual_seed(0)
    >>> RandomRotation(degrees=5)(torch.rand(1, 32, 32)).shape
    torch.Size([1, 32, 32])
    """

    def __init__(self, degrees=10.0, p=1.0):
        self.degrees = degrees
        self.p = p

    _parameter_constraints: dict = {
        **_Augmentation._parameter_constraints,
        "degrees": [Interval(Real, 0, 180, closed="both"), Pair(Real, -180, 180, closed="both")],
    }

    def _apply(self, img):
        if isinstance(self.degrees, Real):
            low, high = -float(self.degrees), float(self.degrees)
        else:
            low, high = map(float, self.degrees)
        angle = _uniform(low, high)
        return TF.rotate(img, angle, interpolation=T.InterpolationMode.BILINEAR, fill=0.0)


class _AreaAndRatio(_Augmentation):
    """A rectangle drawn by area (``scale``) and aspect ratio (``ratio``) ranges."""

    _parameter_constraints: dict = {
        **_Augmentation._parameter_constraints,
        "scale": [Pair(Real, 0, 1, closed="right")],
        "ratio": [Pair(Real, 0, None, closed="neither")],
    }

    def _ranges(self):
        """``scale`` and ``ratio`` as tuples of floats, as torchvision takes them."""
        return tuple(map(float, self.scale)), tuple(map(float, self.ratio))


class RandomResizedCrop(_AreaAndRatio):
    """Crop a random region and resize it back to the input size.

    Parameters
    ----------
    scale : tuple of (float, float), default=(0.85, 1.0)
        Range of the crop's area as a fraction of the image area, in (0, 1].
    ratio : tuple of (float, float), default=(0.9, 1.1)
        Range of the crop's aspect ratio (width / height), drawn
        log-uniformly.
    p : float, default=1.0
        Probability of cropping.

    See Also
    --------
    RandomRotation : Random rotation.

    Notes
    -----
    Uses :class:`torchvision.transforms.v2.RandomResizedCrop` with bilinear,
    antialiased resizing; the output size is the input size.

    Examples
    --------
    >>> import torch
    >>> from skxray.augmentation import RandomResizedCrop
    >>> _ = torch.manual_seed(0)
    >>> RandomResizedCrop(scale=(0.8, 1.0))(torch.rand(3, 20, 30)).shape
    torch.Size([3, 20, 30])
    """

    def __init__(self, scale=(0.85, 1.0), ratio=(0.9, 1.1), p=1.0):
        self.scale = scale
        self.ratio = ratio
        self.p = p

    def _apply(self, img):
        scale, ratio = self._ranges()
        crop = T.RandomResizedCrop(size=tuple(img.shape[-2:]), scale=scale, ratio=ratio)
        return crop(img)


class RandomBrightnessContrast(_Augmentation):
    """Randomly change brightness and contrast.

    Contrast is scaled around the image mean by a factor drawn from
    ``[1 - contrast, 1 + contrast]``, then all values are multiplied by a
    brightness factor drawn from ``[1 - brightness, 1 + brightness]``.

    Parameters
    ----------
    brightness : float, default=0.1
        Maximum relative brightness change, in [0, 1).
    contrast : float, default=0.1
        Maximum relative contrast change, in [0, 1).
    p : float, default=1.0
        Probability of applying the change.

    See Also
    --------
    RandomGamma : Non-linear intensity jitter.

    Notes
    -----
    The result is not clamped, so the transform suits images in any range
    (raw [0, 1] or standardised), but [0, 1] images may leave [0, 1] slightly.

    Examples
    --------
    >>> import torch
    >>> from skxray.augmentation import RandomBrightnessContrast
    >>> _ = torch.manual_seed(0)
    >>> img = torch.full((1, 8, 8), 0.5)
    >>> out = RandomBrightnessContrast(brightness=0.2, contrast=0.0)(img)
    >>> 0.4 <= out.max().item() <= 0.6
    True
    """

    def __init__(self, brightness=0.1, contrast=0.1, p=1.0):
        self.brightness = brightness
        self.contrast = contrast
        self.p = p

    _parameter_constraints: dict = {
        **_Augmentation._parameter_constraints,
        "brightness": [Interval(Real, 0, 1, closed="left")],
        "contrast": [Interval(Real, 0, 1, closed="left")],
    }

    def _apply(self, img):
        contrast = _uniform(1 - self.contrast, 1 + self.contrast)
        brightness = _uniform(1 - self.brightness, 1 + self.brightness)
        mean = img.mean()
        return ((img - mean) * contrast + mean) * brightness


class RandomGamma(_Augmentation):
    """Apply a random gamma curve to the intensities.

    With ``m`` the image maximum, values become ``m * (x / m) ** g`` for a
    gamma ``g`` drawn log-uniformly from ``gamma``, so 0 and the maximum stay
    fixed and the image range is preserved.

    Parameters
    ----------
    gamma : tuple of (float, float), default=(0.8, 1.25)
        Range of the gamma exponent, both positive.
    p : float, default=1.0
        Probability of applying the curve.

    See Also
    --------
    RandomBrightnessContrast : Linear intensity jitter.

    Notes
    -----
    Meant for non-negative images (e.g. in [0, 1]): jittering the intensity
    curve keeps a model from keying on the response curve of a particular
    scanner. Images with negative values (already standardised) are mapped
    through the curve between their minimum and maximum instead, so the
    transform never fails during training.

    Examples
    --------
    >>> import torch
    >>> from skxray.augmentation import RandomGamma
    >>> img = torch.tensor([[[0.0, 0.25, 1.0]]])
    >>> RandomGamma(gamma=(2.0, 2.0))(img)
    tensor([[[0.0000, 0.0625, 1.0000]]])
    """

    def __init__(self, gamma=(0.8, 1.25), p=1.0):
        self.gamma = gamma
        self.p = p

    _parameter_constraints: dict = {
        **_Augmentation._parameter_constraints,
        "gamma": [Pair(Real, 0, None, closed="neither")],
    }

    def _apply(self, img):
        low, high = map(float, self.gamma)
        gamma = math.exp(_uniform(math.log(low), math.log(high)))
        top = img.max()
        bottom = torch.clamp(img.min(), max=0.0)
        span = top - bottom
        if span <= 0:
            return img.clone()
        return bottom + span * ((img - bottom) / span).clamp(0, 1).pow(gamma)


class RandomErasing(_AreaAndRatio):
    """Set a random rectangle to 0 (cut-out).

    Parameters
    ----------
    p : float, default=0.5
        Probability of erasing.
    scale : tuple of (float, float), default=(0.02, 0.1)
        Range of the rectangle's area as a fraction of the image area.
    ratio : tuple of (float, float), default=(0.3, 3.3)
        Range of the rectangle's aspect ratio, drawn log-uniformly.

    See Also
    --------
    RandomBorderMask : Erase along the borders instead.

    Notes
    -----
    Uses :class:`torchvision.transforms.v2.RandomErasing`. When no rectangle
    of the drawn size fits (tiny images), the image is returned unchanged.

    Examples
    --------
    >>> import torch
    >>> from skxray.augmentation import RandomErasing
    >>> _ = torch.manual_seed(0)
    >>> out = RandomErasing(p=1.0, scale=(0.1, 0.1))(torch.ones(1, 20, 20))
    >>> int((out == 0).sum())
    40
    """

    def __init__(self, p=0.5, scale=(0.02, 0.1), ratio=(0.3, 3.3)):
        self.p = p
        self.scale = scale
        self.ratio = ratio

    def _apply(self, img):
        scale, ratio = self._ranges()
        return T.RandomErasing(p=1.0, scale=scale, ratio=ratio, value=0.0)(img)


class RandomBorderMask(_Augmentation):
    """Set bands of random width along the borders to 0.

    The width of each of the four bands is drawn independently, uniformly
    between 0 and ``max_fraction`` of the image height (top, bottom) or
    width (left, right), rounded down to whole pixels.

    Parameters
    ----------
    max_fraction : float, default=0.15
        Largest band width as a fraction of the image side, in [0, 0.5).
    p : float, default=0.5
        Probability of masking.

    See Also
    --------
    skxray.preprocessing.BorderMask : Fixed-width border mask.

    Notes
    -----
    Teaches the model not to rely on the borders and corners, where
    hospital-specific text and markers usually are.

    Examples
    --------
    >>> import torch
    >>> from skxray.augmentation import RandomBorderMask
    >>> _ = torch.manual_seed(0)
    >>> out = RandomBorderMask(max_fraction=0.3, p=1.0)(torch.ones(1, 20, 20))
    >>> out.shape, bool(out[0, 10, 10] == 1)
    (torch.Size([1, 20, 20]), True)
    """

    def __init__(self, max_fraction=0.15, p=0.5):
        self.max_fraction = max_fraction
        self.p = p

    _parameter_constraints: dict = {
        **_Augmentation._parameter_constraints,
        "max_fraction": [Interval(Real, 0, 0.5, closed="left")],
    }

    def _apply(self, img):
        h, w = img.shape[-2:]
        top, bottom, left, right = (
            (torch.rand(4) * self.max_fraction * torch.tensor([h, h, w, w])).long().tolist()
        )
        out = torch.zeros_like(img)
        out[:, top : h - bottom, left : w - right] = img[:, top : h - bottom, left : w - right]
        return out


class Compose(BaseEstimator):
    """Apply several augmentations in order.

    Parameters
    ----------
    transforms : list of callable
        Augmentations from this module or any callables taking and returning
        a (channels, height, width) tensor, applied first to last.

    See Also
    --------
    xray_augmentation : Ready-made compositions.

    Notes
    -----
    A Compose pickles when all its transforms do (the classes of this module
    do; lambdas do not).

    Examples
    --------
    >>> import torch
    >>> from skxray.augmentation import Compose, RandomFlip, RandomRotation
    >>> augment = Compose([RandomFlip(p=1.0), RandomRotation(degrees=0.0)])
    >>> augment(torch.arange(4.0).reshape(1, 2, 2))
    tensor([[[1., 0.],
             [3., 2.]]])
    """

    _parameter_constraints: dict = {"transforms": [list, tuple]}

    def __init__(self, transforms):
        self.transforms = transforms

    def __call__(self, img):
        """Pass one image through each transform in turn, first to last.

        Parameters
        ----------
        img : torch.Tensor of shape (channels, height, width)
            The image; each transform checks it.

        Returns
        -------
        torch.Tensor
            What the last transform returns.
        """
        validate_params(self)
        # Each item must be callable: a rule on the list's items, which the
        # declared constraints (on the list itself) cannot state.
        for index, transform in enumerate(self.transforms):
            if not callable(transform):
                raise ValueError(f"Compose: transforms[{index}] is not callable: {transform!r}")
        for transform in self.transforms:
            img = transform(img)
        return img


_PRESETS = ("light", "strong", "fastai")


def xray_augmentation(strength="light"):
    """Return a preset augmentation for chest X-rays.

    Parameters
    ----------
    strength : {"light", "strong", "fastai"}, default="light"
        ``"light"``: rotation up to 5 degrees, resized crop of 90-100 % of the
        area, brightness and contrast jitter of 10 %. ``"strong"``: rotation
        up to 10 degrees, crop of 80-100 %, gamma jitter, brightness and
        contrast jitter of 20 %, cut-out and random border masking.
        ``"fastai"``: the closest to fastai's default train-time
        augmentation (v1 ``get_transforms()``, v2 ``aug_transforms()``),
        which the DarkCovidNet paper trained with: left-right flip with
        probability 0.5; each with probability 0.75, rotation up to 10
        degrees, a square zoom up to 1.1x (a crop of 1/1.1**2 = 83-100 % of
        the area), brightness and, independently, contrast jitter of 20 %.

    Returns
    -------
    Compose
        The augmentation; its steps can be inspected or changed through
        ``transforms``.

    Raises
    ------
    ValueError
        If ``strength`` is not one of the presets.

    See Also
    --------
    Compose : Build your own combination.

    Notes
    -----
    Neither "light" nor "strong" flips images (see :class:`RandomFlip`). In
    the strong preset the gamma curve comes before the contrast change so
    that it sees the image's original, non-negative intensities.

    What "fastai" does not copy: fastai's perspective warp (``max_warp=0.2``)
    has no counterpart here; fastai pads rotated and zoomed images by
    reflection, these fill the corners with 0; fastai draws the zoom factor
    uniformly, :class:`RandomResizedCrop` the area; fastai changes
    brightness and contrast on the logit of the intensities, these scale
    them linearly by factors in [0.8, 1.2].

    Examples
    --------
    >>> import torch
    >>> from skxray.augmentation import xray_augmentation
    >>> augment = xray_augmentation("strong")
    >>> _ = torch.manual_seed(0)
    >>> augment(torch.rand(1, 64, 64)).shape
    torch.Size([1, 64, 64])
    """
    if strength == "light":
        return Compose(
            [
                RandomRotation(degrees=5.0),
                RandomResizedCrop(scale=(0.9, 1.0)),
                RandomBrightnessContrast(brightness=0.1, contrast=0.1),
            ]
        )
    if strength == "strong":
        return Compose(
            [
                RandomRotation(degrees=10.0),
                RandomResizedCrop(scale=(0.8, 1.0)),
                RandomGamma(gamma=(0.8, 1.25)),
                RandomBrightnessContrast(brightness=0.2, contrast=0.2),
                RandomErasing(p=0.5, scale=(0.02, 0.1)),
                RandomBorderMask(max_fraction=0.15, p=0.5),
            ]
        )
    if strength == "fastai":
        return Compose(
            [
                RandomFlip(p=0.5),
                RandomRotation(degrees=10.0, p=0.75),
                RandomResizedCrop(scale=(1 / 1.1**2, 1.0), ratio=(1.0, 1.0), p=0.75),
                RandomBrightnessContrast(brightness=0.2, contrast=0.0, p=0.75),
                RandomBrightnessContrast(brightness=0.0, contrast=0.2, p=0.75),
            ]
        )
    raise ValueError(f"xray_augmentation: strength must be one of {_PRESETS}, got {strength!r}")
