"""The audit's figures as Display objects: a finding's data taken once, drawn on any axes.

The scikit-learn pattern, as in :mod:`skxray.evaluation`: a classmethod
``from_finding`` takes what the figure shows from a :class:`Finding` (its
``details`` tables and ``arrays``), stores it as public attributes and draws
it; ``plot(ax=...)`` draws it again, on a new figure or on given axes,
without reading the finding again. ``plot`` returns the display and sets
``ax_``, ``axes_`` and ``figure_``. Figures are made without pyplot.

The audit's page draws its plots through these displays
(:meth:`Finding.plots`); each display's ``alt_text`` is the text the page
gives its image.
"""

import math

import numpy as np

from skxray.evaluation._displays import _DisplayMixin

__all__ = [
    "AuditCalibrationDisplay",
    "LabelIssuesDisplay",
    "LungGradCAMDisplay",
    "LungMaskingDisplay",
]


def _check_finding(finding, cls, name):
    if getattr(finding, "name", None) != name:
        raise ValueError(
            f"{cls.__name__}.from_finding: finding must be the {name!r} finding; "
            f"got {getattr(finding, 'name', type(finding).__name__)!r}."
        )


def _missing(cls, what):
    return ValueError(f"{cls.__name__}.from_finding: the finding has no {what} to draw.")


class LungMaskingDisplay(_DisplayMixin):
    """Out-of-fold balanced accuracy with the lungs or the borders masked, as bars.

    The ``"lungs"`` check's masking test: a model that looks at the lungs
    loses its score when they are hidden, not when the borders are. The
    dashed line is chance.

    Parameters
    ----------
    images : list of str
        What each bar was scored on ("unmasked", "lungs masked", "borders
        masked").
    balanced_accuracy : ndarray
        Out-of-fold balanced accuracy of each bar.
    chance : float, default=0.5
        Balanced accuracy of a guess (1 / number of classes).

    Attributes
    ----------
    ax_ : matplotlib Axes
        The axes drawn on.
    axes_ : ndarray of Axes
        ``[ax_]``.
    figure_ : matplotlib Figure
        Its figure.
    bars_ : matplotlib BarContainer
        The bars.

    See Also
    --------
    skxray.audit.audit : Runs the check (``details["masking"]``).
    skxray.audit.lung_masked : The images with the lungs hidden.

    Examples
    --------
    >>> from skxray.audit import LungMaskingDisplay
    >>> disp = LungMaskingDisplay(["unmasked", "lungs masked"], [0.9, 0.6]).plot()
    >>> disp.bars_.datavalues.tolist(), disp.ax_.get_title()
    ([0.9, 0.6], 'Out-of-fold score by masking')
    """

    alt_text = "Balanced accuracy with lungs or borders masked"

    def __init__(self, images, balanced_accuracy, *, chance=0.5):
        self.images = images
        self.balanced_accuracy = balanced_accuracy
        self.chance = chance

    @classmethod
    def from_finding(cls, finding, *, ax=None):
        """Draw the masking scores of the ``"lungs"`` finding.

        Parameters
        ----------
        finding : Finding
            The ``"lungs"`` finding of :func:`skxray.audit.audit`; its
            ``details["masking"]`` table and ``figures["chance"]`` are drawn.
        ax : matplotlib Axes, default=None
            Axes to draw on; None creates a new figure.

        Returns
        -------
        display : LungMaskingDisplay
            The display, drawn.

        Raises
        ------
        ValueError
            If ``finding`` is not the ``"lungs"`` finding or has no masking
            table.
        """
        _check_finding(finding, cls, "lungs")
        masking = finding.details.get("masking")
        if masking is None or not len(masking):
            raise _missing(cls, "masking table")
        chance = finding.figures.get("chance")
        return cls(list(masking["images"]), np.asarray(masking["balanced_accuracy"], dtype=float),
                   chance=0.5 if chance is None else chance).plot(ax=ax)

    def plot(self, ax=None):
        """Draw the bars and the chance line.

        Parameters
        ----------
        ax : matplotlib Axes, default=None
            Axes to draw on; None creates a new figure (4.2 x 2.6 in).

        Returns
        -------
        display : LungMaskingDisplay
            ``self``, with ``ax_``, ``axes_``, ``figure_`` and ``bars_`` set.
        """
        ax = self._set_axes(ax, figsize=(4.2, 2.6))[0]
        self.bars_ = ax.bar(self.images, self.balanced_accuracy, color="#4c72b0")
        ax.axhline(self.chance, color="k", ls="--", lw=1)
        ax.set_ylim(0, 1)
        ax.set_ylabel("balanced accuracy")
        ax.set_title("Out-of-fold score by masking", fontsize=9)
        return self


class LungGradCAMDisplay(_DisplayMixin):
    """The mean image and the mean out-of-fold Grad-CAM heatmap, with the lung field outlined.

    Parameters
    ----------
    mean_image : ndarray of shape (height, width)
        Mean of the images (gray).
    heatmap : ndarray of shape (height, width)
        Mean Grad-CAM heatmap of the out-of-fold models.
    lung_mask : ndarray of bool of shape (height, width)
        The lung field, outlined on both panels.

    Attributes
    ----------
    ax_ : matplotlib Axes
        The mean image's axes.
    axes_ : ndarray of Axes
        The mean image's and the heatmap's axes.
    figure_ : matplotlib Figure
        Their figure.

    See Also
    --------
    skxray.explain.heatmap_mass_in_region : The share of a heatmap inside the lungs.
    skxray.explain.GradCAMDisplay : One model's heatmaps over single images.

    Examples
    --------
    >>> import numpy as np
    >>> from skxray.audit import LungGradCAMDisplay
    >>> lungs = np.zeros((8, 8), bool)
    >>> lungs[2:6, 1:7] = True
    >>> disp = LungGradCAMDisplay(np.ones((8, 8)), lungs * 0.8, lungs).plot()
    >>> [ax.get_title() for ax in disp.axes_]
    ['mean image, lung field', 'mean Grad-CAM (out of fold)']
    """

    alt_text = "Mean Grad-CAM heatmap with the lung field outlined"

    def __init__(self, mean_image, heatmap, lung_mask):
        self.mean_image = mean_image
        self.heatmap = heatmap
        self.lung_mask = lung_mask

    @classmethod
    def from_finding(cls, finding, *, ax=None):
        """Draw the mean heatmap of the ``"lungs"`` finding.

        Parameters
        ----------
        finding : Finding
            The ``"lungs"`` finding of :func:`skxray.audit.audit`; its
            ``arrays["mean_gradcam"]``, ``arrays["lung_mask"]`` and
            ``arrays["mean_image"]`` (black when absent) are drawn.
        ax : pair of matplotlib Axes, default=None
            Axes of the mean image and of the heatmap; None creates a new
            figure.

        Returns
        -------
        display : LungGradCAMDisplay
            The display, drawn.

        Raises
        ------
        ValueError
            If ``finding`` is not the ``"lungs"`` finding or has no mean
            Grad-CAM heatmap (the model could not be explained).
        """
        _check_finding(finding, cls, "lungs")
        heat = finding.arrays.get("mean_gradcam")
        if heat is None:
            raise _missing(cls, "mean Grad-CAM heatmap")
        mean_image = finding.arrays.get("mean_image", np.zeros_like(heat))
        return cls(mean_image, heat, finding.arrays["lung_mask"]).plot(ax=ax)

    def plot(self, ax=None):
        """Draw the two panels.

        Parameters
        ----------
        ax : pair of matplotlib Axes, default=None
            Axes of the mean image and of the heatmap; None creates a new
            figure (5.6 x 2.8 in).

        Returns
        -------
        display : LungGradCAMDisplay
            ``self``, with ``ax_``, ``axes_`` and ``figure_`` set.
        """
        ax1, ax2 = self._set_axes(ax, ncols=2, figsize=(5.6, 2.8))[:2]
        lungs = np.asarray(self.lung_mask).astype(float)
        ax1.imshow(self.mean_image, cmap="gray")
        ax1.contour(lungs, levels=[0.5], colors="c")
        ax1.set_title("mean image, lung field", fontsize=9)
        ax2.imshow(self.heatmap, cmap="jet", vmin=0)
        ax2.contour(lungs, levels=[0.5], colors="w")
        ax2.set_title("mean Grad-CAM (out of fold)", fontsize=9)
        for axes in (ax1, ax2):
            axes.set_axis_off()
        self.axes_ = self.axes_[:2]
        return self


class AuditCalibrationDisplay(_DisplayMixin):
    """The ``"calibration"`` check's out-of-fold calibration curve against the diagonal.

    The points are the audit's bins (``details["calibration_curve"]``), so
    the figure shows the numbers of its table. For curves computed from
    predictions, see :class:`skxray.evaluation.ReliabilityDisplay`.

    Parameters
    ----------
    mean_predicted : ndarray
        Mean predicted probability of each bin.
    fraction_positive : ndarray
        Observed frequency of the class in each bin.
    xlabel : str, default="predicted probability"
        Label of the x axis: which probability the curve is of.

    Attributes
    ----------
    ax_ : matplotlib Axes
        The axes drawn on.
    axes_ : ndarray of Axes
        ``[ax_]``.
    figure_ : matplotlib Figure
        Its figure.
    line_ : matplotlib Line2D
        The curve.

    See Also
    --------
    skxray.evaluation.ReliabilityDisplay : Calibration curves of predictions.

    Examples
    --------
    >>> from skxray.audit import AuditCalibrationDisplay
    >>> disp = AuditCalibrationDisplay([0.2, 0.8], [0.1, 0.9], xlabel="P(Covid-19)").plot()
    >>> disp.line_.get_ydata().tolist(), disp.ax_.get_xlabel()
    ([0.1, 0.9], 'P(Covid-19)')
    """

    alt_text = "Calibration curve"

    def __init__(self, mean_predicted, fraction_positive, *, xlabel="predicted probability"):
        self.mean_predicted = mean_predicted
        self.fraction_positive = fraction_positive
        self.xlabel = xlabel

    @classmethod
    def from_finding(cls, finding, *, ax=None):
        """Draw the curve of the ``"calibration"`` finding.

        Parameters
        ----------
        finding : Finding
            The ``"calibration"`` finding of :func:`skxray.audit.audit`; its
            ``details["calibration_curve"]`` is drawn, labelled with
            ``figures["curve_of"]``.
        ax : matplotlib Axes, default=None
            Axes to draw on; None creates a new figure.

        Returns
        -------
        display : AuditCalibrationDisplay
            The display, drawn.

        Raises
        ------
        ValueError
            If ``finding`` is not the ``"calibration"`` finding or has no
            curve.
        """
        _check_finding(finding, cls, "calibration")
        curve = finding.details.get("calibration_curve")
        if curve is None or not len(curve):
            raise _missing(cls, "calibration curve")
        return cls(
            np.asarray(curve["mean_predicted"], dtype=float),
            np.asarray(curve["fraction_positive"], dtype=float),
            xlabel=finding.figures.get("curve_of", "predicted probability"),
        ).plot(ax=ax)

    def plot(self, ax=None):
        """Draw the diagonal and the curve.

        Parameters
        ----------
        ax : matplotlib Axes, default=None
            Axes to draw on; None creates a new figure (3.4 x 3.2 in).

        Returns
        -------
        display : AuditCalibrationDisplay
            ``self``, with ``ax_``, ``axes_``, ``figure_`` and ``line_`` set.
        """
        ax = self._set_axes(ax, figsize=(3.4, 3.2))[0]
        ax.plot([0, 1], [0, 1], "k--", lw=1)
        (self.line_,) = ax.plot(self.mean_predicted, self.fraction_positive, "o-", color="#4c72b0")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel(self.xlabel, fontsize=8)
        ax.set_ylabel("observed frequency")
        ax.set_title("Calibration curve (out of fold)", fontsize=9)
        return self


def _short(name, width=22):
    return name if len(name) <= width else name[:10] + "..." + name[-9:]


class LabelIssuesDisplay(_DisplayMixin):
    """A gallery of the images whose label the audit doubts most.

    Each thumbnail is titled with its rank, file name (or index), the given
    and the suggested label, and its label quality (low: the out-of-fold
    models are sure the label is wrong).

    Parameters
    ----------
    images : list of ndarray of shape (height, width)
        The suspects' images, gray in [0, 1].
    titles : list of str
        Title of each thumbnail.
    alt_text : str, default="Top suspected label issues"
        Text for a page's image: the suspects in words.

    Attributes
    ----------
    ax_ : matplotlib Axes
        The first thumbnail's axes.
    axes_ : ndarray of Axes
        One axes per image.
    figure_ : matplotlib Figure
        Their figure.

    See Also
    --------
    skxray.audit.audit : Runs the check (``details["suspects"]``).
    skxray.evaluation.ImageGridDisplay : A random sample of images.

    Examples
    --------
    >>> import numpy as np
    >>> from skxray.audit import LabelIssuesDisplay
    >>> disp = LabelIssuesDisplay([np.zeros((8, 8))] * 2, ["1. a", "2. b"]).plot()
    >>> [ax.get_title() for ax in disp.axes_]
    ['1. a', '2. b']
    """

    def __init__(self, images, titles, *, alt_text="Top suspected label issues"):
        self.images = images
        self.titles = titles
        self.alt_text = alt_text

    @classmethod
    def from_finding(cls, finding, *, ax=None):
        """Draw the suspects of the ``"labels"`` finding.

        Parameters
        ----------
        finding : Finding
            The ``"labels"`` finding of :func:`skxray.audit.audit`; its
            ``arrays["suspect_images"]`` are drawn, titled from the first
            rows of ``details["suspects"]``. Channels-first images show the
            mean of their channels, as the audit's hashes and masks see them.
        ax : sequence of matplotlib Axes, default=None
            At least one axes per image; None creates a new figure.

        Returns
        -------
        display : LabelIssuesDisplay
            The display, drawn.

        Raises
        ------
        ValueError
            If ``finding`` is not the ``"labels"`` finding or has no suspect
            to show.
        """
        _check_finding(finding, cls, "labels")
        images = finding.arrays.get("suspect_images")
        suspects = finding.details.get("suspects")
        if images is None or suspects is None or not len(images):
            raise _missing(cls, "suspect")
        rows = list(suspects.head(len(images)).itertuples())
        names = [getattr(row, "file", None) or f"image {row.image}" for row in rows]
        titles = [
            f"{row.rank}. {_short(name)}\n{row.given} -> {row.suggested}\n"
            f"quality {row.label_quality:.2f}"
            for row, name in zip(rows, names, strict=True)
        ]
        alt = "Top suspected label issues: " + "; ".join(
            f"{name} given {row.given}, suggested {row.suggested}"
            for row, name in zip(rows, names, strict=True)
        )
        images = [img if img.ndim == 2 else img.mean(axis=0) for img in images[: len(rows)]]
        return cls(images, titles, alt_text=alt).plot(ax=ax)

    def plot(self, ax=None):
        """Draw the thumbnails, up to six per row.

        Parameters
        ----------
        ax : sequence of matplotlib Axes, default=None
            At least one axes per image (extra axes are left untouched);
            None creates a new figure of up to six columns.

        Returns
        -------
        display : LabelIssuesDisplay
            ``self``, with ``ax_``, ``axes_`` and ``figure_`` set.
        """
        n = len(self.images)
        ncols = min(n, 6)
        nrows = math.ceil(n / ncols)
        if ax is None:
            axes = self._set_axes(None, nrows=nrows, ncols=ncols,
                                  figsize=(1.9 * ncols, 2.3 * nrows))
            for cell in axes[n:]:  # blank cells of the last row
                cell.set_axis_off()
        else:
            axes = self._set_axes(ax, ncols=n)
        for cell, img, title in zip(axes[:n], self.images, self.titles, strict=True):
            cell.set_axis_off()
            cell.imshow(img, cmap="gray", vmin=0, vmax=1)
            cell.set_title(title, fontsize=7)
        self.axes_ = axes[:n]
        return self
