"""Reading chest X-ray image files into float arrays.

Every reader in skxray goes through :func:`read_image`, so that PNG, JPEG,
BMP, TIFF and DICOM files of any bit depth end up on the same scale: float32
in [0, 1]. Any failure (missing file, truncated data, decompression bomb, an
unsupported DICOM photometric interpretation, ...) is reported as an
:class:`ImageReadError` that names the file and the reason, never as a bare
Pillow or pydicom traceback.
"""

import errno
import numbers
import os
import stat
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "ImageReadError",
    "is_image_file",
    "read_image",
]

#: Largest number of pixels (width * height of the first frame) that
#: :func:`read_image` decodes by default. A 100-megapixel radiograph is far
#: beyond any real detector, so anything bigger is treated as a
#: decompression bomb.
DEFAULT_MAX_PIXELS = 100_000_000

#: Largest file size in bytes that :func:`read_image` opens by default (512 MiB).
DEFAULT_MAX_BYTES = 512 * 1024**2

#: Lowercase file extensions that :func:`is_image_file` recognises as images.
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom"})

_DICOM_EXTENSIONS = frozenset({".dcm", ".dicom"})
_DICOM_MAGIC_OFFSET = 128
_DICOM_MAGIC = b"DICM"

# Restricting Pillow to these decoders keeps the attack surface small: Pillow
# would otherwise hand EPS files to Ghostscript, for instance.
_PIL_FORMATS = ("PNG", "JPEG", "BMP", "TIFF")

# ITU-R 601-2 luma weights, the ones Pillow uses for mode "L".
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)

_MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
# pydicom converts YBR_FULL(_422) to RGB when decoding; the JPEG 2000 decoders
# undo the ICT/RCT colour transforms themselves.
_DICOM_COLOR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT")

# warnings.catch_warnings swaps a process-wide filter list; the lock keeps
# threads that decode in parallel from restoring each other's filters.
_WARNINGS_LOCK = threading.Lock()


class ImageReadError(ValueError):
    """Raised when an image file cannot be read.

    It subclasses :class:`ValueError`, so code that already catches bad
    values keeps working.

    Parameters
    ----------
    path : str or os.PathLike
        The file that could not be read.
    reason : str
        Why it could not be read, e.g. ``"file is empty (0 bytes)"``.

    Attributes
    ----------
    path : str
        The file that could not be read.
    reason : str
        Why it could not be read.

    See Also
    --------
    read_image : The reader that raises it.

    Examples
    --------
    >>> from skxray.io import ImageReadError, read_image
    >>> try:
    ...     read_image("/nonexistent/scan.png")
    ... except ImageReadError as exc:
    ...     print(exc)
    ...     print(exc.reason)
    Cannot read image '/nonexistent/scan.png': no such file
    no such file
    """

    def __init__(self, path, reason):
        # Both go to Exception.args so that the error survives pickling, e.g.
        # when it is raised in a joblib worker process.
        super().__init__(os.fspath(path), reason)
        self.path = os.fspath(path)
        self.reason = reason

    def __str__(self):
        return f"Cannot read image '{self.path}': {self.reason}"


def is_image_file(path):
    """Tell whether a path looks like an image file that skxray can read.

    A path whose extension (case-insensitive) is in :data:`IMAGE_EXTENSIONS`
    is accepted without touching the disk. Any other path, including one
    without an extension or with a DICOM UID-style name such as
    ``1.2.840.10008.1``, is accepted only if it is an existing regular file
    with the DICOM ``DICM`` marker at byte 128. The content of files with an
    image extension is not checked: :func:`read_image` does that.

    Parameters
    ----------
    path : str or os.PathLike
        The path to test.

    Returns
    -------
    bool
        True if the path has an image extension or is a DICOM file.

    See Also
    --------
    read_image : Read the file, checking its content.

    Examples
    --------
    >>> from skxray.io import is_image_file
    >>> is_image_file("scan.PNG")
    True
    >>> is_image_file("README.md")
    False
    """
    path = Path(os.fspath(path))
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return True
    return _has_dicom_magic(path)


def _has_dicom_magic(path):
    try:
        # is_file() is False for FIFOs and devices, whose reads could block.
        if not path.is_file():
            return False
        with open(path, "rb") as fh:
            fh.seek(_DICOM_MAGIC_OFFSET)
            return fh.read(len(_DICOM_MAGIC)) == _DICOM_MAGIC
    except (OSError, ValueError):
        return False


def _check_limit(value, name):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer or None; got {value!r}.")
    return int(value)


def _stat_file(path):
    """Return the size of ``path`` or raise ImageReadError if it is no regular file."""
    try:
        st = os.stat(path)
    except FileNotFoundError as exc:
        raise ImageReadError(path, "no such file") from exc
    except PermissionError as exc:
        raise ImageReadError(path, "permission denied") from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ImageReadError(path, "symbolic link loop") from exc
        if exc.errno == errno.ENOTDIR:
            raise ImageReadError(path, "no such file (a parent is not a directory)") from exc
        raise ImageReadError(path, f"cannot access file: {exc.strerror or exc}") from exc
    except ValueError as exc:  # e.g. an embedded NUL character
        raise ImageReadError(path, f"invalid path: {exc}") from exc
    if stat.S_ISDIR(st.st_mode):
        raise ImageReadError(path, "is a directory, not a file")
    if not stat.S_ISREG(st.st_mode):
        # Reading a FIFO or a device could block forever.
        raise ImageReadError(path, "not a regular file")
    return st.st_size


def read_image(
    path,
    *,
    as_gray=True,
    max_pixels=DEFAULT_MAX_PIXELS,
    max_bytes=DEFAULT_MAX_BYTES,
):
    """Read an image file as a float32 array in [0, 1].

    PNG, JPEG, BMP and TIFF files are decoded with Pillow; DICOM files
    (extension ``.dcm``/``.dicom``, or the ``DICM`` marker at byte 128
    whatever the name) with pydicom. Intensities are scaled as follows:

    - 8-bit images are divided by 255; 1-bit images give 0 and 1.
    - 16-bit images (Pillow modes ``I;16``, ``I;16B``, ``I``, ...) are divided
      by ``2**bits - 1`` of the container, i.e. 65535 for a 16-bit PNG (or the
      ``BitsPerSample`` of a TIFF). They are **not** stretched to their own
      maximum: a 12-bit detector image stored in a 16-bit PNG stays dark
      (its maximum 4095 becomes 4095 / 65535), so that intensities are
      comparable between images.
    - Float TIFFs (mode ``F``) are kept as they are if all values lie in
      [0, 1], otherwise min-max rescaled to [0, 1] (a constant image is
      clipped instead).
    - Palette images go through RGB(A). Alpha is composited over black, so a
      fully transparent pixel is 0.
    - Colour images are reduced to luminance with the ITU-R 601-2 weights of
      Pillow's mode ``L`` (0.299 R + 0.587 G + 0.114 B), computed in floating
      point, so without Pillow's 8-bit rounding.
    - DICOM: the modality LUT (RescaleSlope/RescaleIntercept or a Modality
      LUT Sequence) is applied first. If a VOI LUT or a window
      (WindowCenter/WindowWidth) is present, the first one is applied and its
      output range is mapped to [0, 1]; otherwise the values are scaled by
      the range of ``BitsStored`` (``2**BitsStored - 1`` for unsigned data).
      MONOCHROME1 images are inverted so that bright always means dense.
      RGB and YBR colour images are reduced to luminance.

    Multi-frame files (multi-page TIFF, animated PNG, multi-frame DICOM) give
    their first frame only.

    Parameters
    ----------
    path : str or os.PathLike
        The image file.
    as_gray : bool, default=True
        If True, return a 2-D gray-level image. If False, return a 3-channel
        RGB image; gray images are then replicated to the three channels.
    max_pixels : int or None, default=DEFAULT_MAX_PIXELS
        Largest accepted width * height, checked from the file header before
        any pixel is decoded, to refuse decompression bombs. None disables
        the check, but Pillow's own hard limit (twice
        ``PIL.Image.MAX_IMAGE_PIXELS``) still applies; this function never
        changes that global.
    max_bytes : int or None, default=DEFAULT_MAX_BYTES
        Largest accepted file size in bytes. None disables the check.

    Returns
    -------
    ndarray of shape (height, width) or (height, width, 3)
        The image as float32 with values in [0, 1].

    Raises
    ------
    ImageReadError
        If the file does not exist, is a directory or a symbolic link loop,
        is empty, is larger than ``max_bytes``, holds more than
        ``max_pixels`` pixels, is truncated or corrupt, is not a PNG, JPEG,
        BMP, TIFF or DICOM image, or is a DICOM file without pixel data or
        with an unsupported photometric interpretation.
    TypeError
        If ``path`` is not a str or os.PathLike.
    ValueError
        If ``max_pixels`` or ``max_bytes`` is not a positive integer or None.

    See Also
    --------
    is_image_file : Tell image files from other files by their name.

    Examples
    --------
    >>> import os
    >>> import tempfile
    >>> import numpy as np
    >>> from PIL import Image
    >>> from skxray.io import read_image
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = os.path.join(tmp, "scan.png")
    ...     Image.fromarray(np.array([[0, 51, 255]], dtype=np.uint8)).save(path)
    ...     gray = read_image(path)
    ...     rgb = read_image(path, as_gray=False)
    >>> gray
    array([[0. , 0.2, 1. ]], dtype=float32)
    >>> rgb.shape
    (1, 3, 3)
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike; got {type(path).__name__}.")
    path = os.fspath(path)
    if not isinstance(path, str):
        raise TypeError("path must be a str or os.PathLike of str; got a bytes path.")
    max_pixels = _check_limit(max_pixels, "max_pixels")
    max_bytes = _check_limit(max_bytes, "max_bytes")

    size = _stat_file(path)
    if size == 0:
        raise ImageReadError(path, "file is empty (0 bytes)")
    if max_bytes is not None and size > max_bytes:
        raise ImageReadError(path, f"file is {size:,} bytes, over max_bytes={max_bytes:,}")

    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise ImageReadError(path, f"cannot open file: {exc.strerror or exc}") from exc
    with fh:
        head = fh.read(_DICOM_MAGIC_OFFSET + len(_DICOM_MAGIC))
        fh.seek(0)
        has_magic = head[_DICOM_MAGIC_OFFSET:] == _DICOM_MAGIC
        if has_magic or Path(path).suffix.lower() in _DICOM_EXTENSIONS:
            image = _read_dicom(fh, path, has_magic=has_magic, max_pixels=max_pixels)
        else:
            image = _read_pil(fh, path, max_pixels=max_pixels, file_size=size)

    if as_gray:
        if image.ndim == 3:
            image = image @ _LUMA
    elif image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    image = np.clip(np.asarray(image, dtype=np.float64), 0.0, 1.0)
    return np.ascontiguousarray(image, dtype=np.float32)


def _check_pixels(path, width, height, max_pixels):
    if width < 1 or height < 1:
        raise ImageReadError(path, f"image has an empty size {width}x{height}")
    if max_pixels is not None and width * height > max_pixels:
        raise ImageReadError(
            path,
            f"too many pixels: {width}x{height} = {width * height:,}, over max_pixels={max_pixels:,}",
        )


def _read_pil(fh, path, *, max_pixels, file_size):
    """Decode with Pillow; return float64 (H, W) or RGB (H, W, 3) in [0, 1]."""
    try:
        with _WARNINGS_LOCK, warnings.catch_warnings():
            # Our own max_pixels check below replaces Pillow's warning.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(fh, formats=_PIL_FORMATS)
    except Image.DecompressionBombError as exc:
        raise ImageReadError(path, f"too many pixels: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ImageReadError(
            path, "not a recognised image format (expected PNG, JPEG, BMP, TIFF or DICOM)"
        ) from exc
    except Exception as exc:  # Pillow raises many types on malformed headers
        raise ImageReadError(path, f"corrupt image header: {exc}") from exc

    with im:
        width, height = im.size
        _check_pixels(path, width, height, max_pixels)
        _check_png_size(path, im, width, height, file_size)
        try:
            # Decoding happens here; without load() a truncated file would
            # only fail later, outside this function.
            im.load()
        except Image.DecompressionBombError as exc:
            raise ImageReadError(path, f"too many pixels: {exc}") from exc
        except Exception as exc:
            raise ImageReadError(path, f"file is truncated or corrupt: {exc}") from exc
        try:
            return _pil_to_float(im)
        except ImageReadError:
            raise
        except Exception as exc:
            raise ImageReadError(path, f"cannot convert {im.mode!r} image: {exc}") from exc


# Deflate (zlib), PNG's only compression, expands at most 1032-fold: one
# 258-byte match per two bits. Even a 1-bit PNG needs width * height / 8
# bytes once decompressed.
_DEFLATE_MAX_RATIO = 1032


def _check_png_size(path, im, width, height, file_size):
    """Refuse a PNG whose header claims more pixels than its file can hold.

    Pillow allocates the whole image before it finds out that the data are
    missing, so a 100-byte file claiming 10000x10000 RGBA pixels would cost
    400 MB (for nothing: it is truncated) without this check.
    """
    if im.format != "PNG":
        return
    min_bytes = width * height / 8
    if min_bytes > _DEFLATE_MAX_RATIO * file_size:
        raise ImageReadError(
            path,
            f"header claims {width}x{height} pixels, more than a {file_size:,}-byte PNG can "
            "hold (deflate expands at most 1032-fold): the file is truncated or forged",
        )


def _tiff_tag(im, tag):
    tags = getattr(im, "tag_v2", None)
    if tags is None:
        return None
    value = tags.get(tag)
    if isinstance(value, tuple):
        value = value[0] if value else None
    return value


def _pil_to_float(im):
    mode = im.mode
    if mode == "1":
        return np.asarray(im, dtype=np.float64)
    if mode in ("L", "La"):
        # "La" is premultiplied: its gray is already composited over black.
        return np.asarray(im.getchannel(0), dtype=np.float64) / 255.0
    if mode == "LA":
        arr = np.asarray(im, dtype=np.float64)
        return arr[..., 0] * arr[..., 1] / (255.0 * 255.0)
    if mode.startswith("I;16") or mode == "I":
        bits = _tiff_tag(im, 258) or (16 if mode.startswith("I;16") or im.format == "PNG" else 32)
        arr = np.asarray(im).astype(np.float64)
        if _tiff_tag(im, 339) == 2 or mode.endswith("S"):  # signed integers
            arr += 2.0 ** (bits - 1)
        arr /= 2.0**bits - 1
        return _minmax_if_outside(arr)
    if mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        if not np.isfinite(arr).all():
            raise ValueError("float image contains NaN or infinite values")
        return _minmax_if_outside(arr)
    if mode == "P":
        has_alpha = "transparency" in im.info or (im.palette is not None and "A" in im.palette.mode)
        im = im.convert("RGBA" if has_alpha else "RGB")
        mode = im.mode
    elif mode == "PA":
        im = im.convert("RGBA")
        mode = im.mode
    if mode == "RGBA":
        arr = np.asarray(im, dtype=np.float64)
        return arr[..., :3] * (arr[..., 3:] / (255.0 * 255.0))
    if mode in ("RGB", "RGBX", "RGBa"):
        # "RGBa" is premultiplied, i.e. already composited over black.
        return np.asarray(im, dtype=np.float64)[..., :3] / 255.0
    # CMYK, YCbCr, LAB, HSV and other rare modes.
    return np.asarray(im.convert("RGB"), dtype=np.float64) / 255.0


def _minmax_if_outside(arr):
    lo, hi = float(arr.min()), float(arr.max())
    if lo >= 0.0 and hi <= 1.0:
        return arr
    if hi == lo:
        return np.clip(arr, 0.0, 1.0)
    return (arr - lo) / (hi - lo)


def _read_dicom(fh, path, *, has_magic, max_pixels):
    """Decode with pydicom; return float64 (H, W) or RGB (H, W, 3) in [0, 1]."""
    import pydicom
    from pydicom.pixels import pixel_array

    try:
        # Without the DICM marker only the extension says DICOM: force=True
        # lets pydicom try a preamble-less file.
        ds = pydicom.dcmread(fh, force=not has_magic)
    except Exception as exc:
        raise ImageReadError(path, f"not a valid DICOM file: {exc}") from exc

    try:
        # pydicom converts elements lazily, so a malformed one (an unknown VR,
        # a bad length) raises only here, with any exception type.
        photometric = _dicom_header(ds, path, max_pixels)
    except ImageReadError:
        raise
    except Exception as exc:
        raise ImageReadError(path, f"corrupt DICOM header: {type(exc).__name__}: {exc}") from exc

    try:
        arr = pixel_array(ds, index=0)
    except Exception as exc:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", syntax)
        raise ImageReadError(
            path, f"cannot decode DICOM pixel data (transfer syntax {name}): {exc}"
        ) from exc

    try:
        if photometric in _MONOCHROME:
            if arr.ndim != 2:
                raise ValueError(f"expected one sample per pixel, got shape {arr.shape}")
            image = _dicom_gray(arr, ds)
            if photometric == "MONOCHROME1":
                image = 1.0 - image
            return image
        if arr.ndim != 3 or arr.shape[2] != 3:
            raise ValueError(f"expected three samples per pixel, got shape {arr.shape}")
        return _dicom_scale(arr, ds)
    except ImageReadError:
        raise
    except Exception as exc:
        raise ImageReadError(path, f"cannot convert DICOM pixel data: {exc}") from exc


def _dicom_header(ds, path, max_pixels):
    """Check the header before any pixel is decoded; return the photometric interpretation.

    Every size the decoder will allocate from (Rows, Columns, SamplesPerPixel,
    BitsAllocated, and for uncompressed data the length of the pixel data
    itself) is checked here, so that a header that lies is refused before
    pydicom allocates anything.
    """
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise ImageReadError(path, "DICOM file has no pixel data")
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if not photometric:
        raise ImageReadError(path, "DICOM file has no PhotometricInterpretation")
    if photometric not in _MONOCHROME + _DICOM_COLOR:
        supported = ", ".join(_MONOCHROME + _DICOM_COLOR)
        raise ImageReadError(
            path,
            f"unsupported DICOM PhotometricInterpretation {photometric!r} (supported: {supported})",
        )
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
    except Exception as exc:
        raise ImageReadError(path, f"DICOM file has no valid Rows/Columns: {exc}") from exc
    _check_pixels(path, cols, rows, max_pixels)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    expected_samples = 1 if photometric in _MONOCHROME else 3
    if samples != expected_samples:
        raise ImageReadError(
            path, f"DICOM SamplesPerPixel is {samples}; {photometric} has {expected_samples}"
        )
    if "PixelData" not in ds:
        return photometric  # float pixel data: 32 or 64 bits by definition
    bits = ds.get("BitsAllocated")
    if bits is None or int(bits) not in (1, 8, 16, 32, 64):
        raise ImageReadError(path, f"DICOM BitsAllocated is {bits!r}; expected 1, 8, 16, 32 or 64")
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is None or not getattr(syntax, "is_compressed", False):
        # Uncompressed: the first frame must be there in full. Comparing with
        # the element's length catches a forged Rows/Columns in a small file
        # before the decoder allocates the array it describes.
        needed = (rows * cols * samples * int(bits) + 7) // 8
        if photometric == "YBR_FULL_422":  # two chroma samples for every two pixels
            needed = needed * 2 // 3
        held = len(ds.PixelData or b"")
        if held < needed:
            raise ImageReadError(
                path,
                f"DICOM pixel data holds {held:,} bytes, but the header ({rows}x{cols}, "
                f"{samples} sample(s) of {int(bits)} bits) needs {needed:,} for one frame",
            )
    return photometric


def _stored_range(ds, arr):
    bits = ds.get("BitsStored") or ds.get("BitsAllocated") or arr.dtype.itemsize * 8
    bits = int(bits)
    if int(ds.get("PixelRepresentation", 0) or 0) == 1:
        return -(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1
    return 0.0, 2.0**bits - 1


def _dicom_scale(arr, ds):
    if arr.dtype.kind == "f":
        return _minmax_if_outside(arr.astype(np.float64))
    lo, hi = _stored_range(ds, arr)
    return (arr.astype(np.float64) - lo) / (hi - lo)


def _normalise(arr, lo, hi):
    lo, hi = float(lo), float(hi)
    if hi == lo:
        return np.zeros(arr.shape, dtype=np.float64)
    # lo > hi happens with a negative RescaleSlope; the division keeps the sign right.
    return (np.asarray(arr, dtype=np.float64) - lo) / (hi - lo)


def _dicom_gray(arr, ds):
    from pydicom.pixels import apply_modality_lut, apply_voi, apply_windowing

    if arr.dtype.kind == "f":  # Float Pixel Data has no bit depth to scale by
        return _minmax_if_outside(arr.astype(np.float64))

    smin, smax = _stored_range(ds, arr)
    modality = apply_modality_lut(arr, ds)

    voi_seq = ds.get("VOILUTSequence")
    has_voi_lut = bool(voi_seq) and all(
        voi_seq[0].get(k) is not None for k in ("LUTDescriptor", "LUTData")
    )
    has_window = ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None

    if has_voi_lut:
        # Same preference as pydicom.pixels.apply_voi_lut (prefer_lut=True).
        if modality.dtype.kind == "f":
            modality = np.rint(modality).astype(np.int64)
        out = apply_voi(modality, ds)
        descriptor = voi_seq[0].LUTDescriptor
        n_entries, first = int(descriptor[0]) or 2**16, int(descriptor[1])
        table = apply_voi(np.arange(first, first + n_entries, dtype=np.int64), ds)
        return _normalise(out, table.min(), table.max())
    if has_window:
        out = apply_windowing(modality, ds)
        # The window maps everything below/above it to pydicom's output
        # bounds; pushing extreme values through recovers those bounds.
        with np.errstate(over="ignore"):
            bounds = apply_windowing(np.array([-1e300, 1e300]), ds)
        return _normalise(out, bounds[0], bounds[1])
    bounds = apply_modality_lut(np.array([smin, smax], dtype=np.int64), ds)
    return _normalise(modality, bounds[0], bounds[1])
