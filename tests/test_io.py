import io
import os
import pickle
import struct
import tempfile
import warnings
import zlib

import numpy as np
import pytest
from _helpers import FILE_SIGNATURES, check_unit_image
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from skxray.io import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    ImageReadError,
    is_image_file,
    read_image,
)
from skxray.testing import dicom_dataset

# ---------------------------------------------------------------- helpers


def _save(path, arr_or_image, **kwargs):
    im = arr_or_image if isinstance(arr_or_image, Image.Image) else Image.fromarray(arr_or_image)
    im.save(path, **kwargs)
    return path


def _png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_with_header(width, height):
    """A tiny PNG whose IHDR claims ``width`` x ``height`` 8-bit gray pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def _dicom(path, pixels, *, photometric="MONOCHROME2", bits_stored=None, **elements):
    """Write ``pixels`` as a DICOM file with a proper file meta header."""
    ds = dicom_dataset()
    if pixels is not None:
        ds.set_pixel_data(pixels, photometric, bits_stored or pixels.dtype.itemsize * 8)
    else:
        ds.Rows, ds.Columns = 4, 4
        ds.PhotometricInterpretation = photometric
    for key, value in elements.items():
        setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)
    return path


GRAY8 = np.array([[0, 1, 2, 127], [128, 200, 254, 255]], dtype=np.uint8)
GRAY12 = np.array([[0, 1, 2048], [4000, 4094, 4095]], dtype=np.uint16)


# ------------------------------------------------------------- formats


def test_gray8_png_exact(tmp_path):
    img = read_image(_save(tmp_path / "a.png", GRAY8))
    assert img.dtype == np.float32
    assert img.shape == GRAY8.shape
    np.testing.assert_array_equal(img, (GRAY8 / 255.0).astype(np.float32))


def test_accepts_str_and_pathlike(tmp_path):
    path = _save(tmp_path / "a.png", GRAY8)
    np.testing.assert_array_equal(read_image(str(path)), read_image(path))


def test_gray_to_rgb_replicates(tmp_path):
    img = read_image(_save(tmp_path / "a.png", GRAY8), as_gray=False)
    assert img.shape == (*GRAY8.shape, 3)
    for c in range(3):
        np.testing.assert_array_equal(img[..., c], (GRAY8 / 255.0).astype(np.float32))


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_16bit_scaled_by_container_depth(tmp_path, ext):
    full = np.array([[0, 1, 32768], [65000, 65534, 65535]], dtype=np.uint16)
    path = _save(tmp_path / f"full{ext}", full)
    with Image.open(path) as im:
        assert im.mode.startswith("I")
    np.testing.assert_allclose(read_image(path), full / 65535.0, rtol=1e-6)


def test_16bit_with_12bit_content_is_not_renormalised(tmp_path):
    path = _save(tmp_path / "twelve.png", GRAY12)
    img = read_image(path)
    assert img.max() == pytest.approx(4095 / 65535)
    np.testing.assert_allclose(img, GRAY12 / 65535.0, rtol=1e-6)


def test_palette_png(tmp_path):
    im = Image.fromarray(GRAY8).convert("P")
    path = _save(tmp_path / "p.png", im)
    with Image.open(path) as im:
        assert im.mode == "P"
    np.testing.assert_allclose(read_image(path), GRAY8 / 255.0, atol=1e-6)


def test_palette_with_transparency(tmp_path):
    im = Image.fromarray(np.array([[10, 200]], dtype=np.uint8)).convert("P")
    transparent_index = im.getpixel((1, 0))
    path = _save(tmp_path / "pt.png", im, transparency=transparent_index)
    np.testing.assert_allclose(read_image(path), [[10 / 255, 0.0]], atol=1e-6)


def test_rgba_composited_over_black(tmp_path):
    rgba = np.array(
        [[[255, 255, 255, 255], [255, 255, 255, 0], [200, 200, 200, 51]]], dtype=np.uint8
    )
    img = read_image(_save(tmp_path / "a.png", rgba))
    np.testing.assert_allclose(img, [[1.0, 0.0, (200 / 255) * (51 / 255)]], atol=1e-6)


def test_la_composited_over_black(tmp_path):
    la = Image.fromarray(np.array([[[255, 0], [100, 255]]], dtype=np.uint8), mode="LA")
    img = read_image(_save(tmp_path / "la.png", la))
    np.testing.assert_allclose(img, [[0.0, 100 / 255]], atol=1e-6)


def test_rgb_luminance_in_float(tmp_path):
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]]], dtype=np.uint8)
    img = read_image(_save(tmp_path / "c.png", rgb))
    expected = (rgb.astype(np.float64) @ [0.299, 0.587, 0.114]) / 255.0
    np.testing.assert_allclose(img, expected, atol=1e-6)
    # Pillow's own "L" conversion rounds to 8 bits; ours must not.
    assert img[0, 3] != pytest.approx(np.asarray(Image.fromarray(rgb).convert("L"))[0, 3] / 255)


def test_rgb_as_rgb(tmp_path):
    rgb = np.array([[[255, 0, 51]]], dtype=np.uint8)
    img = read_image(_save(tmp_path / "c.png", rgb), as_gray=False)
    np.testing.assert_allclose(img, [[[1.0, 0.0, 0.2]]], atol=1e-6)


def test_1bit(tmp_path):
    im = Image.fromarray(np.array([[0, 255, 0]], dtype=np.uint8)).convert("1")
    np.testing.assert_array_equal(read_image(_save(tmp_path / "b.png", im)), [[0.0, 1.0, 0.0]])


@pytest.mark.parametrize(
    ("name", "kwargs", "atol"),
    [("a.jpg", {"quality": 100}, 4 / 255), ("a.bmp", {}, 0), ("a.tif", {}, 0), ("a.TIFF", {}, 0)],
)
def test_other_formats(tmp_path, name, kwargs, atol):
    smooth = np.tile(np.linspace(0, 255, 16).astype(np.uint8), (16, 1))
    img = read_image(_save(tmp_path / name, smooth, **kwargs))
    assert img.shape == (16, 16)
    np.testing.assert_allclose(img, smooth / 255.0, atol=atol + 1e-6)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([[0.0, 0.5, 1.0]], [[0.0, 0.5, 1.0]]),  # already in [0, 1]: kept
        ([[-2.0, 0.0, 2.0]], [[0.0, 0.5, 1.0]]),  # outside: min-max
        ([[3.0, 3.0]], [[1.0, 1.0]]),  # constant outside: clipped
    ],
)
def test_float_tiff(tmp_path, values, expected):
    path = _save(tmp_path / "f.tif", np.array(values, dtype=np.float32))
    np.testing.assert_allclose(read_image(path), expected, atol=1e-6)


def test_multiframe_tiff_reads_first_frame(tmp_path):
    frames = [Image.fromarray(np.full((3, 4), v, dtype=np.uint8)) for v in (51, 255)]
    path = tmp_path / "multi.tif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    np.testing.assert_allclose(read_image(path), np.full((3, 4), 0.2), atol=1e-6)


# ----------------------------------------------------------------- DICOM


def test_dicom_monochrome2_bits_stored(tmp_path):
    path = _dicom(tmp_path / "m2.dcm", GRAY12, bits_stored=12)
    np.testing.assert_allclose(read_image(path), GRAY12 / 4095.0, rtol=1e-6)


def test_dicom_monochrome1_inverted(tmp_path):
    path = _dicom(tmp_path / "m1.dcm", GRAY12, photometric="MONOCHROME1", bits_stored=12)
    np.testing.assert_allclose(read_image(path), 1.0 - GRAY12 / 4095.0, atol=1e-6)


def test_dicom_rescale_slope_intercept_keeps_scale(tmp_path):
    path = _dicom(
        tmp_path / "r.dcm", GRAY12, bits_stored=12, RescaleSlope=2, RescaleIntercept=-1024
    )
    np.testing.assert_allclose(read_image(path), GRAY12 / 4095.0, atol=1e-6)


def test_dicom_window_applied(tmp_path):
    pixels = np.array([[0, 1000, 1500, 2000, 3000]], dtype=np.uint16)
    path = _dicom(
        tmp_path / "w.dcm",
        pixels,
        bits_stored=12,
        WindowCenter=1500,
        WindowWidth=1001,
        VOILUTFunction="LINEAR",
    )
    img = read_image(path)
    # Below the window -> 0, above -> 1, the center -> 0.5: the window, not
    # the 12-bit range, sets the scale.
    np.testing.assert_allclose(img, [[0.0, 0.0, 0.5, 1.0, 1.0]], atol=1e-3)


def test_dicom_window_with_rescale(tmp_path):
    pixels = np.array([[0, 1024, 2048]], dtype=np.uint16)
    # Window in modality units (HU-like): stored 1024 -> 0 after the rescale.
    path = _dicom(
        tmp_path / "wr.dcm",
        pixels,
        bits_stored=12,
        RescaleSlope=1,
        RescaleIntercept=-1024,
        WindowCenter=0,
        WindowWidth=2049,
    )
    np.testing.assert_allclose(read_image(path), [[0.0, 0.5, 1.0]], atol=1e-3)


def test_dicom_voi_lut_sequence(tmp_path):
    from pydicom.dataset import Dataset

    item = Dataset()
    item.add_new("LUTDescriptor", "US", [4, 0, 16])
    item.add_new("LUTData", "US", [100, 200, 300, 500])
    pixels = np.array([[0, 1, 2, 3, 9]], dtype=np.uint16)
    path = _dicom(tmp_path / "lut.dcm", pixels, bits_stored=12, VOILUTSequence=[item])
    np.testing.assert_allclose(read_image(path), [[0.0, 0.25, 0.5, 1.0, 1.0]], atol=1e-6)


def test_dicom_8bit_rgb_luminance(tmp_path):
    rgb = np.array([[[255, 0, 0], [0, 0, 255]]], dtype=np.uint8)
    path = _dicom(tmp_path / "rgb.dcm", rgb, photometric="RGB", bits_stored=8)
    np.testing.assert_allclose(read_image(path), [[0.299, 0.114]], atol=1e-6)
    assert read_image(path, as_gray=False).shape == (1, 2, 3)


def test_dicom_ybr_full_to_luminance(tmp_path):
    from pydicom.pixels import convert_color_space

    rgb = np.array([[[255, 0, 0], [0, 0, 255], [30, 60, 90]]], dtype=np.uint8)
    ybr = convert_color_space(rgb, "RGB", "YBR_FULL")
    path = _dicom(tmp_path / "ybr.dcm", ybr, photometric="YBR_FULL", bits_stored=8)
    expected = (rgb.astype(np.float64) @ [0.299, 0.587, 0.114]) / 255.0
    np.testing.assert_allclose(read_image(path), expected, atol=2 / 255)


def test_dicom_multiframe_first_frame(tmp_path):
    frames = np.stack([GRAY12, 4095 - GRAY12]).astype(np.uint16)
    path = _dicom(tmp_path / "multi.dcm", frames, bits_stored=12)
    np.testing.assert_allclose(read_image(path), GRAY12 / 4095.0, rtol=1e-6)


def test_dicom_rle_compressed(tmp_path):
    from pydicom import dcmread
    from pydicom.uid import RLELossless

    path = _dicom(tmp_path / "rle.dcm", GRAY12, bits_stored=12)
    ds = dcmread(path)
    ds.compress(RLELossless)
    ds.save_as(path)
    np.testing.assert_allclose(read_image(path), GRAY12 / 4095.0, rtol=1e-6)


@pytest.mark.parametrize("name", ["IM000001", "1.2.840.10008.99", "scan.bin"])
def test_dicom_detected_by_magic(tmp_path, name):
    path = _dicom(tmp_path / name, GRAY12, bits_stored=12)
    assert is_image_file(path)
    np.testing.assert_allclose(read_image(path), GRAY12 / 4095.0, rtol=1e-6)


def test_dicom_without_pixel_data(tmp_path):
    path = _dicom(tmp_path / "empty.dcm", None)
    with pytest.raises(ImageReadError, match="has no pixel data") as info:
        read_image(path)
    assert info.value.path == str(path)


def test_dicom_unsupported_photometric(tmp_path):
    path = _dicom(tmp_path / "pal.dcm", GRAY8, bits_stored=8)
    from pydicom import dcmread

    ds = dcmread(path)
    ds.PhotometricInterpretation = "PALETTE COLOR"
    ds.save_as(path)
    with pytest.raises(
        ImageReadError, match="unsupported DICOM PhotometricInterpretation 'PALETTE COLOR'"
    ):
        read_image(path)


def test_dicom_over_max_pixels_checked_before_decoding(tmp_path):
    path = _dicom(tmp_path / "big.dcm", GRAY12, bits_stored=12)
    with pytest.raises(ImageReadError, match="too many pixels: 3x2"):
        read_image(path, max_pixels=5)


# ------------------------------------------------------------ bad inputs


def _make_bad(kind, tmp_path):
    """Create a bad input of ``kind`` under ``tmp_path``; return (path, kwargs)."""
    good = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    if kind == "missing":
        return tmp_path / "nope.png", {}
    if kind == "directory":
        (tmp_path / "dir.png").mkdir()
        return tmp_path / "dir.png", {}
    if kind == "empty":
        (tmp_path / "empty.png").write_bytes(b"")
        return tmp_path / "empty.png", {}
    if kind in ("truncated_png", "truncated_jpeg"):
        fmt = "PNG" if kind == "truncated_png" else "JPEG"
        buf = io.BytesIO()
        Image.fromarray(good).save(buf, format=fmt)
        path = tmp_path / ("t.png" if fmt == "PNG" else "t.jpg")
        path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
        return path, {}
    if kind == "random_png":
        path = tmp_path / "r.png"
        path.write_bytes(np.random.default_rng(1).bytes(300))
        return path, {}
    if kind == "text_jpg":
        path = tmp_path / "notes.jpg"
        path.write_text("this is not a JPEG\n" * 10)
        return path, {}
    if kind == "small_max_pixels":
        return _save(tmp_path / "s.png", good), {"max_pixels": 64 * 64 - 1}
    if kind == "huge_header_under_pil_limit":
        path = tmp_path / "bomb1.png"
        path.write_bytes(_png_with_header(12_000, 10_000))  # 120 Mpx > default max_pixels
        return path, {}
    if kind == "huge_header_over_pil_limit":
        path = tmp_path / "bomb2.png"
        path.write_bytes(_png_with_header(30_000, 30_000))
        return path, {"max_pixels": None}
    if kind == "max_bytes":
        return _save(tmp_path / "s.png", good), {"max_bytes": 100}
    if kind == "symlink_loop":
        (tmp_path / "a.png").symlink_to(tmp_path / "b.png")
        (tmp_path / "b.png").symlink_to(tmp_path / "a.png")
        return tmp_path / "a.png", {}
    if kind == "fifo":
        os.mkfifo(tmp_path / "pipe.png")
        return tmp_path / "pipe.png", {}
    if kind == "gif":
        return _save(tmp_path / "x.png", good, format="GIF"), {}
    raise AssertionError(kind)


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("missing", "no such file"),
        ("directory", "is a directory"),
        ("empty", r"file is empty \(0 bytes\)"),
        ("truncated_png", "truncated or corrupt"),
        ("truncated_jpeg", "truncated or corrupt"),
        ("random_png", "not a recognised image format"),
        ("text_jpg", "not a recognised image format"),
        ("small_max_pixels", r"too many pixels: 64x64 = 4,096, over max_pixels=4,095"),
        (
            "huge_header_under_pil_limit",
            "too many pixels: 12000x10000 = 120,000,000, over max_pixels",
        ),
        ("huge_header_over_pil_limit", "too many pixels"),
        ("max_bytes", "over max_bytes=100"),
        ("symlink_loop", "symbolic link loop"),
        ("fifo", "not a regular file"),
        ("gif", "not a recognised image format"),
    ],
)
def test_bad_inputs_raise_image_read_error(tmp_path, kind, reason):
    path, kwargs = _make_bad(kind, tmp_path)
    with warnings.catch_warnings():
        # A decompression-bomb warning would mean Pillow got further than it should.
        warnings.simplefilter("error")
        with pytest.raises(ImageReadError, match=reason) as info:
            read_image(path, **kwargs)
    assert info.value.path == str(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_truncated_error_is_chained(tmp_path):
    path, _ = _make_bad("truncated_png", tmp_path)
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert info.value.__cause__ is not None


def test_image_read_error_message_and_pickle():
    exc = ImageReadError("/x/y.png", "file is truncated")
    assert str(exc) == "Cannot read image '/x/y.png': file is truncated"
    again = pickle.loads(pickle.dumps(exc))
    assert (again.path, again.reason, str(again)) == (exc.path, exc.reason, str(exc))


@pytest.mark.parametrize("bad", [None, 3, b"/tmp/a.png"])
def test_bad_path_type(bad):
    with pytest.raises(TypeError, match="path must be"):
        read_image(bad)


@pytest.mark.parametrize("param", ["max_pixels", "max_bytes"])
@pytest.mark.parametrize("value", [0, -1, 1.5, True])
def test_bad_limits(tmp_path, param, value):
    path = _save(tmp_path / "a.png", GRAY8)
    with pytest.raises(ValueError, match=param):
        read_image(path, **{param: value})


def test_default_max_pixels_is_sane():
    assert DEFAULT_MAX_PIXELS >= 50_000_000


def test_pil_global_limit_untouched(tmp_path):
    before = Image.MAX_IMAGE_PIXELS
    path, kwargs = _make_bad("huge_header_under_pil_limit", tmp_path)
    with pytest.raises(ImageReadError):
        read_image(path, **kwargs)
    assert Image.MAX_IMAGE_PIXELS == before


# ---------------------------------------------------------- is_image_file


@pytest.mark.parametrize(
    ("name", "expected"),
    [("a.png", True), ("b.JPG", True), ("c.jpeg", True), ("d.tif", True), ("e.dcm", True),
     ("f.DICOM", True), ("g.bmp", True), ("README.md", False), ("notes.txt", False),
     (".DS_Store", False), ("noext", False)],
)  # fmt: skip
def test_is_image_file_by_name(tmp_path, name, expected):
    (tmp_path / name).write_bytes(b"x" * 200)
    assert is_image_file(tmp_path / name) is expected
    assert is_image_file(str(tmp_path / name)) is expected


def test_is_image_file_missing_or_dir(tmp_path):
    assert is_image_file(tmp_path / "missing") is False
    assert is_image_file(tmp_path) is False


def test_image_extensions_lowercase():
    assert all(ext == ext.lower() and ext.startswith(".") for ext in IMAGE_EXTENSIONS)
    assert {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom"} <= IMAGE_EXTENSIONS


# --------------------------------------------------------------- hypothesis

@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    prefix=st.sampled_from(FILE_SIGNATURES),
    payload=st.binary(min_size=0, max_size=400),
    suffix=st.sampled_from([".png", ".jpg", ".dcm", ".tif", ""]),
)
def test_random_bytes_only_raise_image_read_error(prefix, payload, suffix):
    data = prefix + payload
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "blob" + suffix)
        with open(path, "wb") as fh:
            fh.write(data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns about odd elements
            try:
                img = read_image(path, max_pixels=1_000_000)
            except ImageReadError as exc:
                assert exc.path == path
                return
    # Random bytes can, very rarely, form a valid image; then it must be a good one.
    check_unit_image(img)


_shapes = st.tuples(st.integers(1, 12), st.integers(1, 50)) | st.sampled_from(
    [(1, 1), (1, 50), (50, 1)]
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.one_of(
        _shapes.flatmap(lambda s: arrays(np.uint8, s)),
        _shapes.flatmap(lambda s: arrays(np.uint16, s)),
        _shapes.flatmap(lambda s: arrays(np.uint8, s, elements=st.just(7))),
    ),
    ext=st.sampled_from([".png", ".tif", ".bmp"]),
    as_gray=st.booleans(),
)
def test_valid_images_roundtrip(data, ext, as_gray):
    if data.dtype == np.uint16 and ext == ".bmp":
        ext = ".png"  # BMP has no 16-bit gray
    scale = 255.0 if data.dtype == np.uint8 else 65535.0
    with tempfile.TemporaryDirectory() as tmp:
        path = _save(os.path.join(tmp, "img" + ext), data)
        img = read_image(path, as_gray=as_gray)
    assert img.dtype == np.float32
    assert img.shape == (data.shape if as_gray else (*data.shape, 3))
    assert img.min() >= 0 and img.max() <= 1
    gray = img if as_gray else img[..., 0]
    np.testing.assert_allclose(gray, data / scale, rtol=1e-6, atol=1e-7)
