"""Train-time image augmentation for the skxray estimators.

An augmentation is a callable applied to one training image at a time: a
``float32`` :class:`torch.Tensor` of shape ``(channels, height, width)`` in,
a tensor of the same shape and dtype out. Each also has
``augment_batch(x)``, which augments a batch ``(n, channels, height, width)``
at once, on the batch's device, with its own random draw for each image;
the estimators train with it on in-memory arrays (:func:`supports_batches`).
All randomness is drawn from torch's global random number generator on the
CPU, which the estimators seed inside ``fit``, so training runs are
reproducible and the draws do not depend on the device; nothing here uses
NumPy's or Python's ``random`` generators.

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
import torch.nn.functional as F
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
    "supports_batches",
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


def _check_batch(owner, x):
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
        description = (
            f"a {x.dtype} tensor of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        )
        raise ValueError(
            f"{owner}: augment_batch expects a batch as a floating-point tensor of shape "
            f"(n, channels, height, width), got {description}"
        )


def _uniform(low, high):
    return low + (high - low) * torch.rand(()).item()


def _uniforms(n, low, high):
    """``n`` draws, uniform in ``[low, high]``, float64 on the CPU (the global RNG)."""
    return low + (high - low) * torch.rand(n, dtype=torch.float64)


def _chosen(p, n):
    """Which of ``n`` images an augmentation of probability ``p`` applies to (a CPU bool tensor).

    As on one image, ``p`` of 0 or 1 draws nothing.
    """
    if p >= 1:
        return torch.ones(n, dtype=torch.bool)
    if p <= 0:
        return torch.zeros(n, dtype=torch.bool)
    return torch.rand(n) < p


def _column(values, x):
    """Per-image ``values`` as an ``(n, 1, 1, 1)`` tensor of ``x``'s dtype on ``x``'s device."""
    return values.to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)


def _tries(n, height, width, area_range, ratio_range):
    """Ten tries per image of a rectangle, as torchvision's RandomResizedCrop and RandomErasing draw them.

    Each try draws an area (a fraction of the image, uniform in
    ``area_range``) and an aspect ratio (log-uniform in ``ratio_range``).
    Returns the rounded ``sqrt(area * ratio)`` and ``sqrt(area / ratio)``,
    two ``(n, 10)`` int64 tensors.
    """
    area = height * width * _uniforms((n, 10), *map(float, area_range))
    aspect = torch.exp(_uniforms((n, 10), *(math.log(r) for r in ratio_range)))
    return torch.round(torch.sqrt(area * aspect)).long(), torch.round(torch.sqrt(area / aspect)).long()


def _first_fit(h, w, fits):
    """Per image, the sides of its first try that ``fits`` (``(n, 10)`` bool), and whether one did."""
    found = fits.any(dim=1)
    first = fits.long().argmax(dim=1).unsqueeze(1)  # 0 where none fits
    return h.gather(1, first).squeeze(1), w.gather(1, first).squeeze(1), found


def _offsets(h, w, height, width):
    """Top and left corners uniform over the positions where an ``h`` x ``w`` box fits."""
    top = (torch.rand(len(h), dtype=torch.float64) * (height - h + 1)).long().clamp(max=height - h)
    left = (torch.rand(len(w), dtype=torch.float64) * (width - w + 1)).long().clamp(max=width - w)
    return top, left


#: On the CPU, a batch is augmented a few images at a time, all steps on
#: each group, so that the group stays in the cache between steps: groups of
#: at most this many bytes (8 images of 256 px, 32 of 128 px, in float32).
#: Each image's draws are made for the whole batch first, so the result does
#: not depend on the grouping. Other devices take the whole batch at once.
CPU_CHUNK_BYTES = 2 * 1024**2


def _plan_rows(plan, rows):
    """The part of ``plan`` (tensors, one row per image, in tuples, lists and dicts) for ``rows``."""
    if isinstance(plan, torch.Tensor):
        return plan[rows]
    if isinstance(plan, dict):
        return {k: _plan_rows(v, rows) for k, v in plan.items()}
    if isinstance(plan, (tuple, list)):
        return type(plan)(_plan_rows(v, rows) for v in plan)
    return plan  # None, an axis


def _apply_in_chunks(augment, x):
    """``x`` through ``augment`` (draws for the whole batch, then applied group by group on the CPU)."""
    plan = augment._plan(len(x), *x.shape[-2:])
    per_image = x[0].numel() * x.element_size() if len(x) else 1
    size = len(x) if x.device.type != "cpu" else max(1, CPU_CHUNK_BYTES // per_image)
    if size >= len(x):
        return augment._apply_plan(x, plan)
    chunks = [(x[start : start + size], slice(start, start + size)) for start in range(0, len(x), size)]
    outs = [augment._apply_plan(chunk, _plan_rows(plan, rows)) for chunk, rows in chunks]
    if all(out is chunk for out, (chunk, _) in zip(outs, chunks, strict=True)):
        return x
    return torch.cat(outs)


def _grid_axes(x):
    """The pixel centres of ``x``'s columns and rows in grid_sample's [-1, 1] coordinates (align_corners=False)."""
    height, width = x.shape[-2:]
    xs = torch.linspace(-1 + 1 / width, 1 - 1 / width, width, device=x.device, dtype=x.dtype)
    ys = torch.linspace(-1 + 1 / height, 1 - 1 / height, height, device=x.device, dtype=x.dtype)
    return xs, ys


def _affine_grid(theta, x):
    """``F.affine_grid(theta, x.shape, align_corners=False)``, computed by broadcasting.

    The same sampling points (up to float rounding), without the batched
    matrix product over every pixel that makes ``affine_grid`` cost more
    than the sampling itself on a CPU (about 13x this at 256 px).
    """
    n, _, height, width = x.shape
    theta = theta.to(device=x.device, dtype=x.dtype).view(n, 2, 3, 1, 1)
    xs, ys = _grid_axes(x)
    grid = torch.empty((n, height, width, 2), device=x.device, dtype=x.dtype)
    for axis in (0, 1):
        torch.add(theta[:, axis, 0] * xs, theta[:, axis, 1] * ys.view(-1, 1) + theta[:, axis, 2], out=grid[..., axis])
    return grid


def _box_mask(top, left, h, w, height, width, device):
    """An ``(n, 1, height, width)`` bool mask, True inside each image's box."""
    rows = torch.arange(height, device=device).view(1, -1)
    cols = torch.arange(width, device=device).view(1, -1)
    top, left, h, w = (t.to(device).view(-1, 1) for t in (top, left, h, w))
    inside_rows = (rows >= top) & (rows < top + h)
    inside_cols = (cols >= left) & (cols < left + w)
    return (inside_rows.unsqueeze(2) & inside_cols.unsqueeze(1)).unsqueeze(1)


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

    def augment_batch(self, x):
        """Augment a batch of images at once, each with its own random draw.

        The parameters (whether to apply, angle, crop, factors...) are drawn
        for each image from torch's global random number generator on the
        CPU, then applied to the whole batch on ``x``'s device, so the draws
        do not depend on the device.

        Parameters
        ----------
        x : torch.Tensor of shape (n, channels, height, width)
            Floating-point images, on any device.

        Returns
        -------
        torch.Tensor of shape (n, channels, height, width)
            The augmented images, same shape, dtype and device (``x`` itself
            when no image is augmented); ``x`` is not modified.
        """
        validate_params(self)
        _check_batch(type(self).__name__, x)
        return self._augment_batch(x)

    def _augment_batch(self, x):
        return _apply_in_chunks(self, x)

    def _plan(self, n, height, width):
        """All random draws for ``n`` images: which ones are augmented, and the parameters of each."""
        chosen = _chosen(self.p, n)
        return chosen, (self._draw(n, height, width) if chosen.any() else None)

    def _apply_plan(self, x, plan):
        """``x`` augmented as ``plan`` (of :meth:`_plan`, one row per image of ``x``) says."""
        chosen, params = plan
        if not chosen.any():
            return x
        if chosen.all():
            return self._apply_batch(x, params)
        index = chosen.nonzero().squeeze(1)
        on_device = index.to(x.device)
        out = x.clone()
        out[on_device] = self._apply_batch(x[on_device], _plan_rows(params, index))
        return out

    def _draw(self, n, height, width):
        """The parameters of ``n`` images, a dict of CPU tensors of length ``n``."""
        raise NotImplementedError

    def _apply_batch(self, x, params):
        """``x`` transformed with ``params`` (from :meth:`_draw`), on ``x``'s device."""
        raise NotImplementedError


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

    def _plan(self, n, height, width):
        # One draw per enabled axis and image, as on one image.
        return [(dim, _chosen(self.p, n)) for enabled, dim in ((self.horizontal, -1), (self.vertical, -2))
                if enabled and self.p > 0]

    def _apply_plan(self, x, plan):
        for dim, flipped in plan:
            if flipped.all():
                x = x.flip(dim)
            elif flipped.any():
                x = torch.where(flipped.to(x.device).view(-1, 1, 1, 1), x.flip(dim), x)
        return x


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

    def _range(self):
        if isinstance(self.degrees, Real):
            return -float(self.degrees), float(self.degrees)
        return tuple(map(float, self.degrees))

    def _apply(self, img):
        angle = _uniform(*self._range())
        return TF.rotate(img, angle, interpolation=T.InterpolationMode.BILINEAR, fill=0.0)

    def _draw(self, n, height, width):
        return {"angle": _uniforms(n, *self._range())}

    def _apply_batch(self, x, params):
        # torchvision's rotation (rotate_image) with one angle per image: the
        # same sampling grid, bilinear, and its fill rule (the image times the
        # bilinear weight of the pixels inside it), computed from the grid.
        height, width = x.shape[-2:]
        angle = torch.deg2rad(params["angle"])
        cos, sin = torch.cos(angle), torch.sin(angle)
        zero = torch.zeros_like(cos)
        theta = torch.stack(
            [torch.stack([cos, -sin * height / width, zero], 1), torch.stack([sin * width / height, cos, zero], 1)], 1
        )
        grid = _affine_grid(theta, x)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        # The share of each sampled point's bilinear weight that falls inside
        # the image (1 inside, 0 beyond a pixel out), from its pixel coordinates.
        inside = None
        for axis, size in ((0, width), (1, height)):
            pixel = grid[..., axis].add(1).mul_(size / 2).sub_(0.5)
            share = torch.minimum(pixel + 1, pixel.neg_().add_(size)).clamp_(0, 1)
            inside = share if inside is None else inside.mul_(share)
        return out.mul_(inside.unsqueeze(1))


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

    def _draw(self, n, height, width):
        # torchvision's RandomResizedCrop.make_params, for n images at once.
        scale, ratio = self._ranges()
        w, h = _tries(n, height, width, scale, ratio)
        h, w, found = _first_fit(h, w, (w > 0) & (w <= width) & (h > 0) & (h <= height))
        # Fallback, as torchvision's: the central crop of the ratio closest to the image's.
        in_ratio = width / height
        if in_ratio < min(ratio):
            fallback_w, fallback_h = width, int(round(width / min(ratio)))
        elif in_ratio > max(ratio):
            fallback_w, fallback_h = int(round(height * max(ratio))), height
        else:
            fallback_w, fallback_h = width, height
        top, left = _offsets(h, w, height, width)
        top = torch.where(found, top, (height - fallback_h) // 2)
        left = torch.where(found, left, (width - fallback_w) // 2)
        h = torch.where(found, h, fallback_h)
        w = torch.where(found, w, fallback_w)
        return {"top": top, "left": left, "height": h, "width": w}

    def _apply_batch(self, x, params):
        # Bilinear resizing of each crop to the input size (half-pixel
        # centres, edges clamped) as one affine grid: torchvision's resize,
        # which only enlarges here (a crop is never larger than the image),
        # where its antialiasing changes nothing.
        height, width = x.shape[-2:]
        top, left, h, w = (params[k].double() for k in ("top", "left", "height", "width"))
        n = len(x)
        xs, ys = _grid_axes(x)
        grid = torch.empty((n, height, width, 2), device=x.device, dtype=x.dtype)
        # Each axis maps on its own: column j of the output samples the
        # crop's columns at scale w / width. Resizing clamps at the crop's
        # edges, not the image's: points stay between the centres of the
        # crop's first and last pixels.
        for axis, (start, length, size, centres) in enumerate(((left, w, width, xs), (top, h, height, ys))):
            scale, shift = (v.to(device=x.device, dtype=x.dtype).view(-1, 1)
                            for v in (length / size, (2 * start + length) / size - 1))
            low, high = (v.to(device=x.device, dtype=x.dtype).view(-1, 1)
                         for v in ((2 * start + 1) / size - 1, (2 * (start + length) - 1) / size - 1))
            points = torch.maximum(torch.minimum(scale * centres + shift, high), low)
            grid[..., axis] = points.view(n, 1, width) if axis == 0 else points.view(n, height, 1)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


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

    def _draw(self, n, height, width):
        contrast = _uniforms(n, 1 - self.contrast, 1 + self.contrast)
        brightness = _uniforms(n, 1 - self.brightness, 1 + self.brightness)
        return {"contrast": contrast, "brightness": brightness}

    def _apply_batch(self, x, params):
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return ((x - mean) * _column(params["contrast"], x) + mean) * _column(params["brightness"], x)


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

    def _draw(self, n, height, width):
        low, high = map(float, self.gamma)
        return {"gamma": torch.exp(_uniforms(n, math.log(low), math.log(high)))}

    def _apply_batch(self, x, params):
        flat = x.flatten(1)
        top = flat.amax(dim=1).view(-1, 1, 1, 1)
        bottom = flat.amin(dim=1).clamp(max=0.0).view(-1, 1, 1, 1)
        span = top - bottom
        # A constant image (span 0) stays as it is, as on one image.
        safe = torch.where(span > 0, span, torch.ones_like(span))
        curved = bottom + safe * ((x - bottom) / safe).clamp(0, 1).pow(_column(params["gamma"], x))
        return torch.where(span > 0, curved, x)


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

    def _draw(self, n, height, width):
        # torchvision's RandomErasing.make_params, for n images at once; an
        # image where no try fits gets an empty box (it stays unchanged).
        scale, ratio = self._ranges()
        h, w = _tries(n, height, width, scale, ratio)
        h, w, found = _first_fit(h, w, (h < height) & (w < width))
        h, w = torch.where(found, h, 0), torch.where(found, w, 0)
        top, left = _offsets(h, w, height, width)
        return {"top": top, "left": left, "height": h, "width": w}

    def _apply_batch(self, x, params):
        height, width = x.shape[-2:]
        box = _box_mask(params["top"], params["left"], params["height"], params["width"], height, width, x.device)
        return x.masked_fill(box, 0.0)


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

    def _draw(self, n, height, width):
        widths = (torch.rand(n, 4) * self.max_fraction * torch.tensor([height, height, width, width])).long()
        return {"top": widths[:, 0], "bottom": widths[:, 1], "left": widths[:, 2], "right": widths[:, 3]}

    def _apply_batch(self, x, params):
        height, width = x.shape[-2:]
        kept = _box_mask(
            params["top"], params["left"],
            (height - params["bottom"] - params["top"]).clamp(min=0),
            (width - params["right"] - params["left"]).clamp(min=0),
            height, width, x.device,
        )
        return x.masked_fill(~kept, 0.0)


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
        self._check_steps()
        for transform in self.transforms:
            img = transform(img)
        return img

    def augment_batch(self, x):
        """Pass a batch through each transform in turn, first to last, each image with its own draws.

        Parameters
        ----------
        x : torch.Tensor of shape (n, channels, height, width)
            Floating-point images, on any device.

        Returns
        -------
        torch.Tensor of shape (n, channels, height, width)
            The augmented images. Steps with an ``augment_batch`` method
            augment the whole batch at once; any other callable is applied
            to each image in turn.
        """
        validate_params(self)
        self._check_steps()
        _check_batch(type(self).__name__, x)
        if supports_batches(self):
            for transform in self.transforms:  # each step's own checks, before anything is drawn
                _validated(transform)
            return _apply_in_chunks(self, x)
        for transform in self.transforms:
            if hasattr(transform, "augment_batch"):
                x = transform.augment_batch(x)
            else:
                x = torch.stack([transform(image) for image in x])
        return x

    def _plan(self, n, height, width):
        # Every step's draws for the whole batch, first step first.
        return [transform._plan(n, height, width) for transform in self.transforms]

    def _apply_plan(self, x, plan):
        for transform, step_plan in zip(self.transforms, plan, strict=True):
            x = transform._apply_plan(x, step_plan)
        return x

    def _check_steps(self):
        # Each item must be callable: a rule on the list's items, which the
        # declared constraints (on the list itself) cannot state.
        for index, transform in enumerate(self.transforms):
            if not callable(transform):
                raise ValueError(f"Compose: transforms[{index}] is not callable: {transform!r}")


def _validated(augment):
    validate_params(augment)
    if isinstance(augment, Compose):
        augment._check_steps()
        for transform in augment.transforms:
            _validated(transform)


def supports_batches(augment):
    """Whether ``augment`` is an augmentation of this module, or a :class:`Compose` of only those.

    Such an augmentation is applied to whole batches, on the training
    device, by ``augment.augment_batch``; the estimators then move in-memory
    training arrays to the device as they do without augmentation. Any
    other callable is applied to one image at a time, on the host.

    Parameters
    ----------
    augment : callable or None
        The estimators' ``augment`` parameter.

    Returns
    -------
    bool

    Examples
    --------
    >>> from skxray.augmentation import Compose, RandomFlip, supports_batches, xray_augmentation
    >>> supports_batches(xray_augmentation("strong"))
    True
    >>> supports_batches(Compose([RandomFlip(), lambda img: img]))
    False
    """
    if isinstance(augment, Compose):
        return all(supports_batches(transform) for transform in augment.transforms)
    return isinstance(augment, _Augmentation)


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
