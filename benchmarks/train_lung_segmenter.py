"""Train skxray's lung segmenter from the ``lungmasks`` folder, or cross-validate it.

Usage::

    python benchmarks/train_lung_segmenter.py            # train on all 350, write the weights
    python benchmarks/train_lung_segmenter.py --cv       # patient-grouped 5-fold CV
    python benchmarks/train_lung_segmenter.py --check    # retrain, compare with the shipped hash

The default run writes ``skxray/_weights/lung_segmenter.safetensors`` and
``benchmarks/results/lung_segmenter.json`` (settings, training loss, the sha256
of the weights). ``--cv`` writes ``benchmarks/results/lung_segmenter_cv.json``:
Dice of each held-out image for the segmenter and for the ellipse prior, by
fold and overall. ``--check`` trains again into a temporary file and says
whether the bytes (sha256) are the same.

The recipe: the images and masks centre-cropped to a square and resized to
128 px as ``load_image_folder`` does, then to the network's 64 px; random
affine (rotation, scale, aspect, shift) and gamma augmentation; loss BCE +
soft Dice over the pixels that are not marked "ignore"; AdamW with a one-cycle
learning rate. Everything is seeded and runs on one CPU thread, so the same
torch build on the same kind of CPU gives the same bytes; another torch
version or CPU instruction set (oneDNN picks kernels by CPU) may change the
last bits of the weights, and so the hash.

Dice is measured at 128 px on the pixels not marked "ignore", on the masks that
:func:`skxray.segmentation.segment_lungs` returns (the shipped code path,
with the weights file just written).
"""

import os

# Passive OpenMP waiting on a shared CPU (as _common does), before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import csv  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _common import (  # noqa: E402
    REPO_DIR,
    RESULTS_DIR,
    command_line,
    log,
    machine_info,
    write_json,
)
from torch.nn import functional as F  # noqa: E402

from skxray.datasets import get_data_home  # noqa: E402
from skxray.explain import central_lung_mask  # noqa: E402
from skxray.preprocessing import resize_image, resize_images  # noqa: E402
from skxray.segmentation import (  # noqa: E402
    INPUT_SIZE,
    WEIGHTS_NAME,
    LungUNet,
    file_sha256,
    segment_lungs,
    standardize,
)

EVAL_SIZE = 128
WEIGHTS_PATH = REPO_DIR / "skxray" / "_weights" / WEIGHTS_NAME
SETTINGS = {
    "seed": 0,
    "epochs": 30,
    "batch_size": 16,
    "max_lr": 5e-3,
    "weight_decay": 1e-4,
    "rotation_deg": 10.0,
    "scale": [0.85, 1.15],
    "aspect": [0.9, 1.1],
    "shift": 0.08,
    "gamma": [0.6, 1.6],
    "threads": 1,
    "n_splits": 5,
    # Synthetic phantoms (skxray.make_phantom_cxr) with their own lung
    # ellipses, added to every training set: the library's tests, demo and
    # examples run on phantoms, whose lungs the segmenter must find too.
    # Never in a test fold: every Dice reported is of real radiographs.
    "phantoms": 120,
    "phantom_seed": 1000,
}


# --------------------------------------------------------------------------
# data


def read_mask(path):
    """(lung, ignore) float arrays of a V7 mask PNG: 255 lung, 127 ignore."""
    from PIL import Image

    with Image.open(path) as im:
        m = np.asarray(im.convert("L"))
    return (m >= 192).astype(np.float32), ((m >= 64) & (m < 192)).astype(np.float32)


def load_masked_folder(images, masks, size=EVAL_SIZE, square_masks=False):
    """Images, lung targets and valid-pixel masks at ``size`` px, centre-cropped.

    With ``square_masks``, a square mask of a non-square image is taken as the
    mask of the image's centre square (both are then centre-cropped alike).
    """
    from skxray.io import read_image

    X, Y, V = [], [], []
    for img_path, mask_path in zip(images, masks):
        img = read_image(img_path)
        lung, ignore = read_mask(mask_path)
        square = square_masks and lung.shape[0] == lung.shape[1]
        if lung.shape != img.shape and not square:
            raise ValueError(f"{mask_path}: mask size {lung.shape} != image size {img.shape}")
        X.append(resize_image(img, size, keep_aspect="crop"))
        Y.append(resize_image(lung, size, keep_aspect="crop") > 0.5)
        V.append(resize_image(ignore, size, keep_aspect="crop") < 0.01)
    return np.stack(X), np.stack(Y), np.stack(V)


#: Image licences of the manifest that allow commercial use (``--permissive-only``).
PERMISSIVE = {"CC BY 3.0", "CC BY 4.0", "listed as authorized for everyone"}


def load_lungmasks(permissive_only=False):
    root = get_data_home() / "lungmasks"
    if not (root / "manifest.csv").is_file():
        sys.exit(f"SKIPPED: {root}/manifest.csv not found (set SKXRAY_DATA).")
    with open(root / "manifest.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if permissive_only:
        rows = [r for r in rows if r["license"] in PERMISSIVE]
    X, Y, V = load_masked_folder([root / r["image"] for r in rows], [root / r["mask"] for r in rows])
    return rows, X, Y, V


def make_phantoms(n, seed, size=EVAL_SIZE):
    """``n`` phantoms (3 classes; a third from scanner B) and their lungs, as (X, Y, V)."""
    from skxray.datasets import make_phantom_cxr

    if n == 0:
        empty = np.zeros((0, size, size))
        return empty.astype(np.float32), empty.astype(bool), empty.astype(bool)
    classes = ("Covid-19", "Normal", "Pneumonia")
    parts = [(n - n // 3, "A", seed), (n // 3, "B", seed + 1)]
    X, Y = [], []
    for count, scanner, rs in parts:
        kw = {"image_size": size, "classes": classes, "scanner": scanner, "random_state": rs}
        images, _, lungs = make_phantom_cxr(count, return_lungs=True, **kw)
        X.append(images)
        Y.append(lungs)
    X, Y = np.concatenate(X), np.concatenate(Y)
    return X, Y, np.ones_like(Y)


# --------------------------------------------------------------------------
# training


def _augment(x, y, v, gen, s):
    """Random affine + gamma of a batch (image, target, ignore) at the network size."""
    n = x.shape[0]

    def uniform(lo, hi):
        return lo + (hi - lo) * torch.rand(n, generator=gen)

    angle = uniform(-s["rotation_deg"], s["rotation_deg"]) * math.pi / 180
    scale = uniform(*s["scale"])
    aspect = uniform(*s["aspect"])
    tx, ty = uniform(-s["shift"], s["shift"]) * 2, uniform(-s["shift"], s["shift"]) * 2
    sx, sy = 1 / (scale * aspect.sqrt()), aspect.sqrt() / scale
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack(
        [torch.stack([cos * sx, -sin * sx, tx], 1), torch.stack([sin * sy, cos * sy, ty], 1)], 1
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    stack = F.grid_sample(torch.cat([x, y, 1 - v], 1), grid, align_corners=False)
    gamma = torch.exp(uniform(math.log(s["gamma"][0]), math.log(s["gamma"][1])))
    image = stack[:, :1].clamp(0, 1) ** gamma[:, None, None, None]
    return image, (stack[:, 1:2] > 0.5).float(), (stack[:, 2:3] < 0.01).float()


def _loss(logits, target, valid):
    bce = F.binary_cross_entropy_with_logits(logits, target, weight=valid, reduction="sum")
    bce = bce / valid.sum().clamp_min(1)
    p = torch.sigmoid(logits) * valid
    t = target * valid
    dice = (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)
    return bce + 1 - dice


def to_network_size(X, Y, V):
    """Tensors (n, 1, 64, 64): image, lung target (0/1), valid pixel (0/1)."""
    x = torch.from_numpy(resize_images(X, INPUT_SIZE))[:, None]
    y = torch.from_numpy(resize_images(Y.astype(np.float32), INPUT_SIZE) > 0.5).float()[:, None]
    v = torch.from_numpy(resize_images(V.astype(np.float32), INPUT_SIZE) > 0.99).float()[:, None]
    return x, y, v


def train(X, Y, V, settings, label=""):
    """Train a LungUNet on (X, Y, V) at 128 px plus the phantoms; return it and the loss curve."""
    s = settings
    P = make_phantoms(s["phantoms"], s["phantom_seed"])
    X, Y, V = (np.concatenate([a, b]) for a, b in zip((X, Y, V), P))
    torch.manual_seed(s["seed"])
    gen = torch.Generator().manual_seed(s["seed"])
    net = LungUNet()
    x, y, v = to_network_size(X, Y, V)
    n = x.shape[0]
    steps_per_epoch = math.ceil(n / s["batch_size"])
    opt = torch.optim.AdamW(net.parameters(), lr=s["max_lr"], weight_decay=s["weight_decay"])
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=s["max_lr"], total_steps=s["epochs"] * steps_per_epoch
    )
    curve = []
    t0 = time.perf_counter()
    for epoch in range(s["epochs"]):
        net.train()
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for start in range(0, n, s["batch_size"]):
            idx = order[start : start + s["batch_size"]]
            xb, yb, vb = _augment(x[idx], y[idx], v[idx], gen, s)
            loss = _loss(net(standardize(xb)), yb, vb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        curve.append(round(total / n, 5))
        log(f"{label} epoch {epoch + 1}/{s['epochs']} loss {curve[-1]:.4f} "
            f"({time.perf_counter() - t0:.0f} s)")
    return net.eval(), curve, time.perf_counter() - t0


def save_weights(net, path):
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: t.detach().contiguous().clone() for k, t in net.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    # One metadata key only: safetensors writes the metadata from a Rust HashMap, whose
    # order changes from process to process, so two keys made the bytes (and the hash)
    # differ between identical trainings.
    save_file(state, str(tmp), metadata={"format": "pt"})
    tmp.replace(path)
    return file_sha256(path)


# --------------------------------------------------------------------------
# measuring


def dice(pred, target, valid):
    """Dice of boolean masks on the valid pixels; 1.0 when both are empty."""
    p, t = pred & valid, target & valid
    denom = p.sum() + t.sum()
    return 1.0 if denom == 0 else float(2 * (p & t).sum() / denom)


def dice_scores(masks, Y, V):
    return [dice(m, y, v) for m, y, v in zip(masks, Y, V)]


def summary(scores):
    a = np.asarray(scores, dtype=float)
    return {
        "n": int(a.size),
        "mean": float(a.mean()),
        "median": float(np.median(a)),
        "p5": float(np.percentile(a, 5)),
        "min": float(a.min()),
    }


def segment_with(net, X):
    """Masks of X by the shipped code path, with ``net``'s weights in a temporary file."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / WEIGHTS_NAME
        save_weights(net, path)
        return segment_lungs(X, weights=path)


# --------------------------------------------------------------------------
# modes


def _relative(path):
    path = Path(path).resolve()
    return str(path.relative_to(REPO_DIR)) if path.is_relative_to(REPO_DIR) else str(path)


def run_train(settings, out_weights, out_json):
    rows, X, Y, V = load_lungmasks(settings.get("permissive_only", False))
    net, curve, seconds = train(X, Y, V, settings, label="all")
    sha = save_weights(net, out_weights)
    train_dice = summary(dice_scores(segment_lungs(X, weights=out_weights), Y, V))
    # Phantoms never trained on (another seed), at the tests' 64 px.
    PX, PY, PV = make_phantoms(60, settings["phantom_seed"] + 100, size=64)
    phantom_dice = float(np.mean(dice_scores(segment_lungs(PX, weights=out_weights), PY, PV)))
    payload = {
        "machine": machine_info(),
        "settings": {**settings, "command": command_line(), "input_size": INPUT_SIZE,
                     "eval_size": EVAL_SIZE, "n_images": len(rows),
                     "n_patients": len({r["patient_id"] for r in rows})},
        "results": [{
            "weights": _relative(out_weights),
            "sha256": sha,
            "size_bytes": Path(out_weights).stat().st_size,
            "n_weights": sum(p.numel() for p in net.parameters()),
            "train_seconds": seconds,
            "final_loss": curve[-1],
            "train_dice_mean": train_dice["mean"],
            "phantom_dice_mean": phantom_dice,
        }],
        "loss_curve": [{"epoch": i + 1, "loss": c} for i, c in enumerate(curve)],
    }
    write_json(out_json, payload)
    log(f"weights {out_weights} sha256 {sha}; record {out_json}")
    if Path(out_weights).resolve() == WEIGHTS_PATH.resolve():
        log(f"set skxray.segmentation.PACKAGED_SHA256 = {sha!r} to ship these weights")
    return sha


def run_cv(settings, out_json):
    from sklearn.model_selection import GroupKFold

    rows, X, Y, V = load_lungmasks()
    groups = np.array([r["patient_id"] for r in rows])
    ellipse = central_lung_mask(EVAL_SIZE, EVAL_SIZE)
    per_image, folds = [], []
    cv = GroupKFold(n_splits=settings["n_splits"])
    for fold, (tr, te) in enumerate(cv.split(X, groups=groups)):
        net, _, seconds = train(X[tr], Y[tr], V[tr], settings, label=f"fold {fold}")
        seg = dice_scores(segment_with(net, X[te]), Y[te], V[te])
        ell = dice_scores(np.broadcast_to(ellipse, Y[te].shape), Y[te], V[te])
        for i, a, b in zip(te, seg, ell):
            per_image.append({"fold": fold, "image": rows[i]["image"],
                              "patient_id": rows[i]["patient_id"],
                              "dice_segmenter": a, "dice_ellipse": b})
        folds.append({"fold": fold, "n_test": len(te), "train_seconds": seconds,
                      **{f"segmenter_{k}": v for k, v in summary(seg).items()},
                      **{f"ellipse_{k}": v for k, v in summary(ell).items()}})
        log(f"fold {fold}: segmenter {np.mean(seg):.4f}, ellipse {np.mean(ell):.4f}")
        write_json(out_json, _cv_payload(settings, folds, per_image, complete=False))
    payload = _cv_payload(settings, folds, per_image, complete=True)
    write_json(out_json, payload)
    log(f"CV: {payload['results']}")


def _cv_payload(settings, folds, per_image, complete):
    results = []
    for region in ("segmenter", "ellipse"):
        s = summary([r[f"dice_{region}"] for r in per_image])
        results.append({"region": region, **{f"dice_{k}": v for k, v in s.items()}})
    return {
        "machine": machine_info(),
        "settings": {**settings, "command": command_line(), "input_size": INPUT_SIZE,
                     "eval_size": EVAL_SIZE, "split": "GroupKFold by patient_id",
                     "complete": complete},
        "results": results,
        "folds": folds,
        "per_image": per_image,
    }


def run_check(settings, record):
    import json

    shipped = json.loads(Path(record).read_text())["results"][0]
    with tempfile.TemporaryDirectory() as tmp:
        sha = run_train(settings, Path(tmp) / WEIGHTS_NAME, Path(tmp) / "record.json")
        retrained = json.loads((Path(tmp) / "record.json").read_text())["results"][0]
    same = sha == shipped["sha256"]
    keys = ("sha256", "train_dice_mean", "phantom_dice_mean", "final_loss")
    write_json(RESULTS_DIR / "lung_segmenter_check.json", {
        "machine": machine_info(),
        "settings": {**settings, "command": command_line()},
        "results": [{**{f"shipped_{k}": shipped.get(k) for k in keys},
                     **{f"retrained_{k}": retrained.get(k) for k in keys},
                     "same_bytes": same}],
    })
    print(f"retrained sha256 {sha}\nshipped   sha256 {shipped['sha256']}\n"
          + ("REPRODUCED: same bytes." if same else
             "DIFFERENT bytes: compare the Dice of both in results/lung_segmenter_check.json."))
    return 0 if same else 1


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--cv", action="store_true", help="patient-grouped 5-fold CV")
    mode.add_argument("--check", action="store_true", help="retrain and compare the hash")
    parser.add_argument("--epochs", type=int, default=SETTINGS["epochs"])
    parser.add_argument("--out", default=None, help="JSON record (default in results/)")
    parser.add_argument("--weights", default=str(WEIGHTS_PATH), help="weights file to write")
    parser.add_argument("--permissive-only", action="store_true",
                        help="train only on the images whose licence allows commercial use")
    args = parser.parse_args(argv)
    settings = {**SETTINGS, "epochs": args.epochs}
    if args.permissive_only:
        settings["permissive_only"] = True
    torch.set_num_threads(settings["threads"])
    torch.use_deterministic_algorithms(True)
    if args.cv:
        run_cv(settings, args.out or RESULTS_DIR / "lung_segmenter_cv.json")
    elif args.check:
        return run_check(settings, RESULTS_DIR / "lung_segmenter.json")
    else:
        run_train(settings, args.weights, args.out or RESULTS_DIR / "lung_segmenter.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
