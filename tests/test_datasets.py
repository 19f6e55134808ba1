import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from skxray.datasets import get_data_home, load_image_folder, make_phantom_cxr
from skxray.io import ImageReadError

# ---------------------------------------------------------------- helpers


def _png(path, value, shape=(20, 24)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(shape, value, dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def folder(tmp_path):
    """Two classes, each image a constant gray level so resized pixels are known."""
    root = tmp_path / "xrays"
    _png(root / "Normal" / "n2.png", 20)
    _png(root / "Normal" / "n1.png", 10)
    _png(root / "Normal" / "sub" / "n3.png", 30)  # nested folders belong to the class
    _png(root / "Covid-19" / "c1.png", 200)
    _png(root / "Covid-19" / "c2.png", 210, shape=(40, 10))
    (root / "Normal" / "README.md").write_text("notes")
    (root / "Covid-19" / ".DS_Store").write_bytes(b"\x00\x01")
    _png(root / ".cache" / "hidden.png", 0)  # hidden folder: not a class
    (root / "LICENSE.txt").write_text("top-level files belong to no class")
    return root


def _load_quiet(root, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return load_image_folder(root, **kwargs)


EXPECTED_ORDER = [
    ("Covid-19", "Covid-19/c1.png", 200),
    ("Covid-19", "Covid-19/c2.png", 210),
    ("Normal", "Normal/n1.png", 10),
    ("Normal", "Normal/n2.png", 20),
    ("Normal", "Normal/sub/n3.png", 30),
]


# ------------------------------------------------------- load_image_folder


def test_paths_mode(folder):
    with pytest.warns(UserWarning, match=r"non-image.*'Normal/README.md'") as record:
        bunch = load_image_folder(folder)
    messages = " ".join(str(w.message) for w in record)
    assert ".DS_Store" not in messages and "LICENSE" not in messages and "hidden" not in messages
    expected_files = [str(folder / rel) for _, rel, _ in EXPECTED_ORDER]
    assert bunch.filenames.tolist() == expected_files
    assert bunch.data.dtype == object and bunch.data.tolist() == expected_files
    assert bunch.target.dtype == object
    assert bunch.target.tolist() == [label for label, _, _ in EXPECTED_ORDER]
    assert bunch.target_names == ["Covid-19", "Normal"]
    assert bunch.groups is None
    assert list(bunch.frame.columns) == ["path", "label"]
    assert bunch.frame["path"].tolist() == expected_files
    assert "5 images" in bunch.DESCR and "Covid-19: 2" in bunch.DESCR
    assert all(os.path.isabs(f) for f in bunch.filenames)


def test_image_size_mode(folder):
    bunch = _load_quiet(folder, image_size=8)
    assert bunch.data.shape == (5, 8, 8)
    assert bunch.data.dtype == np.float32
    # Constant images stay constant through the resize, whatever their shape.
    for img, (_, _, value) in zip(bunch.data, EXPECTED_ORDER):
        np.testing.assert_allclose(img, value / 255.0, atol=1e-6)


def test_resize_is_bilinear_downscale(tmp_path):
    grad = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (64, 1))
    Image.fromarray(grad).save(_png(tmp_path / "a" / "x.png", 0))
    _png(tmp_path / "b" / "y.png", 0)
    img = _load_quiet(tmp_path, image_size=16).data[0]
    assert np.all(np.diff(img, axis=1) > 0)  # a monotone ramp survives
    assert img.min() >= 0 and img.max() <= 1


def test_n_jobs_same_result(folder):
    one = _load_quiet(folder, image_size=12, n_jobs=1)
    two = _load_quiet(folder, image_size=12, n_jobs=2)
    np.testing.assert_array_equal(one.data, two.data)
    assert one.filenames.tolist() == two.filenames.tolist()


def test_return_X_y(folder):
    X, y = _load_quiet(folder, image_size=8, return_X_y=True)
    bunch = _load_quiet(folder, image_size=8)
    np.testing.assert_array_equal(X, bunch.data)
    assert y.tolist() == bunch.target.tolist()


def test_classes_order_and_restriction(folder):
    _png(folder / "Pneumonia" / "p1.png", 90)
    bunch = _load_quiet(folder, classes=["Normal", "Covid-19"])
    assert bunch.target_names == ["Normal", "Covid-19"]
    assert bunch.target.tolist() == ["Normal"] * 3 + ["Covid-19"] * 2
    bunch = _load_quiet(folder, classes=["Pneumonia", "Covid-19"])
    assert sorted(set(bunch.target)) == ["Covid-19", "Pneumonia"]
    assert len(bunch.target) == 3


def test_unknown_class_lists_available(folder):
    with pytest.raises(ValueError, match=r"Unknown class.*'Pneumonia'.*\['Covid-19', 'Normal'\]"):
        _load_quiet(folder, classes=["Covid-19", "Pneumonia"])


@pytest.mark.parametrize("classes", ["Normal", ["Normal"]])
def test_classes_needs_two(folder, classes):
    with pytest.raises(ValueError, match="(at least two classes|list of class names)"):
        _load_quiet(folder, classes=classes)


def test_one_class_only(tmp_path):
    _png(tmp_path / "Normal" / "a.png", 1)
    with pytest.raises(ValueError, match="needs at least two classes"):
        load_image_folder(tmp_path)


def test_empty_folder(tmp_path):
    (tmp_path / "Normal").mkdir()
    with pytest.raises(ValueError, match="No image files found"):
        _load_quiet(tmp_path)


def test_empty_class_folder_warns(folder):
    (folder / "Normal" / "README.md").unlink()
    (folder / "Empty").mkdir()
    with pytest.warns(UserWarning, match="class folder.*'Empty'"):
        bunch = load_image_folder(folder)
    assert bunch.target_names == ["Covid-19", "Normal"]


def test_stray_top_level_image_warns(folder):
    (folder / "Normal" / "README.md").unlink()
    _png(folder / "loose.png", 3)
    with pytest.warns(UserWarning, match="outside any class folder.*'loose.png'"):
        load_image_folder(folder)


def test_root_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_image_folder(tmp_path / "nowhere")


def test_root_is_a_file(tmp_path):
    path = _png(tmp_path / "x.png", 1)
    with pytest.raises(NotADirectoryError, match="x.png"):
        load_image_folder(path)


def test_corrupt_image_only_fails_when_decoding(folder):
    bad = folder / "Normal" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    _load_quiet(folder)  # paths mode does not decode
    with pytest.raises(ImageReadError, match="broken.png"):
        _load_quiet(folder, image_size=8)


@pytest.mark.parametrize("keep_aspect", ["crop", "pad", True])
def test_keep_aspect_matches_image_loader(folder, keep_aspect):
    from skxray.preprocessing import ImageLoader

    bunch = _load_quiet(folder, image_size=8, keep_aspect=keep_aspect)
    expected = ImageLoader(image_size=8, keep_aspect=keep_aspect).transform(bunch.filenames)
    np.testing.assert_allclose(bunch.data, expected, atol=1e-6)
    assert ("centre-cropped" in bunch.DESCR) == (keep_aspect == "crop")


def test_keep_aspect_crop_keeps_the_centre_of_a_tall_file(tmp_path):
    img = np.zeros((40, 20), dtype=np.uint8)
    img[10:30] = 255  # the central 20x20 square is bright, the rest dark
    Image.fromarray(img).save(_png(tmp_path / "a" / "tall.png", 0))
    _png(tmp_path / "b" / "y.png", 0)
    cropped = _load_quiet(tmp_path, image_size=10, keep_aspect="crop").data[0]
    stretched = _load_quiet(tmp_path, image_size=10, keep_aspect=False).data[0]
    np.testing.assert_allclose(cropped, 1.0, atol=1e-6)
    assert stretched.mean() < 0.6


def test_bad_keep_aspect(folder):
    with pytest.raises(
        ValueError, match=r"'keep_aspect' parameter of load_image_folder must be .*Got 'square'"
    ):
        _load_quiet(folder, image_size=8, keep_aspect="square")


@pytest.mark.parametrize("bad", [0, -3, 2.5, "32", True])
def test_bad_image_size(folder, bad):
    with pytest.raises(ValueError, match="image_size"):
        _load_quiet(folder, image_size=bad)


# ----------------------------------------------------------------- manifest


def _manifest(root, rows, columns=("path", "label", "patient_id", "source", "age")):
    pd.DataFrame(rows, columns=list(columns)).to_csv(root / "manifest.csv", index=False)


def test_manifest(folder):
    _manifest(
        folder,
        [
            ("Normal/n2.png", "Normal", "p7", "nih", 40),
            ("Covid-19/c1.png", "Covid-19", "p1", "ieee", 55),
            ("Normal/n1.png", "Normal", "p7", "nih", 41),
            ("Covid-19/c2.png", "Covid-19", "p2", "ieee", 60),
        ],
    )
    bunch = load_image_folder(folder)  # no warning: README.md is not listed
    assert bunch.filenames.tolist() == [
        str(folder / p)
        for p in ["Covid-19/c1.png", "Covid-19/c2.png", "Normal/n1.png", "Normal/n2.png"]
    ]
    assert bunch.groups.tolist() == ["p1", "p2", "p7", "p7"]
    assert bunch.target.tolist() == ["Covid-19", "Covid-19", "Normal", "Normal"]
    assert {"path", "label", "patient_id", "source", "age"} <= set(bunch.frame.columns)
    assert bunch.frame["source"].tolist() == ["ieee", "ieee", "nih", "nih"]
    assert bunch.frame["age"].tolist() == [55, 60, 41, 40]
    assert "3 patients" in bunch.DESCR


def test_manifest_labels_win_over_folders(folder):
    # "None" and "NA" are identifiers here, not missing values.
    _manifest(
        folder,
        [("Normal/n1.png", "None", "NA", "s", 1), ("Normal/n2.png", "B", "007", "s", 1)],
    )
    bunch = load_image_folder(folder)
    assert bunch.target_names == ["B", "None"]
    assert bunch.groups.tolist() == ["007", "NA"]


def test_manifest_without_patient_id(folder):
    _manifest(folder, [("Normal/n1.png", "N"), ("Covid-19/c1.png", "C")], columns=("path", "label"))
    bunch = load_image_folder(folder, image_size=4)
    assert bunch.groups is None
    assert bunch.data.shape == (2, 4, 4)


@pytest.mark.parametrize(
    ("bad_path", "match"),
    [
        ("../escape.png", r"row 2 \(path '../escape.png'\) leaves the root"),
        ("Normal/../../escape.png", "leaves the root"),
        ("ABSOLUTE", "absolute paths are not allowed"),
        ("Normal/link.png", "through a symbolic link"),
    ],
)
def test_manifest_path_escaping_root(folder, bad_path, match):
    outside = _png(folder.parent / "escape.png", 5)
    (folder / "Normal" / "link.png").symlink_to(outside)
    if bad_path == "ABSOLUTE":
        bad_path = str(outside)
    _manifest(
        folder,
        [("Normal/n1.png", "Normal", "1", "s", 1), (bad_path, "Covid-19", "2", "s", 1)],
    )
    with pytest.raises(ValueError, match=match):
        load_image_folder(folder)


def test_manifest_symlink_inside_root_is_fine(folder):
    (folder / "Normal" / "alias.png").symlink_to(folder / "Covid-19" / "c1.png")
    _manifest(
        folder,
        [("Normal/alias.png", "Normal", "1", "s", 1), ("Covid-19/c2.png", "Covid-19", "2", "s", 1)],
    )
    assert len(load_image_folder(folder).target) == 2


def _row(path, label, patient_id):
    """A manifest row whose source and age do not matter to the test."""
    return (path, label, patient_id, "s", 1)


@pytest.mark.parametrize(
    ("rows", "error", "match"),
    [
        (
            [_row("Normal/n1.png", "Normal", "1"), _row("Covid-19/gone.png", "Covid-19", "2")],
            FileNotFoundError,
            "gone.png",
        ),
        (
            [_row("Normal/n1.png", "Normal", ""), _row("Covid-19/c1.png", "Covid-19", "2")],
            ValueError,
            "empty 'patient_id'.*n1.png",
        ),
        (
            [_row("Normal/n1.png", "Normal", "1"), _row("Normal/n1.png", "Covid-19", "2")],
            ValueError,
            "more than once.*n1.png",
        ),
    ],
    ids=["missing-file", "empty-patient-id", "duplicate-row"],
)
def test_manifest_bad_rows(folder, rows, error, match):
    _manifest(folder, rows)
    with pytest.raises(error, match=match):
        load_image_folder(folder)


@pytest.mark.parametrize(
    ("columns", "match"),
    [(("path", "patient_id"), r"missing required column\(s\) \['label'\]"),
     (("file", "label"), r"missing required column\(s\) \['path'\]")],
)  # fmt: skip
def test_manifest_missing_columns(folder, columns, match):
    _manifest(folder, [("Normal/n1.png", "x")], columns=columns)
    with pytest.raises(ValueError, match=match):
        load_image_folder(folder)


def test_manifest_non_image_row_warns(folder):
    rows = [("Normal/n1.png", "Normal", "1"), ("Normal/README.md", "Normal", "1")]
    _manifest(folder, [_row(*r) for r in rows] + [_row("Covid-19/c1.png", "Covid-19", "2")])
    with pytest.warns(UserWarning, match="README.md"):
        bunch = load_image_folder(folder)
    assert len(bunch.target) == 2


# ------------------------------------------------------------ get_data_home


def test_get_data_home_explicit(tmp_path, monkeypatch):
    monkeypatch.setenv("SKXRAY_DATA", "/somewhere/else")
    assert get_data_home(tmp_path) == tmp_path
    assert get_data_home(str(tmp_path)) == tmp_path


def test_get_data_home_env(tmp_path, monkeypatch):
    monkeypatch.setenv("SKXRAY_DATA", str(tmp_path))
    assert get_data_home() == tmp_path


def test_get_data_home_default(monkeypatch):
    monkeypatch.delenv("SKXRAY_DATA", raising=False)
    home = get_data_home()
    assert isinstance(home, Path)
    assert home.parts[-2:] == ("shared", "data")
    import skxray

    beside_repo = Path(skxray.__file__).resolve().parents[2] / "shared" / "data"
    if beside_repo.is_dir():
        assert home == beside_repo


# ----------------------------------------------------------- make_phantom_cxr

THREE = ("Covid-19", "Normal", "Pneumonia")


@pytest.mark.parametrize("image_size", [16, 33, 64])
@pytest.mark.parametrize("classes", [("Covid-19", "Normal"), THREE])
def test_phantom_shapes_dtype_range(image_size, classes):
    X, y = make_phantom_cxr(30, classes=classes, image_size=image_size, random_state=0)
    assert X.shape == (30, image_size, image_size)
    assert X.dtype == np.float32
    assert X.min() >= 0.0 and X.max() <= 1.0
    assert y.shape == (30,) and y.dtype == object
    assert set(y) == set(classes)


@pytest.mark.parametrize("scanner", ["A", "B"])
def test_phantom_deterministic(scanner):
    a = make_phantom_cxr(20, random_state=3, scanner=scanner, return_groups=True)
    b = make_phantom_cxr(
        20, random_state=np.random.RandomState(3), scanner=scanner, return_groups=True
    )
    c = make_phantom_cxr(20, random_state=4, scanner=scanner, return_groups=True)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize("n_samples", [1, 2, 7, 100, 101])
@pytest.mark.parametrize("classes", [("Covid-19", "Normal"), THREE])
def test_phantom_balanced_and_groups(n_samples, classes):
    X, y, groups = make_phantom_cxr(
        n_samples, classes=classes, image_size=16, random_state=0, return_groups=True
    )
    counts = pd.Series(y).value_counts()
    assert counts.max() - counts.min() <= 1 if len(counts) == len(classes) else counts.max() == 1
    assert counts.sum() == n_samples
    assert groups.shape == (n_samples,) and groups.dtype.kind == "i"
    # One label per patient, every patient has an image, default patient count.
    per_patient = pd.Series(y).groupby(groups).nunique()
    assert per_patient.max() == 1
    expected = min(max(len(classes), n_samples // 3), n_samples)
    assert len(np.unique(groups)) == expected


def test_phantom_shuffled():
    _, y = make_phantom_cxr(60, random_state=0)
    assert not (list(y) == sorted(y) or list(y) == sorted(y, reverse=True))


def test_phantom_n_patients():
    _, y, groups = make_phantom_cxr(40, n_patients=5, random_state=0, return_groups=True)
    assert len(np.unique(groups)) == 5


def test_phantom_patient_shares_anatomy():
    X, _, groups = make_phantom_cxr(
        120, classes=("Normal", "No_findings"), n_patients=20, noise=0.0, image_size=32,
        random_state=0, return_groups=True,
    )  # fmt: skip
    flat = X.reshape(len(X), -1)
    dist = np.abs(flat[:, None] - flat[None]).mean(axis=2)
    same = groups[:, None] == groups[None]
    off_diag = ~np.eye(len(X), dtype=bool)
    assert dist[same & off_diag].mean() < 0.5 * dist[~same].mean()


def _class_means(classes, **kwargs):
    X, y = make_phantom_cxr(
        300, classes=classes, noise=0.0, image_size=64, random_state=0, **kwargs
    )
    return {c: X[y == c].mean(axis=0) for c in classes}


def test_phantom_signals_inside_lungs():
    means = _class_means(THREE)
    covid = means["Covid-19"] - means["Normal"]
    pneumonia = means["Pneumonia"] - means["Normal"]
    lung_rows, left_lung, right_lung, spine = (
        slice(20, 44),
        slice(12, 25),
        slice(39, 52),
        slice(29, 35),
    )
    for diff in (covid, pneumonia):
        for corner in (diff[:8, :8], diff[:8, -8:], diff[-8:, :8], diff[-8:, -8:]):
            assert np.abs(corner).max() < 0.01
        assert abs(diff[lung_rows, spine].mean()) < 0.03
    assert covid[lung_rows, left_lung].mean() > 0.08
    assert covid[lung_rows, right_lung].mean() > 0.08  # bilateral
    # Peripheral: the outer part of each lung more than the medial part.
    assert covid[lung_rows, 12:19].mean() > 1.5 * covid[lung_rows, 20:27].mean()
    assert covid[lung_rows, 45:52].mean() > 1.5 * covid[lung_rows, 37:44].mean()
    # Lobar consolidation: lower lobes, not upper ones.
    lower, upper = slice(34, 46), slice(14, 26)
    assert pneumonia[lower, left_lung].mean() > 0.04
    assert pneumonia[lower, right_lung].mean() > 0.04
    assert pneumonia[upper, 12:52].mean() < 0.01


def test_phantom_classes_are_learnable():
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupShuffleSplit

    X, y, groups = make_phantom_cxr(
        400, classes=THREE, image_size=32, random_state=0, return_groups=True
    )
    train, test = next(GroupShuffleSplit(test_size=0.5, random_state=0).split(X, y, groups))
    assert not set(groups[train]) & set(groups[test])
    # A cheap guard against weakened signals: a linear model on 4x4-block
    # statistics of brightness-normalised images, across unseen patients.
    # (The small CNNs of skxray.models reach >= 0.95 on these images.)
    Z = (X / X.mean(axis=(1, 2), keepdims=True)).reshape(len(X), 8, 4, 8, 4)
    feats = np.concatenate([Z.mean(axis=(2, 4)), Z.std(axis=(2, 4))], axis=1)
    feats = feats.reshape(len(X), -1)
    clf = LogisticRegression(max_iter=3000).fit(feats[train], y[train])
    assert clf.score(feats[test], y[test]) > 0.8


def test_phantom_scanner_b_differs():
    A, yA = make_phantom_cxr(100, image_size=64, random_state=0, scanner="A")
    B, yB = make_phantom_cxr(100, image_size=64, random_state=0, scanner="B")
    assert list(yA) == list(yB)  # same labels, only the device changes
    assert B.mean() > A.mean() + 0.1
    # Background noise: stronger and spatially correlated in B.
    bgA, bgB = A[:, -6:, :6], B[:, -6:, :6]
    assert bgB.std() > 1.4 * bgA.std()
    corr = lambda bg: np.corrcoef(bg[:, :, :-1].ravel(), bg[:, :, 1:].ravel())[0, 1]  # noqa: E731
    assert corr(bgB) > corr(bgA) + 0.2
    # Burnt-in text block in the top-right corner.
    assert B[:, 2:7, 44:62].max(axis=(1, 2)).min() > 0.9
    assert A[:, 2:7, 44:62].mean() < 0.2


@pytest.mark.parametrize("scanner", ["A", "B"])
@pytest.mark.parametrize("marker_class", [None, "Normal", "Pneumonia"])
def test_phantom_marker(scanner, marker_class):
    X, y = make_phantom_cxr(
        60, classes=THREE, image_size=64, marker_class=marker_class, scanner=scanner, random_state=1
    )
    patch = X[:, 2:7, 2:7].mean(axis=(1, 2))
    has_marker = patch > 0.99
    expected = np.zeros(len(y), bool) if marker_class is None else y == marker_class
    np.testing.assert_array_equal(has_marker, expected)
    assert patch[~expected].max() < 0.6


def test_phantom_marker_outside_lungs():
    base = make_phantom_cxr(30, image_size=64, noise=0.0, random_state=2)[0]
    marked, y = make_phantom_cxr(
        30, image_size=64, noise=0.0, random_state=2, marker_class="Normal"
    )
    changed = np.argwhere(np.any(base != marked, axis=0))
    assert changed.max() < 10  # only the top-left corner differs


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_samples": 0}, "n_samples"),
        ({"n_samples": 2.5}, "n_samples"),
        ({"image_size": 15}, "image_size"),
        ({"classes": ("Normal",)}, "at least two"),
        ({"classes": "Normal"}, "sequence of class names"),
        ({"classes": ("A", "A")}, "distinct"),
        ({"scanner": "C"}, "scanner"),
        ({"marker_class": "Pneumonia"}, "marker_class 'Pneumonia' is not one of"),
        ({"n_patients": 0}, "n_patients"),
        ({"n_samples": 10, "n_patients": 11}, "n_patients must lie between 2 and"),
        ({"n_patients": 1}, "n_patients must lie between 2"),
        ({"noise": -0.1}, "noise"),
        ({"noise": float("nan")}, "noise"),
    ],
)
def test_phantom_param_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_phantom_cxr(**kwargs)


# ---------------------------------------------------------------- real data


@pytest.mark.realdata
def test_darkcovidnet():
    root = get_data_home() / "darkcovidnet"
    if not root.is_dir():
        pytest.skip(f"darkcovidnet not found under {root.parent}; set SKXRAY_DATA")
    bunch = load_image_folder(root, image_size=32, n_jobs=2)
    assert bunch.data.shape == (1124, 32, 32)
    assert bunch.data.dtype == np.float32
    assert 0.0 <= bunch.data.min() and bunch.data.max() <= 1.0
    assert bunch.target_names == ["Covid-19", "No_findings", "Pneumonia"]
    assert pd.Series(bunch.target).value_counts().to_dict() == {
        "Covid-19": 124,
        "No_findings": 500,
        "Pneumonia": 500,
    }
    assert len(set(bunch.groups)) == 764
    assert "source" in bunch.frame.columns
    assert bunch.frame["label"].tolist() == bunch.target.tolist()
    assert all(Path(f).is_file() for f in bunch.filenames[::100])


def test_phantom_lungs_come_with_the_same_images():
    X, y = make_phantom_cxr(9, image_size=32, scanner="B", random_state=3)
    X2, y2, groups, lungs = make_phantom_cxr(
        9, image_size=32, scanner="B", random_state=3, return_groups=True, return_lungs=True
    )
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(y, y2)
    assert lungs.shape == X.shape and lungs.dtype == bool
    # Two dark fields, left and right of the middle column, inside the image.
    assert 0.05 < lungs.mean() < 0.5
    assert lungs[:, :, :16].any(axis=(1, 2)).all() and lungs[:, :, 16:].any(axis=(1, 2)).all()
    assert X[lungs].mean() < X[~lungs].mean()
    assert len(make_phantom_cxr(9, image_size=32, random_state=3, return_lungs=True)) == 3
