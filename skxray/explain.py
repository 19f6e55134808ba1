"""Where does the model look? Grad-CAM heatmaps and input-gradient saliency.

:func:`gradcam` computes class-activation heatmaps of the convolutional
classifiers (:class:`~skxray.models.CNNClassifier`,
:class:`~skxray.models.ResNet50Classifier`) with the ``grad-cam`` package;
:func:`saliency` computes input-gradient maps for every skxray classifier,
including the :class:`~skxray.models.FNNClassifier`, which has no
convolutional layer for Grad-CAM to read. :func:`plot_gradcam` overlays the
heatmaps on the images, and :func:`heatmap_mass_in_region` with
:func:`skxray.segmentation.segment_lungs` (each image's lungs, found by the
lung segmenter shipped with skxray) or :func:`central_lung_mask` (a fixed
two-ellipse prior, the fallback) turns them into a number: the share of the
evidence that lies inside the lung fields, which a shortcut-learning audit
compares between models.

Both explainers leave the model as they found it: same weights, same
train/eval mode of every sub-module, same ``requires_grad`` flags and
``.grad`` tensors, no hook left registered, and the global torch random
number generator untouched.
"""

import contextlib
import math
import numbers

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted
from torch.utils.data import DataLoader

from skxray._geometry import central_lung_mask
from skxray.models._base import BaseImageClassifier

__all__ = [
    "GradCAMDisplay",
    "central_lung_mask",
    "gradcam",
    "heatmap_mass_in_region",
    "plot_gradcam",
    "saliency",
]

# Names accepted by ``method``, mapped to class names of ``pytorch_grad_cam``.
# Only gradient-based methods: they all honour ``target``.
_CAM_METHODS = {
    "gradcam": "GradCAM",
    "gradcam++": "GradCAMPlusPlus",
    "hirescam": "HiResCAM",
    "layercam": "LayerCAM",
    "xgradcam": "XGradCAM",
}


# --------------------------------------------------------------------------
# shared machinery


def _check_estimator(estimator, func):
    if not isinstance(estimator, BaseImageClassifier):
        raise TypeError(
            f"{func}: estimator must be a skxray classifier (CNNClassifier, FNNClassifier "
            f"or ResNet50Classifier); got {type(estimator).__name__}."
        )
    check_is_fitted(estimator)
    # The plain module (not torch.compile's wrapper): Grad-CAM's hooks must run.
    return estimator.module_


def _check_batch_size(batch_size, func):
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, numbers.Integral)
        or batch_size < 1
    ):
        raise ValueError(f"{func}: batch_size must be an int >= 1; got {batch_size!r}.")
    return int(batch_size)


def _class_index(estimator, target, func):
    """Index of ``target`` in ``classes_``, or None for "the predicted class"."""
    if target is None:
        return None
    classes = estimator.classes_
    if np.ndim(target) == 0:
        for i, label in enumerate(classes):
            # ``label == target`` may be a numpy bool or raise for exotic
            # types; anything but a plain True is "no match".
            with contextlib.suppress(Exception):
                if bool(label == target):
                    return i
    raise ValueError(
        f"{func}: target must be None (the predicted class of each image) or one of "
        f"the classes {list(classes)}; got {target!r}."
    )


class _BinaryLogitTarget:
    """Score of one class of a one-logit head: the logit, or its negation.

    ``ClassifierOutputTarget`` indexes one logit per class, which a two-class
    skxray model does not have: its single logit is the evidence for
    ``classes_[1]``, and minus it the evidence for ``classes_[0]``.
    """

    def __init__(self, sign):
        self.sign = sign

    def __call__(self, model_output):
        return self.sign * model_output.reshape(-1)[0]


class _MultiLogitTarget:
    """Logit of one class of a softmax head (one image's output)."""

    def __init__(self, index):
        self.index = index

    def __call__(self, model_output):
        return model_output[self.index]


class _PredictedClassTarget:
    """Score of whichever class the model predicts for this image.

    Decided inside the forward pass, so no second pass is needed; ties break
    like ``predict`` (towards the first class).
    """

    def __call__(self, model_output):
        logits = model_output.reshape(-1)
        if logits.numel() == 1:
            return torch.where(logits[0] > 0, logits[0], -logits[0])
        return logits[torch.argmax(logits)]


def _make_target(estimator, index):
    if index is None:
        return _PredictedClassTarget()
    if len(estimator.classes_) == 2:
        return _BinaryLogitTarget(1.0 if index == 1 else -1.0)
    return _MultiLogitTarget(index)


def _image_loader(estimator, X, batch_size):
    """Validated batches of ``X`` (same formats as ``predict``) and their count."""
    dataset = estimator.get_dataset(X)
    # A private generator: even an unshuffled DataLoader would otherwise draw
    # its base seed from the caller's global torch RNG.
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, generator=torch.Generator())
    return loader, dataset


@contextlib.contextmanager
def _explaining(module):
    """Eval mode and frozen weights while explaining; the exact prior state after.

    Weights are frozen so that backward passes fill no ``.grad`` of the
    model (gradients only flow to the input and the hooked activations), and
    the train flag of every sub-module is restored one by one because a
    module's ``train()`` may set its children differently (the frozen
    ResNet-50 keeps its backbone in eval mode).
    """
    training = [(m, m.training) for m in module.modules()]
    params = list(module.parameters())
    saved = [(p, p.requires_grad, p.grad) for p in params]
    try:
        module.eval()
        for p in params:
            p.requires_grad_(False)
        with torch.enable_grad():
            yield
    finally:
        for p, requires_grad, grad in saved:
            p.requires_grad_(requires_grad)
            p.grad = grad
        for m, mode in training:
            m.training = mode


def _module_device(module):
    param = next(module.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _logits_to_proba(logits):
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim == 1 or logits.shape[1] == 1:
        p1 = 1.0 / (1.0 + np.exp(-logits.reshape(-1)))
        return np.column_stack([1.0 - p1, p1])
    logits = logits - logits.max(axis=1, keepdims=True)
    proba = np.exp(logits)
    return proba / proba.sum(axis=1, keepdims=True)


def _gradcam_with_logits(estimator, X, target, method, batch_size, func="gradcam"):
    """Heatmaps (N, H, W) and the logits of the same forward passes."""
    module = _check_estimator(estimator, func)
    layer = getattr(module, "gradcam_layer", None)
    if layer is None:
        raise TypeError(
            f"{func}: Grad-CAM needs convolutional layers, but {type(estimator).__name__} "
            "has none (it reads flattened pixels). Use skxray.explain.saliency() for "
            "input-gradient saliency maps, which work with every skxray classifier."
        )
    if method not in _CAM_METHODS:
        raise ValueError(
            f"{func}: method must be one of {sorted(_CAM_METHODS)}; got {method!r}."
        )
    index = _class_index(estimator, target, func)
    batch_size = _check_batch_size(batch_size, func)
    loader, _ = _image_loader(estimator, X, batch_size)

    import pytorch_grad_cam  # heavy (OpenCV, ttach): imported only when used

    cam_class = getattr(pytorch_grad_cam, _CAM_METHODS[method])
    device = _module_device(module)
    heatmaps, logits = [], []
    with _explaining(module):
        cam = cam_class(model=module, target_layers=[layer])
        # try/finally rather than ``with cam``: the package's __exit__
        # swallows IndexError, which would hide a real failure here.
        try:
            for x, _ in loader:
                # The weights are frozen (and a frozen ResNet backbone always
                # is), so only an input that requires grad makes the target
                # layer's activations carry the gradients Grad-CAM reads.
                x = x.to(device).requires_grad_(True)
                targets = [_make_target(estimator, index) for _ in range(len(x))]
                heatmaps.append(np.asarray(cam(input_tensor=x, targets=targets)))
                logits.append(cam.outputs.detach().cpu().numpy())
        finally:
            cam.activations_and_grads.release()
    heatmaps = np.clip(np.concatenate(heatmaps), 0.0, 1.0).astype(np.float32, copy=False)
    return heatmaps, np.concatenate(logits)


# --------------------------------------------------------------------------
# public API


def gradcam(estimator, X, target=None, *, method="gradcam", batch_size=16):
    """Grad-CAM heatmaps of a fitted convolutional skxray classifier.

    For each image, the activations of the model's target layer (the last
    convolutional block of :class:`~skxray.models.CNNClassifier`, the last
    bottleneck block of :class:`~skxray.models.ResNet50Classifier`) are
    weighted by the gradient of a class score and summed into a coarse map of
    where the evidence for that class lies, upsampled to the input size.
    Computed with the ``grad-cam`` package (``pytorch_grad_cam``).

    The model is left as it was: same weights, same train/eval mode,
    ``requires_grad`` flags and ``.grad`` tensors, no hook left registered,
    and the global torch random number generator is not used.

    Parameters
    ----------
    estimator : CNNClassifier or ResNet50Classifier
        A fitted classifier with convolutional layers.
    X : array-like of shape (n_samples, height, width), \
(n_samples, channels, height, width) or (n_samples,) of file paths
        Images in the same format as for the estimator's ``predict``.
    target : label or None, default=None
        Class whose evidence is mapped: None for the predicted class of each
        image, or one of ``estimator.classes_`` for that class in every
        image. For a two-class model the score of ``classes_[1]`` is its
        single logit and the score of ``classes_[0]`` the negated logit; with
        more classes it is the class's logit.
    method : {"gradcam", "gradcam++", "hirescam", "layercam", "xgradcam"}, \
default="gradcam"
        CAM variant: ``GradCAM``, ``GradCAMPlusPlus``, ``HiResCAM``,
        ``LayerCAM`` or ``XGradCAM`` of ``pytorch_grad_cam``.
    batch_size : int, default=16
        Number of images per forward and backward pass.

    Returns
    -------
    heatmaps : ndarray of shape (n_samples, height, width)
        Float32 maps in [0, 1] at the input resolution, each scaled so that
        its largest value is 1; a map is all zeros when no region of the
        target layer speaks for the class (e.g. when that layer is 1x1, as
        for the ResNet-50 on images under 64 px).

    Raises
    ------
    sklearn.exceptions.NotFittedError
        If ``estimator`` is not fitted.
    TypeError
        If ``estimator`` is not a skxray classifier, or has no convolutional
        layers (:class:`~skxray.models.FNNClassifier`: use :func:`saliency`).
    ValueError
        If ``target`` is not None or one of ``classes_``, ``method`` is
        unknown, ``batch_size`` is not a positive int, or ``X`` does not match
        the images the estimator was fitted on.

    See Also
    --------
    saliency : Input-gradient maps, for any skxray classifier.
    plot_gradcam : Show the heatmaps over the images.

    Notes
    -----
    The :class:`~skxray.models.CNNClassifier` ends in a flatten and a dense
    layer, not in global average pooling. Grad-CAM averages each channel's
    gradient over the whole map, so the dense weights at places where the
    channel never fires leak into its weight: on a briefly trained CNN the
    maps can be blurred, or all zeros when every channel weight comes out
    negative. ``method="hirescam"`` multiplies gradients and activations
    place by place and shows exactly what such a head reads (Draelos and
    Carin, 2020); for the ResNet-50, which pools globally, it gives the same
    maps as Grad-CAM. An all-zero map means the target layer holds no
    positive evidence for the class (e.g. a class recognised by the
    *absence* of a pattern); :func:`saliency` still shows its gradient.
    heatmap_mass_in_region : Share of each heatmap inside a region.

    Examples
    --------
    >>> from skxray.datasets import make_phantom_cxr
    >>> from skxray.explain import gradcam
    >>> from skxray.models import CNNClassifier
    >>> X, y = make_phantom_cxr(20, image_size=32, random_state=0)
    >>> clf = CNNClassifier(filters=(4, 8), max_epochs=1, random_state=0).fit(X, y)
    >>> heatmaps = gradcam(clf, X[:3], target="Covid-19")
    >>> heatmaps.shape, heatmaps.dtype
    ((3, 32, 32), dtype('float32'))
    >>> bool(heatmaps.min() >= 0 and heatmaps.max() <= 1)
    True
    """
    heatmaps, _ = _gradcam_with_logits(estimator, X, target, method, batch_size)
    return heatmaps


def saliency(estimator, X, target=None, *, batch_size=16):
    """Input-gradient saliency maps, for any fitted skxray classifier.

    The absolute gradient of the class score with respect to each input
    pixel, the largest over the channels, divided by its maximum in each
    image. It says which pixels would most change the score if nudged, at
    full resolution, and needs no convolutional layer, so it is the
    alternative to :func:`gradcam` for the
    :class:`~skxray.models.FNNClassifier`. Saliency maps are noisier than
    Grad-CAM heatmaps; compare models with the same kind of map.

    The model is left as it was (weights, train/eval mode, ``requires_grad``
    flags, ``.grad`` tensors), and the global torch random number generator
    is not used.

    Parameters
    ----------
    estimator : CNNClassifier, FNNClassifier or ResNet50Classifier
        A fitted skxray classifier.
    X : array-like of shape (n_samples, height, width), \
(n_samples, channels, height, width) or (n_samples,) of file paths
        Images in the same format as for the estimator's ``predict``.
    target : label or None, default=None
        Class whose score is differentiated: None for the predicted class of
        each image, or one of ``estimator.classes_`` (scored as in
        :func:`gradcam`).
    batch_size : int, default=16
        Number of images per forward and backward pass.

    Returns
    -------
    maps : ndarray of shape (n_samples, height, width)
        Float32 maps in [0, 1]; each image's largest gradient is 1 (all zeros
        when the score does not depend on the pixels at all).

    Raises
    ------
    sklearn.exceptions.NotFittedError
        If ``estimator`` is not fitted.
    TypeError
        If ``estimator`` is not a skxray classifier.
    ValueError
        If ``target`` is not None or one of ``classes_``, ``batch_size`` is
        not a positive int, or ``X`` does not match the images the estimator
        was fitted on.

    See Also
    --------
    gradcam : Class-activation heatmaps of the convolutional models.

    Examples
    --------
    >>> from skxray import FNNClassifier, make_phantom_cxr
    >>> from skxray.explain import saliency
    >>> X, y = make_phantom_cxr(20, image_size=32, random_state=0)
    >>> clf = FNNClassifier(max_epochs=1, random_state=0).fit(X, y)
    >>> maps = saliency(clf, X[:2], target="Normal")
    >>> maps.shape, float(maps.max())
    ((2, 32, 32), 1.0)
    """
    module = _check_estimator(estimator, "saliency")
    index = _class_index(estimator, target, "saliency")
    batch_size = _check_batch_size(batch_size, "saliency")
    loader, _ = _image_loader(estimator, X, batch_size)
    device = _module_device(module)
    maps = []
    with _explaining(module):
        for x, _ in loader:
            x = x.to(device).requires_grad_(True)
            outputs = module(x)
            score = sum(_make_target(estimator, index)(out) for out in outputs)
            (grad,) = torch.autograd.grad(score, x)
            grad = grad.detach().abs().amax(dim=1)
            peak = grad.flatten(1).amax(dim=1).clamp_min(torch.finfo(grad.dtype).tiny)
            maps.append((grad / peak[:, None, None]).cpu().numpy())
    return np.clip(np.concatenate(maps), 0.0, 1.0).astype(np.float32, copy=False)


def plot_gradcam(
    estimator,
    X,
    target=None,
    *,
    y=None,
    n=None,
    alpha=0.4,
    cmap="jet",
    ax=None,
    method="gradcam",
):
    """Show Grad-CAM heatmaps over the images, with the predictions.

    Each panel shows one image in gray (or in colour for RGB input, scaled
    to its own range for display) under its heatmap from :func:`gradcam`,
    titled ``"pred: <label> (p=0.93)"`` with the predicted class and its
    probability, and ``"true: <label>"`` underneath when ``y`` is given.

    Parameters
    ----------
    estimator : CNNClassifier or ResNet50Classifier
        The fitted model to explain, as for :func:`gradcam`.
    X : array-like of images or 1-D sequence of file paths
        Images, as for :func:`gradcam`; see ``n`` for how many are shown.
    target : label or None, default=None
        Class whose evidence is mapped, as in :func:`gradcam`.
    y : array-like of shape (n_samples,) or None, default=None
        True labels, added to the titles.
    n : int or None, default=None
        Show the first ``n`` images only; None shows every image of ``X``.
    alpha : float, default=0.4
        Opacity of the heatmap, in [0, 1].
    cmap : str or matplotlib.colors.Colormap, default="jet"
        Colormap of the heatmap.
    ax : matplotlib.axes.Axes, array-like of Axes or None, default=None
        Axes to draw into, at least one per image shown (extra axes are left
        untouched). None draws into a new figure with a grid of up to four
        columns.
    method : {"gradcam", "gradcam++", "hirescam", "layercam", "xgradcam"}, \
default="gradcam"
        CAM variant, as in :func:`gradcam`.

    Returns
    -------
    fig : matplotlib.figure.Figure
        The figure drawn into (the one holding ``ax`` when given). A new
        figure is not registered with pyplot, so it works on headless
        machines; save it with ``fig.savefig``.

    Raises
    ------
    sklearn.exceptions.NotFittedError
        If ``estimator`` is not fitted.
    TypeError
        As :func:`gradcam` (e.g. for an FNNClassifier), or if ``ax`` holds
        something else than matplotlib Axes.
    ValueError
        If ``n`` is not a positive int, ``alpha`` is outside [0, 1], ``cmap``
        is unknown, ``y`` does not have one label per image, ``ax`` has fewer
        axes than images shown, or as :func:`gradcam`.

    See Also
    --------
    gradcam : The heatmaps drawn here.
    GradCAMDisplay : The display behind this figure (compute once, draw anywhere).

    Examples
    --------
    >>> from skxray import CNNClassifier, make_phantom_cxr
    >>> X, y = make_phantom_cxr(20, image_size=32, random_state=0)
    >>> clf = CNNClassifier(filters=(4, 8), max_epochs=1, random_state=0).fit(X, y)
    >>> from skxray.explain import plot_gradcam
    >>> fig = plot_gradcam(clf, X, y=y, n=6)
    >>> len(fig.axes)
    6
    """
    return GradCAMDisplay.from_estimator(
        estimator, X, target, y=y, n=n, alpha=alpha, cmap=cmap, ax=ax, method=method
    ).figure_


class GradCAMDisplay:
    """Grad-CAM heatmaps over the images, titled with the predictions.

    The heatmaps are computed once by :meth:`from_estimator`; :meth:`plot`
    draws them again on any axes (one per image) without asking the model.

    Parameters
    ----------
    images : ndarray of shape (n_images, height, width) or (n_images, height, width, 3)
        The images as the network sees them, scaled to [0, 1] for display
        (gray, or RGB for 3-channel input).
    heatmaps : ndarray of shape (n_images, height, width)
        The heatmaps, in [0, 1].
    titles : list of str
        Each panel's title: ``"pred: <label> (p=0.93)"``, and ``"true:
        <label>"`` underneath when true labels were given.
    suptitle : str or None, default=None
        The figure's title (the target class, when one was given).

    Attributes
    ----------
    ax_ : matplotlib Axes
        The first panel's axes.
    axes_ : ndarray of Axes
        One axes per image.
    figure_ : matplotlib Figure
        Their figure.

    See Also
    --------
    plot_gradcam : The figure of this display.
    gradcam : The heatmaps.

    Examples
    --------
    >>> from matplotlib.figure import Figure
    >>> from skxray import CNNClassifier, make_phantom_cxr
    >>> from skxray.explain import GradCAMDisplay
    >>> X, y = make_phantom_cxr(12, image_size=16, random_state=0)
    >>> clf = CNNClassifier(filters=(4,), dense_units=8, max_epochs=1, random_state=0).fit(X, y)
    >>> disp = GradCAMDisplay.from_estimator(clf, X, y=y, n=2)
    >>> disp.heatmaps.shape, len(disp.figure_.axes)
    ((2, 16, 16), 2)
    >>> axes = Figure().subplots(1, 2)
    >>> disp.plot(ax=axes).ax_ is axes[0]  # drawn again, the model not asked
    True
    """

    def __init__(self, images, heatmaps, *, titles, suptitle=None):
        self.images = images
        self.heatmaps = heatmaps
        self.titles = titles
        self.suptitle = suptitle

    @classmethod
    def from_estimator(cls, estimator, X, target=None, *, y=None, n=None, alpha=0.4, cmap="jet",
                       ax=None, method="gradcam"):
        """Compute the heatmaps of the first ``n`` images and draw them.

        Parameters are those of :func:`plot_gradcam`.

        Returns
        -------
        display : GradCAMDisplay
            The display, drawn.
        """
        _check_estimator(estimator, "plot_gradcam")
        _check_plot_arguments(n, alpha, cmap)
        dataset = estimator.get_dataset(X)
        n_total = len(dataset)
        if y is not None:
            y = np.asarray(y, dtype=object).reshape(-1)
            if len(y) != n_total:
                raise ValueError(
                    f"plot_gradcam: y must have one label per image; got {len(y)} labels "
                    f"for {n_total} images."
                )
        n = n_total if n is None else min(int(n), n_total)
        if ax is not None:
            _panel_axes(ax, n)  # bad axes fail before the heatmaps are computed

        # The images as the network sees them, read once (file paths included).
        images = torch.stack([dataset[i][0] for i in range(n)]).numpy()
        # A model fitted on 2-D tabular input must get its rows back in that
        # form to accept them again.
        tabular = getattr(estimator, "_input_kind", None) == "tabular"
        as_given = images[:, 0, 0, :] if tabular else images
        heatmaps, logits = _gradcam_with_logits(
            estimator, as_given, target, method, 16, func="plot_gradcam"
        )
        proba = _logits_to_proba(logits)
        pred = proba.argmax(axis=1)
        titles = [
            f"pred: {estimator.classes_[pred[i]]} (p={proba[i, pred[i]]:.2f})"
            + ("" if y is None else f"\ntrue: {y[i]}")
            for i in range(n)
        ]
        display = cls(
            np.stack([_display_image(image) for image in images]),
            heatmaps,
            titles=titles,
            suptitle=None if target is None else f"{method}: evidence for {target!r}",
        )
        return display.plot(ax=ax, alpha=alpha, cmap=cmap)

    def plot(self, ax=None, *, alpha=0.4, cmap="jet"):
        """Draw each image under its heatmap.

        Parameters
        ----------
        ax : matplotlib Axes, array-like of Axes or None, default=None
            At least one axes per image (extra axes are left untouched);
            None draws into a new figure with a grid of up to four columns.
        alpha : float, default=0.4
            Opacity of the heatmap, in [0, 1].
        cmap : str or matplotlib.colors.Colormap, default="jet"
            Colormap of the heatmap.

        Returns
        -------
        display : GradCAMDisplay
            ``self``, with ``ax_``, ``axes_`` and ``figure_`` set.
        """
        cmap = _check_plot_arguments(None, alpha, cmap)
        fig, axes = _panel_axes(ax, len(self.images))
        for axis, image, heatmap, title in zip(axes, self.images, self.heatmaps, self.titles,
                                               strict=False):
            axis.imshow(image, cmap="gray", vmin=0.0, vmax=1.0)
            axis.imshow(heatmap, cmap=cmap, alpha=float(alpha), vmin=0.0, vmax=1.0)
            axis.set_title(title, fontsize=9)
            axis.set_axis_off()
        if self.suptitle is not None:
            fig.suptitle(self.suptitle, fontsize=10)
        self.axes_ = np.asarray(axes[: len(self.images)], dtype=object)
        self.ax_ = self.axes_[0]
        self.figure_ = fig
        return self


def _check_plot_arguments(n, alpha, cmap):
    """Check ``n`` and ``alpha`` of :func:`plot_gradcam`; return ``cmap`` as a Colormap."""
    import matplotlib

    if n is not None and (isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1):
        raise ValueError(f"plot_gradcam: n must be None or an int >= 1; got {n!r}.")
    if (
        isinstance(alpha, bool)
        or not isinstance(alpha, numbers.Real)
        or not 0.0 <= float(alpha) <= 1.0
    ):
        raise ValueError(f"plot_gradcam: alpha must be a float in [0, 1]; got {alpha!r}.")
    if isinstance(cmap, matplotlib.colors.Colormap):
        return cmap
    try:
        return matplotlib.colormaps[cmap]
    except (KeyError, TypeError) as exc:
        raise ValueError(f"plot_gradcam: cmap {cmap!r} is not a matplotlib colormap.") from exc


def _panel_axes(ax, n):
    """The figure and ``n`` axes to draw into: ``ax``'s, or a new grid of up to 4 columns."""
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    if ax is None:
        ncols = min(n, 4)
        nrows = math.ceil(n / ncols)
        fig = Figure(figsize=(3.0 * ncols, 3.3 * nrows), layout="constrained")
        return fig, [fig.add_subplot(nrows, ncols, i + 1) for i in range(n)]
    axes = list(np.asarray(ax, dtype=object).reshape(-1))
    if not all(isinstance(a, Axes) for a in axes):
        raise TypeError("plot_gradcam: ax must be a matplotlib Axes or an array of Axes.")
    if len(axes) < n:
        raise ValueError(
            f"plot_gradcam: ax has {len(axes)} axes but {n} images are shown; "
            "pass more axes or a smaller n."
        )
    return axes[0].get_figure(), axes


def _display_image(image):
    """A (C, H, W) image as gray (H, W) or RGB (H, W, 3), scaled to [0, 1]."""
    image = np.moveaxis(image, 0, -1) if image.shape[0] == 3 else image.mean(axis=0)
    lo, hi = float(image.min()), float(image.max())
    return (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)


def heatmap_mass_in_region(heatmaps, mask):
    """Share of each heatmap's total mass that lies inside a region.

    ``sum(heatmap * mask) / sum(heatmap)`` per image: 1 when all the
    evidence is inside the region, 0 when none is. Compare it with the
    region's share of the image area (``mask.mean()``), which is what a
    uniform heatmap would score.

    Parameters
    ----------
    heatmaps : array-like of shape (n_samples, height, width) or (height, width)
        Non-negative maps, e.g. from :func:`gradcam` or :func:`saliency`.
    mask : array-like of shape (height, width) or (n_samples, height, width)
        The region: booleans (or 0/1), one mask for every image or one per
        image, e.g. :func:`central_lung_mask`.

    Returns
    -------
    share : ndarray of shape (n_samples,)
        Float64 shares in [0, 1] (one value for a single 2-D heatmap); NaN
        for a heatmap whose mass is zero, as it points nowhere.

    Raises
    ------
    ValueError
        If ``heatmaps`` is not 2-D or 3-D, holds negative or non-finite
        values, or ``mask`` is not boolean (0/1) or does not match the
        heatmaps' shape.

    See Also
    --------
    skxray.segmentation.segment_lungs : Each image's lungs (one mask per image).
    central_lung_mask : The fixed ellipse prior of the lung fields (fallback).

    Examples
    --------
    >>> import numpy as np
    >>> from skxray.explain import heatmap_mass_in_region
    >>> heatmaps = np.zeros((2, 4, 4))
    >>> heatmaps[0, :2, :2] = 1.0   # all mass top-left
    >>> heatmaps[1] = 1.0           # uniform
    >>> mask = np.zeros((4, 4), dtype=bool)
    >>> mask[:2, :2] = True
    >>> heatmap_mass_in_region(heatmaps, mask)
    array([1.  , 0.25])
    """
    try:
        h = np.asarray(heatmaps, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"heatmaps must be a numeric array; {exc}") from exc
    if h.ndim == 2:
        h = h[None]
    if h.ndim != 3:
        raise ValueError(
            f"heatmaps must have shape (n_samples, height, width) or (height, width); "
            f"got shape {np.shape(heatmaps)}."
        )
    if not np.isfinite(h).all():
        raise ValueError("heatmaps must be finite (no NaN or infinity).")
    if (h < 0).any():
        raise ValueError(f"heatmaps must be non-negative; found a minimum of {h.min():g}.")
    m = np.asarray(mask)
    if m.dtype != bool:
        if m.dtype.kind not in "biuf" or not np.isin(m, (0, 1)).all():
            raise ValueError(
                f"mask must be boolean (or hold only 0 and 1); got dtype {m.dtype}."
            )
        m = m.astype(bool)
    if m.shape != h.shape[1:] and m.shape != h.shape:
        raise ValueError(
            f"mask must have shape {h.shape[1:]} (one for all images) or {h.shape} "
            f"(one per image) to match heatmaps; got shape {m.shape}."
        )
    total = h.sum(axis=(1, 2))
    inside = (h * m).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(total > 0, inside / np.where(total > 0, total, 1.0), np.nan)
    return np.clip(share, 0.0, 1.0)
