"""Probe for issue 25: can the shipped lung segmenter tell an upright frontal chest X-ray from a gross error?

Usage::

    python benchmarks/gross_errors_segmenter.py

The per-image out-of-distribution detector flags rotated X-rays less often
than issue 25 asks (``new_hospital.json``). This probe measures a check that
does not depend on the classifier: :func:`skxray.segmentation.segment_lungs`
(the weights that ship in the package) on each image at 128 px, and a verdict
from the mask. The rule was fixed before the first run and is not tuned:

``lungs``
    the image passes when its mask has at least two connected parts
    (8-connectivity), a lung share between 10 % and 70 % of the image, and
    the largest part at most 3 times the second;
``lungs side by side``
    the same, and the centroids of the two largest parts lie further apart
    across the image than down it (left and right lungs, not one above the
    other).

Sets: all 1,124 darkcovidnet images (the check's in-distribution rate; the
segmenter trained on 120 of its Covid-19 images), the same rotated by 90°
and 270°, upside down and inverted; scikit-image's bundled pictures (those
that need no download) and 200 of its ``lfw_subset`` faces, measured only.
Hannover is not used. Nothing in the package uses this check yet.
Results: ``benchmarks/results/gross_errors_segmenter.json``.
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from _common import (  # noqa: E402
    command_line,
    default_out,
    load_pixels,
    log,
    machine_info,
    require_data,
    write_json,
)

IMAGE_SIZE = 128
RULE = {"min_parts": 2, "lung_share": (0.10, 0.70), "largest_to_second_max": 3.0}
PICTURES = ("camera", "astronaut", "page", "text", "retina", "microaneurysms", "immunohistochemistry",
            "shepp_logan_phantom", "coins", "moon", "brick", "grass", "gravel", "rocket", "coffee",
            "chelsea", "horse", "clock", "hubble_deep_field")


def mask_facts(mask):
    """Parts, lung share, largest-to-second area ratio and whether the two largest lie side by side."""
    from scipy import ndimage

    labels, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if n < 2:
        return {"n_parts": int(n), "lung_share": float(mask.mean()), "ratio": None, "side_by_side": False}
    sizes = np.bincount(labels.ravel())[1:]
    first, second = np.argsort(sizes)[::-1][:2] + 1
    (r1, c1), (r2, c2) = ndimage.center_of_mass(mask, labels, [first, second])
    return {"n_parts": int(n), "lung_share": float(mask.mean()),
            "ratio": float(sizes[first - 1] / sizes[second - 1]),
            "side_by_side": bool(abs(c1 - c2) > abs(r1 - r2))}


def passes(facts, side_by_side):
    lo, hi = RULE["lung_share"]
    ok = (facts["n_parts"] >= RULE["min_parts"] and lo <= facts["lung_share"] <= hi
          and facts["ratio"] is not None and facts["ratio"] <= RULE["largest_to_second_max"])
    return ok and (facts["side_by_side"] or not side_by_side)


def measure(name, images):
    from skxray.segmentation import segment_lungs

    facts = [mask_facts(m) for m in segment_lungs(images)]
    row = {"set": name, "n": len(facts)}
    for key, side in (("flagged_lungs", False), ("flagged_lungs_side_by_side", True)):
        row[key] = float(np.mean([not passes(f, side) for f in facts]))
    row["lung_share_median"] = float(np.median([f["lung_share"] for f in facts]))
    log(f"{name}: n={row['n']}, flagged {row['flagged_lungs']:.3f} / side by side "
        f"{row['flagged_lungs_side_by_side']:.3f}")
    return row


def scikit_image_sets(size):
    import skimage.data
    from skimage.color import rgb2gray
    from skimage.transform import resize

    pictures = []
    for name in PICTURES:
        image = np.asarray(getattr(skimage.data, name)(), dtype=float)
        if image.ndim == 3:
            image = rgb2gray(image[..., :3])
        pictures.append(resize(image, (size, size), anti_aliasing=True))
    faces = [resize(face, (size, size), anti_aliasing=True) for face in skimage.data.lfw_subset()[:200]]
    return np.stack(pictures).astype(np.float32), np.stack(faces).astype(np.float32)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    started = time.perf_counter()
    data = load_pixels(require_data(), IMAGE_SIZE)
    X = np.asarray(data.data, dtype=np.float32).reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
    pictures, faces = scikit_image_sets(IMAGE_SIZE)
    rows = [
        measure("darkcovidnet, all", X),
        measure("darkcovidnet rotated 90 degrees", np.rot90(X, 1, axes=(1, 2)).copy()),
        measure("darkcovidnet rotated 270 degrees", np.rot90(X, 3, axes=(1, 2)).copy()),
        measure("darkcovidnet upside down", X[:, ::-1].copy()),
        measure("darkcovidnet inverted", X.max(axis=(1, 2), keepdims=True) - X),
        measure("scikit-image pictures", pictures),
        measure("scikit-image lfw_subset faces", faces),
    ]
    payload = {
        "machine": machine_info(),
        "settings": {"command": command_line(), "image_size": IMAGE_SIZE, "rule": RULE,
                     "pictures": list(PICTURES), "faces": 200,
                     "note": "A probe: the rule was fixed before the first run; nothing in the package "
                             "uses this check. Hannover is not used.",
                     "total_time_s": time.perf_counter() - started},
        "results": rows,
    }
    out = Path(args.out) if args.out else default_out("gross_errors_segmenter.json", False)
    write_json(out, payload)
    log(f"written {out}")


if __name__ == "__main__":
    main()
