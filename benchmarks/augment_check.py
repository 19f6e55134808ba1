"""Batched augmentation vs the per-image path: are the augmented images, and the models, the same?

Three measurements, written to ``benchmarks/results/augment.json``:

``law``
    the parameters each augmentation draws (angle, crop box, factors,
    gamma, erasing box, border widths, whether it applies), drawn 4,000
    times by the batched path (``_draw`` and the ``p`` draw of
    ``augment_batch``) and 4,000 times the way the per-image path draws them
    (skxray's per-image code, torchvision's ``make_params``): the
    two-sample Kolmogorov-Smirnov statistic and p-value of each parameter.
    Same law: large p-values; the draws themselves differ (another random
    stream).
``pixels``
    for identical drawn parameters, the largest absolute difference between
    the batched output and the per-image transform's output (torchvision's
    kernels), on real X-rays at 64, 128 and 256 px (pixel values in [0, 1]),
    also in units of float32's machine epsilon (the file keeps 6 decimals).
``training``
    ``CNNClassifier`` (default settings, 64 px) with ``xray_augmentation()``
    on the darkcovidnet binary task (Covid-19 vs No_findings), 5
    patient-grouped folds (``StratifiedGroupKFold``, groups = patient), the
    batched path vs the per-image path (the same augmentation wrapped in a
    plain callable, which the estimator applies image by image), and the
    per-image path with another ``random_state`` (how much a seed alone
    moves the accuracy). Accuracy and balanced accuracy per fold.

Run: ``python benchmarks/augment_check.py [--folds 5] [--image-size 64]``.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    CLASSES_BINARY,
    PerImage,
    command_line,
    configure_threads,
    finish,
    load_pixels,
    log,
    machine_info,
    require_data,
)

N_DRAWS = 4000


def _steps():
    from skxray.augmentation import (
        RandomBorderMask,
        RandomBrightnessContrast,
        RandomErasing,
        RandomGamma,
        RandomResizedCrop,
        RandomRotation,
    )

    # The steps of the "strong" preset, with p=1 (the p draw is measured apart).
    return {
        "rotation": RandomRotation(degrees=10.0),
        "resized_crop": RandomResizedCrop(scale=(0.8, 1.0)),
        "gamma": RandomGamma(gamma=(0.8, 1.25)),
        "brightness_contrast": RandomBrightnessContrast(brightness=0.2, contrast=0.2),
        "erasing": RandomErasing(p=1.0, scale=(0.02, 0.1)),
        "border_mask": RandomBorderMask(max_fraction=0.15, p=1.0),
    }


def _per_image_draw(name, step, img):
    """One image's parameters, drawn as the per-image path draws them."""
    import math

    import torch
    import torchvision.transforms.v2 as T

    import skxray.augmentation as A

    height, width = img.shape[-2:]
    if name == "rotation":
        return {"angle": A._uniform(-10.0, 10.0)}
    if name == "resized_crop":
        scale, ratio = step._ranges()
        params = T.RandomResizedCrop(size=(height, width), scale=scale, ratio=ratio).make_params([img])
        return {"top": params["top"], "left": params["left"], "height": params["height"], "width": params["width"]}
    if name == "gamma":
        return {"gamma": math.exp(A._uniform(math.log(0.8), math.log(1.25)))}
    if name == "brightness_contrast":
        contrast = A._uniform(0.8, 1.2)
        return {"contrast": contrast, "brightness": A._uniform(0.8, 1.2)}
    if name == "erasing":
        scale, ratio = step._ranges()
        p = T.RandomErasing(p=1.0, scale=scale, ratio=ratio, value=0.0).make_params([img])
        return {"top": p["i"], "left": p["j"], "height": p["h"], "width": p["w"]}
    widths = (torch.rand(4) * 0.15 * torch.tensor([height, height, width, width])).long().tolist()
    return dict(zip(("top", "bottom", "left", "right"), widths))


def measure_law(image_size):
    import torch
    from scipy.stats import ks_2samp

    import skxray.augmentation as A

    img = torch.rand(1, image_size, image_size)
    rows = []
    for name, step in _steps().items():
        torch.manual_seed(1)
        batched = {k: v.double().numpy() for k, v in step._draw(N_DRAWS, image_size, image_size).items()}
        torch.manual_seed(2)
        draws = [_per_image_draw(name, step, img) for _ in range(N_DRAWS)]
        for key, values in batched.items():
            per_image = np.array([d[key] for d in draws], dtype=float)
            test = ks_2samp(values, per_image)
            rows.append({"step": name, "parameter": key, "ks_statistic": float(test.statistic),
                         "ks_pvalue": float(test.pvalue), "mean_batched": float(values.mean()),
                         "mean_per_image": float(per_image.mean())})
    # Whether a step applies (p=0.5): the share of images chosen.
    torch.manual_seed(3)
    chosen = A._chosen(0.5, N_DRAWS).double().numpy()
    torch.manual_seed(4)
    per_image = np.array([torch.rand(()).item() < 0.5 for _ in range(N_DRAWS)], dtype=float)
    test = ks_2samp(chosen, per_image)
    rows.append({"step": "any (p=0.5)", "parameter": "applied", "ks_statistic": float(test.statistic),
                 "ks_pvalue": float(test.pvalue), "mean_batched": float(chosen.mean()),
                 "mean_per_image": float(per_image.mean())})
    return rows


def _reference(name, step, img, params):
    """The per-image transform's output for ``params`` (one image's)."""
    import torchvision.transforms.v2 as T
    import torchvision.transforms.v2.functional as TF

    height, width = img.shape[-2:]
    p = {k: (float(v) if k in ("angle", "gamma", "contrast", "brightness") else int(v)) for k, v in params.items()}
    if name == "rotation":
        return TF.rotate(img, p["angle"], interpolation=T.InterpolationMode.BILINEAR, fill=0.0)
    if name == "resized_crop":
        return TF.resized_crop(img, p["top"], p["left"], p["height"], p["width"], [height, width], antialias=True)
    if name == "gamma":
        return type(step)(gamma=(p["gamma"], p["gamma"]))(img)
    if name == "brightness_contrast":
        mean = img.mean()
        return ((img - mean) * p["contrast"] + mean) * p["brightness"]
    if name == "erasing":
        import torch

        return TF.erase(img, p["top"], p["left"], p["height"], p["width"], torch.tensor(0.0))
    out = img.clone() * 0
    t, b, left, r = p["top"], p["bottom"], p["left"], p["right"]
    out[:, t : height - b, left : width - r] = img[:, t : height - b, left : width - r]
    return out


def measure_pixels(images_by_size):
    import torch

    rows = []
    for size, X in images_by_size.items():
        x = torch.from_numpy(np.ascontiguousarray(X[:64], dtype=np.float32))
        x = x.unsqueeze(1) if x.ndim == 3 else x  # (n, height, width) grey images
        for name, step in _steps().items():
            torch.manual_seed(0)
            params = step._draw(len(x), size, size)
            out = step._apply_batch(x, params)
            ref = torch.stack([_reference(name, step, x[i], {k: v[i] for k, v in params.items()})
                               for i in range(len(x))])
            diff = (out - ref).abs()
            # In units of float32's machine epsilon (1.19e-7): the file keeps 6 decimals.
            eps = torch.finfo(torch.float32).eps
            rows.append({"step": name, "image_size": size, "n_images": len(x),
                         "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
                         "max_abs_diff_in_float32_eps": float(diff.max()) / eps,
                         "mean_abs_diff_in_float32_eps": float(diff.mean()) / eps})
    return rows


def measure_training(X, y, groups, folds, image_size):
    from sklearn.metrics import accuracy_score, balanced_accuracy_score
    from sklearn.model_selection import StratifiedGroupKFold

    from skxray.augmentation import xray_augmentation
    from skxray.models import CNNClassifier

    variants = {
        "batched": (lambda: xray_augmentation(), 0),
        "per_image": (lambda: PerImage(xray_augmentation()), 0),
        "per_image_seed1": (lambda: PerImage(xray_augmentation()), 1),
    }
    cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=0)
    rows = []
    for fold, (train, test) in enumerate(cv.split(X, y, groups)):
        for name, (make, seed) in variants.items():
            started = time.perf_counter()
            model = CNNClassifier(image_size=image_size, augment=make(), random_state=seed, ood=False)
            model.fit(X[train], y[train])
            pred = model.predict(X[test])
            rows.append({"fold": fold, "variant": name, "random_state": seed, "n_train": len(train),
                         "n_test": len(test), "accuracy": float(accuracy_score(y[test], pred)),
                         "balanced_accuracy": float(balanced_accuracy_score(y[test], pred)),
                         "fit_seconds": time.perf_counter() - started})
            log(f"fold {fold} {name}: accuracy {rows[-1]['accuracy']:.3f} ({rows[-1]['fit_seconds']:.0f} s)")
    summary = {}
    for name in variants:
        acc = [r["accuracy"] for r in rows if r["variant"] == name]
        bal = [r["balanced_accuracy"] for r in rows if r["variant"] == name]
        summary[name] = {"accuracy_mean": float(np.mean(acc)), "accuracy_std": float(np.std(acc)),
                         "balanced_accuracy_mean": float(np.mean(bal)), "balanced_accuracy_std": float(np.std(bal))}
    for other in ("per_image", "per_image_seed1"):
        diffs = [a["accuracy"] - b["accuracy"] for a, b in zip(
            [r for r in rows if r["variant"] == "batched" if True],
            [r for r in rows if r["variant"] == other], strict=True)]
        summary[f"batched_minus_{other}"] = {"accuracy_mean": float(np.mean(diffs)),
                                              "accuracy_per_fold": diffs}
    seed_diffs = [a["accuracy"] - b["accuracy"] for a, b in zip(
        [r for r in rows if r["variant"] == "per_image"], [r for r in rows if r["variant"] == "per_image_seed1"],
        strict=True)]
    summary["per_image_minus_per_image_seed1"] = {"accuracy_mean": float(np.mean(seed_diffs)),
                                                  "accuracy_per_fold": seed_diffs}
    return rows, summary


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--skip-training", action="store_true")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "augment.json"))
    args = p.parse_args(argv)
    threads = configure_threads("1")
    started = time.perf_counter()
    root = require_data()
    payload = {"machine": machine_info("cpu"),
               "settings": {"folds": args.folds, "image_size": args.image_size, "n_draws": N_DRAWS,
                            "augment": "xray_augmentation() (light)", "task": "binary: " + " vs ".join(CLASSES_BINARY),
                            "cv": "StratifiedGroupKFold(shuffle=True, random_state=0), groups=patient_id",
                            **threads, "command": command_line()}}
    payload["law"] = measure_law(128)
    bunches = {size: load_pixels(root, size) for size in sorted({64, 128, 256, args.image_size})}
    payload["pixels"] = measure_pixels({s: b.data for s, b in bunches.items() if s in (64, 128, 256)})
    if not args.skip_training:
        bunch = bunches[args.image_size]
        y = np.asarray(bunch.target, dtype=object)
        keep = np.isin(y, CLASSES_BINARY)
        rows, summary = measure_training(bunch.data[keep], y[keep], np.asarray(bunch.groups, dtype=object)[keep],
                                         args.folds, args.image_size)
        payload["training"] = rows
        payload["training_summary"] = summary
    return finish(payload, Path(args.out), started, _table)


def _table(payload):
    lines = ["law (KS between batched and per-image draws):"]
    lines += [f"  {r['step']:>20} {r['parameter']:>10}: D={r['ks_statistic']:.3f} p={r['ks_pvalue']:.3f}"
              for r in payload["law"]]
    lines.append("pixels (identical parameters):")
    lines += [f"  {r['step']:>20} {r['image_size']:>4} px: max {r['max_abs_diff_in_float32_eps']:.2f} eps, "
              f"mean {r['mean_abs_diff_in_float32_eps']:.4f} eps"
              for r in payload["pixels"]]
    for name, s in payload.get("training_summary", {}).items():
        lines.append(f"  {name}: {s}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
