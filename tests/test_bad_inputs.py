"""Bad input catalogue: every bad input, through every public entry point it reaches.

One table (``CASES``) lists each case: how to build it under a temporary
folder, which entry point it goes through (``read_image``,
``ImageLoader.transform``, ``load_image_folder``, an estimator's ``fit`` /
``predict`` / ``predict_proba`` / ``score``, ``save`` / ``load``, or the
``skxray`` command), the exception expected and a regex that must appear in
its message: the culprit (the file name, the parameter, the class label...).
A failing call must leave the files as they were: nothing written, nothing
half-written. Odd but valid files (16-bit, RGBA, palette PNGs) are in the
table too, with the values they must load to.

Cases marked ``xfail(strict=True)`` are known gaps of the library; the reason
says what should change where. Fixing the library makes them XPASS, which
fails the suite until the mark is removed.

Then hypothesis feeds random bytes and odd valid images (1x1, 1x10000,
constant, 16-bit) to ``read_image`` and the loaders: only ``ImageReadError``
or ``ValueError`` may come out, never another exception or a hang.
"""

import errno
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import _helpers
import numpy as np
import pytest
from _helpers import FILE_SIGNATURES, check_unit_image
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from sklearn.exceptions import NotFittedError

import skxray.models._persistence as persistence
from skxray.datasets import load_image_folder, make_phantom_cxr
from skxray.io import ImageReadError, read_image
from skxray.models import load
from skxray.preprocessing import ImageLoader
from skxray.testing import dicom_dataset

SIZE = 16  # side of the phantoms the array cases fit on
LOAD_SIZE = 8  # image_size of the loaders and of the path-fed estimators
HANG_S = 30  # hang guard per fuzz example: generous, this is not a speed test
CLI_TIMEOUT_S = 300


tiny_cnn = partial(_helpers.tiny_cnn, dense_units=8, max_epochs=1)
tiny_fnn = partial(_helpers.tiny_fnn, hidden_layer_sizes=(8,), max_epochs=1)


# ------------------------------------------------------------------ file makers


def _gray(size=SIZE):
    """A deterministic 8-bit gradient image."""
    return (np.add.outer(np.arange(size), np.arange(size)) * (255 // (2 * size - 2))).astype(
        np.uint8
    )


def _save_png(path, arr):
    Image.fromarray(arr).save(path)
    return path


def _encoded(fmt, size=32):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (size, size), dtype=np.uint8)).save(
        buf, format=fmt
    )
    return buf.getvalue()


def _png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_bomb(width=12_000, height=10_000):
    """A 100-byte PNG whose header claims width x height 8-bit gray pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + _png_chunk(b"IEND", b"")
    )


def _dicom_without_pixels(path):
    ds = dicom_dataset()
    ds.Rows, ds.Columns = 4, 4
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.save_as(path, enforce_file_format=True)


def _symlink_loop(path):
    other = path.with_name("loop2" + path.suffix)
    path.symlink_to(other)
    other.symlink_to(path)


# Each bad file: (file name, writer). The file name is the culprit the message must name.
BAD_FILES = {
    "zero_bytes": ("empty.png", lambda p: p.write_bytes(b"")),
    "truncated_png": (
        "trunc.png",
        lambda p: p.write_bytes(_encoded("PNG")[: len(_encoded("PNG")) // 2]),
    ),
    "truncated_jpeg": (
        "trunc.jpg",
        lambda p: p.write_bytes(_encoded("JPEG")[: len(_encoded("JPEG")) // 2]),
    ),
    "random_bytes_png": ("noise.png", lambda p: p.write_bytes(np.random.default_rng(1).bytes(300))),
    "text_as_jpg": ("notes.jpg", lambda p: p.write_text("not a JPEG\n" * 20)),
    "dicom_no_pixel_data": ("nopix.dcm", _dicom_without_pixels),
    "decompression_bomb": ("bomb.png", lambda p: p.write_bytes(_png_bomb())),
    "symlink_loop": ("loop.png", _symlink_loop),
}
BAD_FILE_REASONS = {
    "zero_bytes": r"file is empty \(0 bytes\)",
    "truncated_png": "file is truncated or corrupt",
    "truncated_jpeg": "file is truncated or corrupt",
    "random_bytes_png": "not a recognised image format",
    "text_as_jpg": "not a recognised image format",
    "dicom_no_pixel_data": "DICOM file has no pixel data",
    "decompression_bomb": "too many pixels: 12000x10000",
    "symlink_loop": "symbolic link loop",
}


def _palette_png(path):
    im = Image.new("P", (SIZE, SIZE))
    im.putpalette([v for i in range(256) for v in (i, i, i)])
    im.putdata(_gray().ravel().tolist())
    im.save(path)


def _rgba_png(path):
    rgba = np.zeros((SIZE, SIZE, 4), np.uint8)
    rgba[..., 0] = 255  # pure red ...
    rgba[..., 3] = 128  # ... half transparent, composited over black
    Image.fromarray(rgba).save(path)


# Odd but valid files: (file name, writer, expected read_image output).
VALID_FILES = {
    "png_16bit": (
        "deep.png",
        lambda p: _save_png(
            p, (np.arange(SIZE * SIZE).reshape(SIZE, SIZE) * 257).astype(np.uint16)
        ),
        (np.arange(SIZE * SIZE).reshape(SIZE, SIZE) * 257 / 65535).astype(np.float32),
    ),
    "png_rgba": (
        "rgba.png",
        _rgba_png,
        np.full((SIZE, SIZE), 0.299 * 255 * 128 / 255**2, np.float32),
    ),
    "png_palette": ("palette.png", _palette_png, (_gray() / 255).astype(np.float32)),
}


def _two_class_folder(root, n=2):
    """root/A and root/B with ``n`` good 16 px PNGs each; return their paths and labels."""
    paths, labels = [], []
    for label in ("A", "B"):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            paths.append(str(_save_png(root / label / f"ok{i}.png", _gray())))
            labels.append(label)
    return paths, labels


def _folder_with(ctx, name, writer):
    root = ctx.tmp / "data"
    paths, labels = _two_class_folder(root)
    target = root / "A" / name
    writer(target)
    return root, target, paths, labels


# ------------------------------------------------------------------ the catalogue


@dataclass(frozen=True)
class Case:
    id: str
    entry: str  # the public entry point the input goes through
    build: object  # build(ctx) -> zero-argument callable (or, for "cli", a CliSpec)
    # None: a valid input, then check(result, ctx) must pass; SystemExit for the
    # CLI: exit status 2 with one "skxray: error: ..." line on stderr.
    raises: type | None
    match: str | None = None  # regex that must appear in the message (or on stderr)
    check: object = None  # valid input: check(result, ctx); error: check(ctx) after the error
    xfail: str | None = None


@dataclass(frozen=True)
class CliSpec:
    args: list
    must_not_exist: Path | None = None
    # 2 for a usage error; 1 when predict or evaluate answered the readable
    # images and reported the others.
    returncode: int = 2


def _file_cases():
    cases = []
    for kind, (name, writer) in BAD_FILES.items():
        culprit = re.escape(name)
        reason = BAD_FILE_REASONS[kind]
        message = rf"{culprit}'?: {reason}"

        def direct(ctx, name=name, writer=writer):
            root, target, _, _ = _folder_with(ctx, name, writer)
            return lambda: read_image(target)

        def loader(ctx, name=name, writer=writer):
            root, target, paths, _ = _folder_with(ctx, name, writer)
            return lambda: ImageLoader(image_size=LOAD_SIZE).transform([paths[0], str(target)])

        def folder(ctx, name=name, writer=writer):
            root, _, _, _ = _folder_with(ctx, name, writer)
            return lambda: load_image_folder(root, image_size=LOAD_SIZE)

        def fit_paths(ctx, name=name, writer=writer):
            root, target, paths, labels = _folder_with(ctx, name, writer)
            X = np.array([*paths, str(target)], dtype=object)
            y = np.array([*labels, "A"], dtype=object)
            return lambda: tiny_cnn(image_size=LOAD_SIZE).fit(X, y)

        def predict_paths(ctx, name=name, writer=writer):
            root, target, paths, _ = _folder_with(ctx, name, writer)
            model = ctx.path_model
            return lambda: model.predict(np.array([paths[0], str(target)], dtype=object))

        cases += [
            Case(f"{kind}-read_image", "read_image", direct, ImageReadError, message),
            Case(f"{kind}-ImageLoader", "ImageLoader.transform", loader, ImageReadError, message),
            Case(f"{kind}-load_image_folder", "load_image_folder", folder, ImageReadError, message),
            Case(
                f"{kind}-fit_paths", "CNNClassifier.fit(paths)", fit_paths, ImageReadError, message
            ),
            Case(
                f"{kind}-predict_paths",
                "CNNClassifier.predict(paths)",
                predict_paths,
                ImageReadError,
                message,
            ),
        ]

    # A text file with its own extension: read_image refuses it; the folder
    # loader skips it with a warning that names it (not an error).
    def text_direct(ctx):
        path = ctx.tmp / "notes.txt"
        path.write_text("patient list\n")
        return lambda: read_image(path)

    def text_in_folder(ctx):
        root, _, _, _ = _folder_with(ctx, "notes.txt", lambda p: p.write_text("patient list\n"))

        def call():
            with warnings.catch_warnings(record=True) as record:
                warnings.simplefilter("always")
                bunch = load_image_folder(root, image_size=LOAD_SIZE)
            return bunch, [str(w.message) for w in record]

        return call

    def text_skipped(result, ctx):
        bunch, messages = result
        assert bunch.data.shape == (4, LOAD_SIZE, LOAD_SIZE)
        assert not any(f.endswith("notes.txt") for f in bunch.filenames)
        assert any("A/notes.txt" in m and "non-image" in m for m in messages), messages

    cases += [
        Case("text_file-read_image", "read_image", text_direct, ImageReadError,
             r"notes\.txt'?: not a recognised image format"),
        Case("text_file-load_image_folder", "load_image_folder", text_in_folder, None,
             check=text_skipped),
    ]  # fmt: skip
    return cases


def _valid_file_cases():
    cases = []
    for kind, (name, writer, expected) in VALID_FILES.items():

        def direct(ctx, name=name, writer=writer):
            _, target, _, _ = _folder_with(ctx, name, writer)
            return lambda: read_image(target)

        def check_direct(img, ctx, expected=expected):
            assert img.dtype == np.float32 and img.shape == (SIZE, SIZE)
            np.testing.assert_allclose(img, expected, atol=1e-6)

        def loader(ctx, name=name, writer=writer):
            _, target, paths, _ = _folder_with(ctx, name, writer)
            return lambda: ImageLoader(image_size=LOAD_SIZE).transform([paths[0], str(target)])

        def check_loader(X, ctx, expected=expected):
            assert X.dtype == np.float32 and X.shape == (2, LOAD_SIZE, LOAD_SIZE)
            assert 0.0 <= X.min() and X.max() <= 1.0
            # Antialiased downscaling keeps the mean intensity.
            assert abs(float(X[1].mean()) - float(expected.mean())) < 0.02

        def folder(ctx, name=name, writer=writer):
            root, _, _, _ = _folder_with(ctx, name, writer)
            return lambda: load_image_folder(root, image_size=LOAD_SIZE)

        def check_folder(bunch, ctx, name=name, expected=expected):
            assert bunch.data.shape == (5, LOAD_SIZE, LOAD_SIZE) and bunch.data.dtype == np.float32
            assert 0.0 <= bunch.data.min() and bunch.data.max() <= 1.0
            (row,) = [i for i, f in enumerate(bunch.filenames) if f.endswith(name)]
            assert bunch.target[row] == "A"
            assert abs(float(bunch.data[row].mean()) - float(expected.mean())) < 0.02

        cases += [
            Case(f"{kind}-read_image", "read_image", direct, None, check=check_direct),
            Case(f"{kind}-ImageLoader", "ImageLoader.transform", loader, None, check=check_loader),
            Case(
                f"{kind}-load_image_folder", "load_image_folder", folder, None, check=check_folder
            ),
        ]
    return cases


def _folder_cases():
    def empty(ctx):
        root = ctx.tmp / "no_images"
        (root / "Normal").mkdir(parents=True)
        (root / "README.txt").write_text("nothing here\n")
        (root / "Normal" / "list.csv").write_text("a,b\n")

        def call():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the skipped non-image file
                return load_image_folder(root)

        return call

    def one_class(ctx):
        root = ctx.tmp / "one_class"
        (root / "Normal").mkdir(parents=True)
        for i in range(3):
            _save_png(root / "Normal" / f"{i}.png", _gray())
        return lambda: load_image_folder(root)

    def manifest(rows):
        def build(ctx):
            root = ctx.tmp / "data"
            _two_class_folder(root)
            _save_png(ctx.tmp / "outside.png", _gray())
            (root / "manifest.csv").write_text(
                "path,label\n" + "".join(f"{p},{lab}\n" for p, lab in rows)
            )
            return lambda: load_image_folder(root)

        return build

    def manifest_symlink(ctx):
        root = ctx.tmp / "data"
        _two_class_folder(root)
        _save_png(ctx.tmp / "outside.png", _gray())
        (root / "A" / "link.png").symlink_to(ctx.tmp / "outside.png")
        (root / "manifest.csv").write_text("path,label\nA/ok0.png,A\nA/link.png,A\nB/ok0.png,B\n")
        return lambda: load_image_folder(root)

    return [
        Case("folder_without_images", "load_image_folder", empty, ValueError,
             r"No image files found in '.*no_images'"),
        Case("folder_with_one_class", "load_image_folder", one_class, ValueError,
             r"at least two classes; '.*one_class' gives \['Normal'\]"),
        Case("manifest_path_leaves_root", "load_image_folder",
             manifest([("A/ok0.png", "A"), ("../outside.png", "A"), ("B/ok0.png", "B")]),
             ValueError, r"row 2 \(path '\.\./outside\.png'\) leaves the root folder"),
        Case("manifest_absolute_path", "load_image_folder",
             manifest([("A/ok0.png", "A"), ("/etc/passwd.png", "A"), ("B/ok0.png", "B")]),
             ValueError, r"row 2 \(path '/etc/passwd\.png'\): absolute paths are not allowed"),
        Case("manifest_symlink_leaves_root", "load_image_folder", manifest_symlink, ValueError,
             r"row 2 \(path 'A/link\.png'\) leaves the root folder .* through a symbolic link"),
        Case("manifest_missing_file", "load_image_folder",
             manifest([("A/ok0.png", "A"), ("B/missing.png", "B"), ("B/ok0.png", "B")]),
             FileNotFoundError, r"1 file\(s\) that do not exist .*'B/missing\.png'"),
    ]  # fmt: skip


def _array_cases():
    def fit_with(make_X, make_y=lambda ctx: ctx.y, est=tiny_cnn):
        def build(ctx):
            X, y = make_X(ctx), make_y(ctx)
            return lambda: est().fit(X, y)

        return build

    def on_fitted(method, make_X, make_y=None):
        def build(ctx):
            X = make_X(ctx)
            bound = getattr(ctx.model, method)
            if make_y is None:
                return lambda: bound(X)
            y = make_y(ctx)
            return lambda: bound(X, y)

        return build

    def with_nan(ctx):
        X = ctx.X.copy()
        X[3, 5, 7] = np.nan
        return X

    def with_inf(ctx):
        X = ctx.X.copy()
        X[0, 0, 0] = np.inf
        return X

    def strings(ctx):
        return np.full(ctx.X.shape, "a", dtype=object)

    def numbers_as_object(ctx):
        return ctx.X.astype(object)

    def unseen_label(ctx):
        y = ctx.y.copy()
        y[0] = "Pneumonia"
        return y

    def mixed_labels_array(ctx):
        return np.array(["Covid-19", 1] * (len(ctx.y) // 2), dtype=object)

    def mixed_labels_list(ctx):
        return ["Covid-19", 1] * (len(ctx.y) // 2)

    def paths_with_none(ctx):
        paths, labels = _two_class_folder(ctx.tmp / "data")
        ctx.y_paths = np.array(labels, dtype=object)
        return np.array([*paths[:-1], None], dtype=object)

    def check_fitted(model, ctx):
        assert model.input_shape_ == (1, SIZE, SIZE)
        assert model.predict(ctx.X).shape == (len(ctx.X),)

    def y_of_paths(ctx):
        return ctx.y_paths

    shape = rf"fitted on images of shape \(channels, height, width\) = \(1, {SIZE}, {SIZE}\)"
    return [
        # fit
        Case("X_nan-fit", "CNNClassifier.fit", fit_with(with_nan), ValueError, r"X contains NaN or infinite"),
        Case("X_inf-fit", "CNNClassifier.fit", fit_with(with_inf), ValueError, r"X contains NaN or infinite"),
        Case("X_empty-fit", "CNNClassifier.fit", fit_with(lambda c: c.X[:0], lambda c: c.y[:0]),
             ValueError, r"X is empty \(shape \(0, 16, 16\)\)"),
        Case("X_1d-fit", "CNNClassifier.fit", fit_with(lambda c: np.zeros(len(c.y))), ValueError,
             r"\bX\b.*1-?D"),
        Case("X_5d-fit", "CNNClassifier.fit", fit_with(lambda c: c.X[:, None, None]), ValueError,
             r"X must have shape .* got an array with shape \(20, 1, 1, 16, 16\)"),
        Case("X_y_lengths_differ-fit", "CNNClassifier.fit", fit_with(lambda c: c.X, lambda c: c.y[:-1]),
             ValueError, r"inconsistent numbers of samples: 20 images but 19 labels"),
        Case("X_object_strings-fit", "CNNClassifier.fit", fit_with(strings), ValueError,
             r"X has dtype object that cannot be read as numbers"),
        Case("X_object_numbers-fit", "CNNClassifier.fit", fit_with(numbers_as_object), None,
             check=check_fitted),
        Case("X_paths_with_None-fit", "CNNClassifier.fit",
             fit_with(paths_with_none, y_of_paths, est=lambda: tiny_cnn(image_size=LOAD_SIZE)),
             ValueError, r"None"),
        # predict / predict_proba on a model fitted on (20, 16, 16)
        Case("X_nan-predict", "CNNClassifier.predict", on_fitted("predict", with_nan), ValueError,
             r"X contains NaN or infinite"),
        Case("X_empty-predict", "CNNClassifier.predict", on_fitted("predict", lambda c: c.X[:0]),
             ValueError, r"X is empty"),
        Case("X_1d-predict", "CNNClassifier.predict", on_fitted("predict", lambda c: np.zeros(5)),
             ValueError, r"\bX\b.*1-?D"),
        Case("X_5d-predict", "CNNClassifier.predict", on_fitted("predict", lambda c: c.X[:, None, None]),
             ValueError, r"X must have shape"),
        Case("wrong_size-predict", "CNNClassifier.predict", on_fitted("predict", lambda c: c.X[:, :8, :8]),
             ValueError, r"X has images of shape \(1, 8, 8\), but CNNClassifier was " + shape),
        Case("wrong_channels-predict", "CNNClassifier.predict",
             on_fitted("predict", lambda c: np.repeat(c.X[:, None], 3, axis=1)),
             ValueError, r"X has images of shape \(3, 16, 16\), but CNNClassifier was " + shape),
        Case("wrong_size-predict_proba", "CNNClassifier.predict_proba",
             on_fitted("predict_proba", lambda c: c.X[:, :, :12]),
             ValueError, r"X has images of shape \(1, 16, 12\)"),
        Case("X_object_strings-predict", "CNNClassifier.predict", on_fitted("predict", strings),
             ValueError, r"X has dtype object"),
        Case("unfitted-predict", "CNNClassifier.predict", lambda ctx: lambda: tiny_cnn().predict(ctx.X),
             NotFittedError, r"This CNNClassifier instance is not fitted yet"),
        # labels
        Case("y_single_class-fit", "CNNClassifier.fit",
             fit_with(lambda c: c.X, lambda c: np.full(len(c.y), "Normal", dtype=object)),
             ValueError, r"at least 2 classes; got 1 class: 'Normal'"),
        Case("y_unseen_label-score", "CNNClassifier.score",
             on_fitted("score", lambda c: c.X, unseen_label), ValueError, r"Pneumonia"),
        Case("y_lengths_differ-score", "CNNClassifier.score",
             on_fitted("score", lambda c: c.X, lambda c: c.y[:-1]), ValueError,
             r"inconsistent numbers of samples: \[19, 20\]"),
        Case("y_mixed_types_array-fit", "CNNClassifier.fit", fit_with(lambda c: c.X, mixed_labels_array),
             ValueError, r"(?i)mix.*(str.*int|int.*str)"),
        Case("y_mixed_types_list-fit", "CNNClassifier.fit", fit_with(lambda c: c.X, mixed_labels_list),
             ValueError, r"(?i)mix.*(str.*int|int.*str)"),
    ]  # fmt: skip


def _persistence_cases():
    def saved(ctx):
        folder = ctx.tmp / "model"
        ctx.model.save(folder)
        return folder

    def load_after(tamper):
        def build(ctx):
            folder = saved(ctx)
            tamper(folder)
            return lambda: load(folder)

        return build

    def truncate_weights(folder):
        weights = folder / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:40])

    def edit_config(edit):
        def tamper(folder):
            config = json.loads((folder / "config.json").read_text())
            edit(config)
            (folder / "config.json").write_text(json.dumps(config))

        return tamper

    def interrupted_save(ctx):
        def disk_full(obj):
            raise OSError(errno.ENOSPC, "No space left on device")

        ctx.monkeypatch.setattr(persistence, "dumps_json", disk_full)
        return lambda: ctx.model.save(ctx.tmp / "model")

    def save_under_file(ctx):
        (ctx.tmp / "taken").write_text("x")
        return lambda: ctx.model.save(ctx.tmp / "taken" / "model")

    def save_unfitted(ctx):
        return lambda: tiny_fnn().save(ctx.tmp / "model")

    def check_no_folder(ctx):
        assert not (ctx.tmp / "model").exists()

    return [
        Case("load_truncated_weights", "skxray.load", load_after(truncate_weights), ValueError,
             r"model\.safetensors' is not a valid safetensors file"),
        Case("load_config_not_json", "skxray.load",
             load_after(lambda f: (f / "config.json").write_text("{not json")), ValueError,
             r"config\.json' is not valid JSON"),
        Case("load_config_unknown_class", "skxray.load",
             load_after(edit_config(lambda c: c.update({"class": "os.system"}))), ValueError,
             r"config\.json' names class 'os\.system'"),
        Case("load_config_missing_key", "skxray.load",
             load_after(edit_config(lambda c: c.pop("params"))), ValueError,
             r"config\.json.*params"),
        Case("load_weights_do_not_fit_config", "skxray.load",
             load_after(edit_config(lambda c: c.update({"input_shape": [1, 8, 8]}))), ValueError,
             r"model\.safetensors"),
        Case("save_interrupted", "estimator.save", interrupted_save, OSError,
             r"No space left on device"),
        Case("save_under_a_file", "estimator.save", save_under_file, NotADirectoryError,
             r"taken/model"),
        Case("save_unfitted", "estimator.save", save_unfitted, NotFittedError,
             r"This FNNClassifier instance is not fitted yet", check=check_no_folder),
    ]  # fmt: skip


def _cli_cases():
    def train_folder(writer_or_root):
        def build(ctx):
            root = writer_or_root(ctx)
            out = ctx.tmp / "model_out"
            args = [
                "train",
                root,
                "--model",
                "fnn",
                "--out",
                out,
                "--image-size",
                LOAD_SIZE,
                "--epochs",
                1,
            ]
            return CliSpec(args, must_not_exist=out)

        return build

    def with_bad(name, writer):
        return lambda ctx: _folder_with(ctx, name, writer)[0]

    def leaving_manifest(ctx):
        root = ctx.tmp / "data"
        _two_class_folder(root)
        _save_png(ctx.tmp / "outside.png", _gray())
        (root / "manifest.csv").write_text(
            "path,label\nA/ok0.png,A\n../outside.png,A\nB/ok0.png,B\n"
        )
        return root

    def out_is_file(ctx):
        root = ctx.tmp / "data"
        _two_class_folder(root, n=3)
        (ctx.tmp / "taken").write_text("not a folder")
        args = ["train", root, "--model", "fnn", "--out", ctx.tmp / "taken", "--image-size", LOAD_SIZE,
                "--epochs", 1]  # fmt: skip
        return CliSpec(args)

    def predict(name, writer, model="model"):
        def build(ctx):
            target = ctx.tmp / name
            writer(target)
            return CliSpec(["predict", ctx.cli_models[model], target], returncode=1)

        return build

    def predict_tampered(ctx):
        return CliSpec(
            ["predict", ctx.cli_models["no_params"], _save_png(ctx.tmp / "ok.png", _gray())]
        )

    def evaluate_missing(ctx):
        root = ctx.tmp / "data"
        _two_class_folder(root)
        (root / "manifest.csv").write_text("path,label\nA/ok0.png,A\nB/gone.png,B\nB/ok0.png,B\n")
        return CliSpec(["evaluate", ctx.cli_models["model"], root])

    trunc_name, trunc_writer = BAD_FILES["truncated_png"]
    empty_name, empty_writer = BAD_FILES["zero_bytes"]
    return [
        Case("cli_train_truncated_png", "skxray train", train_folder(with_bad(trunc_name, trunc_writer)),
             SystemExit, r"trunc\.png'?: file is truncated or corrupt"),
        Case("cli_train_manifest_leaves_root", "skxray train", train_folder(leaving_manifest), SystemExit,
             r"row 2 \(path '\.\./outside\.png'\) leaves the root folder"),
        Case("cli_train_out_is_a_file", "skxray train", out_is_file, SystemExit,
             r"--out '.*taken' exists and is not a folder"),
        Case("cli_predict_zero_bytes", "skxray predict", predict(empty_name, empty_writer), SystemExit,
             r"empty\.png'?: file is empty \(0 bytes\)"),
        Case("cli_predict_config_missing_key", "skxray predict", predict_tampered, SystemExit,
             r"config\.json"),
        Case("cli_evaluate_manifest_missing_file", "skxray evaluate", evaluate_missing, SystemExit,
             r"1 file\(s\) that do not exist .*'B/gone\.png'"),
    ]  # fmt: skip


CASES = (
    _file_cases() + _valid_file_cases() + _folder_cases() + _array_cases() + _persistence_cases()
)
CLI_CASES = _cli_cases()
ALL_CASES = CASES + CLI_CASES


def _params(cases):
    return [
        pytest.param(
            c, id=c.id, marks=[pytest.mark.xfail(strict=True, reason=c.xfail)] if c.xfail else []
        )
        for c in cases
    ]


def test_case_ids_are_unique():
    ids = [c.id for c in ALL_CASES]
    assert len(ids) == len(set(ids))


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def phantoms():
    X, y = make_phantom_cxr(20, image_size=SIZE, random_state=0)
    return X, y


@pytest.fixture(scope="module")
def fitted(phantoms, tmp_path_factory):
    """A CNN fitted on (20, 16, 16) arrays and one fitted on 8 px file paths."""
    X, y = phantoms
    model = tiny_cnn().fit(X, y)
    paths, labels = _two_class_folder(tmp_path_factory.mktemp("train_paths"), n=3)
    path_model = tiny_cnn(image_size=LOAD_SIZE, ood=False).fit(
        np.array(paths, dtype=object), labels
    )
    return model, path_model


def _snapshot(root):
    """Every file and link under ``root`` with its size and modification time."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            out[os.path.relpath(path, root)] = (st.st_size, st.st_mtime_ns)
    return out


def _cli_env():
    return {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}


def _run_cli(spec, cwd):
    before = _snapshot(cwd)
    result = subprocess.run(
        [sys.executable, "-m", "skxray.cli", *map(str, spec.args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=_cli_env(),
        timeout=CLI_TIMEOUT_S,
    )
    return result, before, _snapshot(cwd)


@pytest.fixture(scope="module")
def cli_runs(request, tmp_path_factory, phantoms):
    """Start the selected CLI cases in the background, three at a time.

    Each ``python -m skxray.cli`` pays for importing torch, so they run
    alongside the in-process cases; each CLI test waits for its own run.
    """
    selected = {
        item.callspec.params["case"].id
        for item in request.session.items
        if getattr(item, "originalname", None) == "test_bad_input"
        and hasattr(item, "callspec")
        and item.callspec.params["case"].entry.startswith("skxray ")
    }
    if not selected:
        yield {}
        return
    X, y = phantoms
    models_dir = tmp_path_factory.mktemp("cli_models")
    model = tiny_fnn().fit(X, y)
    model.save(models_dir / "model")
    shutil.copytree(models_dir / "model", models_dir / "no_params")
    config = json.loads((models_dir / "no_params" / "config.json").read_text())
    del config["params"]
    (models_dir / "no_params" / "config.json").write_text(json.dumps(config))
    cli_models = {"model": models_dir / "model", "no_params": models_dir / "no_params"}

    pool = ThreadPoolExecutor(max_workers=3)
    futures = {}
    for case in CLI_CASES:
        if case.id not in selected:
            continue
        tmp = tmp_path_factory.mktemp(case.id)
        spec = case.build(SimpleNamespace(tmp=tmp, cli_models=cli_models))
        futures[case.id] = (pool.submit(_run_cli, spec, tmp), spec)
    yield futures
    pool.shutdown(wait=True, cancel_futures=True)


@pytest.fixture(autouse=True)
def _start_cli_runs_early(request):
    """Start the CLI runs with the first catalogue test, whatever it is."""
    if getattr(request.node, "originalname", None) == "test_bad_input":
        request.getfixturevalue("cli_runs")


# ------------------------------------------------------------------ the test


def _visible_lines(stderr):
    """The lines a terminal would show: a progress bar redrawn with \\r leaves its last state."""
    lines = [line.split("\r")[-1] for line in stderr.split("\n")]
    return [line for line in lines if line.strip()]


@pytest.mark.parametrize("case", _params(ALL_CASES))
def test_bad_input(case, tmp_path, monkeypatch, phantoms, fitted, request):
    if case.entry.startswith("skxray "):
        future, spec = request.getfixturevalue("cli_runs")[case.id]
        result, before, after = future.result()
        assert "Traceback" not in result.stderr, result.stderr[-2000:]
        assert result.returncode == spec.returncode, (result.returncode, result.stderr[-2000:])
        lines = _visible_lines(result.stderr)
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("skxray: error: ")
        assert re.search(case.match, lines[0]), (case.match, lines[0])
        if spec.must_not_exist is not None:
            assert not spec.must_not_exist.exists(), f"{spec.must_not_exist} was written"
        assert after == before, "the failing command wrote files"
        return

    X, y = phantoms
    model, path_model = fitted
    ctx = SimpleNamespace(tmp=tmp_path, X=X, y=y, model=model, path_model=path_model,
                          monkeypatch=monkeypatch)  # fmt: skip
    call = case.build(ctx)
    if case.raises is None:
        case.check(call(), ctx)
        return
    before = _snapshot(tmp_path)
    with pytest.raises(case.raises, match=case.match) as info:
        call()
    if isinstance(info.value, ImageReadError):
        # The path attribute is the culprit file, not a folder or a neighbour.
        assert re.search(case.match.split("'?:")[0] + "$", info.value.path), info.value.path
    after = _snapshot(tmp_path)
    assert not list(tmp_path.rglob("*.tmp")), "temporary files left behind"
    assert after == before, (
        f"failing call left files behind: {sorted(set(after) - set(before))}, "
        f"changed: {sorted(k for k in set(after) & set(before) if after[k] != before[k])}"
    )
    if case.check is not None:
        case.check(ctx)


def test_catalogue_covers_every_entry_point():
    entries = {c.entry for c in ALL_CASES}
    assert {
        "read_image",
        "ImageLoader.transform",
        "load_image_folder",
        "CNNClassifier.fit",
        "CNNClassifier.fit(paths)",
        "CNNClassifier.predict",
        "CNNClassifier.predict(paths)",
        "CNNClassifier.predict_proba",
        "CNNClassifier.score",
        "estimator.save",
        "skxray.load",
        "skxray train",
        "skxray predict",
        "skxray evaluate",
    } <= entries


# ------------------------------------------------------------------ fuzzing


def _no_hang(fn, *args, timeout=HANG_S):
    """Run ``fn(*args)`` in a thread; fail (rather than hang) if it has not returned in time."""
    outcome = {}

    def target():
        try:
            outcome["value"] = fn(*args)
        except BaseException as exc:  # re-raised in the calling thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        pytest.fail(f"{getattr(fn, '__name__', fn)} did not return within {timeout} s (hang?)")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _allowed(fn, *args):
    """Call through the hang guard: return the result, or None on ImageReadError/ValueError."""
    try:
        return _no_hang(fn, *args)
    except ValueError:  # ImageReadError is a ValueError
        return None


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    head=st.sampled_from(FILE_SIGNATURES),
    payload=st.binary(max_size=600),
    suffix=st.sampled_from([".png", ".jpg", ".dcm", ".bmp", ".tif"]),
)
def test_fuzz_random_bytes(head, payload, suffix):
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom and Pillow warn about odd data
        root = Path(tmp)
        _two_class_folder(root, n=1)
        blob = root / "A" / ("blob" + suffix)
        blob.write_bytes(head + payload)

        try:
            img = _no_hang(read_image, blob)
        except ImageReadError as exc:
            assert exc.path == str(blob)
        else:  # random bytes can, rarely, be a valid image
            check_unit_image(img)

        X = _allowed(
            ImageLoader(image_size=LOAD_SIZE).transform, [str(blob), str(root / "B" / "ok0.png")]
        )
        if X is not None:
            check_unit_image(X, (2, LOAD_SIZE, LOAD_SIZE))

        bunch = _allowed(lambda: load_image_folder(root, image_size=LOAD_SIZE))
        if bunch is not None:
            check_unit_image(bunch.data, (3, LOAD_SIZE, LOAD_SIZE))


_ODD_SHAPES = st.sampled_from([(1, 1), (1, 10_000), (10_000, 1), (1, 2), (3, 1)]) | st.tuples(
    st.integers(1, 40), st.integers(1, 40)
)


@st.composite
def _odd_images(draw):
    shape = draw(_ODD_SHAPES)
    deep = draw(st.booleans())
    dtype, top = (np.uint16, 65535) if deep else (np.uint8, 255)
    fill = draw(st.sampled_from(["zeros", "max", "random"]))
    if fill == "random":
        arr = np.random.default_rng(draw(st.integers(0, 2**16))).integers(
            0, top + 1, shape, dtype=dtype
        )
    else:
        arr = np.full(shape, 0 if fill == "zeros" else top, dtype=dtype)
    ext = draw(st.sampled_from([".png", ".tif"] if deep else [".png", ".tif", ".bmp", ".jpg"]))
    return arr, ext


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(image=_odd_images())
def test_fuzz_odd_valid_images(image):
    arr, ext = image
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        root = Path(tmp)
        _two_class_folder(root, n=1)
        path = root / "A" / ("odd" + ext)
        Image.fromarray(arr).save(path)

        img = _allowed(read_image, path)
        if img is not None:
            check_unit_image(img, arr.shape)
            if ext != ".jpg" and arr.min() == arr.max():  # constant, losslessly stored
                np.testing.assert_allclose(img, arr.flat[0] / np.iinfo(arr.dtype).max, atol=1e-6)

        X = _allowed(ImageLoader(image_size=LOAD_SIZE).transform, [str(path)])
        if X is not None:
            check_unit_image(X, (1, LOAD_SIZE, LOAD_SIZE))

        bunch = _allowed(lambda: load_image_folder(root, image_size=LOAD_SIZE))
        if bunch is not None:
            check_unit_image(bunch.data, (3, LOAD_SIZE, LOAD_SIZE))
