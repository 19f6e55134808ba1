"""Loaders for chest X-ray image folders and a synthetic phantom generator.

:func:`load_image_folder` reads the usual "one sub-folder per class" layout
(optionally described by a ``manifest.csv`` with patient ids) into a
:class:`sklearn.utils.Bunch`; :func:`make_phantom_cxr` draws synthetic,
chest-X-ray-like images for tests, examples and demos; :func:`get_data_home`
says where shared data sets live.
"""

import numbers
import os
import warnings
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from PIL import Image
from sklearn.utils import Bunch, check_random_state

from ._param_validation import check_keep_aspect
from .io import is_image_file, read_image

__all__ = ["get_data_home", "load_image_folder", "make_phantom_cxr"]

_MANIFEST = "manifest.csv"
_REQUIRED_COLUMNS = ("path", "label")
_TEXT_COLUMNS = ("path", "label", "patient_id")
# Listing every skipped file would drown the warning on big folders.
_MAX_LISTED = 10


def get_data_home(data_home=None):
    """Return the folder that holds skxray's shared data sets.

    The folder is, in this order of preference:

    1. ``data_home``, if given;
    2. the environment variable ``SKXRAY_DATA``, if set and not empty;
    3. ``shared/data`` next to the repository that contains the skxray
       package (``<repo>/../shared/data``), if that folder exists, which is
       the layout of a development checkout;
    4. otherwise ``../shared/data`` relative to the current working
       directory.

    Unlike :func:`sklearn.datasets.get_data_home`, the folder is not created:
    skxray never downloads data, it only reads folders put there by someone.
    ``~`` is expanded.

    Parameters
    ----------
    data_home : str or os.PathLike, default=None
        Explicit data folder; wins over everything else.

    Returns
    -------
    pathlib.Path
        The data folder. It may not exist.

    See Also
    --------
    load_image_folder : Load a data set found there, e.g. ``get_data_home() / "darkcovidnet"``.

    Examples
    --------
    >>> from skxray.datasets import get_data_home
    >>> get_data_home("/srv/xray-data").as_posix()
    '/srv/xray-data'
    """
    if data_home is not None:
        return Path(os.fspath(data_home)).expanduser()
    env = os.environ.get("SKXRAY_DATA", "").strip()
    if env:
        return Path(env).expanduser()
    # parents[0] is the package, parents[1] the repository, parents[2] its parent.
    beside_repo = Path(__file__).resolve().parents[2] / "shared" / "data"
    if beside_repo.is_dir():
        return beside_repo
    return (Path.cwd() / ".." / "shared" / "data").resolve()


# --------------------------------------------------------------------------
# load_image_folder


def _is_hidden(name):
    return name.startswith(".")


def _warn_skipped(paths, root, why):
    if not paths:
        return
    names = [Path(p).relative_to(root).as_posix() for p in paths]
    listed = ", ".join(repr(n) for n in names[:_MAX_LISTED])
    more = f" and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else ""
    warnings.warn(
        f"Skipped {len(names)} {why} under '{root}': {listed}{more}.", UserWarning, stacklevel=4
    )


def _scan_class_folders(root):
    """Return a DataFrame (path, label) from the sub-folder-per-class layout."""
    rows = []
    not_images = []
    stray_images = []
    empty_classes = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if _is_hidden(entry.name):
            continue
        if not entry.is_dir():
            # Top-level files (README, licence, ...) belong to no class; only
            # images there are worth a warning, as they were likely misplaced.
            if is_image_file(entry.path):
                stray_images.append(entry.path)
            continue
        n_before = len(rows)
        for dirpath, dirnames, filenames in os.walk(entry.path):
            dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d))
            for name in sorted(filenames):
                if _is_hidden(name):
                    continue
                full = os.path.join(dirpath, name)
                if is_image_file(full):
                    rows.append((full, entry.name))
                else:
                    not_images.append(full)
        if len(rows) == n_before:
            empty_classes.append(entry.path)
    _warn_skipped(not_images, root, "non-image file(s)")
    _warn_skipped(stray_images, root, "image(s) outside any class folder")
    _warn_skipped(empty_classes, root, "class folder(s) without images")
    return pd.DataFrame(rows, columns=["path", "label"])


def _read_manifest(root, manifest):
    """The manifest's rows whose files exist and are images, with full paths."""
    df = _parse_manifest(manifest)
    keep, full_paths, missing_files, not_images = _check_manifest_paths(root, manifest, df["path"])
    if missing_files:
        listed = ", ".join(repr(m) for m in missing_files[:_MAX_LISTED])
        more = (
            f" and {len(missing_files) - _MAX_LISTED} more"
            if len(missing_files) > _MAX_LISTED
            else ""
        )
        raise FileNotFoundError(
            f"Manifest '{manifest}' lists {len(missing_files)} file(s) that do not exist "
            f"under '{root}': {listed}{more}."
        )
    _warn_skipped(not_images, root, "non-image file(s) listed in the manifest")

    df = df.iloc[keep].reset_index(drop=True)
    df["path"] = full_paths
    if "patient_id" in df.columns:
        blank = df.index[df["patient_id"].isna()]
        if len(blank):
            rows = [str(df.at[i, "path"]) for i in blank[:_MAX_LISTED]]
            raise ValueError(
                f"Manifest '{manifest}' has an empty 'patient_id' for {len(blank)} image(s), "
                f"e.g. {rows}; fill it in or drop the column."
            )
    return df


def _parse_manifest(manifest):
    """The manifest as a DataFrame, its identifier columns read verbatim and checked."""
    try:
        df = pd.read_csv(manifest)
        # Re-read the identifier columns verbatim: pandas would turn a label
        # or patient id such as "None" or "NA" into a missing value.
        text_columns = [c for c in _TEXT_COLUMNS if c in df.columns]
        if text_columns:
            text = pd.read_csv(manifest, usecols=text_columns, dtype=str, keep_default_na=False)
            for column in text_columns:
                df[column] = text[column].str.strip().replace("", np.nan)
    except Exception as exc:
        raise ValueError(f"Cannot parse manifest '{manifest}': {exc}") from exc
    missing = [c for c in _REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(
            f"Manifest '{manifest}' is missing required column(s) {missing}; "
            f"it has {list(df.columns)}."
        )
    for column in ("path", "label"):
        empty = df.index[df[column].isna()]
        if len(empty):
            rows = ", ".join(str(i + 1) for i in empty[:_MAX_LISTED])
            raise ValueError(f"Manifest '{manifest}' has an empty '{column}' on row(s) {rows}.")
    dup = df["path"][df["path"].duplicated()]
    if len(dup):
        raise ValueError(
            f"Manifest '{manifest}' lists the same file more than once: {list(dup[:_MAX_LISTED])}."
        )
    return df


def _check_manifest_paths(root, manifest, paths):
    """Rows to keep, their full paths, missing files and non-image files.

    Raises ``ValueError`` for a path that is absolute or leaves ``root``
    (through ``..`` or a symbolic link).
    """
    root_resolved = root.resolve()
    full_paths = []
    missing_files = []
    not_images = []
    keep = []
    for i, rel in enumerate(paths):
        where = f"Manifest '{manifest}' row {i + 1} (path {rel!r})"
        pure = PurePosixPath(rel.replace("\\", "/"))
        if pure.is_absolute() or Path(rel).is_absolute() or Path(rel).drive:
            raise ValueError(
                f"{where}: absolute paths are not allowed; paths are relative to the root folder."
            )
        if ".." in pure.parts:
            raise ValueError(f"{where} leaves the root folder '{root}' ('..' is not allowed).")
        full = root / Path(*pure.parts)
        try:
            resolved = full.resolve()
        except (OSError, RuntimeError) as exc:
            raise ValueError(f"{where} cannot be resolved: {exc}") from exc
        if not resolved.is_relative_to(root_resolved):
            raise ValueError(
                f"{where} leaves the root folder '{root}' through a symbolic link "
                f"(it points to '{resolved}')."
            )
        if not full.is_file():
            missing_files.append(rel)
            continue
        if not is_image_file(full):
            not_images.append(str(full))
            continue
        keep.append(i)
        full_paths.append(str(full))
    return keep, full_paths, missing_files, not_images


def _resize(img, size):
    """Resize a 2-D float image to ``size`` x ``size`` with bilinear filtering."""
    if img.shape == (size, size):
        return img
    # Mode "F" keeps the float values; Pillow's bilinear filter widens its
    # support when shrinking, so downscaling is antialiased.
    out = Image.fromarray(np.ascontiguousarray(img, dtype=np.float32)).resize(
        (size, size), Image.Resampling.BILINEAR
    )
    return np.clip(np.asarray(out, dtype=np.float32), 0.0, 1.0)


def _load_one(path, size, keep_aspect):
    img = read_image(path, as_gray=True)
    if not keep_aspect:
        return _resize(img, size)
    from skxray.preprocessing import resize_image

    return resize_image(img, size, keep_aspect=keep_aspect)


def _check_positive_int(value, name, minimum=1):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}.")
    return int(value)


def _target_names(frame, classes, root, min_classes=2):
    """The classes to load, in order: ``classes`` checked against the folder's, or all."""
    available = sorted(frame["label"].unique())
    if not available:
        raise ValueError(f"No image files found in '{root}'.")
    if classes is None:
        target_names = available
    else:
        if isinstance(classes, str) or not isinstance(classes, Sequence | np.ndarray):
            raise ValueError(f"classes must be a list of class names; got {classes!r}.")
        target_names = [str(c) for c in classes]
        unknown = [c for c in target_names if c not in available]
        if unknown:
            raise ValueError(f"Unknown class(es) {unknown} in classes; '{root}' has {available}.")
        if len(set(target_names)) != len(target_names):
            raise ValueError(f"classes has duplicates: {target_names}.")
    if len(target_names) < min_classes:
        raise ValueError(
            f"Classification needs at least two classes; '{root}' gives {target_names}."
        )
    return target_names


def _load_pixels(filenames, image_size, keep_aspect, n_jobs):
    """The images as (n, size, size) float32, or a copy of the paths when ``image_size`` is None."""
    if image_size is None:
        return filenames.copy()
    data = np.empty((len(filenames), image_size, image_size), dtype=np.float32)
    # A generator keeps memory at one image per worker, not the whole list.
    results = Parallel(n_jobs=n_jobs, prefer="threads", return_as="generator")(
        delayed(_load_one)(path, image_size, keep_aspect) for path in filenames
    )
    for i, img in enumerate(results):
        data[i] = img
    return data


def _describe(root, frame, groups, target_names, origin, image_size, keep_aspect):
    """The ``DESCR`` text of the bunch."""
    counts = frame["label"].value_counts()
    summary = ", ".join(f"{name}: {counts[name]}" for name in target_names)
    n_groups = f", {len(pd.unique(groups))} patients" if groups is not None else ""
    how = {False: "", "pad": ", letterboxed", "crop": ", centre-cropped to square"}
    what = f"resized to {image_size}x{image_size}{how[keep_aspect]}" if image_size else "as file paths"
    return (
        f"Chest X-ray image folder '{root}': {len(frame)} images{n_groups}, "
        f"{len(target_names)} classes ({summary}); {origin}; images {what}."
    )


def load_image_folder(
    root,
    *,
    classes=None,
    image_size=None,
    keep_aspect="crop",
    return_X_y=False,
    n_jobs=None,
    min_classes=2,
):
    """Load a folder of chest X-rays with one sub-folder per class.

    The expected layout is ``root/<class name>/<image files>`` (images may
    sit in nested folders below a class folder). If ``root/manifest.csv``
    exists it is used instead of scanning: it must have the columns
    ``path`` (relative to ``root``, with ``/`` separators) and ``label``,
    and may have any others, e.g. ``patient_id``, ``source``, ``age``,
    ``sex``, ``view``.

    When scanning folders, files and folders whose name starts with ``.``
    (``.DS_Store``, ``.git``, ...) are ignored silently. Files that are not
    images (judged by :func:`skxray.io.is_image_file`, i.e. by extension or
    DICOM marker) inside class folders or listed in the manifest are skipped
    with one :class:`UserWarning` that names them. Top-level files of
    ``root`` (README, manifest, ...) belong to no class and are ignored
    silently, except images, which are skipped with a warning.

    Samples are ordered by class (in the order of ``target_names``), then by
    path, so the result does not depend on the file system or on the row
    order of the manifest.

    Parameters
    ----------
    root : str or os.PathLike
        The image folder.
    classes : list of str, default=None
        Classes to load, in this order; they become ``target_names``. None
        loads every class found, sorted by name.
    image_size : int, default=None
        If given, decode every image as gray levels and resize it (bilinear,
        antialiased, see ``keep_aspect``) to ``image_size`` x
        ``image_size`` pixels; ``data`` then holds the pixels. If None,
        nothing is decoded and ``data`` holds the file paths, as accepted by
        skxray's path-aware estimators.
    keep_aspect : {"crop", "pad", True, False}, default="crop"
        With ``image_size``, how images that are not square are resized:
        centre-cropped to a square first ("crop"), letterboxed with zero
        padding (True or "pad"), or stretched (False). The crop avoids a
        shortcut when the image shape depends on the source, as in the
        DarkCovidNet set, where every NIH file is square and almost every
        Covid-19 file is not; see :func:`skxray.preprocessing.resize_images`.
    return_X_y : bool, default=False
        If True, return ``(data, target)`` instead of a Bunch.
    n_jobs : int, default=None
        Number of threads that decode images when ``image_size`` is given.
        None means 1 unless in a :func:`joblib.parallel_config` context; -1
        means all processors. The output order does not depend on it.
    min_classes : {1, 2}, default=2
        Fewest classes the folder must give. Training needs two; 1 accepts a
        folder of one class, e.g. an external test set that holds only
        COVID-19 images (``skxray evaluate`` loads folders this way).

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object with the attributes:

        data : ndarray of shape (n_samples, image_size, image_size) or (n_samples,)
            float32 images in [0, 1] if ``image_size`` is given, otherwise
            an object array of the file paths (str).
        target : ndarray of shape (n_samples,)
            The class label (str) of each image, as an object array.
        target_names : list of str
            The classes, sorted by name unless ``classes`` set the order.
        filenames : ndarray of shape (n_samples,)
            Absolute path (str) of each image, below the absolute ``root``
            (symbolic links are not resolved).
        groups : ndarray of shape (n_samples,) or None
            Patient id of each image, from the manifest's ``patient_id``
            column, for grouped cross-validation; None without it.
        frame : pandas.DataFrame of shape (n_samples, n_columns)
            Metadata: ``path`` (absolute, as in ``filenames``), ``label``
            and every other manifest column.
        DESCR : str
            A short description of what was loaded.

    (data, target) : tuple if ``return_X_y`` is True
        The ``data`` and ``target`` arrays described above.

    Raises
    ------
    FileNotFoundError
        If ``root`` does not exist, or the manifest lists files that do not
        exist.
    NotADirectoryError
        If ``root`` is not a directory.
    ValueError
        If a manifest path is absolute or leaves ``root`` (``..`` or a
        symbolic link pointing outside), the manifest lacks ``path`` or
        ``label`` columns, ``classes`` names an unknown class, no image is
        found, fewer than ``min_classes`` classes remain, or ``image_size`` is not a
        positive integer.
    skxray.io.ImageReadError
        If ``image_size`` is given and an image cannot be decoded.

    See Also
    --------
    make_phantom_cxr : Synthetic images to try the estimators without data.
    skxray.io.read_image : How each file is decoded and scaled.

    Examples
    --------
    >>> import os
    >>> import tempfile
    >>> from PIL import Image
    >>> from skxray.datasets import load_image_folder, make_phantom_cxr
    >>> X, y = make_phantom_cxr(6, image_size=32, random_state=0)
    >>> with tempfile.TemporaryDirectory() as root:
    ...     for i, (img, label) in enumerate(zip(X, y)):
    ...         os.makedirs(os.path.join(root, label), exist_ok=True)
    ...         path = os.path.join(root, label, f"{i}.png")
    ...         Image.fromarray((img * 255).round().astype("uint8")).save(path)
    ...     bunch = load_image_folder(root, image_size=16)
    >>> bunch.data.shape
    (6, 16, 16)
    >>> bunch.target_names
    ['Covid-19', 'Normal']
    >>> bunch.target.tolist()
    ['Covid-19', 'Covid-19', 'Covid-19', 'Normal', 'Normal', 'Normal']
    """
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a str or os.PathLike; got {type(root).__name__}.")
    root = Path(os.fspath(root)).expanduser().absolute()
    if not root.exists():
        raise FileNotFoundError(f"Image folder '{root}' does not exist.")
    if not root.is_dir():
        raise NotADirectoryError(f"Image folder '{root}' is not a directory.")
    if image_size is not None:
        image_size = _check_positive_int(image_size, "image_size")
    keep_aspect = check_keep_aspect(keep_aspect, "load_image_folder")
    if min_classes not in (1, 2) or isinstance(min_classes, bool):
        raise ValueError(f"load_image_folder: min_classes must be 1 or 2; got {min_classes!r}.")

    manifest = root / _MANIFEST
    if manifest.is_file():
        frame = _read_manifest(root, manifest)
        origin = f"labels from '{_MANIFEST}'"
    else:
        frame = _scan_class_folders(root)
        origin = "labels from the sub-folder names"

    target_names = _target_names(frame, classes, root, min_classes)

    order = {name: i for i, name in enumerate(target_names)}
    frame = frame[frame["label"].isin(order)].copy()
    frame["_class"] = frame["label"].map(order)
    frame = frame.sort_values(["_class", "path"], kind="stable").drop(columns="_class")
    frame = frame.reset_index(drop=True)

    filenames = frame["path"].to_numpy(dtype=object)
    target = frame["label"].to_numpy(dtype=object)
    groups = frame["patient_id"].to_numpy(dtype=object) if "patient_id" in frame else None

    data = _load_pixels(filenames, image_size, keep_aspect, n_jobs)
    descr = _describe(root, frame, groups, target_names, origin, image_size, keep_aspect)
    if return_X_y:
        return data, target
    return Bunch(
        data=data,
        target=target,
        target_names=target_names,
        filenames=filenames,
        groups=groups,
        frame=frame,
        DESCR=descr,
    )


# --------------------------------------------------------------------------
# make_phantom_cxr


def _disease_of(name):
    lowered = name.lower()
    if "covid" in lowered:
        return "covid"
    if "pneumonia" in lowered:
        return "pneumonia"
    return "normal"


def _split_evenly(total, n_parts, first_extra):
    """``total`` split in ``n_parts`` integers; parts in ``first_extra`` get the rest."""
    parts = np.full(n_parts, total // n_parts, dtype=np.int64)
    parts[first_extra[: total % n_parts]] += 1
    return parts


def _ellipse(X, Y, cx, cy, rx, ry, edge=0.08):
    """Soft ellipse mask in [0, 1], 1 inside, a linear ramp of width ``edge`` at the border."""
    r = np.sqrt(((X - cx) / rx) ** 2 + ((Y - cy) / ry) ** 2)
    return np.clip((1.0 - r) / edge, 0.0, 1.0)


def _blob(X, Y, cx, cy, sigma):
    return np.exp(-((X - cx) ** 2 + (Y - cy) ** 2) / (2.0 * sigma**2))


def _coarse_noise(rng, n, size, cell):
    """Blocky low-frequency noise: a coarse grid upsampled by repetition."""
    coarse = rng.standard_normal((n, -(-size // cell), -(-size // cell))).astype(np.float32)
    return np.repeat(np.repeat(coarse, cell, axis=1), cell, axis=2)[:, :size, :size]


# A fixed 3 x 12 bit pattern drawn as "text" by scanner B: the same on every
# image, like a hospital's burnt-in annotation.
_TEXT_GLYPHS = np.array(
    [
        [1, 1, 1, 0, 1, 0, 1, 0, 1, 1, 0, 1],
        [1, 0, 1, 0, 1, 1, 1, 0, 1, 0, 0, 1],
        [1, 1, 1, 0, 1, 0, 1, 0, 1, 1, 0, 1],
    ],
    dtype=np.float32,
)


def make_phantom_cxr(
    n_samples=100,
    *,
    classes=("Covid-19", "Normal"),
    image_size=64,
    n_patients=None,
    noise=0.05,
    scanner="A",
    marker_class=None,
    random_state=None,
    return_groups=False,
    return_lungs=False,
):
    """Generate synthetic chest-X-ray-like phantom images.

    **These images are synthetic.** They only mimic the layout of a
    frontal chest radiograph (a bright body and mediastinum, two dark lung
    fields crossed by faint ribs, a heart shadow, noise) so that tests,
    examples and the demo can run without patient data. Results on them say
    nothing about real X-rays.

    Each class gets a signal inside the lung fields, chosen from its name:

    - a name containing "covid" (case-insensitive): bilateral, peripheral,
      patchy ground-glass opacities (soft bright blobs in the outer part of
      both lungs);
    - a name containing "pneumonia": a lobar consolidation (one dense bright
      region in the lower part of one lung);
    - any other name (e.g. "Normal", "No_findings"): clear lungs. Two such
      classes are therefore indistinguishable.

    Images are drawn per patient: the images of one patient share the
    anatomy (lung size and position, rib phase, brightness) up to a small
    jitter, and the label, so that grouped cross-validation is meaningful.
    Labels are balanced (class counts differ by at most one) and shuffled.

    Parameters
    ----------
    n_samples : int, default=100
        Number of images.
    classes : sequence of str, default=("Covid-19", "Normal")
        Class names, at least two, all different.
    image_size : int, default=64
        Height and width of the square images in pixels; at least 16.
    n_patients : int, default=None
        Number of patients. None means ``max(len(classes), n_samples // 3)``,
        capped at ``n_samples``. Must lie between
        ``min(len(classes), n_samples)`` (every class needs a patient) and
        ``n_samples`` (every patient needs an image).
    noise : float, default=0.05
        Standard deviation of the scanner noise, on the [0, 1] scale.
    scanner : {"A", "B"}, default="A"
        Simulated device. "B" is a second scanner for out-of-distribution
        tests: a different intensity curve (gamma 0.5 with a raised black
        level), 1.5 times the noise with a blocky texture, a zoomed and shifted
        field of view, and a burnt-in text-like block in the top-right
        corner.
    marker_class : str, default=None
        If given, every image of this class gets a small bright square in
        the top-left corner, outside the lung fields: an injected shortcut
        (like a hospital's marker) for shortcut-learning audits.
    random_state : int, RandomState instance or None, default=None
        Seed or generator for reproducible output across calls.
    return_groups : bool, default=False
        If True, also return the patient id of each image.
    return_lungs : bool, default=False
        If True, also return each image's lung fields: the ground truth
        for testing lung segmentation. The images are the same either way.

    Returns
    -------
    X : ndarray of shape (n_samples, image_size, image_size)
        The images, as float32 with values in [0, 1].
    y : ndarray of shape (n_samples,)
        Class name (str) of each image, as an object array.
    groups : ndarray of shape (n_samples,)
        Integer patient id of each image, only if ``return_groups`` is True.
    lungs : ndarray of bool, shape (n_samples, image_size, image_size)
        Where the two lung fields of each image are (their ellipses above
        half strength), only if ``return_lungs`` is True; after ``groups``
        when both are asked for.

    Raises
    ------
    ValueError
        If ``n_samples < 1``, ``image_size < 16``, ``classes`` has fewer than
        two or duplicate names, ``n_patients`` is out of range, ``noise`` is
        negative, ``scanner`` is not "A" or "B", or ``marker_class`` is not
        one of ``classes``.

    See Also
    --------
    load_image_folder : Load real X-rays from a folder of class subfolders.

    Examples
    --------
    >>> from skxray.datasets import make_phantom_cxr
    >>> X, y, groups = make_phantom_cxr(
    ...     12, classes=("Covid-19", "Normal", "Pneumonia"), image_size=32,
    ...     random_state=0, return_groups=True,
    ... )
    >>> X.shape, X.dtype
    ((12, 32, 32), dtype('float32'))
    >>> sorted(set(y))
    ['Covid-19', 'Normal', 'Pneumonia']
    >>> len(set(groups))
    4
    """
    n_samples, image_size, classes, n_patients = _check_phantom_arguments(
        n_samples, image_size, classes, n_patients, noise, scanner, marker_class
    )
    rng = check_random_state(random_state)
    n, size = n_samples, image_size
    # The random draws happen in a fixed order (patients, anatomy, disease,
    # scanner): the same random_state gives the same phantoms as before.
    patient_ids, image_patient, label_idx = _assign_patients(rng, n, len(classes), n_patients)
    anatomy = _draw_anatomy(rng, image_patient, n_patients, scanner)
    X, Y, img, lungs = _draw_chest(anatomy, size)
    diseases = np.array([_disease_of(c) for c in classes])[label_idx]
    _add_disease(rng, img, X, Y, lungs, anatomy, diseases)
    img *= _col(anatomy.brightness)
    img = _scanner_look(rng, img, scanner, noise, n, size)

    if marker_class is not None:
        m = max(2, size // 12)
        o = max(1, size // 32)
        img[label_idx == classes.index(marker_class), o : o + m, o : o + m] = 1.0

    X_out = np.ascontiguousarray(img, dtype=np.float32)
    y = np.array(classes, dtype=object)[label_idx]
    out = (X_out, y)
    if return_groups:
        out += (patient_ids[image_patient].astype(np.int64),)
    if return_lungs:
        out += (np.maximum(lungs[0], lungs[1]) > 0.5,)
    return out


def _check_phantom_arguments(n_samples, image_size, classes, n_patients, noise, scanner, marker_class):
    """The checked arguments of :func:`make_phantom_cxr` (n_patients defaulted)."""
    n_samples = _check_positive_int(n_samples, "n_samples")
    image_size = _check_positive_int(image_size, "image_size", minimum=16)
    if isinstance(classes, str) or not isinstance(classes, Sequence | np.ndarray):
        raise ValueError(f"classes must be a sequence of class names; got {classes!r}.")
    classes = [str(c) for c in classes]
    if len(classes) < 2:
        raise ValueError(f"classes needs at least two class names; got {classes}.")
    if len(set(classes)) != len(classes) or any(not c for c in classes):
        raise ValueError(f"classes must be distinct, non-empty names; got {classes}.")
    n_classes = len(classes)
    if n_patients is None:
        n_patients = min(max(n_classes, n_samples // 3), n_samples)
    else:
        n_patients = _check_positive_int(n_patients, "n_patients")
        if not min(n_classes, n_samples) <= n_patients <= n_samples:
            raise ValueError(
                f"n_patients must lie between {min(n_classes, n_samples)} and "
                f"n_samples={n_samples}; got {n_patients}."
            )
    if (
        isinstance(noise, bool)
        or not isinstance(noise, numbers.Real)
        or not np.isfinite(noise)
        or noise < 0
    ):
        raise ValueError(f"noise must be a finite number >= 0; got {noise!r}.")
    if scanner not in ("A", "B"):
        raise ValueError(f"scanner must be 'A' or 'B'; got {scanner!r}.")
    if marker_class is not None and marker_class not in classes:
        raise ValueError(f"marker_class {marker_class!r} is not one of classes {classes}.")
    return n_samples, image_size, classes, n_patients


def _col(v):
    """Per-image values as a (n, 1, 1) float32 column that broadcasts over images."""
    return np.asarray(v, dtype=np.float32)[:, None, None]


def _assign_patients(rng, n, n_classes, n_patients):
    """Patient ids, each image's patient and each image's class index.

    The same random class order decides which classes get the leftover
    samples and patients, so no class ends up with more patients than images.
    """
    class_rank = rng.permutation(n_classes)
    per_class = _split_evenly(n, n_classes, class_rank)
    patients_per_class = _split_evenly(n_patients, n_classes, class_rank)
    patient_ids = rng.permutation(n_patients)
    patient_label = np.repeat(np.arange(n_classes), patients_per_class)
    image_patient = np.empty(n, dtype=np.int64)
    start = 0
    first_patient = np.concatenate([[0], np.cumsum(patients_per_class)])
    for c in range(n_classes):
        k = patients_per_class[c]
        if k == 0:
            continue
        counts = _split_evenly(per_class[c], k, rng.permutation(k))
        image_patient[start : start + per_class[c]] = np.repeat(
            np.arange(first_patient[c], first_patient[c] + k), counts
        )
        start += per_class[c]
    image_patient = image_patient[rng.permutation(n)]
    return patient_ids, image_patient, patient_label[image_patient]


def _draw_anatomy(rng, image_patient, n_patients, scanner):
    """Per-patient anatomy, then per-image jitter around it; the scanner's field of view."""
    n = len(image_patient)

    def patient(lo, hi):
        return rng.uniform(lo, hi, n_patients)[image_patient]

    def jitter(scale):
        return rng.normal(0.0, scale, n)

    a = Bunch()
    a.lung_x = patient(0.36, 0.44) + jitter(0.01)
    a.lung_y = patient(-0.10, 0.02) + jitter(0.01)
    a.lung_rx = patient(0.23, 0.29) * (1 + jitter(0.02))
    a.lung_ry = patient(0.52, 0.62) * (1 + jitter(0.02))
    a.body_rx = patient(0.76, 0.86)
    a.heart_r = patient(0.28, 0.34)
    a.rib_phase = patient(0.0, 2 * np.pi) + jitter(0.15)
    a.rib_period = patient(0.17, 0.22)
    a.brightness = patient(0.9, 1.1) * (1 + jitter(0.02))
    a.shift_x = patient(-0.04, 0.04) + jitter(0.015)
    a.shift_y = patient(-0.04, 0.04) + jitter(0.015)
    a.zoom = 1.0
    if scanner == "B":
        # Different field of view: anatomy magnified and off-centre.
        a.zoom, a.shift_x, a.shift_y = 1.18, a.shift_x + 0.07, a.shift_y + 0.09
    return a


def _draw_chest(a, size):
    """Coordinates, the healthy chest image and the two lung masks (no random draws)."""
    col = _col
    axis = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    X = (axis[None, None, :] - col(a.shift_x)) / a.zoom
    Y = (axis[None, :, None] - col(a.shift_y)) / a.zoom

    body = _ellipse(X, Y, 0.0, 0.12, col(a.body_rx), 1.05, edge=0.15)
    lungs = [
        _ellipse(X, Y, side * col(a.lung_x), col(a.lung_y), col(a.lung_rx), col(a.lung_ry), edge=0.25)
        for side in (-1.0, 1.0)
    ]
    lung = np.maximum(lungs[0], lungs[1])
    mediastinum = np.exp(-((X / 0.13) ** 2)) * body
    heart = _ellipse(
        X, Y, 0.12, col(a.lung_y + 0.45 * a.lung_ry), col(a.heart_r), col(0.7 * a.heart_r), edge=0.5
    )
    # Ribs: bands that curve down towards the sides, visible over the lungs.
    rib_t = (Y + 0.45 * X**2) * (2 * np.pi) / col(a.rib_period) + col(a.rib_phase)
    ribs = ((0.5 + 0.5 * np.cos(rib_t)) ** 4) * lung
    img = 0.05 + 0.45 * body - 0.30 * lung + 0.15 * mediastinum + 0.14 * heart + 0.08 * ribs
    return X, Y, img, lungs


def _add_disease(rng, img, X, Y, lungs, a, diseases):
    """Add ground-glass opacities (COVID-19) and lobar consolidation (pneumonia), in place."""
    col = _col
    size = img.shape[-1]
    lung_x, lung_y, lung_rx, lung_ry = a.lung_x, a.lung_y, a.lung_rx, a.lung_ry
    for i_side, side in enumerate((-1.0, 1.0)):
        idx = np.flatnonzero(diseases == "covid")
        if idx.size:
            # Ground-glass: soft blobs in the outer half of each lung.
            n_blobs = 4
            opacity = np.zeros((idx.size, size, size), dtype=np.float32)
            for _ in range(n_blobs):
                bx = side * (lung_x[idx] + lung_rx[idx] * rng.uniform(0.15, 0.6, idx.size))
                by = lung_y[idx] + lung_ry[idx] * rng.uniform(-0.5, 0.6, idx.size)
                sigma = rng.uniform(0.07, 0.11, idx.size)
                amp = rng.uniform(0.14, 0.22, idx.size)
                opacity += col(amp) * _blob(X[idx], Y[idx], col(bx), col(by), col(sigma))
            img[idx] += np.minimum(opacity, 0.3) * lungs[i_side][idx]

    idx = np.flatnonzero(diseases == "pneumonia")
    if idx.size:
        # Lobar consolidation: one dense region low in one lung.
        side = np.where(rng.random(idx.size) < 0.5, -1.0, 1.0)
        cx = side * (lung_x[idx] + lung_rx[idx] * rng.uniform(-0.2, 0.25, idx.size))
        cy = lung_y[idx] + lung_ry[idx] * rng.uniform(0.3, 0.5, idx.size)
        region = _ellipse(
            X[idx],
            Y[idx],
            col(cx),
            col(cy),
            col(lung_rx[idx] * rng.uniform(0.6, 0.85, idx.size)),
            col(lung_ry[idx] * rng.uniform(0.28, 0.38, idx.size)),
            edge=0.35,
        )
        own_lung = np.where(col(side) < 0, lungs[0][idx], lungs[1][idx])
        img[idx] += col(rng.uniform(0.28, 0.36, idx.size)) * region * own_lung


def _scanner_look(rng, img, scanner, noise, n, size):
    """Noise and contrast of scanner "A", or grain, gamma and burnt-in text of "B"."""
    if scanner == "A":
        img += np.float32(noise) * rng.standard_normal(img.shape).astype(np.float32)
        np.clip(img, 0.0, 1.0, out=img)
        return img
    np.clip(img, 0.0, 1.0, out=img)
    img = 0.12 + 0.80 * np.sqrt(img)
    grain = 0.6 * _coarse_noise(rng, n, size, max(2, size // 16))
    grain += 0.8 * rng.standard_normal(img.shape).astype(np.float32)
    img += np.float32(1.5 * noise) * grain
    # Burnt-in text block in the top-right corner.
    h = max(3, size // 12)
    w = max(12, size // 4)
    glyphs = np.asarray(Image.fromarray(_TEXT_GLYPHS * 255).resize((w, h), Image.NEAREST))
    top, right = max(1, size // 32), size - max(1, size // 32)
    img[:, top : top + h, right - w : right] = np.maximum(
        img[:, top : top + h, right - w : right], 0.95 * (glyphs[None] > 127)
    )
    np.clip(img, 0.0, 1.0, out=img)
    return img
